//! Where a store test runs: a fresh SQLite file, or a fresh database on a
//! real PostgreSQL started once per test binary by `scripts/pg.sh` (and
//! stopped by it when the binary exits). Tests written against
//! [`Place`] run on both backends through [`on_both!`].
#![allow(dead_code)]

pub mod members;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiln_store::Backend;
use kiln_store::postgres::{PgBackend, PgOptions, PgTarget};
use kiln_store::sqlite::SqliteBackend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One test's store, which can be opened (and reopened) as often as the
/// test needs.
pub struct Place {
    pub kind: Kind,
    dir: tempfile::TempDir,
    target: Option<PgTarget>,
}

impl Place {
    pub fn new(kind: Kind) -> Place {
        let dir = tempfile::tempdir().unwrap();
        let target = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => Some(server().fresh_database()),
        };
        Place { kind, dir, target }
    }

    /// The SQLite file (in a directory open must create).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("site").join("kiln.db")
    }

    pub fn open(&self) -> Box<dyn Backend> {
        self.open_as("test-member")
    }

    /// Opens as member `member` (PostgreSQL: it claims every node).
    pub fn open_as(&self, member: &str) -> Box<dyn Backend> {
        match self.kind {
            Kind::Sqlite => Box::new(SqliteBackend::open(&self.path()).unwrap()),
            Kind::Postgres => Box::new(self.open_pg(member).unwrap()),
        }
    }

    pub fn open_pg(&self, member: &str) -> Result<PgBackend, kiln_store::StoreError> {
        PgBackend::open(PgOptions {
            target: self.target.clone().expect("a PostgreSQL place"),
            member: member.into(),
            connect_for: Duration::from_secs(5),
            ring_key: None,
            name: None,
        })
    }

    /// Runs `sql` on the place's database as the superuser, outside kiln
    /// (to set up what a test needs, or to look at what kiln left); the
    /// first column of the last statement's rows, as text.
    pub fn sql(&self, sql: &str) -> Vec<String> {
        let target = self.target();
        let raw = server().url(target.masked().rsplit('/').next().unwrap().split('?').next().unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&raw, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let mut last = Vec::new();
            for message in client.simple_query(sql).await.unwrap() {
                match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        last.push(row.get(0).unwrap_or_default().to_string())
                    }
                    tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {}
                    _ => {}
                }
            }
            last
        })
    }

    pub fn target(&self) -> PgTarget {
        self.target.clone().expect("a PostgreSQL place")
    }
}

/// The PostgreSQL server of this test binary.
pub struct Server {
    port: u16,
    databases: AtomicUsize,
}

static SERVER: OnceLock<Server> = OnceLock::new();

pub const PASSWORD: &str = "kiln-test-pw";

pub fn server() -> &'static Server {
    SERVER.get_or_init(Server::start)
}

impl Server {
    fn start() -> Server {
        let dir = std::env::temp_dir().join(format!("kiln-pg-{}", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .args(["start", dir.to_str().unwrap(), "0"])
            .env("KILN_PG_WATCH", std::process::id().to_string())
            .env("KILN_PG_FAST", "1")
            .env("KILN_PG_CLEAN", "1")
            .env("KILN_PG_PASSWORD", PASSWORD)
            .output()
            .expect("cannot run scripts/pg.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/pg.sh could not start PostgreSQL ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let port = stdout
            .lines()
            .find_map(|l| l.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("scripts/pg.sh printed no port: {stdout}"));
        Server { port, databases: AtomicUsize::new(0) }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://kiln:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// A new, empty database for one test.
    pub fn fresh_database(&self) -> PgTarget {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        });
        PgTarget::parse(&self.url(&name)).unwrap()
    }
}

/// Runs each `fn name(place: &Place)` as two tests, `sqlite::name` and
/// `postgres::name`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(&super::support::Place::new(super::support::Kind::Sqlite)); })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(&super::support::Place::new(super::support::Kind::Postgres)); })*
        }
    };
}
