//! Hostile-input helper for the ext2/3/4 writer: opens one (possibly damaged) ext image for
//! writing through `guestfs::open_rw` and runs a fixed sequence of reads and edits on it, so
//! `tests/tests/ext4_write_hostile.rs` can run each mutation in its own process and count a
//! crash in libext2fs's C code (a signal) instead of losing the test runner to it.
//!
//! Usage: `ext4_write_one IMAGE MUTATION [force]`, where MUTATION is `-` (none), `cut:N` (the
//! image truncated to N bytes) or `OFF=VAL,OFF=VAL,...` (bytes at decimal offsets replaced by
//! decimal values). The image is loaded into memory and never written back.
//!
//! Prints one line per step, `<step> ok` or `<step> err <error>`, and exits 0 when every step
//! succeeded, 1 when `open_rw` refused the image, 2 when a later step returned an error and 3 on
//! a usage error. A panic exits 101 and a crash or abort ends the process by a signal, which is
//! what the test counts.

use std::process::ExitCode;
use std::sync::Arc;

use disk::mem::MemDisk;
use guestfs::write::{FsWrite, NewFileAttrs, WriteOptions};
use guestfs::{FsReadExt, GuestPath};

/// Most bytes a step reads back (the fixture's files are a few KiB).
const READ_CAP: u64 = 1 << 20;

/// Applies `mutation` (see the module docs) to `image`.
fn mutate(mut image: Vec<u8>, mutation: &str) -> Result<Vec<u8>, String> {
    if mutation == "-" {
        return Ok(image);
    }
    if let Some(n) = mutation.strip_prefix("cut:") {
        let n: usize = n.parse().map_err(|e| format!("cut {n:?}: {e}"))?;
        image.truncate(n);
        return Ok(image);
    }
    for patch in mutation.split(',') {
        let (off, val) = patch
            .split_once('=')
            .ok_or_else(|| format!("patch {patch:?} is not OFF=VAL"))?;
        let off: usize = off.parse().map_err(|e| format!("offset {off:?}: {e}"))?;
        let val: u8 = val.parse().map_err(|e| format!("value {val:?}: {e}"))?;
        let len = image.len();
        *image
            .get_mut(off)
            .ok_or_else(|| format!("offset {off} past the {len}-byte image"))? = val;
    }
    Ok(image)
}

fn path(raw: &str) -> GuestPath {
    // OK to expect: every path below is a constant absolute path.
    GuestPath::parse(raw.as_bytes()).expect("constant path parses")
}

/// Prints the step's outcome; true if it succeeded.
fn step<T>(name: &str, r: guestfs::Result<T>) -> bool {
    match r {
        Ok(_) => {
            println!("{name} ok");
            true
        }
        Err(e) => {
            println!("{name} err {e}");
            false
        }
    }
}

/// The edit sequence; every step runs even if an earlier one failed, to reach more code.
fn edit(fs: &dyn FsWrite) -> bool {
    let attrs = NewFileAttrs::file();
    let mut ok = true;
    ok &= step("read_dir", fs.read_dir(&GuestPath::root()));
    ok &= step("read_file", fs.read_file(b"/hello.txt", READ_CAP));
    ok &= step("read_big", fs.read_file(b"/big.bin", READ_CAP));
    ok &= step("read_dir_sub", fs.read_dir(&path("/dir")));
    ok &= step(
        "write_new",
        fs.write_file(&path("/new.txt"), &[0x5a; 3000], &attrs),
    );
    ok &= step(
        "overwrite",
        fs.write_file(&path("/hello.txt"), b"rewritten\n", &attrs),
    );
    // Into a large directory (an htree with dir_index) and onto a file with an extent tree
    // or indirect blocks.
    ok &= step(
        "write_in_dir",
        fs.write_file(&path("/dir/added"), b"added\n", &attrs),
    );
    ok &= step("append", fs.append(&path("/big.bin"), &[0xa5; 5000]));
    ok &= step("mkdir", fs.mkdir(&path("/newdir"), &NewFileAttrs::dir()));
    ok &= step("unlink", fs.unlink(&path("/dir/file2")));
    ok &= step(
        "rename",
        fs.rename(&path("/big.bin"), &path("/dir/sub/big")),
    );
    ok &= step(
        "set_xattr",
        fs.set_xattr(&path("/new.txt"), b"user.k", b"v"),
    );
    ok &= step("flush", fs.flush());
    ok
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(image), Some(mutation)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ext4_write_one IMAGE MUTATION [force]");
        return ExitCode::from(3);
    };
    let force = args.get(3).is_some_and(|a| a == "force");
    let bytes = match std::fs::read(image)
        .map_err(|e| format!("read {image}: {e}"))
        .and_then(|b| mutate(b, mutation))
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ext4_write_one: {e}");
            return ExitCode::from(3);
        }
    };
    let dev = Arc::new(MemDisk::from_vec(bytes));
    let fs = match guestfs::open_rw(dev, WriteOptions::new().force(force)) {
        Ok(fs) => fs,
        Err(e) => {
            println!("open err {e}");
            return ExitCode::from(1);
        }
    };
    println!("open ok");
    let ok = edit(&*fs);
    drop(fs);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
