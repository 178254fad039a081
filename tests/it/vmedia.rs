//! A real deploy over Redfish virtual media, on the sushy-tools emulator:
//! `instance_info.image_url` (set by `kiln node deploy --image`) is
//! inserted into the system's virtual CD, which the emulator fetches from a
//! small HTTP server this test runs on loopback, booted once from CD; an
//! undeploy ejects it. The emulator's own media resource, read with `curl`
//! and not through kiln, is the judge. An image the BMC cannot fetch fails
//! the deploy with the BMC's message in `last_error`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::bmc::Site;
use crate::peers::{self, PASSWORD};

const IMAGE: &[u8] = b"not really an ISO, but the emulator only stores what it fetched\n";

/// An HTTP server on loopback serving `IMAGE` at `/kiln-test.iso` (404 for
/// any other path), counting the GETs of it; stopped and joined on drop.
pub(crate) struct ImageServer {
    port: u16,
    pub(crate) fetched: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ImageServer {
    pub(crate) fn start() -> ImageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the image server");
        let port = listener.local_addr().unwrap().port();
        let (fetched, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, stopped) = (fetched.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = stream {
                    serve(stream, &count);
                }
            }
        });
        ImageServer { port, fetched, stop, thread: Some(thread) }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/kiln-test.iso", self.port)
    }
}

/// Answers one request (the emulator sends one per connection or closes it).
fn serve(mut stream: TcpStream, fetched: &AtomicUsize) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16_384 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().to_string();
    let reply = if line.starts_with("GET /kiln-test.iso ") {
        fetched.fetch_add(1, Ordering::SeqCst);
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            IMAGE.len()
        )
        .into_bytes();
        r.extend_from_slice(IMAGE);
        r
    } else {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
    };
    let _ = stream.write_all(&reply);
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The emulator's virtual CD of system `node-<i>`, read with curl.
pub(crate) fn virtual_cd(peer: &crate::peers::Peer, i: usize) -> Value {
    peer.resource(&format!("{}/VirtualMedia/Cd", peer.system_id(i)))
}

#[test]
fn a_redfish_deploy_boots_the_image_from_virtual_media_and_undeploy_ejects_it() {
    let peer = peers::redfish_vmedia();
    let images = ImageServer::start();
    let site = Site::start_with(0, &["--no-periodic"]);
    let timeouts = ["power_timeout=40", "timeout=20"];
    site.redfish("vm1", &peer.url(), &peer.system_id(1), PASSWORD, &timeouts);
    site.ok(&["node", "manage", "vm1", "--wait"]);
    site.ok(&["node", "provide", "vm1", "--wait"]);

    let url = images.url();
    site.ok(&["node", "deploy", "vm1", "--image", &url, "--wait"]);
    let n = site.node("vm1");
    assert_eq!(n["provision_state"], "active", "{n}");
    assert_eq!(n["instance_info"]["image_url"], url.as_str());
    assert_eq!((n["power_state"].as_str(), n["boot_device"].as_str()), (Some("power on"), Some("cdrom")), "{n}");
    let cd = virtual_cd(peer, 1);
    assert_eq!((cd["Inserted"].as_bool(), cd["Image"].as_str()), (Some(true), Some(url.as_str())), "{cd}");
    assert_eq!(cd["ImageName"], "kiln-test.iso", "{cd}");
    assert!(images.fetched.load(Ordering::SeqCst) >= 1, "the emulator never fetched the image");
    let system = peer.system(1);
    assert_eq!(system["PowerState"], "On", "{system}");

    // A rebuild ejects the old media first and inserts the image again.
    site.ok(&["node", "rebuild", "vm1", "--wait"]);
    assert_eq!(site.node("vm1")["provision_state"], "active");
    assert_eq!(virtual_cd(peer, 1)["Inserted"], true);

    site.ok(&["node", "undeploy", "vm1", "--wait"]);
    let n = site.node("vm1");
    assert_eq!((n["provision_state"].as_str(), n["power_state"].as_str()), (Some("available"), Some("power off")));
    let cd = virtual_cd(peer, 1);
    assert_eq!(cd["Inserted"], false, "{cd}");
    assert_eq!(cd["Image"].as_str().unwrap_or_default(), "", "{cd}");

    // A deploy that asks for a callback boots the image, then waits for
    // the installer on it to call back with its token.
    site.ok(&["node", "set", "vm1", "--instance-info", "deploy_callback=true"]);
    site.ok(&["node", "deploy", "vm1", "--image", &url, "--wait"]);
    let n = site.node("vm1");
    assert_eq!(n["provision_state"], "wait call-back", "{n}");
    assert_eq!(virtual_cd(peer, 1)["Inserted"], true, "the image is in before the wait");
    assert_eq!(peer.system(1)["PowerState"], "On");
    let token = n["callback"]["token"].as_str().expect("a callback token").to_string();
    site.ok(&["node", "callback", "vm1", "--token", &token]);
    assert_eq!(site.node("vm1")["provision_state"], "active");

    // An image the BMC cannot fetch: the deploy fails with the BMC's message.
    let dead = crate::peers::closed_tcp_port();
    let bad = format!("http://127.0.0.1:{}/missing.iso", dead.port());
    site.redfish("vm2", &peer.url(), &peer.system_id(2), PASSWORD, &timeouts);
    site.ok(&["node", "manage", "vm2", "--wait"]);
    site.ok(&["node", "provide", "vm2", "--wait"]);
    site.run(&["node", "deploy", "vm2", "--image", &bad, "--wait"], 1);
    let n = site.node("vm2");
    assert_eq!(n["provision_state"], "deploy failed", "{n}");
    let error = n["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("VirtualMedia.InsertMedia") && error.contains("Failed fetching image"), "{error}");
    assert!(error.contains(&bad), "{error}");
    assert_eq!(virtual_cd(peer, 2)["Inserted"], false);

    // Bad input is refused before anything changes.
    site.run(&["node", "deploy", "vm2", "--image", "ftp://x/y.iso"], 2);
    site.run(&["node", "deploy", "vm[1-2]", "--image", &url], 2);
    drop(images);
    site.finish(&[]);
}

/// Whether the scripted BMC's system is on: flipped by each reset (the one
/// test that uses it sends one, to a system that is off).
static SCRIPTED_ON: AtomicBool = AtomicBool::new(false);

/// A Redfish BMC of the older shape: the system has no `VirtualMedia` of
/// its own, its manager has, with a floppy listed before the CD, whose
/// action targets are not the default paths, and which holds an old image.
fn manager_media_bmc(method: &str, path: &str) -> crate::peers::Answer {
    use crate::peers::Answer::Reply;
    const MEDIA: &str = "/redfish/v1/Managers/bmc/VirtualMedia";
    match (method, path) {
        ("GET", "/redfish/v1/Systems/1") => Reply(
            "200 OK",
            serde_json::json!({
                "@odata.id": "/redfish/v1/Systems/1",
                "PowerState": if SCRIPTED_ON.load(Ordering::SeqCst) { "On" } else { "Off" },
                "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/bmc"}]},
                "Actions": {"#ComputerSystem.Reset": {"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"}},
            })
            .to_string(),
        ),
        ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
            SCRIPTED_ON.fetch_xor(true, Ordering::SeqCst);
            Reply("204 No Content", String::new())
        }
        ("PATCH", "/redfish/v1/Systems/1") => Reply("204 No Content", String::new()),
        ("GET", "/redfish/v1/Managers/bmc") => {
            Reply("200 OK", serde_json::json!({"VirtualMedia": {"@odata.id": MEDIA}}).to_string())
        }
        ("GET", MEDIA) => Reply(
            "200 OK",
            serde_json::json!({"Members": [{"@odata.id": format!("{MEDIA}/Floppy")}, {"@odata.id": format!("{MEDIA}/CD1")}]})
                .to_string(),
        ),
        ("GET", p) if p == format!("{MEDIA}/Floppy") => {
            Reply("200 OK", serde_json::json!({"MediaTypes": ["Floppy", "USBStick"], "Inserted": false}).to_string())
        }
        ("GET", p) if p == format!("{MEDIA}/CD1") => Reply(
            "200 OK",
            serde_json::json!({
                "MediaTypes": ["CD", "DVD"], "Inserted": true, "Image": "http://10.0.0.9/old.iso",
                "Actions": {
                    "#VirtualMedia.EjectMedia": {"target": format!("{MEDIA}/CD1/Actions/Eject")},
                    "#VirtualMedia.InsertMedia": {"target": format!("{MEDIA}/CD1/Actions/Insert")},
                },
            })
            .to_string(),
        ),
        ("POST", p) if p.starts_with(&format!("{MEDIA}/CD1/Actions/")) => Reply("204 No Content", String::new()),
        _ => Reply("404 Not Found", "{}".into()),
    }
}

#[test]
fn the_virtual_cd_is_found_under_the_manager_and_old_media_is_ejected_first() {
    let bmc = crate::peers::Responder::start(manager_media_bmc);
    let site = Site::start_with(0, &["--no-periodic"]);
    site.redfish("vm-old", &bmc.url(), "/redfish/v1/Systems/1", "S3cret-vmedia-1", &["timeout=5", "power_timeout=10"]);
    site.ok(&["node", "manage", "vm-old", "--wait"]);
    site.ok(&["node", "provide", "vm-old", "--wait"]);
    site.ok(&["node", "deploy", "vm-old", "--image", "https://10.0.0.2/new.iso", "--wait"]);
    assert_eq!(site.node("vm-old")["provision_state"], "active");

    let changes: Vec<(String, String, String)> =
        bmc.requests().into_iter().filter(|r| r.method != "GET").map(|r| (r.method, r.path, r.body)).collect();
    let media = "/redfish/v1/Managers/bmc/VirtualMedia/CD1/Actions";
    let sent: Vec<(&str, &str)> = changes.iter().map(|(m, p, _)| (m.as_str(), p.as_str())).collect();
    assert_eq!(
        sent,
        [
            // provide: cleaning powers off (already off: nothing sent).
            ("POST", format!("{media}/Eject").as_str()),
            ("POST", format!("{media}/Insert").as_str()),
            ("PATCH", "/redfish/v1/Systems/1"),
            ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"),
        ],
        "{changes:?}"
    );
    let insert: Value = serde_json::from_str(&changes[1].2).unwrap();
    assert_eq!(
        insert,
        serde_json::json!({"Image": "https://10.0.0.2/new.iso", "Inserted": true, "WriteProtected": true})
    );
    let boot: Value = serde_json::from_str(&changes[2].2).unwrap();
    assert_eq!(
        boot["Boot"],
        serde_json::json!({"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"})
    );
    let reset: Value = serde_json::from_str(&changes[3].2).unwrap();
    assert_eq!(reset["ResetType"], "On", "an off node is switched on");
    site.finish(&["S3cret-vmedia-1"]);
}
