//! rehost's block layer: everything between a guest disk's bytes and the filesystems on it.
//!
//! - [`block`]: the positional, cursor-free device traits ([`BlockRead`], [`BlockWrite`]).
//! - [`raw`], [`qcow2`], [`nbd`]: backends for raw files, qcow2 images and NBD exports.
//! - [`open`]: opening a path or URI with format detection and an explicit backing-file policy.
//! - [`partition`], [`lvm`]: partition tables and LVM2 logical volumes as device views ([`Slice`]).
//!
//! Everything here treats image bytes as hostile (house style S11, S12): no byte read from an
//! image can panic, loop without bound or allocate without a cap.
//!
//! # Why these dependencies
//! - `imago` for qcow2: a maintained, pure-Rust qcow2 driver with an explicit gate for implicit
//!   opens (backing files), which is exactly the policy object house style S6 asks for.
//! - `zerocopy` for on-disk layouts: raw structs are read without `unsafe`.
//! - `crc32fast` for GPT header and entry-array checksums.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use disk::{BlockRead, MemDisk, Slice};
//!
//! let disk = Arc::new(MemDisk::from_vec(vec![7u8; 4096]));
//! let part = Slice::new(disk, 1024, 2048)?;
//! let mut buf = [0u8; 2];
//! part.read_exact_at(0, &mut buf)?;
//! assert_eq!(buf, [7, 7]);
//! # Ok::<(), disk::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod block;
pub mod concat;
pub mod detect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lvm;
pub mod mem;
pub mod nbd;
pub mod open;
pub mod overlay;
pub mod partition;
pub mod qcow2;
pub mod raw;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod txn;
pub mod view;

pub use block::{
    BlockRead, BlockReadExt, BlockWrite, Extent, ExtentKind, SharedRead, SharedWrite, ZeroMode,
    check_range,
};
pub use error::{Corrupt, Error, Result, Unsupported};
pub use mem::MemDisk;
pub use view::Slice;
