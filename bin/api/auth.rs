//! `api_auth = "http_basic"`: callers send HTTP basic credentials, checked
//! against an htpasswd file of bcrypt hashes (`htpasswd -B`), as Ironic's
//! standalone `http_basic` strategy does.
//!
//! bcrypt is slow on purpose (tens of milliseconds a check), and the
//! clients send the same credentials with every request; a credential that
//! passed is remembered (a bounded set, in memory only) so that polling a
//! node costs one check, not one per poll. Passwords are never logged: the
//! errors here name the user at most.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;

/// The most credentials remembered as passed; past it the set is emptied.
const REMEMBERED: usize = 1024;

/// The htpasswd file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: expected USER:BCRYPT_HASH (htpasswd -B)")]
    Line { path: PathBuf, line: usize },
    #[error("{path} holds no user")]
    Empty { path: PathBuf },
}

/// The users of an htpasswd file and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    passed: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd").field("users", &self.users.len()).finish_non_exhaustive()
    }
}

impl Htpasswd {
    /// Reads a file of `user:$2y$...` lines (blank lines and `#` comments
    /// skipped); any other kind of hash is refused.
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read { path: path.to_path_buf(), source })?;
        Htpasswd::parse(&text).map_err(|e| match e {
            Parse::Line(line) => HtpasswdError::Line { path: path.to_path_buf(), line },
            Parse::Empty => HtpasswdError::Empty { path: path.to_path_buf() },
        })
    }

    fn parse(text: &str) -> Result<Htpasswd, Parse> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or(Parse::Line(i + 1))?;
            let bcrypt = ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|p| hash.starts_with(p));
            if user.is_empty() || !bcrypt {
                return Err(Parse::Line(i + 1));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(Parse::Empty);
        }
        Ok(Htpasswd { users, passed: Mutex::new(HashSet::new()) })
    }

    /// Whether an `Authorization` header's value is a basic credential of
    /// a user of the file with the right password. Blocking (bcrypt): call
    /// it off the server's threads.
    pub fn check(&self, authorization: &str) -> bool {
        if self.passed.lock().map(|p| p.contains(authorization)).unwrap_or(false) {
            return true;
        }
        let Some((user, password)) = basic_credentials(authorization) else { return false };
        let Some(hash) = self.users.get(&user) else { return false };
        let ok = bcrypt::verify(password.as_bytes(), hash).unwrap_or(false);
        if ok && let Ok(mut passed) = self.passed.lock() {
            if passed.len() >= REMEMBERED {
                passed.clear();
            }
            passed.insert(authorization.to_string());
        }
        ok
    }
}

enum Parse {
    Line(usize),
    Empty,
}

/// The user and password of `Basic BASE64(user:password)`.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn only_the_right_password_of_a_known_user_passes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let h = Htpasswd::parse(&format!("# users\n\nadmin:{hash}\n")).ok().unwrap();
        assert!(h.check(&basic("admin", "s3cret")));
        assert!(h.check(&basic("admin", "s3cret")), "remembered");
        assert!(!h.check(&basic("admin", "wrong")));
        assert!(!h.check(&basic("other", "s3cret")));
        assert!(!h.check("Bearer abc"));
        assert!(!h.check("Basic !!!"));
    }

    #[test]
    fn lines_that_are_not_bcrypt_are_refused() {
        assert!(matches!(Htpasswd::parse("admin:{SHA}abc\n"), Err(Parse::Line(1))));
        assert!(matches!(Htpasswd::parse("nocolon\n"), Err(Parse::Line(1))));
        assert!(matches!(Htpasswd::parse("# only a comment\n"), Err(Parse::Empty)));
    }
}
