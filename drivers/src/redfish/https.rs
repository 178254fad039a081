//! The HTTPS clients that Redfish BMCs share.
//!
//! Why: building a `reqwest::Client` with rustls loads and parses the
//! system's trust anchors. On this project's 2-core CI machine that took
//! 1.8 ms of CPU and kept about 106 KB per client. With one client per BMC,
//! a site of 10,000 Redfish BMCs held about 1 GB in copies of the same root
//! store, and spent 18 s of CPU building them.
//!
//! A client is made to be shared. It keeps a pool of connections per host,
//! and everything that differs between BMCs goes on each request: the
//! address, the credentials or session token, and the request timeout. So a
//! BMC gets the client of its [`Settings`], the only things fixed when a
//! client is built: whether TLS is verified, the CA bundle it trusts, and the
//! connect timeout. A site uses a handful of such clients, whatever its size.
//!
//! - **The key is the bundle's contents, not its path.** A bundle replaced on
//!   disk gets a client of its own the next time a BMC's client is built,
//!   as a fresh client did before.
//! - **At most [`MAX_SHARED`] clients are kept.** Beyond that, a BMC gets a
//!   client of its own, as before. The count stays bounded however many
//!   distinct settings the nodes name.
//! - **Idle connections are the pool's.** An idle connection to a BMC stays
//!   open for reqwest's idle timeout (90 s) after its driver is dropped. It
//!   used to close with the driver's own client. Nothing else is kept per
//!   BMC.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use reqwest::Client;

/// What a client is built with; BMCs with equal settings share one.
#[derive(PartialEq, Eq, Hash)]
pub(super) struct Settings {
    /// `verify_tls`.
    pub verify_tls: bool,
    /// The contents of `ca_file`, when one is named: then its only trust
    /// anchors.
    pub ca_bundle: Option<Vec<u8>>,
    pub connect_timeout: Duration,
}

/// How many distinct settings get a shared client.
const MAX_SHARED: usize = 64;

static SHARED: LazyLock<Mutex<HashMap<Settings, Client>>> = LazyLock::new(Mutex::default);

/// The client for `settings`: the shared one, or one made by `build` (and
/// then shared, while there is room). Builds run under the lock, so BMCs
/// connecting at once with the same settings wait for one build instead of
/// each building its own.
pub(super) fn client<E>(settings: Settings, build: impl FnOnce(&Settings) -> Result<Client, E>) -> Result<Client, E> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(client) = shared.get(&settings) {
        return Ok(client.clone());
    }
    let client = build(&settings)?;
    if shared.len() < MAX_SHARED {
        shared.insert(settings, client.clone());
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(connect_ms: u64) -> Settings {
        Settings { verify_tls: true, ca_bundle: None, connect_timeout: Duration::from_millis(connect_ms) }
    }

    fn built(builds: &mut usize) -> impl FnOnce(&Settings) -> Result<Client, String> + '_ {
        move |_| {
            *builds += 1;
            Client::builder().build().map_err(|e| e.to_string())
        }
    }

    #[test]
    fn equal_settings_build_one_client_and_other_settings_their_own() {
        // A connect timeout no other test uses: the map is the process's.
        let mut builds = 0;
        client(settings(7_001), built(&mut builds)).unwrap();
        client(settings(7_001), built(&mut builds)).unwrap();
        assert_eq!(builds, 1);
        client(settings(7_002), built(&mut builds)).unwrap();
        client(Settings { verify_tls: false, ..settings(7_001) }, built(&mut builds)).unwrap();
        client(Settings { ca_bundle: Some(b"other".to_vec()), ..settings(7_001) }, built(&mut builds)).unwrap();
        assert_eq!(builds, 4);
    }

    #[test]
    fn a_failed_build_is_not_kept() {
        let failing = |_: &Settings| Err::<Client, _>("no");
        assert_eq!(client(settings(7_003), failing).unwrap_err(), "no");
        let mut builds = 0;
        client(settings(7_003), built(&mut builds)).unwrap();
        assert_eq!(builds, 1);
    }
}
