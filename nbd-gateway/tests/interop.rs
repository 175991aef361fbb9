//! Interoperability with Debian's NBD peers: qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh.
//! Each test skips (printing `skipping: <tool> not found`) when its tool is missing.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const SIZE: u64 = 64 << 20;

fn run(cmd: &mut Command) -> Output {
    // nbdsh runs `python3 -m nbd`; the distribution's python has the module.
    let path = format!(
        "/usr/bin:/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let out = cmd.env("PATH", path).output().unwrap();
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

/// Writes a recognisable pattern in a few places, leaving holes between.
fn populate(path: &Path) {
    poke(path, 0, &[0x11; 4096]);
    poke(path, 5 << 20, &vec![0x22; 1 << 20]);
    poke(path, (20 << 20) + 12345, b"hello, world");
    poke(path, SIZE - 4096, &[0x33; 4096]);
}

/// Parses `qemu-img map --output=json` into merged (start, length, data) runs.
fn qemu_map(json: &str) -> Vec<(u64, u64, bool)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for e in v.as_array().unwrap() {
        let start = e["start"].as_u64().unwrap();
        let len = e["length"].as_u64().unwrap();
        let data = e["data"].as_bool().unwrap();
        match out.last_mut() {
            Some(last) if last.2 == data => last.1 += len,
            _ => out.push((start, len, data)),
        }
    }
    out
}

#[test]
fn qemu_img_info_map_compare_convert() {
    if !have("qemu-img") {
        return;
    }
    let t = TestServer::start();
    let path = t.volume("v", SIZE);
    populate(&path);
    let uri = t.uri("v");

    let info = stdout(&run(Command::new("qemu-img").args([
        "info",
        "--output=json",
        "-f",
        "raw",
        &uri,
    ])));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"].as_u64(), Some(SIZE));

    let map = stdout(&run(Command::new("qemu-img").args([
        "map",
        "--output=json",
        "-f",
        "raw",
        &uri,
    ])));
    assert_eq!(qemu_map(&map), file_map(&path));

    run(Command::new("qemu-img").args([
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        &uri,
        path.to_str().unwrap(),
    ]));

    // NBD -> local file.
    let local = t.dir.path().join("copy.raw");
    run(Command::new("qemu-img").args([
        "convert",
        "-f",
        "raw",
        "-O",
        "raw",
        &uri,
        local.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(&path).unwrap()
    );

    // Local file -> NBD (a second volume), keeping holes.
    let dst = t.volume("w", SIZE);
    run(Command::new("qemu-img").args([
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        local.to_str().unwrap(),
        &t.uri("w"),
    ]));
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&path).unwrap());
    let dst_map = file_map(&dst);
    assert!(
        dst_map.iter().any(|r| !r.2 && r.1 >= 1 << 20),
        "holes must survive the copy: {dst_map:?}"
    );
}

#[test]
fn qemu_io_random_writes_then_compare() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let t = TestServer::start();
    t.volume("v", SIZE);
    let local = t.dir.path().join("model.raw");
    std::fs::File::create(&local)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut cmds = Vec::new();
    for i in 0..120 {
        let off = rng.below(SIZE / 512 - 2048) * 512;
        let len = (1 + rng.below(2048)) * 512;
        let cmd = match i % 6 {
            0 => format!("write -z {off} {len}"),
            1 => format!("discard {off} {len}"),
            2 => format!("write -z -u {off} {len}"),
            _ => format!("write -P {} {off} {len}", 1 + rng.below(250)),
        };
        cmds.push(cmd);
    }
    // Discard contents are unspecified: follow every discard by a write of zeroes so both
    // sides stay defined.
    let cmds: Vec<String> = cmds
        .into_iter()
        .flat_map(|c| {
            if let Some(rest) = c.strip_prefix("discard ") {
                vec![c.clone(), format!("write -z {rest}")]
            } else {
                vec![c]
            }
        })
        .collect();
    for (target, fmt_uri) in [(t.uri("v"), true), (local.display().to_string(), false)] {
        let mut c = Command::new("qemu-io");
        c.args(["-f", "raw"]);
        for cmd in &cmds {
            if !fmt_uri && cmd.starts_with("discard") {
                continue;
            }
            c.args(["-c", cmd]);
        }
        c.arg(&target);
        let out = run(&mut c);
        let text = stdout(&out);
        assert!(!text.contains("failed"), "{text}");
    }
    // Reads through qemu-io see the pattern of the last write.
    run(Command::new("qemu-img").args([
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        &t.uri("v"),
        local.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(t.data_path("v")).unwrap(),
        std::fs::read(&local).unwrap()
    );
}

#[test]
fn nbdinfo_list_map_can_is() {
    if !have("nbdinfo") {
        return;
    }
    let t = TestServer::start();
    let path = t.volume("v", SIZE);
    populate(&path);
    t.store.create_snapshot("v", "s1").unwrap();
    let list = stdout(&run(Command::new("nbdinfo").args(["--list", &t.uri("")])));
    assert!(list.contains("export=\"v\""), "{list}");
    assert!(list.contains("export=\"v@s1\""), "{list}");
    let one = stdout(&run(Command::new("nbdinfo").arg(t.uri("v"))));
    assert!(one.contains("description: test volume"), "{one}");
    assert!(one.contains("block_size_maximum: 33554432"), "{one}");

    let map = stdout(&run(Command::new("nbdinfo").args([
        "--map",
        "--json",
        &t.uri("v"),
    ])));
    let v: serde_json::Value = serde_json::from_str(&map).unwrap();
    let mut got: Vec<(u64, u64, bool)> = Vec::new();
    for e in v.as_array().unwrap() {
        let (off, len, ty) = (
            e["offset"].as_u64().unwrap(),
            e["length"].as_u64().unwrap(),
            e["type"].as_u64().unwrap(),
        );
        got.push((off, len, ty & 1 == 0));
    }
    assert_eq!(got, file_map(&path));

    for what in [
        "can flush",
        "can fua",
        "can trim",
        "can zero",
        "can fast-zero",
        "can multi-conn",
        "can cache",
        "can df",
        "can write",
    ] {
        let (flag, arg) = what.split_once(' ').unwrap();
        let code = Command::new("nbdinfo")
            .args([&format!("--{flag}"), arg, &t.uri("v")])
            .status()
            .unwrap()
            .code();
        assert_eq!(code, Some(0), "--{what} on the volume");
    }
    let ro = Command::new("nbdinfo")
        .args(["--is", "read-only", &t.uri("v@s1")])
        .status()
        .unwrap()
        .code();
    assert_eq!(ro, Some(0));
    let rw = Command::new("nbdinfo")
        .args(["--is", "read-only", &t.uri("v")])
        .status()
        .unwrap()
        .code();
    assert_eq!(rw, Some(2));
}

#[test]
fn nbdcopy_both_directions() {
    if !have("nbdcopy") {
        return;
    }
    let t = TestServer::start();
    let path = t.volume("v", SIZE);
    populate(&path);
    let local = t.dir.path().join("out.raw");
    run(Command::new("nbdcopy").args([&t.uri("v"), local.to_str().unwrap()]));
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(&path).unwrap()
    );
    let dst = t.volume("w", SIZE);
    run(Command::new("nbdcopy").args(["--connections=4", local.to_str().unwrap(), &t.uri("w")]));
    assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&path).unwrap());
    assert_eq!(file_map(&dst).len(), file_map(&path).len());
}

#[test]
fn nbdsh_structured_reads_over_data_and_holes() {
    if !have("nbdsh") {
        return;
    }
    let t = TestServer::start();
    let path = t.volume("v", SIZE);
    populate(&path);
    let script = format!(
        r#"
h.connect_uri("{uri}")
assert h.can_df()
chunks = []
def cb(buf, offset, status, error):
    chunks.append((offset, len(buf), status, bytes(buf[:1])))
    return 0
data = h.pread_structured(8 << 20, 0, cb)
assert len(data) == 8 << 20
assert data[(5 << 20):(6 << 20)] == b"\x22" * (1 << 20)
assert data[4096:(5 << 20)] == bytes((5 << 20) - 4096)
for c in sorted(chunks):
    print("%d %d %d" % (c[0], c[1], c[2]))
one = []
def cb2(buf, offset, status, error):
    one.append((offset, len(buf), status))
    return 0
h.pread_structured(1 << 20, 4 << 20, cb2, flags=nbd.CMD_FLAG_DF)
print("df", one)
"#,
        uri = t.uri("v")
    );
    let out = stdout(&run(Command::new("nbdsh").args(["-c", &script])));
    let chunks: Vec<(u64, u64, u32)> = out
        .lines()
        .filter(|l| !l.starts_with("df"))
        .map(|l| {
            let v: Vec<u64> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], u32::try_from(v[2]).unwrap())
        })
        .collect();
    // READ_DATA = 1, READ_HOLE = 2.
    assert_eq!(
        chunks,
        vec![
            (0, 4096, 1),
            (4096, (5 << 20) - 4096, 2),
            (5 << 20, 1 << 20, 1),
            (6 << 20, 2 << 20, 2)
        ]
    );
    assert!(
        out.contains(&format!("df [({}, {}, 1)]", 4 << 20, 1 << 20)),
        "{out}"
    );
}

#[test]
fn qemu_negotiates_extended_headers() {
    if !have("qemu-img") {
        return;
    }
    let t = TestServer::start();
    t.volume("v", SIZE);
    let out =
        run(Command::new("qemu-img").args(["--trace", "nbd_*", "info", "-f", "raw", &t.uri("v")]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("option reply 11 (extended headers), type 1 (ack)"),
        "{err}"
    );
}

#[test]
fn fio_nbd_engine_random_writes_verify() {
    if !have("fio") {
        return;
    }
    let t = TestServer::start();
    t.volume("v", SIZE);
    let out = run(Command::new("fio").args([
        "--name=verify",
        "--ioengine=nbd",
        &format!("--uri={}", t.uri("v")),
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=32",
        "--size=16M",
        "--verify=crc32c",
        "--do_verify=1",
        // fio otherwise drops a verify-state file into the working directory (the source tree).
        "--verify_state_save=0",
        "--randseed=42",
        "--output-format=json",
    ]));
    // The nbd engine prints "fio: connected to NBD server" before the JSON.
    let text = stdout(&out);
    let json = &text[text.find('{').unwrap()..];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let job = &v["jobs"][0];
    assert_eq!(job["error"].as_u64(), Some(0), "{job}");
    assert_eq!(job["write"]["io_bytes"].as_u64(), Some(16 << 20));
    assert_eq!(
        job["read"]["io_bytes"].as_u64(),
        Some(16 << 20),
        "verify pass"
    );
}
