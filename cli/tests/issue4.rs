//! The gateway as a migration uses it (issue 4, item 4): a volume created and served by
//! `rehost gateway`, filled by a standard NBD client, is inspected by rehost's own `nbd://` client
//! exactly as the image file is, and so is a snapshot of it. SIGTERM stops the server cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn rehost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rehost"))
}

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: {tool} not found");
    }
    ok
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(sock: &Path) {
    for _ in 0..400 {
        if sock.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("gateway did not create {}", sock.display());
}

fn inspect_json(target: &str) -> serde_json::Value {
    let out = rehost()
        .args(["inspect", "--json", target])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{target}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The report minus the fields that name the source.
fn facts(mut v: serde_json::Value) -> serde_json::Value {
    let o = v.as_object_mut().unwrap();
    o.remove("source");
    o.remove("format");
    v
}

#[test]
fn issue4_rehost_inspects_a_gateway_volume_and_its_snapshot() {
    if !have("nbdcopy") {
        return;
    }
    let image = images::build("debian12-vmware").unwrap();
    let size = std::fs::metadata(&image).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_s = store.to_str().unwrap();
    let sock = dir.path().join("gw.sock");

    let st = rehost()
        .args([
            "gateway",
            "volume",
            "create",
            "--store",
            store_s,
            "deb",
            &size.to_string(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let server = Server(
        rehost()
            .args(["gateway", "serve", "--store", store_s, "--listen"])
            .arg(format!("unix:{}", sock.display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&sock);
    let uri = format!("nbd+unix:///deb?socket={}", sock.display());
    let st = Command::new("nbdcopy")
        .arg(&image)
        .arg(&uri)
        .status()
        .unwrap();
    assert!(st.success(), "nbdcopy upload");

    let from_file = facts(inspect_json(image.to_str().unwrap()));
    let over_nbd = inspect_json(&uri);
    assert_eq!(over_nbd["format"], "raw");
    assert_eq!(
        facts(over_nbd),
        from_file,
        "inspection over NBD differs from the file"
    );

    let st = rehost()
        .args([
            "gateway", "volume", "snapshot", "--store", store_s, "deb", "s1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let snap_uri = format!("nbd+unix:///deb@s1?socket={}", sock.display());
    assert_eq!(
        facts(inspect_json(&snap_uri)),
        from_file,
        "snapshot differs"
    );

    // Graceful shutdown on SIGTERM: exit status 0.
    let mut server = server;
    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut code = None;
    for _ in 0..400 {
        if let Some(s) = server.0.try_wait().unwrap() {
            code = s.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(code, Some(0), "gateway did not exit cleanly on SIGTERM");
}
