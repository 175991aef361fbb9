//! Fuzz harness bodies (house style S17): they drive the real server code with arbitrary client
//! bytes over an in-memory duplex stream, and must never panic or hang.
#![doc(hidden)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::MemBackend;
use crate::export::{Export, StaticCatalog};
use crate::proto::*;
use crate::server::{Server, ServerConfig};

/// Size of the in-memory export the harnesses serve.
const EXPORT_SIZE: usize = 1 << 20;
/// Wall-clock cap of one harness run (only a safety net: inputs end with EOF).
const RUN_TIMEOUT: Duration = Duration::from_secs(5);

fn run(input: Vec<u8>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let mut catalog = StaticCatalog::new();
        catalog.insert(Export::new("", Arc::new(MemBackend::new(EXPORT_SIZE))));
        catalog.insert(
            Export::new("ro", Arc::new(MemBackend::new(EXPORT_SIZE)))
                .read_only(true)
                .description("read-only"),
        );
        let config = ServerConfig {
            handshake_timeout: RUN_TIMEOUT,
            reply_timeout: RUN_TIMEOUT,
            ..ServerConfig::default()
        };
        let Ok(server) = Server::new(Arc::new(catalog), config) else {
            return;
        };
        let (client, served) = tokio::io::duplex(64 * 1024);
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let srv = tokio::spawn(async move { server.serve_connection(served, "fuzz").await });
        let writer = tokio::spawn(async move {
            let _ = client_wr.write_all(&input).await;
            let _ = client_wr.shutdown().await;
        });
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(client_rd.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let _ = tokio::time::timeout(RUN_TIMEOUT, async {
            let _ = writer.await;
            let _ = srv.await;
        })
        .await;
        drain.abort();
    });
}

fn option(buf: &mut Vec<u8>, opt: u32, data: &[u8]) {
    buf.extend_from_slice(&IHAVEOPT.to_be_bytes());
    buf.extend_from_slice(&opt.to_be_bytes());
    buf.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(data);
}

/// Feeds `data` as everything the client sends, from the client flags on.
pub fn fuzz_handshake(data: &[u8]) {
    run(data.to_vec());
}

/// A valid handshake chosen by the first byte of `data` (bit 0: structured replies, bit 1:
/// extended headers, bit 2: `base:allocation`, bit 3: the read-only export), then the rest of
/// `data` as transmission-phase bytes.
pub fn fuzz_transmission(data: &[u8]) {
    let sel = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let name: &[u8] = if sel & 8 != 0 { b"ro" } else { b"" };
    let mut input = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    if sel & 1 != 0 {
        option(&mut input, OPT_STRUCTURED_REPLY, &[]);
    }
    if sel & 2 != 0 {
        option(&mut input, OPT_EXTENDED_HEADERS, &[]);
    }
    if sel & 4 != 0 {
        let mut d = u32::try_from(name.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes()
            .to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(
            &u32::try_from(BASE_ALLOCATION.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
        option(&mut input, OPT_SET_META_CONTEXT, &d);
    }
    let mut go = u32::try_from(name.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    go.extend_from_slice(name);
    go.extend_from_slice(&0u16.to_be_bytes());
    option(&mut input, OPT_GO, &go);
    input.extend_from_slice(rest);
    run(input);
}
