//! Windows registry hives ("regf" files): reading, walking and .reg export.
//!
//! This is our own parser of the regf format, written from the public format descriptions
//! (Maxim Suhanov's "Windows registry file format specification" and libyal's REGF notes), not a
//! binding to libhivex, because:
//!
//! - hive files come from untrusted guest disks, and this crate gives the guarantees of the
//!   workspace's house style to every byte: no panics, every loop, recursion and allocation
//!   bounded (see the `MAX_*` constants), each error naming the damaged structure and its offset;
//! - it keeps C code out of the process;
//! - it is the base of our own hive writer (the test kit already lays out valid hives).
//!
//! libhivex (`hivexregedit`, `hivexsh`) stays in the tests as an oracle: our walk and export are
//! compared with its output on synthetic hives and on a real Windows SYSTEM hive.
//!
//! Dirty hives (interrupted writes, with data still in the `.LOG1`/`.LOG2` files) are refused by
//! [`Hive::from_bytes`] with [`Error::Dirty`]; [`Hive::open_with_logs`] replays the logs (new format
//! with entries verified by their Marvin32 hashes; old "DIRT" format by base block checks), and
//! [`HiveOptions::allow_dirty`] reads the primary file as it is.
//!
//! ```
//! # fn main() -> Result<(), hive::Error> {
//! # let bytes = hive::testkit::HiveBuilder::new()
//! #     .value(r"ControlSet001\Services\viostor", "Start", hive::ValueType::Dword, &[0, 0, 0, 0])
//! #     .build();
//! let hive = hive::Hive::from_bytes(bytes)?;
//! let key = hive.open_path(r"ControlSet001\Services\viostor")?.expect("present");
//! let start = key.value("Start")?.and_then(|v| v.as_dword());
//! assert_eq!(start, Some(0));
//! let reg = key.export_reg(r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\viostor")?;
//! assert!(reg.contains("\"Start\"=dword:00000000"));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod base_block;
mod diff;
mod error;
mod export;
pub mod fuzzing;
mod hbin;
mod hive;
mod import;
mod key_node;
mod key_value;
mod log;
mod name;
mod subkey_list;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod write;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod write_tests;

pub use base_block::{BASE_BLOCK_SIZE, BaseBlock};
pub use diff::diff_reg;
pub use error::{Corrupt, Dirty, DirtyReason, Error, Result, Unsupported};
pub use export::REG_HEADER;
pub use hive::{Hive, HiveOptions, MAX_HIVE_SIZE, MAX_KEY_DEPTH};
pub use import::{MAX_REG_TEXT, RegChange, parse_reg};
pub use key_node::{FileTime, Key, flags};
pub use key_value::{MAX_VALUE_DATA, MAX_VALUES_PER_KEY, Value, ValueType};
pub use subkey_list::MAX_SUBKEYS_PER_KEY;
pub use write::{HiveMut, MAX_KEY_NAME_LEN, MAX_LEAF_ENTRIES, MAX_VALUE_NAME_LEN};
