//! Tests that need the server as a separate process: durability across SIGKILL, and graceful
//! exit on SIGTERM.

#![allow(
    clippy::cast_possible_truncation,
    reason = "wire fields built from small test values"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

const SIZE: u64 = 8 << 20;

fn spawn(store: &Path, sock: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nbd-gateway-testd"))
        .arg(store)
        .arg(format!("unix:{}", sock.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The first stdout line is printed once the socket is bound.
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), format!("unix:{}", sock.display()));
    child
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    nbd_gateway::Store::open(&store)
        .unwrap()
        .create_volume("v", SIZE, "")
        .unwrap();
    let sock = dir.path().join("s.sock");
    let mut child = spawn(&store, &sock);
    let mut c = Raw::connect(&sock);
    c.handshake("v", false, false, false);
    // FUA write.
    assert_eq!(c.write(FLAG_FUA, 0, &[0xA1; 65536]), 0);
    // Plain writes then FLUSH.
    for i in 1..8u64 {
        assert_eq!(c.write(0, i * 65536, &[0xB0 + i as u8; 65536]), 0);
    }
    assert_eq!(c.simple_cmd(0, CMD_FLUSH, 0, 0), 0);
    // Zeroing with FUA over part of a flushed range.
    assert_eq!(c.simple_cmd(FLAG_FUA, CMD_WRITE_ZEROES, 65536, 4096), 0);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(c);

    let mut child = spawn(&store, &sock);
    let mut c = Raw::connect(&sock);
    c.handshake("v", false, false, false);
    assert_eq!(c.read_simple(0, 65536).unwrap(), vec![0xA1; 65536]);
    assert_eq!(c.read_simple(65536, 4096).unwrap(), vec![0; 4096]);
    assert_eq!(
        c.read_simple(65536 + 4096, 65536 - 4096).unwrap(),
        vec![0xB1; 65536 - 4096]
    );
    for i in 2..8u64 {
        assert_eq!(
            c.read_simple(i * 65536, 65536).unwrap(),
            vec![0xB0 + i as u8; 65536]
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    nbd_gateway::Store::open(&store)
        .unwrap()
        .create_volume("v", SIZE, "")
        .unwrap();
    let sock = dir.path().join("s.sock");
    let mut child = spawn(&store, &sock);
    let mut c = Raw::connect(&sock);
    c.handshake("v", false, false, false);
    assert_eq!(c.write(0, 0, &[7u8; 4096]), 0);
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // The connection is told ESHUTDOWN (or closed once the grace period ends); the client
    // disconnects as the spec asks, and the process exits cleanly.
    let mut err = 0;
    for _ in 0..500 {
        err = c.simple_cmd(0, CMD_FLUSH, 0, 0);
        if err == ESHUTDOWN {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(err, ESHUTDOWN);
    c.request(0, CMD_DISC, 0, 0, 0);
    assert!(c.closed());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket file is removed on exit");
    let data = std::fs::read(store.join("volumes/v/data.raw")).unwrap();
    assert_eq!(&data[..4096], &[7u8; 4096]);
}
