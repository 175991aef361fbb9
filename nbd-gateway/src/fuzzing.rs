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

/// Most server output kept for inspection by tests.
const KEEP_OUTPUT: usize = 1 << 20;

/// Runs one connection over `input` and returns (the start of) what the server sent.
fn run(input: Vec<u8>) -> Vec<u8> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
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
            request_timeout: RUN_TIMEOUT,
            ..ServerConfig::default()
        };
        let Ok(server) = Server::new(Arc::new(catalog), config) else {
            return Vec::new();
        };
        let (client, served) = tokio::io::duplex(64 * 1024);
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let srv = tokio::spawn(async move { server.serve_connection(served, "fuzz").await });
        let writer = tokio::spawn(async move {
            let _ = client_wr.write_all(&input).await;
            let _ = client_wr.shutdown().await;
        });
        let drain = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = client_rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = KEEP_OUTPUT.saturating_sub(out.len()).min(n);
                out.extend_from_slice(buf.get(..room).unwrap_or_default());
            }
            out
        });
        let _ = tokio::time::timeout(RUN_TIMEOUT, async {
            let _ = writer.await;
            let _ = srv.await;
        })
        .await;
        // The server side is closed by now, so the drain sees EOF; cap the wait anyway.
        match tokio::time::timeout(RUN_TIMEOUT, drain).await {
            Ok(Ok(out)) => out,
            _ => Vec::new(),
        }
    })
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

/// As [`fuzz_transmission`], returning what the server sent (tests check the seeds are valid).
#[cfg(test)]
fn transmission_output(data: &[u8]) -> Vec<u8> {
    run(transmission_input(data))
}

/// A valid handshake chosen by the first byte of `data` (bit 0: structured replies, bit 1:
/// extended headers, bit 2: `base:allocation`, bit 3: the read-only export), then the rest of
/// `data` as transmission-phase bytes.
pub fn fuzz_transmission(data: &[u8]) {
    run(transmission_input(data));
}

fn transmission_input(data: &[u8]) -> Vec<u8> {
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
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid client byte streams: the seeds of the corpus.
    fn handshake_seeds() -> Vec<Vec<u8>> {
        let flags = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
            .to_be_bytes()
            .to_vec();
        let mut seeds = Vec::new();
        // LIST, INFO with every info request, then GO and a read.
        let mut s = flags.clone();
        option(&mut s, OPT_LIST, &[]);
        let mut info = 2u32.to_be_bytes().to_vec();
        info.extend_from_slice(b"ro");
        info.extend_from_slice(&3u16.to_be_bytes());
        for i in [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE] {
            info.extend_from_slice(&i.to_be_bytes());
        }
        option(&mut s, OPT_INFO, &info);
        option(&mut s, OPT_STRUCTURED_REPLY, &[]);
        let mut meta = 0u32.to_be_bytes().to_vec();
        meta.extend_from_slice(&1u32.to_be_bytes());
        meta.extend_from_slice(&5u32.to_be_bytes());
        meta.extend_from_slice(b"base:");
        option(&mut s, OPT_LIST_META_CONTEXT, &meta);
        option(&mut s, OPT_GO, &info);
        seeds.push(s);
        // EXPORT_NAME of the default export, then a simple read and DISC.
        let mut s = flags.clone();
        option(&mut s, OPT_EXPORT_NAME, &[]);
        s.extend_from_slice(&request(0, CMD_READ, 0, 512, false));
        s.extend_from_slice(&request(0, CMD_DISC, 0, 0, false));
        seeds.push(s);
        // Unknown option, STARTTLS (refused), ABORT.
        let mut s = flags;
        option(&mut s, 42, b"payload");
        option(&mut s, OPT_STARTTLS, &[]);
        option(&mut s, OPT_ABORT, &[]);
        seeds.push(s);
        seeds
    }

    fn request(flags: u16, typ: u16, offset: u64, len: u64, extended: bool) -> Vec<u8> {
        let mut b = if extended {
            EXTENDED_REQUEST_MAGIC
        } else {
            REQUEST_MAGIC
        }
        .to_be_bytes()
        .to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&0x1234u64.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        if extended {
            b.extend_from_slice(&len.to_be_bytes());
        } else {
            b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        }
        b
    }

    fn transmission_seeds() -> Vec<Vec<u8>> {
        let mut seeds = Vec::new();
        for sel in [0u8, 1, 5, 6, 7] {
            let ext = sel & 2 != 0;
            let mut s = vec![sel];
            s.extend_from_slice(&request(CMD_FLAG_FUA, CMD_WRITE, 4096, 16, ext));
            s.extend_from_slice(&[0xAA; 16]);
            s.extend_from_slice(&request(0, CMD_READ, 0, 8192, ext));
            // Block status needs base:allocation (bit 2); without it, read again instead.
            let status = if sel & 4 != 0 {
                CMD_BLOCK_STATUS
            } else {
                CMD_READ
            };
            s.extend_from_slice(&request(0, status, 0, 65536, ext));
            s.extend_from_slice(&request(CMD_FLAG_NO_HOLE, CMD_WRITE_ZEROES, 0, 512, ext));
            s.extend_from_slice(&request(0, CMD_TRIM, 512, 512, ext));
            s.extend_from_slice(&request(0, CMD_CACHE, 0, 4096, ext));
            s.extend_from_slice(&request(0, CMD_FLUSH, 0, 0, ext));
            s.extend_from_slice(&request(0, CMD_DISC, 0, 0, ext));
            seeds.push(s);
        }
        seeds
    }

    struct Prng(u64);
    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
        }
    }

    /// Byte flips at pseudo-random offsets, and truncations, from a fixed seed.
    fn mutations(seeds: &[Vec<u8>], count: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = Prng(seed);
        (0..count)
            .map(|i| {
                let mut m = seeds[i % seeds.len()].clone();
                if i % 5 == 4 {
                    let keep = rng.below(m.len());
                    m.truncate(keep);
                } else {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(m.len());
                        if let Some(b) = m.get_mut(at) {
                            *b ^= 1 << rng.below(8);
                        }
                    }
                }
                m
            })
            .collect()
    }

    #[test]
    fn handshake_harness_survives_seeds_and_mutations() {
        let seeds = handshake_seeds();
        for s in &seeds {
            fuzz_handshake(s);
        }
        for m in mutations(&seeds, 500, 0x1234_5678) {
            fuzz_handshake(&m);
        }
    }

    #[test]
    fn transmission_harness_survives_seeds_and_mutations() {
        let seeds = transmission_seeds();
        for s in &seeds {
            // Each seed is valid: every request but DISC gets a successful reply. (Requests run
            // concurrently, so the read need not see the write queued before it.)
            let out = transmission_output(s);
            let simple = out
                .windows(4)
                .filter(|w| *w == SIMPLE_REPLY_MAGIC.to_be_bytes())
                .count();
            let chunks_done = out
                .windows(6)
                .filter(|w| {
                    (w.get(..4) == Some(&STRUCTURED_REPLY_MAGIC.to_be_bytes()[..])
                        || w.get(..4) == Some(&EXTENDED_REPLY_MAGIC.to_be_bytes()[..]))
                        && w.get(4..6) == Some(&REPLY_FLAG_DONE.to_be_bytes()[..])
                })
                .count();
            assert_eq!(simple + chunks_done, 7, "seed {:?}", s.first());
            let errors = out
                .windows(8)
                .filter(|w| {
                    let magic = w.get(..4);
                    (magic == Some(&SIMPLE_REPLY_MAGIC.to_be_bytes()[..])
                        && w.get(4..8) != Some(&[0u8; 4][..]))
                        || ((magic == Some(&STRUCTURED_REPLY_MAGIC.to_be_bytes()[..])
                            || magic == Some(&EXTENDED_REPLY_MAGIC.to_be_bytes()[..]))
                            && w.get(6..8) == Some(&REPLY_TYPE_ERROR.to_be_bytes()[..]))
                })
                .count();
            assert_eq!(errors, 0, "seed {:?}", s.first());
        }
        for m in mutations(&seeds, 500, 0x9abc_def0) {
            fuzz_transmission(&m);
        }
    }

    // found by review: a zero-length structured read must still end with a DONE chunk.
    #[test]
    fn zero_length_structured_read() {
        let mut s = vec![1u8];
        s.extend_from_slice(&request(0, CMD_READ, 0, 0, false));
        fuzz_transmission(&s);
    }
}
