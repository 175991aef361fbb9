//! The NBD gateway: a concurrent tokio NBD server for volumes and snapshots.
//!
//! This is the async edge of the workspace (house style S5): the protocol runs on tokio, and
//! every storage call goes through `spawn_blocking`. It follows the NBD protocol specification
//! (`doc/proto.md` of the NetworkBlockDevice project, plus the extended-headers extension):
//! fixed newstyle negotiation, `NBD_OPT_GO`/`INFO`, structured replies, `base:allocation`
//! block status, extended headers and STARTTLS; see `DESIGN.md` for the architecture.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use nbd_gateway::{Server, ServerConfig, Store};
//!
//! let store = Store::open("/srv/volumes")?;
//! store.create_volume("disk0", 1 << 30, "")?;
//! let server = Server::new(Arc::new(store), ServerConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:10809").await?;
//! server.serve_tcp(listener).await?;
//! # Ok(()) }
//! ```

mod backend;
mod direct;
mod error;
mod export;
pub mod fuzzing;
mod metrics;
mod proto;
mod qcow2;
mod reply;
mod server;
mod service;
mod store;
mod tls;

pub use backend::{ExportBackend, FileBackend, MemBackend, Run, ZeroOutcome, ZeroRequest};
pub use error::{Error, Result};
pub use export::{Export, ExportCatalog, StaticCatalog};
pub use metrics::{ExportMetrics, Metrics, serve_metrics};
pub use proto::{MAX_PAYLOAD, NbdError};
pub use qcow2::Qcow2Backend;
pub use server::{Server, ServerConfig, TlsMode};
pub use service::{ConfigFile, ListenAddr, Service, ServiceOptions, parse_tls_mode};
pub use store::{CloneMethod, SnapshotInfo, Store, VolumeFormat, VolumeInfo, validate_name};
pub use tls::acceptor_from_pem;
