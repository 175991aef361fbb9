//! Fuzzing harness bodies (house style S17): plain functions that must never panic, so the seed
//! corpus also runs under `cargo test` and the `fuzz/` crate only wraps them.

use std::io::{Cursor, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::block::{BlockRead, BlockWrite};
use crate::nbd::NbdClient;
use crate::open::Access;
use crate::qcow2::{BackingPolicy, Qcow2Image};

/// Opens `data` as a qcow2 image (read-only, no backing files) and reads a few sectors and its
/// allocation map. Errors are fine; panics, hangs and unbounded allocation are bugs.
pub fn qcow2_open(data: &[u8]) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "rehost-fuzz-qcow2-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(img) = Qcow2Image::open(&path, Access::ReadOnly, BackingPolicy::deny()) {
        let size = img.size();
        let mut sector = [0u8; 512];
        for at in [0, size / 2, size.saturating_sub(512)] {
            if at.checked_add(512).is_some_and(|end| end <= size) {
                let _ = img.read_exact_at(at, &mut sector);
            }
        }
        let _ = img.extents(0, size.min(1 << 20));
    }
    let _ = std::fs::remove_file(&path);
}

/// A transport whose server side is `data` and which swallows everything the client sends.
struct Scripted(Cursor<Vec<u8>>);

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs the NBD client's handshake and a read, an allocation query and a write against `data`
/// as the whole server byte stream.
pub fn nbd_reply(data: &[u8]) {
    let Ok(client) = NbdClient::from_transport(Box::new(Scripted(Cursor::new(data.to_vec()))), "")
    else {
        return;
    };
    let size = client.size();
    let mut buf = vec![0u8; usize::try_from(size.min(4096)).unwrap_or(0)];
    let _ = client.read_exact_at(0, &mut buf);
    let _ = client.extents(0, size.min(1 << 20));
    if !client.is_read_only() && size >= 1 {
        let _ = client.write_all_at(0, &[1]);
        let _ = client.flush();
    }
}
