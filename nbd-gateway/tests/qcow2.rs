//! qcow2 volumes served over NBD: qemu-img info/map/compare and qemu-io writes against the export,
//! `qemu-img check` clean afterwards, and read-only snapshots. Skips when a tool is missing.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use nbd_gateway::VolumeFormat;

const SIZE: u64 = 64 << 20;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qcow2_volume(t: &TestServer, name: &str) -> PathBuf {
    t.store
        .create_volume_with_format(name, SIZE, "qcow2 volume", VolumeFormat::Qcow2)
        .unwrap();
    t.store.root().join("volumes").join(name).join("data.qcow2")
}

/// `qemu-img map --output=json` as merged (start, length, data) runs.
fn map(args: &[&str]) -> Vec<(u64, u64, bool)> {
    let out = stdout(&run(Command::new("qemu-img").args(args)));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for e in v.as_array().unwrap() {
        let (start, len, data) = (
            e["start"].as_u64().unwrap(),
            e["length"].as_u64().unwrap(),
            e["data"].as_bool().unwrap(),
        );
        match runs.last_mut() {
            Some(last) if last.2 == data => last.1 += len,
            _ => runs.push((start, len, data)),
        }
    }
    runs
}

/// qemu-io commands: patterns, zeroes with and without unmapping, and discards (each followed
/// by zeroes, since discarded contents are unspecified).
fn commands() -> Vec<String> {
    let mut rng = Rng(0x9c0_2b0b_7e57_0001);
    let mut cmds = Vec::new();
    for i in 0..80 {
        let off = rng.below(SIZE / 512 - 4096) * 512;
        let len = (1 + rng.below(4096)) * 512;
        match i % 8 {
            0 => cmds.push(format!("write -z {off} {len}")),
            1 => cmds.push(format!("write -z -u {off} {len}")),
            2 => {
                cmds.push(format!("discard {off} {len}"));
                cmds.push(format!("write -z {off} {len}"));
            }
            _ => cmds.push(format!("write -P {} {off} {len}", 1 + rng.below(250))),
        }
    }
    cmds
}

#[test]
fn qemu_tools_against_a_qcow2_volume() {
    if !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let t = TestServer::start();
    let path = qcow2_volume(&t, "q");
    let uri = t.uri("q");
    let p = path.to_str().unwrap();

    let info = stdout(&run(Command::new("qemu-img").args([
        "info",
        "--output=json",
        "-f",
        "raw",
        &uri,
    ])));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(SIZE));
    // Empty: one hole.
    assert_eq!(
        map(&["map", "--output=json", "-f", "raw", &uri]),
        vec![(0, SIZE, false)]
    );

    // The same writes through the export and into a local raw model.
    let model = t.dir.path().join("model.raw");
    std::fs::File::create(&model)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let cmds = commands();
    for (target, remote) in [(uri.clone(), true), (model.display().to_string(), false)] {
        let mut c = Command::new("qemu-io");
        c.args(["-f", "raw"]);
        for cmd in &cmds {
            if remote || !cmd.starts_with("discard") {
                c.args(["-c", cmd]);
            }
        }
        c.arg(&target);
        let text = stdout(&run(&mut c));
        assert!(!text.contains("failed"), "{text}");
    }
    run(Command::new("qemu-img").args([
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        &uri,
        model.to_str().unwrap(),
    ]));

    // The disconnect flushed imago's metadata: qemu reads the file itself consistently, its
    // allocation map equals the one served, and the image checks clean.
    run(Command::new("qemu-img").args([
        "compare",
        "-U",
        "-f",
        "qcow2",
        "-F",
        "raw",
        p,
        model.to_str().unwrap(),
    ]));
    let served = map(&["map", "--output=json", "-f", "raw", &uri]);
    let local = map(&["map", "--output=json", "-U", "-f", "qcow2", p]);
    assert_eq!(served, local);
    assert!(
        served.iter().any(|r| r.2) && served.iter().any(|r| !r.2),
        "{served:?}"
    );
    let check = stdout(&run(Command::new("qemu-img").args(["check", "-U", p])));
    assert!(check.contains("No errors were found"), "{check}");

    // A second round after the server is gone: check again, with no open handle at all.
    t.server.shutdown();
    t.rt.block_on(t.server.wait_idle());
    let check = stdout(&run(Command::new("qemu-img").args(["check", p])));
    assert!(check.contains("No errors were found"), "{check}");
}

#[test]
fn qcow2_snapshot_is_read_only_and_frozen() {
    let t = TestServer::start();
    let path = qcow2_volume(&t, "q");
    let mut c = t.connect();
    c.handshake("q", false, false, false);
    assert_eq!(c.write(FLAG_FUA, 65536, &[0xab; 4096]), 0);
    t.store.create_snapshot("q", "s1").unwrap();
    assert_eq!(c.write(FLAG_FUA, 65536, &[0xcd; 4096]), 0);

    let mut s = t.connect();
    let flags = s.handshake("q@s1", false, false, false);
    assert_ne!(flags & 2, 0, "NBD_FLAG_READ_ONLY");
    assert_eq!(s.write(0, 0, &[1; 512]), EPERM);
    assert_eq!(s.simple_cmd(0, CMD_WRITE_ZEROES, 0, 512), EPERM);
    assert_eq!(s.simple_cmd(0, CMD_TRIM, 0, 512), EPERM);
    assert_eq!(s.read_simple(65536, 4096).unwrap(), vec![0xab; 4096]);
    assert_eq!(s.simple_cmd(0, CMD_FLUSH, 0, 0), 0);
    assert_eq!(c.read_simple(65536, 4096).unwrap(), vec![0xcd; 4096]);

    if have("qemu-img") {
        let snap = path.parent().unwrap().join("snapshots/s1/data.qcow2");
        let check = stdout(&run(Command::new("qemu-img").args([
            "check",
            "-U",
            snap.to_str().unwrap(),
        ])));
        assert!(check.contains("No errors were found"), "{check}");
    }
}
