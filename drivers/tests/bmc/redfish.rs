//! The `redfish` driver against the sushy-tools emulator and misbehaving
//! servers.

use std::time::{Duration, Instant};

use kiln_drivers::redfish::RedfishBmc;
use kiln_drivers::{Bmc, Boot, DriverError, Power, PowerAction};

use crate::info;
use crate::peers::{self, Peer};
use crate::responder::{self, Responder};

/// A driver for system `node-<i>` of `peer`, with extra `driver_info`.
fn bmc(peer: &Peer, i: usize, extra: &[(&str, &str)]) -> RedfishBmc {
    let address = format!("http://127.0.0.1:{}", peer.port);
    let system = peer.system_id(i);
    let mut pairs = vec![
        ("address", address.as_str()),
        ("system_id", system.as_str()),
        ("username", "admin"),
        ("password", "password"),
        // The emulator applies a reset 1 to 11 s after it accepted it.
        ("power_timeout", "40"),
    ];
    pairs.extend_from_slice(extra);
    let info = info(&pairs);
    kiln_drivers::validate("redfish", &info).unwrap();
    RedfishBmc::from_info(&info).unwrap()
}

#[tokio::test]
async fn power_on_soft_off_on_and_off() {
    let bmc = bmc(peers::redfish(), 1, &[]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    bmc.set_power_state(PowerAction::On).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    bmc.set_power_state(PowerAction::SoftOff).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    bmc.set_power_state(PowerAction::On).await.unwrap();
    bmc.set_power_state(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    // Already off: nothing to do, and no error.
    bmc.set_power_state(PowerAction::Off).await.unwrap();
}

#[tokio::test]
async fn reboot_switches_on_a_node_that_is_off_and_restarts_one_that_is_on() {
    let bmc = bmc(peers::redfish(), 2, &[]);
    bmc.set_power_state(PowerAction::Reboot).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    bmc.set_power_state(PowerAction::Reboot).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
}

#[tokio::test]
async fn boot_device_once_and_persistent_reads_back() {
    let bmc = bmc(peers::redfish(), 3, &[]);
    bmc.set_boot_device(Boot::Pxe, false).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Pxe));
    bmc.set_boot_device(Boot::Disk, true).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Disk));
    bmc.set_boot_device(Boot::Cdrom, false).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Cdrom));
}

#[tokio::test]
async fn inspect_reports_what_the_system_exposes() {
    let peer = peers::redfish();
    let bmc = bmc(peer, 4, &[]);
    let found = bmc.inspect().await.unwrap();
    let facts = &found.facts;
    let uuid = peer.system_id(4).rsplit('/').next().unwrap().to_string();
    assert_eq!(facts.get("system_uuid"), Some(&uuid), "{facts:?}");
    assert_eq!(facts.get("manufacturer").map(String::as_str), Some("Sushy Emulator"), "{facts:?}");
    // The emulator's fake systems have no CPU or memory summary: nothing is made up.
    assert!(!facts.contains_key("cpus") && !facts.contains_key("memory_mb"), "{facts:?}");
    // Its one NIC, as the emulator itself lists it.
    let listed = peer.resource(&format!("{}/EthernetInterfaces", peer.system_id(4)));
    let member = peer.resource(listed["Members"][0]["@odata.id"].as_str().unwrap());
    let mac = member["MACAddress"].as_str().unwrap().to_ascii_lowercase();
    assert_eq!(found.nics.iter().map(|n| n.mac.as_str()).collect::<Vec<_>>(), [mac.as_str()], "{found:?}");
}

#[tokio::test]
async fn inspect_keeps_the_nics_with_a_mac_and_leaves_out_the_others() {
    let server = Responder::start(|_, path, _| match path {
        "/redfish/v1/Systems/1" => (
            "200 OK",
            r#"{"Id": "1", "PowerState": "On",
                "EthernetInterfaces": {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces"}}"#
                .into(),
        ),
        "/redfish/v1/Systems/1/EthernetInterfaces" => (
            "200 OK",
            r#"{"Members": [
                {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/NIC.1"},
                {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/NIC.2"},
                {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/gone"},
                {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/usb0"},
                {"@odata.id": "/redfish/v1/Systems/1/EthernetInterfaces/NIC.3", "Id": "NIC.3",
                 "MACAddress": "B8:CE:F6:00:00:03"}
            ]}"#
            .into(),
        ),
        "/redfish/v1/Systems/1/EthernetInterfaces/NIC.1" => {
            ("200 OK", r#"{"Id": "NIC.1", "MACAddress": "B8-CE-F6-00-00-01"}"#.into())
        }
        "/redfish/v1/Systems/1/EthernetInterfaces/NIC.2" => {
            ("200 OK", r#"{"Id": "NIC.2", "MACAddress": "", "PermanentMACAddress": "b8:ce:f6:00:00:02"}"#.into())
        }
        "/redfish/v1/Systems/1/EthernetInterfaces/usb0" => ("200 OK", r#"{"Id": "usb0"}"#.into()),
        _ => ("404 Not Found", "{}".into()),
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let found = bmc.inspect().await.unwrap();
    let nics: Vec<(&str, &str)> = found.nics.iter().map(|n| (n.name.as_str(), n.mac.as_str())).collect();
    assert_eq!(
        nics,
        [("NIC.1", "b8:ce:f6:00:00:01"), ("NIC.2", "b8:ce:f6:00:00:02"), ("NIC.3", "b8:ce:f6:00:00:03")],
        "a member answered 404 and one without a MAC are left out; a listed whole one is not read again"
    );
}

#[tokio::test]
async fn a_system_without_ethernet_interfaces_has_no_nics() {
    let server = Responder::start(|_, path, _| match path {
        "/redfish/v1/Systems/1" => ("200 OK", r#"{"Id": "1", "PowerState": "On", "UUID": "u-1"}"#.into()),
        _ => ("404 Not Found", "{}".into()),
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let found = bmc.inspect().await.unwrap();
    assert_eq!(found.facts["system_uuid"], "u-1");
    assert!(found.nics.is_empty(), "{found:?}");
}

#[tokio::test]
async fn inspect_reads_processor_and_memory_summaries() {
    let server = Responder::start(|_, path, _| match path {
        "/redfish/v1/Systems/1" => (
            "200 OK",
            r#"{"Id": "1", "PowerState": "On", "UUID": "u-1",
                "ProcessorSummary": {"Count": 2, "Model": "Intel Xeon Gold 6338", "LogicalProcessorCount": 128},
                "MemorySummary": {"TotalSystemMemoryGiB": 256}}"#
                .into(),
        ),
        _ => ("404 Not Found", "{}".into()),
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let facts = bmc.inspect().await.unwrap().facts;
    assert_eq!(facts["cpus"], "2");
    assert_eq!(facts["cpu_model"], "Intel Xeon Gold 6338");
    assert_eq!(facts["cpu_threads"], "128");
    assert_eq!(facts["memory_mb"], "262144");
}

#[tokio::test]
async fn the_only_system_is_found_without_system_id() {
    let peer = peers::redfish_single();
    let address = format!("http://127.0.0.1:{}", peer.port);
    let bmc = RedfishBmc::from_info(&info(&[("address", &address), ("username", "admin"), ("password", "password")]))
        .unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    assert_eq!(bmc.system_path().await.unwrap(), peer.system_id(1));
}

#[tokio::test]
async fn several_systems_need_a_system_id() {
    let address = format!("http://127.0.0.1:{}", peers::redfish().port);
    let bmc = RedfishBmc::from_info(&info(&[("address", &address), ("username", "admin"), ("password", "password")]))
        .unwrap();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::AmbiguousSystem { .. }), "{err}");
    assert!(err.to_string().contains("set driver_info.system_id"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_that_does_not_show_it() {
    let bmc = bmc(peers::redfish(), 6, &[("password", "wrong-secret-4711")]);
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("check username and password"), "{err}");
    for shown in [err.to_string(), format!("{err:?}"), format!("{bmc:?}")] {
        assert!(!shown.contains("wrong-secret-4711"), "{shown}");
    }
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    let address = format!("http://127.0.0.1:{}", responder::closed_port());
    let bmc = RedfishBmc::from_info(&info(&[("address", &address), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let err = bmc.get_power_state().await.unwrap_err();
    match &err {
        DriverError::Unreachable { reason, .. } => assert!(reason.to_lowercase().contains("refused"), "{err}"),
        _ => panic!("expected Unreachable, got {err}"),
    }
}

#[tokio::test]
async fn a_bmc_that_takes_no_connection_is_unreachable_within_the_connect_timeout() {
    let dead = responder::never_accepts();
    let address = format!("http://{}", dead.addr);
    let bmc = RedfishBmc::from_info(&info(&[
        ("address", &address),
        ("system_id", "/redfish/v1/Systems/1"),
        ("timeout", "30"),
        ("connect_timeout", "1"),
    ]))
    .unwrap();
    let started = Instant::now();
    let err = bmc.get_power_state().await.unwrap_err();
    let took = started.elapsed();
    match &err {
        DriverError::Unreachable { reason, .. } => assert!(reason.contains("no connection within 1 s"), "{err}"),
        _ => panic!("expected Unreachable, got {err}"),
    }
    // Not the request timeout, and not retried.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn a_bmc_that_never_answers_times_out_within_the_timeout() {
    let addr = responder::hung().await;
    let address = format!("http://{addr}");
    let bmc = RedfishBmc::from_info(&info(&[
        ("address", &address),
        ("system_id", "/redfish/v1/Systems/1"),
        ("timeout", "1"),
    ]))
    .unwrap();
    let started = Instant::now();
    let err = bmc.get_power_state().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, DriverError::Timeout { seconds: 1, .. }), "{err}");
    // Not retried: one bounded wait.
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn http_500_is_a_bmc_error_after_bounded_retries() {
    let server = Responder::start(|_, _, _| {
        (
            "500 Internal Server Error",
            r#"{"error": {"code": "Base.1.0.InternalError", "message": "The service is on fire"}}"#.into(),
        )
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let err = bmc.get_power_state().await.unwrap_err();
    match &err {
        DriverError::Bmc { detail, .. } => {
            assert!(detail.contains("HTTP 500 Internal Server Error"), "{err}");
            assert!(detail.contains("The service is on fire"), "{err}");
        }
        _ => panic!("expected a BMC error, got {err}"),
    }
    assert_eq!(server.hits(), 3, "a GET answered 500 is tried three times");
}

#[tokio::test]
async fn a_failed_reset_is_not_repeated() {
    let server = Responder::start(|method, _, _| match method {
        "GET" => ("200 OK", r#"{"PowerState": "Off"}"#.into()),
        _ => ("503 Service Unavailable", "busy".into()),
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let err = bmc.set_power_state(PowerAction::On).await.unwrap_err();
    assert!(matches!(&err, DriverError::Bmc { detail, .. } if detail.contains("HTTP 503")), "{err}");
    assert_eq!(server.hits(), 2, "one GET, one POST");
}

#[tokio::test]
async fn malformed_json_is_a_bad_reply() {
    let server = Responder::start(|_, _, _| ("200 OK", "{\"PowerState\": \"On\", garbage".into())).await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::BadReply { .. }), "{err}");

    let server = Responder::start(|_, _, _| ("200 OK", r#"{"Id": "1"}"#.into())).await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(&err, DriverError::BadReply { detail, .. } if detail.contains("no PowerState")), "{err}");
}

#[tokio::test]
async fn a_power_change_that_never_comes_times_out() {
    let server = Responder::start(|method, _, _| match method {
        "GET" => ("200 OK", r#"{"PowerState": "Off"}"#.into()),
        _ => ("204 No Content", String::new()),
    })
    .await;
    let bmc = RedfishBmc::from_info(&info(&[
        ("address", &server.url()),
        ("system_id", "/redfish/v1/Systems/1"),
        ("power_timeout", "1.5"),
    ]))
    .unwrap();
    let err = bmc.set_power_state(PowerAction::On).await.unwrap_err();
    assert!(matches!(err, DriverError::PowerTimeout { seconds: 2, .. }), "{err}");
}

#[tokio::test]
async fn a_bmc_that_wants_if_match_gets_the_etag() {
    let server = Responder::start(|method, _, head| match method {
        "GET" => ("200 OK", r#"{"PowerState": "Off", "Boot": {"BootSourceOverrideTarget": "Pxe"}}"#.into()),
        "PATCH" if head.to_ascii_lowercase().contains("if-match: \"v7\"") => ("204 No Content", String::new()),
        _ => ("428 Precondition Required", r#"{"error": {"message": "If-Match required"}}"#.into()),
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    // The responder sends no ETag: the 428 stands, with the BMC's words.
    let err = bmc.set_boot_device(Boot::Pxe, false).await.unwrap_err();
    assert!(matches!(&err, DriverError::Bmc { detail, .. } if detail.contains("If-Match required")), "{err}");

    let server = Responder::start(|method, _, head| match method {
        "GET" => ("200 OK\r\nETag: \"v7\"", r#"{"PowerState": "Off"}"#.into()),
        "PATCH" if head.to_ascii_lowercase().contains("if-match: \"v7\"") => ("204 No Content", String::new()),
        _ => ("412 Precondition Failed", "{}".into()),
    })
    .await;
    let bmc =
        RedfishBmc::from_info(&info(&[("address", &server.url()), ("system_id", "/redfish/v1/Systems/1")])).unwrap();
    bmc.set_boot_device(Boot::Pxe, false).await.unwrap();
    assert_eq!(server.hits(), 3, "PATCH refused, GET for the ETag, PATCH with If-Match");
}

#[tokio::test]
async fn tls_is_verified_against_the_ca_file() {
    let peer = peers::redfish_tls();
    let address = format!("https://127.0.0.1:{}", peer.port);
    let ca = peer.dir.join("ca.pem").to_string_lossy().into_owned();
    let base = [("address", address.as_str()), ("username", "admin"), ("password", "password")];

    // Verified by default: a private CA is not trusted.
    let bmc = RedfishBmc::from_info(&info(&base)).unwrap();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Unreachable { reason, .. } if reason.to_lowercase().contains("certificate")),
        "{err}"
    );

    let mut trusted = base.to_vec();
    trusted.push(("ca_file", &ca));
    let bmc = RedfishBmc::from_info(&info(&trusted)).unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);

    let mut unverified = base.to_vec();
    unverified.push(("verify_tls", "false"));
    let bmc = RedfishBmc::from_info(&info(&unverified)).unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
}

/// Drivers share HTTPS clients by their settings, and a `ca_file`'s
/// settings are its contents, not its path: a bundle replaced on disk is
/// what the drivers built afterwards trust, while a driver built before
/// keeps the one it was built with.
#[tokio::test]
async fn a_ca_file_replaced_on_disk_is_trusted_by_drivers_built_after() {
    let peer = peers::redfish_tls();
    let address = format!("https://127.0.0.1:{}", peer.port);
    let bundle = peer.dir.join("replaced-ca.pem");
    let path = bundle.to_string_lossy().into_owned();
    let info = info(&[("address", &address), ("username", "admin"), ("password", "password"), ("ca_file", &path)]);
    let untrusted = |err: &DriverError| matches!(err, DriverError::Unreachable { reason, .. } if reason.to_lowercase().contains("certificate"));

    // First the emulator's own certificate, which is not its issuer.
    std::fs::copy(peer.dir.join("cert.pem"), &bundle).unwrap();
    let before = RedfishBmc::from_info(&info).unwrap();
    let err = before.get_power_state().await.unwrap_err();
    assert!(untrusted(&err), "{err}");

    // Then the CA that signed it, under the same path.
    std::fs::copy(peer.dir.join("ca.pem"), &bundle).unwrap();
    let after = RedfishBmc::from_info(&info).unwrap();
    assert_eq!(after.get_power_state().await.unwrap(), Power::Off);
    let err = before.get_power_state().await.unwrap_err();
    assert!(untrusted(&err), "the driver built before keeps its bundle: {err}");
    std::fs::remove_file(&bundle).unwrap();
}

/// One client used again and again (the daemon keeps one per BMC) keeps
/// answering what the emulator holds: repeated reads agree, and repeated
/// writes of one boot device leave exactly that device set. (The emulator
/// keeps the target but reports every override as `Continuous`, so the
/// `Once` kiln sends is checked where kiln's requests are recorded, in the
/// integration tests.)
#[tokio::test]
async fn one_client_called_repeatedly_agrees_with_the_emulator() {
    let bmc = bmc(peers::redfish(), 5, &[]);
    for _ in 0..5 {
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    }
    for _ in 0..5 {
        bmc.set_boot_device(Boot::Pxe, false).await.unwrap();
    }
    let system = peers::redfish().system(5);
    assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Pxe", "{system}");
}
