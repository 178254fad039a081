//! BMC quirks learned once and kept (issue #25): a node's BMC profile is
//! learned on first contact, stored, used after a restart without probing
//! again, shown by `node show`, reset by `node set --reset-bmc-profile`,
//! and forgotten when the BMC settings change (a new address, new credentials). Against the real peers:
//!
//! - the Redfish emulator behind the fault proxy, which makes it advertise
//!   sessions and refuse every login (405): the profile says basic auth,
//!   sessions not served; the proxy counts the logins tried;
//! - the pyghmi IPMI simulator, which refuses cipher suite 17 (it answers
//!   an RMCP+ open session request with suite 3's algorithms whatever was
//!   asked, and ipmitool gives up): the profile says suite 3.
//!
//! Figures (`--nocapture`): the requests each phase cost.

use serde_json::Value;

use crate::bmc::Site;
use crate::faultproxy::FaultProxy;
use crate::peers::{self, PASSWORD};

/// The logins the proxy saw, and the reads of the service root.
fn probes(proxy: &FaultProxy) -> (usize, usize) {
    (proxy.count(&["POST ", "/SessionService/Sessions"]), proxy.count(&["GET /redfish/v1/ "]))
}

/// The node's `bmc_profile` as `node show --json` prints it.
fn profile(site: &Site, name: &str) -> Value {
    site.node(name)["bmc_profile"].clone()
}

/// Runs `node power ACTION NODE --wait` and checks that it worked.
fn power(site: &Site, action: &str, name: &str) {
    let out = site.ok(&["node", "power", action, name, "--wait"]);
    let result = out.as_array().map_or(&out, |a| &a[0]);
    assert!(result["error"].is_null() && result["ok"] != false, "power {action}: {out}");
}

#[test]
fn a_redfish_bmc_that_lists_sessions_and_refuses_them_is_learned_as_basic_once() {
    let peer = peers::redfish_for_profiles();
    let proxy = FaultProxy::start(([127, 0, 0, 1], peer.port).into());
    proxy.refuse_sessions(true);
    let mut site = Site::start_with(0, &["--no-periodic"]);
    // auth_method left at auto: the driver must find out.
    site.redfish("rf-q", &proxy.url(), &peer.system_id(1), PASSWORD, &["timeout=20"]);
    assert_eq!(profile(&site, "rf-q"), Value::Null, "nothing learned before any contact");

    let managed = site.ok(&["node", "manage", "rf-q", "--wait"]);
    assert!(managed.as_array().unwrap().iter().all(|r| r["error"].is_null()), "{managed}");
    let learned = profile(&site, "rf-q");
    assert_eq!(learned["redfish_auth"], "basic", "{learned}");
    assert_eq!(learned["redfish_sessions"], false, "{learned}");
    assert_eq!(learned["ipmi_cipher_suite"], Value::Null, "{learned}");
    assert!(learned["learned_at"].is_string(), "{learned}");
    assert_eq!(probes(&proxy), (1, 1), "first contact: one root read, one login refused");
    let shown = site.table(&["node", "show", "rf-q"]);
    assert!(shown.contains("redfish auth basic, sessions not served"), "{shown}");

    power(&site, "on", "rf-q");
    power(&site, "off", "rf-q");
    let first = proxy.seen().len();
    assert_eq!(probes(&proxy), (1, 1), "learned: no probe again");
    println!("[profiles] redfish: first contact and two power actions: {first} requests, 1 root read, 1 login");

    // After a restart the stored profile is used: basic auth at once.
    site.d.restart();
    assert_eq!(profile(&site, "rf-q"), learned, "stored");
    power(&site, "on", "rf-q");
    assert_eq!(probes(&proxy), (1, 1), "no session attempt after a restart");
    assert_eq!(profile(&site, "rf-q")["learned_at"], learned["learned_at"], "nothing new learned");

    // Reset: forgotten, found out again at the next call.
    site.ok(&["node", "set", "rf-q", "--reset-bmc-profile"]);
    assert_eq!(profile(&site, "rf-q"), Value::Null);
    power(&site, "off", "rf-q");
    assert_eq!(probes(&proxy), (2, 2), "a reset profile is learned again");
    assert_eq!(profile(&site, "rf-q")["redfish_auth"], "basic");

    // A new address: the BMC may be another one, learned afresh.
    let moved = format!("address=http://localhost:{}", proxy.addr.port());
    let set = site.ok(&["node", "set", "rf-q", "--driver-info", &moved]);
    assert_eq!(set["bmc_profile"], Value::Null, "{set}");
    power(&site, "on", "rf-q");
    assert_eq!(probes(&proxy), (3, 3), "a new address is learned again");
    assert_eq!(profile(&site, "rf-q")["redfish_sessions"], false);
    site.finish(&[]);
}

#[test]
fn an_ipmi_bmc_that_refuses_cipher_suite_17_is_learned_as_suite_3_once() {
    let ipmi = peers::ipmi_for_profiles();
    let mut site = Site::start_with(0, &["--no-periodic"]);
    site.ipmi("ip-q", ipmi.port, PASSWORD, &["timeout=15", "power_timeout=20"]);
    let managed = site.ok(&["node", "manage", "ip-q", "--wait"]);
    assert!(managed.as_array().unwrap().iter().all(|r| r["error"].is_null()), "{managed}");
    let learned = profile(&site, "ip-q");
    assert_eq!(learned["ipmi_cipher_suite"], 3, "{learned}");
    assert_eq!(learned["redfish_auth"], Value::Null, "{learned}");
    power(&site, "on", "ip-q");
    assert_eq!(peers::ipmitool(ipmi.port, &["power", "status"]).trim(), "Chassis Power is on");
    let shown = site.table(&["node", "show", "ip-q"]);
    assert!(shown.contains("ipmi cipher suite 3"), "{shown}");
    // One refusal of 17, on first contact only.
    let log = site.d.log_lines();
    let refusals = |log: &[String]| log.iter().filter(|l| l.contains("refused this cipher suite")).count();
    let learnings = |log: &[String]| log.iter().filter(|l| l.contains("accepts IPMI cipher suite")).count();
    assert_eq!((refusals(&log), learnings(&log)), (1, 1), "{log:#?}");
    println!("[profiles] ipmi: suite 17 refused once, suite 3 learned, then used");

    site.d.restart();
    assert_eq!(profile(&site, "ip-q"), learned, "stored");
    power(&site, "off", "ip-q");
    assert_eq!(peers::ipmitool(ipmi.port, &["power", "status"]).trim(), "Chassis Power is off");
    let log = site.d.log_lines();
    assert_eq!((refusals(&log), learnings(&log)), (0, 0), "suite 3 used at once after a restart: {log:#?}");

    site.ok(&["node", "set", "ip-q", "--reset-bmc-profile"]);
    assert_eq!(profile(&site, "ip-q"), Value::Null);
    power(&site, "on", "ip-q");
    let log = site.d.log_lines();
    assert_eq!((refusals(&log), learnings(&log)), (1, 1), "learned again after a reset: {log:#?}");
    assert_eq!(profile(&site, "ip-q")["ipmi_cipher_suite"], 3);
    site.finish(&[]);
}

#[test]
fn a_reset_of_the_bmc_profile_is_refused_for_an_unknown_node_and_needs_no_other_change() {
    let site = Site::start_with(1, &["--no-periodic"]);
    let out = site.d.cli(&["node", "set", "nope", "--reset-bmc-profile"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"), "{out:?}");
    let shown = site.ok(&["node", "set", "demo1", "--reset-bmc-profile"]);
    assert_eq!(shown["bmc_profile"], Value::Null, "{shown}");
    let none = site.d.cli(&["node", "set", "demo1"]);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("--reset-bmc-profile"), "{none:?}");
}
