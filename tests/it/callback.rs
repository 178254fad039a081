//! The wait states, reached: a deploy, clean or inspect that asks for a
//! callback waits for its booted system, which reports with the one-time
//! token over the admin socket (`kiln node callback`) or over HTTP; a wrong
//! token is refused and counted, and a node that never calls times out by
//! its own state's setting.

use serde_json::{Value, json};

use crate::harness::Daemon;
use crate::ironic::{http, start};
use crate::metrics::{get, metrics_addr};

fn token(d: &Daemon, node: &str) -> String {
    let n = d.node(node);
    n["callback"]["token"].as_str().unwrap_or_else(|| panic!("{node} holds no callback token: {n}")).to_string()
}

/// A token of the right shape that is not the one issued.
fn other_than(token: &str) -> String {
    let last = if token.ends_with('0') { "1" } else { "0" };
    format!("{}{last}", &token[..token.len() - 1])
}

fn counted(metrics: &str, result: &str) -> u64 {
    let key = format!("kiln_node_callbacks_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(key.as_str())).expect("the callback counter").parse().unwrap()
}

#[test]
fn a_deploy_waits_for_its_callback_and_only_the_issued_token_moves_it() {
    // inspect waits time out at once; every other wait keeps its default.
    let mut d = Daemon::start_env(
        3,
        &["--no-periodic", "--metrics-addr", "127.0.0.1:0"],
        &[("KILN_INSPECT_WAIT_TIMEOUT", "0s")],
    );
    let addr = metrics_addr(&mut d);
    d.json(&["node", "manage", "demo[1-3]", "--wait"]);
    d.json(&["node", "provide", "demo1", "--wait"]);

    d.json(&["node", "set", "demo1", "--instance-info", "deploy_callback=true"]);
    let out = d.json(&["node", "deploy", "demo1", "--wait"]);
    assert_eq!(out[0]["ok"], true, "{out}");
    let n = d.node("demo1");
    assert_eq!(n["provision_state"], "wait call-back", "{n}");
    assert_eq!(n["target_provision_state"], "active");
    assert_eq!(n["reservation"], Value::Null, "a waiting node is free");
    let issued = token(&d, "demo1");
    assert_eq!(issued.len(), 64);

    // A wrong token is refused, changes nothing, is counted, is not logged.
    let wrong = other_than(&issued);
    let err = d.json_code(&["node", "callback", "demo1", "--token", &wrong], 2);
    assert_eq!(err["error"]["kind"], "invalid_input", "{err}");
    assert_eq!(d.state("demo1"), "wait call-back");
    assert_eq!(token(&d, "demo1"), issued, "the issued token still stands");
    let err = d.json_code(&["node", "callback", "demo2", "--token", &issued], 1);
    assert_eq!(err["error"]["kind"], "invalid_state", "demo2 waits for nothing: {err}");

    let done = d.json(&["node", "callback", "demo1", "--token", &issued]);
    assert_eq!(done["provision_state"], "active", "{done}");
    let n = d.node("demo1");
    assert_eq!(n["callback"], Value::Null, "the token is spent");
    assert_eq!(n["target_provision_state"], Value::Null);
    let err = d.json_code(&["node", "callback", "demo1", "--token", &issued], 1);
    assert_eq!(err["error"]["kind"], "invalid_state", "a spent token moves nothing: {err}");
    let events: Vec<String> = d
        .json(&["node", "history", "demo1"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}>{}", h["event"].as_str().unwrap(), h["to_state"].as_str().unwrap()))
        .collect();
    assert!(
        events.ends_with(
            &["deploy>deploying", "wait>wait call-back", "resume>deploying", "done>active"].map(String::from)
        ),
        "{events:?}"
    );

    // A clean whose system reports a failure ends in clean failed with it.
    d.json(&["node", "set", "demo2", "--instance-info", "clean_callback=true"]);
    d.json(&["node", "clean", "demo2", "--wait"]);
    assert_eq!(d.state("demo2"), "clean wait");
    let t = token(&d, "demo2");
    let failed = d.json(&["node", "callback", "demo2", "--token", &t, "--fail", "disk 3 did not wipe"]);
    assert_eq!(failed["provision_state"], "clean failed", "{failed}");
    assert!(d.node("demo2")["last_error"].as_str().unwrap().contains("disk 3 did not wipe"));

    // An inspection that asked for a callback and a deploy both wait; the
    // wait_timeouts task fails the inspection only (its timeout is 0 s).
    d.json(&["node", "set", "demo3", "--instance-info", "inspect_callback=true"]);
    d.json(&["node", "inspect", "demo3", "--wait"]);
    assert_eq!(d.state("demo3"), "inspect wait");
    d.json(&["node", "undeploy", "demo1", "--wait"]);
    d.json(&["node", "deploy", "demo1", "--wait"]);
    assert_eq!(d.state("demo1"), "wait call-back");
    let run = d.json(&["periodic", "run", "wait_timeouts"]);
    assert_eq!(run[0]["last_error"], Value::Null, "{run}");
    assert_eq!(d.state("demo3"), "inspect failed");
    let n = d.node("demo3");
    assert!(n["last_error"].as_str().unwrap().contains("inspect_wait_timeout"), "{n}");
    assert_eq!(n["callback"], Value::Null);
    assert_eq!(d.state("demo1"), "wait call-back", "deploy_callback_timeout is 30 min");

    let (_, _, metrics) = get(&addr, "/metrics");
    assert_eq!(counted(&metrics, "refused"), 1, "{metrics}");
    assert_eq!(counted(&metrics, "taken"), 2, "{metrics}");
    let logs = d.log_lines().join("\n");
    assert!(logs.contains("callback refused"), "the refusal is logged");
    assert!(!logs.contains(&issued) && !logs.contains(&wrong), "a token was logged");

    // The token is stored: after a restart the node still waits, and the
    // booted system's callback still lands.
    let waiting = token(&d, "demo1");
    d.restart();
    assert_eq!(d.state("demo1"), "wait call-back");
    assert_eq!(d.json(&["node", "callback", "demo1", "--token", &waiting])["provision_state"], "active");
}

#[test]
fn the_booted_system_calls_back_over_http_without_the_operators_credential() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("operator:{}\n", bcrypt::hash("s3cret-pw", 4).unwrap())).unwrap();
    let file = htpasswd.to_str().unwrap();
    let (d, url) = start(2, &[("KILN_API_AUTH", "http_basic"), ("KILN_API_HTPASSWD", file)]);
    d.json(&["node", "manage", "demo[1-2]", "--wait"]);
    d.json(&["node", "provide", "demo[1-2]", "--wait"]);
    for node in ["demo1", "demo2"] {
        d.json(&["node", "set", node, "--instance-info", "deploy_callback=true"]);
    }
    d.json(&["node", "deploy", "demo[1-2]", "--wait"]);
    let issued = token(&d, "demo1");
    let call = |node: &str, body: Value| {
        let body = body.to_string();
        let headers = [("Content-Type", "application/json")];
        http(&url, "POST", &format!("/v1/kiln/nodes/{node}/callback"), &headers, body.as_bytes())
    };

    // Refused: the wrong token, another node's token, a body that is not a
    // callback. Nothing moves.
    assert_eq!(call("demo1", json!({"token": other_than(&issued)})).0, 400);
    assert_eq!(call("demo2", json!({"token": issued})).0, 400);
    assert_eq!(call("demo1", json!({"token": issued, "colour": "red"})).0, 400);
    assert_eq!(call("nosuch", json!({"token": issued})).0, 404);
    assert_eq!(d.state("demo1"), "wait call-back");
    assert_eq!(d.state("demo2"), "wait call-back");
    // The rest of the API still wants the credential.
    assert_eq!(http(&url, "GET", "/v1/nodes/demo1", &[], b"").0, 401);

    let (status, _, body) = call("demo1", json!({"token": issued}));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["provision_state"], "active", "{answer}");
    assert!(answer.get("driver_info").is_none(), "an unauthenticated caller reads only where the node went");
    let t2 = token(&d, "demo2");
    let (status, _, body) = call("demo2", json!({"token": t2, "error": "no bootable disk"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(d.state("demo2"), "deploy failed");
    assert!(d.node("demo2")["last_error"].as_str().unwrap().contains("no bootable disk"));
}
