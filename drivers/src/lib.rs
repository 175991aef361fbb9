//! Driver catalogs for Windows guests: virtio-win given as a directory or an ISO, in its ISO
//! layout (`viostor/2k19/amd64/…`) or its RPM layout (`drivers/by-os/amd64/2k19/…`).
//!
//! The catalog maps an inspected Windows (version, build, server or client, architecture) to
//! the virtio-win folder ([`osmap`]), parses each driver's INF ([`inf`]), checks each `.sys`
//! as a native PE driver for the guest's machine and reads its version ([`pe`]), and explains
//! every choice ([`catalog::Selection`], [`catalog::render_human`]).
//!
//! This crate sits beside `fs` and `inspect` and depends on neither: it reads only its
//! [`Source`].
//!
//! ```
//! use drivers::{Arch, Catalog, Source, WindowsTarget};
//! use drivers::testkit::FakeTree;
//!
//! let dir = tempfile::tempdir()?;
//! FakeTree::standard().write_iso_layout(dir.path())?;
//! let catalog = Catalog::open(Source::open(dir.path())?)?;
//! let server_2019 = WindowsTarget { major: 10, minor: 0, build: 17763, server: true, arch: Arch::Amd64 };
//! let sel = catalog.select(&server_2019)?;
//! let viostor = sel.driver("viostor").unwrap();
//! assert_eq!(viostor.folder.name(), "2k19");
//! assert_eq!(viostor.services[0].start_type, 0);
//! println!("{}", drivers::render_human(&sel));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod catalog;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inf;
mod iso;
pub mod osmap;
pub mod pe;
pub mod source;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use catalog::{Catalog, DriverChoice, Layout, Selection, render_catalog, render_human};
pub use error::{Error, Result};
pub use inf::{Inf, InfDriver};
pub use osmap::{Arch, OsFolder, WindowsTarget};
pub use source::Source;
