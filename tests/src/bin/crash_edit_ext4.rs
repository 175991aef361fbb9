//! Crash-test helper for ext4: a deterministic multi-file edit of the ext4 filesystem on an
//! image (raw, qcow2 or an NBD export, through `disk::open`), made with libext2fs
//! (`ffi::ext2fs::Ext2Fs`) over a `disk::txn::Transaction`.
//!
//! The edit passes through numbered *points*: one before each step of the edit, one before
//! every write, flush, zeroing or discard the filesystem sends to the transaction, one before
//! every such call the transaction passes on to the image (its undo record is durable by
//! then), and one after the commit. The sequence is the same on every run over the same
//! image with the same libext2fs clock (`E2FSPROGS_FAKE_TIME`: at close libext2fs writes only
//! the superblock fields that changed, `s_wtime` among them), so a crash test can stop the
//! edit at any chosen point and SIGKILL it there.
//!
//! Usage:
//! - `crash_edit_ext4 edit TARGET UNDO_FILE`: with `CRASH_EDIT_AT=N` it prints
//!   `paused N <point>` on reaching point N and waits (until killed, or exits 3 when stdin
//!   closes). It prints `point N <point>` for each point passed before, and `points N` after
//!   the commit.
//!   The filesystem is partition 1 of TARGET if it has a partition table, else all of TARGET.
//!   Exit status 0 after the commit, 2 on any error.
//! - `crash_edit_ext4 serve STORE SOCKET`: serves an `nbd-gateway` store on a Unix socket in
//!   this separate process (so the edit's SIGKILL never hits the server), printing the bound
//!   address once it listens; SIGTERM shuts it down gracefully.

use std::fmt::Display;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use disk::block::{BlockRead, BlockWrite, Extent, ZeroMode};
use disk::open::{Access, OpenOptions};
use disk::txn::Transaction;
use disk::view::Slice;
use ffi::ext2fs::{Ext2Fs, NewFile};

/// Where a run stops, and how many points it has passed.
struct Tripwire {
    next: AtomicU64,
    stop_at: Option<u64>,
}

impl Tripwire {
    fn point(&self, what: impl Display) {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let mut out = std::io::stdout().lock();
        if self.stop_at == Some(n) {
            // The test reads this line, then SIGKILLs us. A failed print only means it is gone.
            let _ = writeln!(out, "paused {n} {what}");
            let _ = out.flush();
            drop(out);
            // Block until killed; stdin closes only if the test itself died, so exit then
            // rather than linger.
            let _ = std::io::stdin().read(&mut [0u8; 1]);
            std::process::exit(3);
        }
        let _ = writeln!(out, "point {n} {what}");
    }

    fn passed(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }
}

/// A device that passes a point before each call that changes it.
struct Counted<D: ?Sized> {
    inner: Arc<D>,
    layer: &'static str,
    wire: Arc<Tripwire>,
}

impl<D: BlockRead + ?Sized> BlockRead for Counted<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> disk::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }
    fn extents(&self, offset: u64, len: u64) -> disk::Result<Vec<Extent>> {
        self.inner.extents(offset, len)
    }
}

impl<D: BlockWrite + ?Sized> BlockWrite for Counted<D> {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> disk::Result<()> {
        self.wire.point(format_args!(
            "{} write {offset:#x}+{}",
            self.layer,
            buf.len()
        ));
        self.inner.write_all_at(offset, buf)
    }
    fn flush(&self) -> disk::Result<()> {
        self.wire.point(format_args!("{} flush", self.layer));
        self.inner.flush()
    }
    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> disk::Result<()> {
        self.wire
            .point(format_args!("{} zeroes {offset:#x}+{len}", self.layer));
        self.inner.write_zeroes(offset, len, mode)
    }
    fn discard(&self, offset: u64, len: u64) -> disk::Result<()> {
        self.wire
            .point(format_args!("{} discard {offset:#x}+{len}", self.layer));
        self.inner.discard(offset, len)
    }
}

/// Deterministic file contents; the crash test computes the same.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect()
}

type Error = Box<dyn std::error::Error>;

/// The edit. The crash test's `expected_edit` describes its result.
fn edit(fs: &mut Ext2Fs, wire: &Tripwire) -> Result<(), Error> {
    let file = NewFile::file(0o644);
    let dir = NewFile::dir(0o755);
    wire.point("stage fstab");
    fs.write_file(
        "/etc/fstab",
        b"# converted by rehost\n/dev/vda1 / ext4 errors=remount-ro 0 1\n/dev/vdb1 /data ext4 defaults,nofail 0 2\n",
        &file,
    )?;
    wire.point("stage xattr");
    fs.set_xattr("/etc/fstab", "user.rehost.origin", b"vmware")?;
    wire.point("stage mkdir");
    fs.mkdir_p("/opt/rehost/state", &dir)?;
    wire.point("stage big");
    fs.write_file("/opt/rehost/state/big.bin", &pattern(1_300_000, 5), &file)?;
    wire.point("stage small");
    fs.write_file("/opt/rehost/state/small.txt", b"small\n", &file)?;
    wire.point("stage modules");
    fs.mkdir_p("/etc/modules-load.d", &dir)?;
    fs.write_file(
        "/etc/modules-load.d/virtio.conf",
        b"virtio_blk\nvirtio_net\nvirtio_scsi\n",
        &file,
    )?;
    wire.point("stage append");
    fs.append("/home/user/notes.txt", &pattern(20_000, 6))?;
    wire.point("stage rename");
    fs.rename("/etc/old.conf", "/etc/new.conf")?;
    wire.point("stage unlink");
    fs.unlink("/var/log/gone.log")?;
    wire.point("stage symlink");
    fs.symlink("/opt/rehost/current", "state/big.bin", &file)?;
    wire.point("stage chmod");
    fs.chmod("/opt/rehost/state/small.txt", 0o600)?;
    Ok(())
}

fn run_edit(target: &str, undo: &str) -> Result<(), Error> {
    let stop_at = match std::env::var("CRASH_EDIT_AT") {
        Ok(v) => Some(v.parse::<u64>()?),
        Err(_) => None,
    };
    let wire = Arc::new(Tripwire {
        next: AtomicU64::new(0),
        stop_at,
    });
    wire.point("stage open");
    let opened = disk::open::open(target, &OpenOptions::new().access(Access::ReadWrite))?;
    let dev = opened.write().ok_or("image opened read-only")?;
    let dev = Arc::new(Counted {
        inner: dev,
        layer: "device",
        wire: wire.clone(),
    });
    let tx = Arc::new(Transaction::begin(dev, std::path::Path::new(undo))?);
    let top: Arc<dyn BlockWrite> = Arc::new(Counted {
        inner: tx.clone(),
        layer: "txn",
        wire: wire.clone(),
    });
    // A fixup edits the root filesystem of a partitioned disk; a bare filesystem is all of it.
    let fsdev: Arc<dyn BlockWrite> = match disk::partition::read_table(&*top) {
        Ok(t) => match t.get(1) {
            Some(p) => Arc::new(Slice::new(top, p.start, p.len)?),
            None => top,
        },
        Err(_) => top,
    };
    wire.point("stage fs-open");
    let mut fs = Ext2Fs::open(fsdev, &ffi::ext2fs::OpenOptions::new())?;
    edit(&mut fs, &wire)?;
    wire.point("stage close");
    fs.close()?;
    wire.point("stage commit");
    Arc::try_unwrap(tx)
        .map_err(|_| "transaction still shared")?
        .commit()?;
    wire.point("stage committed");
    let mut out = std::io::stdout().lock();
    writeln!(out, "points {}", wire.passed())?;
    out.flush()?;
    Ok(())
}

fn serve(store: &str, socket: &str) -> Result<(), Error> {
    let opts = nbd_gateway::ServiceOptions {
        store: store.into(),
        listen: vec![format!("unix:{socket}").parse()?],
        read_only: false,
        tls_mode: nbd_gateway::TlsMode::Off,
        tls_cert: None,
        tls_key: None,
        metrics: None,
    };
    nbd_gateway::Service::run_blocking(&opts, |service| {
        let mut out = std::io::stdout().lock();
        for a in service.addrs() {
            let _ = writeln!(out, "{a}");
        }
        let _ = out.flush();
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match (
        args.get(1).map(String::as_str),
        args.get(2),
        args.get(3),
        args.len(),
    ) {
        (Some("edit"), Some(target), Some(undo), 4) => run_edit(target, undo),
        (Some("serve"), Some(store), Some(socket), 4) => serve(store, socket),
        _ => {
            eprintln!("usage: crash_edit_ext4 edit TARGET UNDO_FILE | serve STORE SOCKET");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("crash_edit_ext4: {msg}");
            ExitCode::from(2)
        }
    }
}
