//! Thin, hand-written FFI to the C filesystem libraries rehost trusts for writing guest
//! filesystems, with their I/O routed to rehost's block layer (`disk`), so they work on raw,
//! qcow2 and NBD volumes and through the undo journal ([`disk::txn::Transaction`]).
//!
//! This is the one crate of the workspace allowed `unsafe`: every `unsafe` block is small and
//! carries a `// SAFETY:` note, no Rust panic unwinds into C, and everything public is safe.
//!
//! - [`ext2fs`]: ext2/3/4 through libext2fs (e2fsprogs ≥ 1.46).
//! - [`ntfs3g`]: NTFS through libntfs-3g (2022.10.3).
//!
//! `DESIGN.md` explains the I/O manager, the refusals and the libext2fs 1.47.2 bugs avoided.
//!
//! ```no_run
//! use std::sync::Arc;
//! use disk::{open::Access, raw::RawFile, txn::Transaction};
//! use ffi::ext2fs::{Ext2Fs, NewFile, OpenOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let raw = Arc::new(RawFile::open("disk.img", Access::ReadWrite)?);
//! let txn = Arc::new(Transaction::begin(raw, "disk.img.rehost-undo".as_ref())?);
//! let mut fs = Ext2Fs::open(txn.clone(), &OpenOptions::new())?;
//! fs.mkdir_p("/etc/modules-load.d", &NewFile::dir(0o755))?;
//! fs.write_file("/etc/modules-load.d/virtio.conf", b"virtio_blk\n", &NewFile::file(0o644))?;
//! fs.close()?;
//! Arc::try_unwrap(txn).map_err(|_| "device still shared")?.commit()?;
//! # Ok(())
//! # }
//! ```

#![allow(
    unsafe_code,
    reason = "this crate is the workspace's FFI boundary to libext2fs; each block is documented"
)]

pub mod error;
pub mod ext2fs;
pub mod ntfs3g;

pub use error::{Error, Refusal, Result};
