//! The `redfish` driver's session auth (`auth_method`), against
//! [`SessionBmc`]: the sushy-tools emulator has no SessionService to prove
//! it on.

use std::time::Duration;

use kiln_drivers::redfish::RedfishBmc;
use kiln_drivers::{Bmc, DriverError, Power, PowerAction};

use crate::info;
use crate::peers;
use crate::responder::{Offer, SESSIONS, SessionBmc};

const FULL: Offer = Offer { advertised: true, served: true, basic: false };

/// A driver for the responder's system, with extra `driver_info` (a key
/// given again replaces the default).
fn driver(bmc: &SessionBmc, extra: &[(&str, &str)]) -> RedfishBmc {
    let address = bmc.url();
    let mut pairs = vec![
        ("address", address.as_str()),
        ("system_id", "/redfish/v1/Systems/1"),
        ("username", "admin"),
        ("password", "password"),
        ("timeout", "5"),
        ("power_timeout", "5"),
    ];
    pairs.extend_from_slice(extra);
    let info = info(&pairs);
    kiln_drivers::validate("redfish", &info).unwrap();
    RedfishBmc::from_info(&info).unwrap()
}

/// The root is read without credentials, then one login without them (to
/// the path `Links.Sessions` names), then every request carries the token
/// and never the password.
fn assert_one_session(bmc: &SessionBmc) {
    let seen = bmc.seen();
    assert!(seen.len() >= 3, "{seen:#?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/redfish/v1/"));
    assert_eq!((seen[1].method.as_str(), seen[1].path.as_str(), seen[1].status), ("POST", SESSIONS, 201));
    for s in &seen[..2] {
        assert!(!s.authorization && s.token.is_none(), "{s:?}");
    }
    for s in &seen[2..] {
        assert!(!s.authorization, "basic auth sent after the login: {s:?}");
        assert_eq!(s.token.as_deref(), Some("tok-1-5ecret"), "{s:?}");
        assert!(s.status < 300, "{s:?}");
    }
    assert_eq!(bmc.logins(), 1);
}

#[tokio::test]
async fn session_auth_logs_in_once_and_then_sends_only_the_token() {
    let server = SessionBmc::start(FULL).await;
    let bmc = driver(&server, &[("auth_method", "session")]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    bmc.set_power_state(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    assert_one_session(&server);
    assert!(server.seen().iter().any(|s| s.method == "POST" && s.path.ends_with("ComputerSystem.Reset")));
    let shown = format!("{bmc:?}");
    assert!(!shown.contains("tok-1") && shown.contains("session (logged in)"), "{shown}");
}

#[tokio::test]
async fn auto_uses_the_session_a_service_offers() {
    let server = SessionBmc::start(FULL).await;
    let bmc = driver(&server, &[]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    assert_one_session(&server);
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_login_and_never_shown() {
    for method in ["session", "auto"] {
        let server = SessionBmc::start(FULL).await;
        let bmc = driver(&server, &[("auth_method", method), ("password", "wr0ng-session-4711")]);
        let err = bmc.get_power_state().await.unwrap_err();
        assert!(matches!(err, DriverError::Auth { .. }), "{method}: {err}");
        assert!(err.to_string().contains("check username and password"), "{err}");
        for shown in [err.to_string(), format!("{err:?}"), format!("{bmc:?}")] {
            assert!(!shown.contains("wr0ng-session-4711"), "{shown}");
        }
        assert_eq!(server.logins(), 1, "{method}: a refused login is not repeated");
        // Nor did it fall back to basic auth, or try the system.
        assert_eq!(server.seen().len(), 2, "{method}: {:#?}", server.seen());
    }
}

#[tokio::test]
async fn an_expired_session_is_replaced_by_one_new_login() {
    let server = SessionBmc::start(FULL).await;
    let bmc = driver(&server, &[("auth_method", "session")]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    server.expire_sessions();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    assert_eq!(server.logins(), 2);
    let seen = server.seen();
    let refused: Vec<_> = seen.iter().filter(|s| s.status == 401).collect();
    assert_eq!(refused.len(), 1, "{seen:#?}");
    assert_eq!(refused[0].token.as_deref(), Some("tok-1-5ecret"));
    let last = seen.last().unwrap();
    assert_eq!((last.token.as_deref(), last.status), (Some("tok-2-5ecret"), 200));
    assert!(seen.iter().all(|s| !s.authorization), "{seen:#?}");
}

#[tokio::test]
async fn a_token_refused_again_after_the_new_login_is_an_auth_error() {
    let server = SessionBmc::start(FULL).await;
    server.reject_tokens();
    let bmc = driver(&server, &[("auth_method", "session")]);
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Auth { .. }), "{err}");
    assert!(!format!("{err:?}{bmc:?}").contains("5ecret"), "{err:?} {bmc:?}");
    assert_eq!(server.logins(), 2, "one login, and one more after the token was refused");
    let gets = server.seen().iter().filter(|s| s.path == "/redfish/v1/Systems/1").count();
    assert_eq!(gets, 2, "the request is sent once more, not again and again");
}

#[tokio::test]
async fn session_auth_without_a_session_service_is_a_clear_error() {
    let server = SessionBmc::start(Offer { advertised: false, served: false, basic: true }).await;
    let bmc = driver(&server, &[("auth_method", "session")]);
    let err = bmc.get_power_state().await.unwrap_err();
    let DriverError::Bmc { detail, .. } = &err else { panic!("expected a BMC error, got {err}") };
    assert!(
        detail.starts_with(
            "Redfish session login failed (HTTP 404 Not Found from POST /redfish/v1/SessionService/Sessions"
        ),
        "{err}"
    );
    assert!(detail.contains("no working SessionService, set driver_info.auth_method to basic or auto"), "{err}");
    assert!(!err.to_string().contains("password"), "{err}");
    // Asked for sessions, the driver never falls back to basic auth.
    assert!(server.seen().iter().all(|s| !s.authorization));
    bmc.get_power_state().await.unwrap_err();
    assert_eq!(server.logins(), 2, "each call tries to log in");
}

#[tokio::test]
async fn auto_falls_back_to_basic_auth_when_the_login_fails_and_keeps_to_it() {
    let server = SessionBmc::start(Offer { advertised: true, served: false, basic: true }).await;
    let bmc = driver(&server, &[]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    bmc.set_power_state(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    let seen = server.seen();
    assert_eq!(server.logins(), 1, "the failed login is not tried again: {seen:#?}");
    assert_eq!(seen[1].status, 405, "{seen:#?}");
    for s in &seen[2..] {
        assert!(s.authorization && s.token.is_none() && s.status < 300, "{s:?}");
    }
    assert!(format!("{bmc:?}").contains(r#"auth: "basic""#), "{bmc:?}");
}

#[tokio::test]
async fn auto_without_an_offer_and_basic_never_log_in() {
    for (offer, method) in [
        (Offer { advertised: false, served: false, basic: true }, "auto"),
        (Offer { advertised: true, served: true, basic: true }, "basic"),
    ] {
        let server = SessionBmc::start(offer).await;
        let bmc = driver(&server, &[("auth_method", method)]);
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
        let seen = server.seen();
        assert_eq!(server.logins(), 0, "{method}: {seen:#?}");
        let roots = seen.iter().filter(|s| s.path == "/redfish/v1/").count();
        assert_eq!(roots, usize::from(method == "auto"), "{method}: auto reads the root once, basic never");
        assert!(seen.iter().filter(|s| s.path != "/redfish/v1/").all(|s| s.authorization && s.status == 200));
    }
}

#[tokio::test]
async fn a_dropped_driver_deletes_its_session() {
    let server = SessionBmc::start(FULL).await;
    let bmc = driver(&server, &[("auth_method", "session")]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    drop(bmc);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.deleted().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.deleted(), [format!("{SESSIONS}/1")]);
    let delete = server.seen().into_iter().find(|s| s.method == "DELETE").unwrap();
    assert_eq!((delete.token.as_deref(), delete.authorization), (Some("tok-1-5ecret"), false));
}

/// The emulator's service root offers no sessions: `auto` (the default, as
/// every emulator test uses it) and `basic` both speak basic auth to it.
#[tokio::test]
async fn auto_and_basic_work_on_the_emulator() {
    let peer = peers::redfish();
    let address = format!("http://127.0.0.1:{}", peer.port);
    let system = peer.system_id(5);
    for method in ["auto", "basic"] {
        let info = info(&[
            ("address", &address),
            ("system_id", &system),
            ("username", "admin"),
            ("password", "password"),
            ("auth_method", method),
        ]);
        kiln_drivers::validate("redfish", &info).unwrap();
        let bmc = RedfishBmc::from_info(&info).unwrap();
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off, "{method}");
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off, "{method}");
        let shown = format!("{bmc:?}");
        assert!(shown.contains(r#"auth: "basic""#), "{shown}");
    }
}

/// What `auto` learned, and a driver built knowing it: no root read, and
/// straight to what works (a login at the standard path first; this
/// service keeps its sessions elsewhere, so its root is read after all).
#[tokio::test]
async fn auto_learns_its_profile_and_a_driver_knowing_it_probes_nothing() {
    use kiln_drivers::{Profile, RedfishAuth};
    let served = SessionBmc::start(FULL).await;
    let bmc = driver(&served, &[]);
    assert_eq!(bmc.profile(), Profile::default(), "nothing learned before a call");
    bmc.get_power_state().await.unwrap();
    let learned = bmc.profile();
    assert_eq!(learned.redfish_auth, Some(RedfishAuth::Session));
    assert_eq!(learned.redfish_sessions, Some(true));

    let refused = SessionBmc::start(Offer { advertised: true, served: false, basic: true }).await;
    let bmc = driver(&refused, &[]);
    bmc.get_power_state().await.unwrap();
    let basic = bmc.profile();
    assert_eq!((basic.redfish_auth, basic.redfish_sessions), (Some(RedfishAuth::Basic), Some(false)));
    let before = refused.seen().len();
    let again = driver(&refused, &[]).knowing(&basic);
    assert_eq!(again.get_power_state().await.unwrap(), Power::On);
    let seen = &refused.seen()[before..];
    assert_eq!(seen.len(), 1, "one request, the read itself: {seen:#?}");
    assert!(seen[0].authorization && seen[0].path == "/redfish/v1/Systems/1", "{seen:#?}");
    assert_eq!(again.profile(), basic);

    // A setting decides: nothing learned, nothing taken.
    let told = driver(&refused, &[("auth_method", "basic")]).knowing(&learned);
    told.get_power_state().await.unwrap();
    assert_eq!(told.profile(), Profile::default());

    let before = served.seen().len();
    let again = driver(&served, &[]).knowing(&learned);
    assert_eq!(again.get_power_state().await.unwrap(), Power::On);
    let paths: Vec<String> = served.seen()[before..].iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert_eq!(paths[0], "POST /redfish/v1/SessionService/Sessions", "{paths:#?}");
    assert_eq!(paths[1], "GET /redfish/v1/", "{paths:#?}");
    assert_eq!(paths[2], format!("POST {SESSIONS}"), "{paths:#?}");
    assert_eq!(again.profile(), learned);
}
