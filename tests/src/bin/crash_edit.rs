//! Crash-test helper: a deterministic multi-file edit of the FAT filesystem on an image, made
//! through `disk::open` and a `disk::txn::Transaction`, printing a progress marker before each
//! step so the crash test can tell where its SIGKILL landed.
//!
//! Usage: `crash_edit IMAGE UNDO_FILE`. `CRASH_EDIT_DELAY_US` sleeps that long before each step.
//! Exit status 0 after the commit, 2 on any error.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use disk::open::{Access, OpenOptions};
use disk::txn::Transaction;
use guestfs::fat::FatFs;
use guestfs::write::{FsWrite, FsWriteExt, NewFileAttrs, WriteOptions};

/// The edit: what the crash test expects after a complete run.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect()
}

fn run(image: &str, undo: &str) -> Result<(), Box<dyn std::error::Error>> {
    let delay = std::env::var("CRASH_EDIT_DELAY_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut out = std::io::stdout();
    let mut stage = |name: &str| -> std::io::Result<()> {
        writeln!(out, "stage {name}")?;
        out.flush()?;
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        Ok(())
    };
    stage("open")?;
    let opened = disk::open::open(image, &OpenOptions::new().access(Access::ReadWrite))?;
    let dev = opened.write().ok_or("image opened read-only")?;
    let tx = Arc::new(Transaction::begin(dev, std::path::Path::new(undo))?);
    let fs = FatFs::open_rw(tx.clone(), WriteOptions::new())?;
    let attrs = NewFileAttrs::file();
    stage("mkdir")?;
    fs.mkdir_p(b"/edit/sub", &NewFileAttrs::dir())?;
    stage("create-a")?;
    fs.write_file_path(b"/edit/a.txt", &pattern(10_000, 1), &attrs)?;
    stage("create-b")?;
    fs.write_file_path(b"/edit/sub/b.bin", &pattern(300_000, 2), &attrs)?;
    stage("overwrite")?;
    fs.write_file_path(b"/keep.txt", &pattern(70_000, 3), &attrs)?;
    stage("append")?;
    fs.append_path(b"/edit/a.txt", &pattern(5_000, 4))?;
    stage("delete")?;
    fs.unlink_path(b"/gone.txt")?;
    stage("rename")?;
    fs.rename_path(b"/edit/sub", b"/moved")?;
    stage("create-c")?;
    fs.write_file_path(b"/moved/c.txt", b"the end\n", &attrs)?;
    stage("flush")?;
    fs.flush()?;
    drop(fs);
    stage("commit")?;
    Arc::try_unwrap(tx)
        .map_err(|_| "transaction still shared")?
        .commit()?;
    stage("committed")?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(image), Some(undo)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: crash_edit IMAGE UNDO_FILE");
        return ExitCode::from(2);
    };
    match run(image, undo) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_edit: {e}");
            ExitCode::from(2)
        }
    }
}
