//! The `ipmi` driver against the pyghmi IPMI simulator, with ipmitool.

use std::time::{Duration, Instant};

use kiln_drivers::ipmi::IpmiBmc;
use kiln_drivers::{Bmc, Boot, DriverError, Power, PowerAction};

use crate::info;
use crate::peers::{self, IPMI_BMCS};

/// A driver for simulated BMC number `i` (0-based), with extra `driver_info`.
fn bmc(i: u16, extra: &[(&str, &str)]) -> IpmiBmc {
    assert!(i < IPMI_BMCS);
    let port = (peers::ipmi().port + i).to_string();
    let mut pairs = vec![
        ("address", "127.0.0.1"),
        ("port", port.as_str()),
        ("username", "admin"),
        ("password", "password"),
        ("min_command_interval", "0.05"),
        // ipmitool waits a third of this per message (`-N 5`, one retry):
        // the simulator is one Python process, and while the test binary
        // starts the Redfish emulators and sshd beside it on two cores it
        // can miss a 1 s window (a CI run lost six tests to that at once).
        ("timeout", "15"),
        ("power_timeout", "20"),
    ];
    pairs.extend_from_slice(extra);
    let info = info(&pairs);
    kiln_drivers::validate("ipmi", &info).unwrap();
    IpmiBmc::from_info(&info).unwrap()
}

#[tokio::test]
async fn power_on_soft_off_on_and_off() {
    let bmc = bmc(0, &[]);
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    bmc.set_power_state(PowerAction::On).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    bmc.set_power_state(PowerAction::SoftOff).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
    bmc.set_power_state(PowerAction::On).await.unwrap();
    bmc.set_power_state(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
}

#[tokio::test]
async fn reboot_switches_on_a_node_that_is_off_and_cycles_one_that_is_on() {
    let bmc = bmc(1, &[]);
    bmc.set_power_state(PowerAction::Reboot).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
    bmc.set_power_state(PowerAction::Reboot).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::On);
}

#[tokio::test]
async fn boot_device_reads_back() {
    let bmc = bmc(2, &[]);
    bmc.set_boot_device(Boot::Pxe, false).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Pxe));
    // The simulator does not keep the persistent flag; the device is what it keeps.
    bmc.set_boot_device(Boot::Disk, true).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Disk));
    bmc.set_boot_device(Boot::Cdrom, false).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Cdrom));
    bmc.set_boot_device(Boot::Bios, false).await.unwrap();
    assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Bios));
}

#[tokio::test]
async fn inspect_reports_what_the_bmc_says_of_itself() {
    let found = bmc(3, &[]).inspect().await.unwrap();
    let facts = &found.facts;
    assert_eq!(facts.get("ipmi_version").map(String::as_str), Some("2.0"), "{facts:?}");
    assert!(found.nics.is_empty(), "IPMI lists no NICs: {found:?}");
}

#[tokio::test]
async fn a_wrong_password_is_an_auth_error_that_does_not_show_it() {
    let bmc = bmc(4, &[("password", "wrong-secret-4711")]);
    let started = Instant::now();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "a refused password is told at once");
    for shown in [err.to_string(), format!("{err:?}"), format!("{bmc:?}")] {
        assert!(!shown.contains("wrong-secret-4711"), "{shown}");
    }
}

#[tokio::test]
async fn commands_are_spaced_by_min_command_interval() {
    let bmc = bmc(5, &[("min_command_interval", "0.3")]);
    let started = Instant::now();
    for _ in 0..3 {
        bmc.get_power_state().await.unwrap();
    }
    // Two gaps of at least 0.3 s between the three commands.
    assert!(started.elapsed() >= Duration::from_millis(600), "took {:?}", started.elapsed());
}

/// The spacing is the endpoint's: two clients of one BMC whose other
/// settings differ (as two nodes' would), built with the endpoint's shared
/// state, space their commands as one.
#[tokio::test]
async fn the_spacing_holds_per_endpoint_across_clients_with_other_settings() {
    let port = (peers::ipmi().port + 5).to_string();
    let shared = kiln_drivers::EndpointState::default();
    let client = |timeout: &str| {
        let pairs = [
            ("address", "127.0.0.1"),
            ("port", port.as_str()),
            ("username", "admin"),
            ("password", "password"),
            ("min_command_interval", "1"),
            ("timeout", timeout),
        ];
        kiln_drivers::connect_at("ipmi", &info(&pairs), &shared).unwrap()
    };
    let (a, b) = (client("15"), client("16"));
    let started = Instant::now();
    let reads = |bmc: std::sync::Arc<dyn Bmc>| async move {
        for _ in 0..2 {
            bmc.get_power_state().await.unwrap();
        }
    };
    tokio::join!(reads(a), reads(b));
    // Four commands to one endpoint: three gaps of at least 1 s (each
    // client spaced on its own would take one gap and its two runs).
    assert!(started.elapsed() >= Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn nothing_listening_is_unreachable_within_the_timeout() {
    // No simulator on this port: the probe is refused at once.
    // (The simulators' start is what installs ipmitool on a fresh machine.)
    peers::ipmi();
    let port = peers::closed_udp_port().to_string();
    let info = info(&[("address", "127.0.0.1"), ("port", &port), ("password", "password"), ("timeout", "5")]);
    let bmc = IpmiBmc::from_info(&info).unwrap();
    let started = Instant::now();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_silent_bmc_is_unreachable_within_the_connect_timeout() {
    // Bound and never read: a BMC that is powered off or unplugged. Without
    // the probe ipmitool would retransmit for about 10 s (`-N 5 -R 1`).
    peers::ipmi();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let info = info(&[("address", "127.0.0.1"), ("port", &port), ("timeout", "20"), ("connect_timeout", "1")]);
    let bmc = IpmiBmc::from_info(&info).unwrap();
    let started = Instant::now();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("no answer to an IPMI probe within 1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// A BMC that answers the reachability probe (the first datagram it gets)
/// and then nothing: alive on the network, hung for commands. Returns its
/// port; the thread ends after `quiet_for` without a datagram.
fn answers_the_probe_only(quiet_for: Duration) -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(quiet_for)).unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut answered = false;
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            if !answered {
                // RMCP, class IPMI: enough for the probe to call it alive.
                let _ = socket.send_to(&[0x06, 0x00, 0xff, 0x07, 0x00], from);
                answered = true;
            }
        }
    });
    port
}

#[tokio::test]
async fn a_run_longer_than_the_timeout_is_killed() {
    // ipmitool would take about 2 s to give up on this hung BMC.
    peers::ipmi();
    let port = answers_the_probe_only(Duration::from_secs(5)).to_string();
    let info = info(&[("address", "127.0.0.1"), ("port", &port), ("timeout", "0.5")]);
    let bmc = IpmiBmc::from_info(&info).unwrap();
    let started = Instant::now();
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Timeout { seconds: 1, .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_missing_ipmitool_is_named() {
    let port = answers_the_probe_only(Duration::from_secs(5)).to_string();
    let info = info(&[("address", "127.0.0.1"), ("port", &port), ("password", "password")]);
    let bmc = IpmiBmc::from_info(&info).unwrap().with_tool("/nonexistent/ipmitool");
    let err = bmc.get_power_state().await.unwrap_err();
    assert!(matches!(err, DriverError::Tool { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ipmitool"), "{err}");
}

/// With no spacing at all (`min_command_interval = 0`), calls back to back
/// still each get their own answer: the session of one is never confused
/// with the next. (What a call costs is `kiln bench`'s business.)
#[tokio::test]
async fn calls_back_to_back_without_spacing_each_answer() {
    let bmc = bmc(6, &[("min_command_interval", "0")]);
    bmc.set_power_state(PowerAction::On).await.unwrap();
    bmc.set_boot_device(Boot::Disk, false).await.unwrap();
    for i in 0..10 {
        assert_eq!(bmc.get_power_state().await.unwrap(), Power::On, "read {i}");
        assert_eq!(bmc.get_boot_device().await.unwrap(), Some(Boot::Disk), "read {i}");
    }
    bmc.set_power_state(PowerAction::Off).await.unwrap();
    assert_eq!(bmc.get_power_state().await.unwrap(), Power::Off);
}
