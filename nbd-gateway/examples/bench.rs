//! Benchmark: this gateway vs `qemu-nbd` vs nbdkit's file plugin, same files, same clients.
//!
//! Run with `cargo run --release -p rehost-nbd-gateway --example bench` (set `BENCH_MIB` for
//! the size of the test files, default 256; `BENCH_SECS` for each fio run, default 5). Prints a
//! table; it is not a test and asserts nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbd_gateway::{Export, ExportBackend, FileBackend, Server, ServerConfig, StaticCatalog};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Peer {
    Ours,
    QemuNbd,
    Nbdkit,
}

const PEERS: [Peer; 3] = [Peer::Ours, Peer::QemuNbd, Peer::Nbdkit];

/// A running server for one file.
struct Running {
    uri: String,
    child: Option<Child>,
    rt: Option<(tokio::runtime::Runtime, Arc<Server>)>,
    cpu_start: f64,
}

fn clock_ticks() -> f64 {
    // Linux reports /proc times in USER_HZ, which is 100 on every supported architecture.
    100.0
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn wait_for(path: &Path) {
    for _ in 0..500 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("server socket {} never appeared", path.display());
}

fn start(peer: Peer, file: &Path, dir: &Path) -> Running {
    let sock = dir.join(format!("{peer:?}.sock"));
    let _ = std::fs::remove_file(&sock);
    let uri = format!("nbd+unix:///v?socket={}", sock.display());
    match peer {
        Peer::Ours => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(file)
                .unwrap();
            let backend: Arc<dyn ExportBackend> = Arc::new(FileBackend::new(f).unwrap());
            let mut catalog = StaticCatalog::new();
            catalog.insert(Export::new("v", backend));
            let server = Server::new(Arc::new(catalog), ServerConfig::default()).unwrap();
            let listener = {
                let _g = rt.enter();
                tokio::net::UnixListener::bind(&sock).unwrap()
            };
            let s = Arc::clone(&server);
            rt.spawn(async move { s.serve_unix(listener).await });
            Running {
                uri,
                child: None,
                rt: Some((rt, server)),
                cpu_start: cpu_seconds(std::process::id()),
            }
        }
        Peer::QemuNbd => {
            let child = Command::new("qemu-nbd")
                .args([
                    "-t",
                    "-e",
                    "16",
                    "-f",
                    "raw",
                    "-x",
                    "v",
                    "--discard=unmap",
                    "-k",
                ])
                .arg(&sock)
                .arg(file)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            wait_for(&sock);
            Running {
                uri,
                child: Some(child),
                rt: None,
                cpu_start: 0.0,
            }
        }
        Peer::Nbdkit => {
            let child = Command::new("nbdkit")
                .args(["-f", "-e", "v", "-U"])
                .arg(&sock)
                .arg("file")
                .arg(format!("file={}", file.display()))
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            wait_for(&sock);
            Running {
                uri,
                child: Some(child),
                rt: None,
                cpu_start: 0.0,
            }
        }
    }
}

impl Running {
    fn cpu(&self) -> f64 {
        match &self.child {
            Some(c) => cpu_seconds(c.id()),
            None => cpu_seconds(std::process::id()) - self.cpu_start,
        }
    }

    fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((rt, server)) = self.rt.take() {
            server.shutdown();
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn timed(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn fio_iops(uri: &str, rw: &str, depth: u32, secs: u64, size_mib: u64) -> f64 {
    let out = Command::new("fio")
        .args([
            "--name=b",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            &format!("--rw={rw}"),
            "--bs=4k",
            &format!("--iodepth={depth}"),
            &format!("--size={size_mib}M"),
            "--time_based=1",
            &format!("--runtime={secs}"),
            "--randseed=7",
            "--output-format=json",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text.find('{').map_or("{}", |i| &text[i..]);
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let key = if rw.contains("read") { "read" } else { "write" };
    v["jobs"][0][key]["iops"].as_f64().unwrap_or(0.0)
}

fn make_random(path: &Path, mib: u64) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut f = std::fs::File::create(path).unwrap();
    for _ in 0..mib {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::io::Write::write_all(&mut f, &buf).unwrap();
    }
    f.sync_all().unwrap();
}

fn make_sparse(path: &Path, size: u64, data_every: u64, data_len: usize) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let block = vec![0x5Au8; data_len];
    let mut off = 0;
    while off < size {
        std::os::unix::fs::FileExt::write_all_at(&f, &block, off).unwrap();
        off += data_every;
    }
    f.sync_all().unwrap();
}

fn copy_sparse(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
}

struct Row {
    name: String,
    /// true: bigger is better (throughput); false: smaller is better (time).
    higher_better: bool,
    values: Vec<f64>,
}

fn main() {
    for tool in ["qemu-nbd", "nbdkit", "nbdcopy", "nbdinfo", "fio"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            println!("skipping: {tool} not found");
            return;
        }
    }
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let random: PathBuf = d.join("random.raw");
    make_random(&random, mib);
    let sparse = d.join("sparse.raw");
    make_sparse(&sparse, mib << 20, 1 << 20, 16384);
    // 65,536 extents: 32,768 data blocks of 4 KiB, each followed by a 4 KiB hole.
    let extents = d.join("extents.raw");
    make_sparse(&extents, 32768 * 8192, 8192, 4096);

    let mut rows: Vec<Row> = Vec::new();
    let mut push = |name: &str, higher_better: bool, values: Vec<f64>| {
        rows.push(Row {
            name: name.to_owned(),
            higher_better,
            values,
        });
    };
    let gib = (mib as f64) / 1024.0;

    // Sequential read and write with nbdcopy, plus server CPU per GiB moved.
    let mut read = Vec::new();
    let mut write = Vec::new();
    let mut cpu = Vec::new();
    for p in PEERS {
        let file = d.join(format!("seq-{p:?}.raw"));
        copy_sparse(&random, &file);
        let s = start(p, &file, d);
        let c0 = s.cpu();
        let t = timed(Command::new("nbdcopy").args([&s.uri, "null:"]));
        read.push(mib as f64 / t);
        let t = timed(Command::new("nbdcopy").args([random.to_str().unwrap(), &s.uri]));
        write.push(mib as f64 / t);
        cpu.push((s.cpu() - c0) / (2.0 * gib));
        s.stop();
    }
    push("seq read MiB/s (nbdcopy)", true, read);
    push("seq write MiB/s (nbdcopy)", true, write);

    for (rw, depth) in [
        ("randread", 1),
        ("randread", 32),
        ("randwrite", 1),
        ("randwrite", 32),
    ] {
        let mut v = Vec::new();
        for p in PEERS {
            let file = d.join(format!("fio-{p:?}.raw"));
            copy_sparse(&random, &file);
            let s = start(p, &file, d);
            v.push(fio_iops(&s.uri, rw, depth, secs, mib));
            s.stop();
        }
        push(&format!("4k {rw} QD{depth} IOPS (fio)"), true, v);
    }

    let mut v = Vec::new();
    for p in PEERS {
        let s = start(p, &sparse, d);
        let out = d.join("sparse-out.raw");
        let _ = std::fs::remove_file(&out);
        std::fs::File::create(&out).unwrap();
        v.push(timed(
            Command::new("nbdcopy").args([&s.uri, out.to_str().unwrap()]),
        ));
        s.stop();
    }
    push("sparse copy s (nbdcopy)", false, v);

    let mut v = Vec::new();
    for p in PEERS {
        let s = start(p, &extents, d);
        v.push(timed(Command::new("nbdinfo").args(["--map", &s.uri])));
        s.stop();
    }
    push("nbdinfo --map 65536 extents s", false, v);
    push("server CPU-s per GiB (seq)", false, cpu);

    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>8}",
        "row", "ours", "qemu-nbd", "nbdkit", "ratio"
    );
    for r in &rows {
        let ours = r.values[0];
        let best_peer = if r.higher_better {
            r.values[1].max(r.values[2])
        } else {
            r.values[1].min(r.values[2])
        };
        let ratio = if r.higher_better {
            ours / best_peer
        } else {
            best_peer / ours
        };
        println!(
            "{:<34} {:>12.3} {:>12.3} {:>12.3} {:>7.2}x",
            r.name, r.values[0], r.values[1], r.values[2], ratio
        );
    }
    println!("ratio: ours relative to the better peer (above 1.00 means we are faster)");
}
