//! Windows registry hives ("regf" files): reading, walking, writing, .reg export, import and
//! diff.
//!
//! This is our own implementation of the regf format, written from the public format
//! descriptions (Maxim Suhanov's "Windows registry file format specification" and libyal's REGF
//! notes), not a binding to libhivex, because:
//!
//! - hive files come from untrusted guest disks, and this crate gives the guarantees of the
//!   workspace's house style to every byte: no panics, every loop, recursion and allocation
//!   bounded (see the `MAX_*` constants), each error naming the damaged structure and its offset;
//! - the writer ([`HiveMut`]) stands on the same parser we test and fuzz: every edit first reads
//!   the structures it changes through the checked read path, so it never builds on bytes the
//!   reader would refuse;
//! - it keeps C code out of the process;
//! - it gives exact control of what is written: which cells are reused, how subkey lists are
//!   split, that new keys inherit their parent's security cell, how big data is segmented, and
//!   that unknown base block fields are kept byte for byte.
//!
//! libhivex (`hivexregedit`, `hivexsh`) stays in the tests as the oracle: our walk, our export
//! and every hive we write are compared with its view, on synthetic hives, on random edit
//! sequences and on a real Windows SYSTEM hive.
//!
//! Dirty hives (interrupted writes, with data still in the `.LOG1`/`.LOG2` files) are refused by
//! [`Hive::from_bytes`] with [`Error::Dirty`]; [`Hive::open_with_logs`] replays the logs (new format
//! with entries verified by their Marvin32 hashes; old "DIRT" format by base block checks), and
//! [`HiveOptions::allow_dirty`] reads the primary file as it is. Only a clean (or replayed) hive
//! can be written: [`Hive::into_mut`] refuses a dirty one.
//!
//! Writing: [`HiveMut::create_key`], [`HiveMut::set_value`] (any type number),
//! [`HiveMut::delete_value`], [`HiveMut::delete_key`], [`HiveMut::apply_reg`] (a .reg file, all
//! or nothing), then [`HiveMut::into_bytes`]. [`diff_reg`] writes the .reg text that turns one
//! state of a hive into another; [`parse_reg`] lists a .reg file's changes without applying
//! them (for dry runs).
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
//!
//! // Write: a new value through a .reg import, then the diff between the two states.
//! let mut w = hive::Hive::from_bytes(hive.as_bytes().to_vec())?.into_mut()?;
//! w.apply_reg(
//!     "Windows Registry Editor Version 5.00\n\n\
//!      [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor]\n\"Type\"=dword:00000001\n",
//!     r"HKEY_LOCAL_MACHINE\SYSTEM",
//! )?;
//! let after = hive::Hive::from_bytes(w.into_bytes())?;
//! let diff = hive::diff_reg(&hive, &after, r"HKLM\SYSTEM")?;
//! assert_eq!(
//!     diff,
//!     "Windows Registry Editor Version 5.00\n\n\
//!      [HKLM\\SYSTEM\\ControlSet001\\Services\\viostor]\n\"Type\"=dword:00000001\n"
//! );
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
