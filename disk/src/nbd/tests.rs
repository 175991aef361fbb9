#![expect(
    clippy::cast_possible_truncation,
    reason = "test messages and offsets are small by construction"
)]

use super::*;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------------------------------------
// A scripted server: the client reads `data` and everything it writes is dropped. Cookies are
// predictable (1, 2, 3, ... per request), so whole conversations can be written in advance.

struct Scripted(Cursor<Vec<u8>>);
impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}
impl Write for Scripted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn opt_reply(v: &mut Vec<u8>, opt: u32, kind: u32, data: &[u8]) {
    v.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
}

/// Server side of a successful handshake: structured replies, base:allocation as context 7, an
/// export of `size` bytes with `flags`, and optionally block sizes.
fn hello(size: u64, flags: u16, sizes: Option<(u32, u32, u32)>) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&NBDMAGIC.to_be_bytes());
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ACK, &[]);
    let mut ctx = 7u32.to_be_bytes().to_vec();
    ctx.extend_from_slice(b"base:allocation");
    opt_reply(&mut v, OPT_SET_META_CONTEXT, REP_META_CONTEXT, &ctx);
    opt_reply(&mut v, OPT_SET_META_CONTEXT, REP_ACK, &[]);
    let mut info = INFO_EXPORT.to_be_bytes().to_vec();
    info.extend_from_slice(&size.to_be_bytes());
    info.extend_from_slice(&(flags | TFLAG_HAS_FLAGS).to_be_bytes());
    opt_reply(&mut v, OPT_GO, REP_INFO, &info);
    if let Some((min, pref, max)) = sizes {
        let mut b = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for x in [min, pref, max] {
            b.extend_from_slice(&x.to_be_bytes());
        }
        opt_reply(&mut v, OPT_GO, REP_INFO, &b);
    }
    opt_reply(&mut v, OPT_GO, REP_ACK, &[]);
    v
}

fn chunk(v: &mut Vec<u8>, flags: u16, kind: u16, cookie: u64, payload: &[u8]) {
    v.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
}

fn data_chunk(v: &mut Vec<u8>, flags: u16, cookie: u64, at: u64, data: &[u8]) {
    let mut p = at.to_be_bytes().to_vec();
    p.extend_from_slice(data);
    chunk(v, flags, REPLY_TYPE_OFFSET_DATA, cookie, &p);
}

fn hole_chunk(v: &mut Vec<u8>, flags: u16, cookie: u64, at: u64, n: u32) {
    let mut p = at.to_be_bytes().to_vec();
    p.extend_from_slice(&n.to_be_bytes());
    chunk(v, flags, REPLY_TYPE_OFFSET_HOLE, cookie, &p);
}

fn scripted(data: Vec<u8>) -> Result<NbdClient> {
    NbdClient::from_transport(Box::new(Scripted(Cursor::new(data))), "")
}

const DONE: u16 = REPLY_FLAG_DONE;

#[test]
fn handshake_records_export_info() {
    let c = scripted(hello(
        1 << 20,
        TFLAG_SEND_FLUSH | TFLAG_SEND_TRIM,
        Some((512, 4096, 1 << 30)),
    ))
    .unwrap();
    let i = c.info();
    assert_eq!(i.size, 1 << 20);
    assert_eq!((i.min_block, i.preferred_block), (512, 4096));
    // Capped at 2^25 whatever the server advertises.
    assert_eq!(i.max_payload, 1 << 25);
    assert!(i.structured_replies && i.can_flush() && i.can_trim());
    assert!(!i.can_write_zeroes() && !i.read_only() && !i.can_fua());
    assert_eq!(i.allocation_context, Some(7));
    assert_eq!(c.logical_sector_size(), 512);
}

#[test]
fn structured_read_reassembles_chunks_in_any_order() {
    let mut v = hello(8192, 0, None);
    data_chunk(&mut v, 0, 1, 100, &[7u8; 50]);
    hole_chunk(&mut v, 0, 1, 0, 100);
    data_chunk(&mut v, 0, 1, 150, &[9u8; 106]);
    chunk(&mut v, DONE, REPLY_TYPE_NONE, 1, &[]);
    let c = scripted(v).unwrap();
    let mut buf = [0xffu8; 256];
    c.read_exact_at(0, &mut buf).unwrap();
    assert!(buf[..100].iter().all(|&b| b == 0));
    assert!(buf[100..150].iter().all(|&b| b == 7));
    assert!(buf[150..].iter().all(|&b| b == 9));
}

/// Runs one read of 256 bytes at 0 against `replies` (cookie 1) and returns the error.
fn bad_read(replies: impl FnOnce(&mut Vec<u8>)) -> Error {
    let mut v = hello(8192, 0, None);
    replies(&mut v);
    let c = scripted(v).unwrap();
    let mut buf = [0u8; 256];
    let e = c.read_exact_at(0, &mut buf).unwrap_err();
    // Whatever went wrong, the connection is now unusable and says why.
    if e.as_corrupt().is_some() {
        let again = c.read_exact_at(0, &mut buf).unwrap_err();
        assert!(again.to_string().starts_with("i/o error"), "{again}");
    }
    e
}

fn corrupt_detail(e: &Error) -> String {
    let c = e
        .as_corrupt()
        .unwrap_or_else(|| panic!("expected corrupt, got {e:?}"));
    assert_eq!(c.structure(), "nbd reply");
    c.detail().to_string()
}

#[test]
fn hostile_read_replies_are_clean_errors() {
    let e = bad_read(|v| data_chunk(v, DONE, 2, 0, &[0; 256]));
    assert_eq!(corrupt_detail(&e), "reply cookie 2, expected 1");
    let e = bad_read(|v| data_chunk(v, DONE, 1, 200, &[0; 100]));
    assert_eq!(
        corrupt_detail(&e),
        "data chunk 0xc8+100 outside request 0x0+256"
    );
    let e = bad_read(|v| data_chunk(v, DONE, 1, u64::MAX - 10, &[0; 100]));
    assert!(corrupt_detail(&e).contains("outside request"));
    let e = bad_read(|v| {
        data_chunk(v, 0, 1, 0, &[0; 200]);
        data_chunk(v, DONE, 1, 100, &[0; 156]);
    });
    assert_eq!(corrupt_detail(&e), "data chunk 0x64+156 overlaps");
    let e = bad_read(|v| {
        hole_chunk(v, 0, 1, 0, 128);
        chunk(v, DONE, REPLY_TYPE_NONE, 1, &[]);
    });
    assert_eq!(corrupt_detail(&e), "read reply covered 128 of 256 bytes");
    let e = bad_read(|v| hole_chunk(v, DONE, 1, 0, 0));
    assert!(corrupt_detail(&e).contains("hole chunk 0x0+0 outside request"));
    let e = bad_read(|v| chunk(v, DONE, REPLY_TYPE_OFFSET_DATA, 1, &[0; 8]));
    assert_eq!(corrupt_detail(&e), "data chunk length 8 below 9");
    let e = bad_read(|v| chunk(v, DONE, REPLY_TYPE_OFFSET_HOLE, 1, &[0; 13]));
    assert_eq!(corrupt_detail(&e), "hole chunk length 13, expected 12");
    let e = bad_read(|v| chunk(v, DONE, 77, 1, &[0; 4]));
    assert_eq!(
        corrupt_detail(&e),
        "unexpected chunk type 77 length 4 in read reply"
    );
    let e = bad_read(|v| chunk(v, 0, REPLY_TYPE_NONE, 1, &[]));
    assert_eq!(corrupt_detail(&e), "none chunk without done flag");
    let e = bad_read(|v| v.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]));
    assert_eq!(corrupt_detail(&e), "reply magic 0xdeadbeef unknown");
    let e = bad_read(|v| {
        v.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&1u64.to_be_bytes());
    });
    assert_eq!(corrupt_detail(&e), "simple reply to a structured read");
    // A huge claimed payload length is refused before any buffer is sized.
    let e = bad_read(|v| {
        v.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        v.extend_from_slice(&DONE.to_be_bytes());
        v.extend_from_slice(&(REPLY_TYPE_ERROR_BIT | 1).to_be_bytes());
        v.extend_from_slice(&1u64.to_be_bytes());
        v.extend_from_slice(&u32::MAX.to_be_bytes());
    });
    assert_eq!(
        corrupt_detail(&e),
        "error chunk length 4294967295 not in 6..=4110"
    );
    // An error chunk whose message runs past the chunk.
    let e = bad_read(|v| {
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&100u16.to_be_bytes());
        p.extend_from_slice(b"short");
        chunk(v, DONE, REPLY_TYPE_ERROR_BIT | 1, 1, &p);
    });
    assert_eq!(corrupt_detail(&e), "error message length 100 exceeds chunk");
    // Truncated stream: an i/o error, not a panic.
    let e = bad_read(|v| data_chunk(v, DONE, 1, 0, &[0; 10]));
    assert!(e.as_corrupt().is_some() || matches!(e, Error::Io { .. }));
    let e = bad_read(|v| v.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes()));
    assert!(matches!(e, Error::Io { offset: 0, .. }), "{e:?}");
}

#[test]
fn server_errors_map_to_io_kinds() {
    let e = bad_read(|v| {
        let mut p = 28u32.to_be_bytes().to_vec();
        p.extend_from_slice(&4u16.to_be_bytes());
        p.extend_from_slice(b"full");
        chunk(v, DONE, REPLY_TYPE_ERROR_BIT | 1, 1, &p);
    });
    let Error::Io { offset: 0, source } = &e else {
        panic!("expected io error, got {e:?}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
    assert_eq!(source.to_string(), "nbd server error ENOSPC (28): full");

    let e = bad_read(|v| {
        let mut p = 5u32.to_be_bytes().to_vec();
        p.extend_from_slice(&2u16.to_be_bytes());
        p.extend_from_slice(b"io");
        p.extend_from_slice(&64u64.to_be_bytes());
        hole_chunk(v, 0, 1, 0, 256);
        chunk(v, DONE, REPLY_TYPE_ERROR_OFFSET, 1, &p);
    });
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "nbd server error EIO (5): io (at 0x40)"
    );
    // After a server error (not a protocol error) the connection stays usable.
    let mut v = hello(8192, 0, None);
    v.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&1u64.to_be_bytes());
    hole_chunk(&mut v, DONE, 2, 0, 16);
    let c = scripted(v).unwrap();
    let mut b = [1u8; 16];
    let e = c.read_exact_at(0, &mut b).unwrap_err();
    assert_eq!(
        std::error::Error::source(&e).unwrap().to_string(),
        "nbd server error EPERM (1)"
    );
    c.read_exact_at(0, &mut b).unwrap();
    assert_eq!(b, [0; 16]);
}

#[test]
fn block_status_is_merged_clipped_and_checked() {
    // With a 512-byte minimum block the query is widened to start at 0.
    let mut v = hello(1 << 20, 0, Some((512, 4096, 1 << 20)));
    let mut p = 7u32.to_be_bytes().to_vec();
    for (n, st) in [
        (4096u32, 0u32),
        (4096, 0),
        (8192, STATE_HOLE | STATE_ZERO),
        (4096, STATE_ZERO),
    ] {
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&st.to_be_bytes());
    }
    chunk(&mut v, DONE, REPLY_TYPE_BLOCK_STATUS, 1, &p);
    // Second round: a descriptor reaching past the request is clipped.
    let mut p = 7u32.to_be_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 30).to_be_bytes());
    p.extend_from_slice(&STATE_HOLE.to_be_bytes());
    chunk(&mut v, DONE, REPLY_TYPE_BLOCK_STATUS, 2, &p);
    let c = scripted(v).unwrap();
    let map = c.extents(100, (1 << 20) - 100).unwrap();
    assert_eq!(
        map,
        vec![
            Extent {
                offset: 100,
                len: 8192 - 100,
                kind: ExtentKind::Data
            },
            Extent {
                offset: 8192,
                len: 8192,
                kind: ExtentKind::Hole
            },
            Extent {
                offset: 16384,
                len: 4096,
                kind: ExtentKind::Zero
            },
            // A hole that does not promise zeroes must still be read.
            Extent {
                offset: 20480,
                len: (1 << 20) - 20480,
                kind: ExtentKind::Data
            },
        ]
    );

    let mut v = hello(1 << 20, 0, None);
    let mut p = 7u32.to_be_bytes().to_vec();
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    chunk(&mut v, DONE, REPLY_TYPE_BLOCK_STATUS, 1, &p);
    let e = scripted(v).unwrap().extents(0, 4096).unwrap_err();
    assert_eq!(corrupt_detail(&e), "block status descriptor of length 0");

    let mut v = hello(1 << 20, 0, None);
    chunk(&mut v, DONE, REPLY_TYPE_BLOCK_STATUS, 1, &[0; 9]);
    let e = scripted(v).unwrap().extents(0, 4096).unwrap_err();
    assert_eq!(
        corrupt_detail(&e),
        "block status chunk length 9 not 4+8n in 12..=8388612"
    );

    // Descriptors for a context we did not ask for do not count.
    let mut v = hello(1 << 20, 0, None);
    let mut p = 9u32.to_be_bytes().to_vec();
    p.extend_from_slice(&4096u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    chunk(&mut v, DONE, REPLY_TYPE_BLOCK_STATUS, 1, &p);
    let e = scripted(v).unwrap().extents(0, 4096).unwrap_err();
    assert_eq!(corrupt_detail(&e), "block status reply without descriptors");
}

fn hs_error(server: Vec<u8>) -> Error {
    scripted(server).unwrap_err()
}

#[test]
fn hostile_handshakes_are_clean_errors() {
    let detail = |e: Error| {
        let c = e
            .as_corrupt()
            .unwrap_or_else(|| panic!("expected corrupt, got {e:?}"))
            .clone();
        assert_eq!(c.structure(), "nbd handshake");
        c.detail().to_string()
    };
    assert!(matches!(hs_error(Vec::new()), Error::Io { .. }));
    assert_eq!(
        detail(hs_error(b"NOTMAGIC".to_vec())),
        "server magic 0x4e4f544d41474943, expected NBDMAGIC"
    );
    let mut v = NBDMAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&CLISERV_MAGIC.to_be_bytes());
    assert!(matches!(hs_error(v), Error::Unsupported(_)));
    let mut v = NBDMAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        hs_error(v).to_string(),
        "unsupported nbd server: no fixed newstyle negotiation"
    );

    // Each later message broken in turn.
    let good = hello(4096, 0, Some((512, 4096, 1 << 20)));
    let prefix = 8 + 8 + 2;
    let mut v = good.clone();
    v[prefix] ^= 1; // option reply magic
    assert!(detail(hs_error(v)).starts_with("option reply magic"));
    let mut v = good.clone();
    v[prefix + 11] = 9; // echoed option
    assert_eq!(detail(hs_error(v)), "reply to option 9, expected 8");
    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ACK, &[0; 9000]);
    assert_eq!(detail(hs_error(v)), "option reply length 9000 exceeds 8192");

    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    for _ in 0..MAX_OPTION_REPLIES + 1 {
        opt_reply(&mut v, OPT_GO, 99, &[]);
    }
    assert_eq!(detail(hs_error(v)), "reply type 99 to go");

    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    let mut b = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for x in [3u32, 4096, 1 << 20] {
        b.extend_from_slice(&x.to_be_bytes());
    }
    opt_reply(&mut v, OPT_GO, REP_INFO, &b);
    assert_eq!(
        detail(hs_error(v)),
        "minimum block size 3 is not a power of two in 1..=65536"
    );

    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    opt_reply(&mut v, OPT_GO, REP_INFO, &[0, 0, 1]);
    assert_eq!(detail(hs_error(v)), "export info length 3, expected 12");

    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    opt_reply(&mut v, OPT_GO, REP_ACK, &[]);
    assert_eq!(
        detail(hs_error(v)),
        "server accepted go without export info"
    );

    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    opt_reply(&mut v, OPT_GO, REP_ERR_UNKNOWN, b"no such export");
    assert_eq!(
        hs_error(v).to_string(),
        "nbd export \"\" not found on the server: no such export"
    );
    let mut v = good[..prefix].to_vec();
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    for _ in 0..=MAX_OPTION_REPLIES {
        opt_reply(&mut v, OPT_GO, REP_INFO, &[0, 9]);
    }
    assert_eq!(detail(hs_error(v)), "more than 64 replies to go");
}

#[test]
fn falls_back_without_structured_replies_or_go() {
    let mut v = NBDMAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&FLAG_FIXED_NEWSTYLE.to_be_bytes()); // no NO_ZEROES: 124 zeroes follow
    opt_reply(&mut v, OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]);
    opt_reply(&mut v, OPT_GO, REP_ERR_UNSUP, &[]);
    v.extend_from_slice(&4096u64.to_be_bytes());
    v.extend_from_slice(&(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY).to_be_bytes());
    v.extend_from_slice(&[0u8; 124]);
    // A simple read reply with its data.
    v.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&1u64.to_be_bytes());
    v.extend_from_slice(&[5u8; 10]);
    let c = scripted(v).unwrap();
    let i = *c.info();
    assert!(!i.structured_replies && i.read_only());
    assert_eq!(
        (i.size, i.min_block, i.max_payload, i.allocation_context),
        (4096, 1, 1 << 25, None)
    );
    let mut b = [0u8; 10];
    c.read_exact_at(20, &mut b).unwrap();
    assert_eq!(b, [5; 10]);
    // Without base:allocation everything is data; read-only refuses writes.
    assert_eq!(
        c.extents(0, 4096).unwrap(),
        vec![Extent {
            offset: 0,
            len: 4096,
            kind: ExtentKind::Data
        }]
    );
    assert!(matches!(c.write_all_at(0, b"x"), Err(Error::ReadOnly)));
    assert!(matches!(c.flush(), Err(Error::ReadOnly)));
}

// ---------------------------------------------------------------------------------------------
// An honest in-process server with a 512-byte minimum block, to check alignment and splitting.

struct Log {
    misaligned: Vec<(u16, u64, u32)>,
    commands: Vec<(u16, u16, u64, u32)>,
}

fn serve_memory(mut s: UnixStream, mut disk: Vec<u8>, log: std::sync::Arc<Mutex<Log>>) {
    let rd = |s: &mut UnixStream, n: usize| -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        s.read_exact(&mut b).ok()?;
        Some(b)
    };
    let size = disk.len() as u64;
    let hello = hello(
        size,
        TFLAG_SEND_FLUSH | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES,
        Some((512, 4096, 64 << 10)),
    );
    // The handshake is scripted; consume the client's options as they come.
    s.write_all(&hello[..18]).unwrap();
    let _ = rd(&mut s, 4);
    let mut at = 18;
    for _ in 0..3 {
        let h = rd(&mut s, 16).unwrap();
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize;
        let _ = rd(&mut s, len);
        // Send every reply belonging to this option.
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        loop {
            let r_opt = u32::from_be_bytes(hello[at + 8..at + 12].try_into().unwrap());
            if r_opt != opt {
                break;
            }
            let r_len = u32::from_be_bytes(hello[at + 16..at + 20].try_into().unwrap()) as usize;
            s.write_all(&hello[at..at + 20 + r_len]).unwrap();
            at += 20 + r_len;
            if at >= hello.len() {
                break;
            }
        }
    }
    loop {
        let Some(h) = rd(&mut s, 28) else { return };
        let flags = u16::from_be_bytes(h[4..6].try_into().unwrap());
        let cmd = u16::from_be_bytes(h[6..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
        let off = u64::from_be_bytes(h[16..24].try_into().unwrap());
        let len = u32::from_be_bytes(h[24..28].try_into().unwrap());
        {
            let mut l = log.lock().unwrap();
            l.commands.push((cmd, flags, off, len));
            if cmd != CMD_FLUSH && cmd != CMD_DISC && (off % 512 != 0 || len % 512 != 0) {
                l.misaligned.push((cmd, off, len));
            }
        }
        let range = off as usize..off as usize + len as usize;
        let mut out = Vec::new();
        match cmd {
            CMD_READ => {
                // Split into two chunks to exercise reassembly.
                let half = len / 2 / 512 * 512;
                data_chunk(
                    &mut out,
                    0,
                    cookie,
                    off + u64::from(half),
                    &disk[range.start + half as usize..range.end],
                );
                if half > 0 {
                    data_chunk(
                        &mut out,
                        0,
                        cookie,
                        off,
                        &disk[range.start..range.start + half as usize],
                    );
                }
                chunk(&mut out, DONE, REPLY_TYPE_NONE, cookie, &[]);
            }
            CMD_WRITE => {
                let data = rd(&mut s, len as usize).unwrap();
                disk[range].copy_from_slice(&data);
                chunk(&mut out, DONE, REPLY_TYPE_NONE, cookie, &[]);
            }
            CMD_WRITE_ZEROES | CMD_TRIM => {
                disk[range].fill(0);
                out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes());
                out.extend_from_slice(&cookie.to_be_bytes());
            }
            CMD_FLUSH => chunk(&mut out, DONE, REPLY_TYPE_NONE, cookie, &[]),
            CMD_BLOCK_STATUS => {
                let mut p = 7u32.to_be_bytes().to_vec();
                for blk in disk[range].chunks(512) {
                    let st = if blk.iter().all(|&b| b == 0) {
                        STATE_HOLE | STATE_ZERO
                    } else {
                        0
                    };
                    p.extend_from_slice(&512u32.to_be_bytes());
                    p.extend_from_slice(&st.to_be_bytes());
                }
                chunk(&mut out, DONE, REPLY_TYPE_BLOCK_STATUS, cookie, &p);
            }
            CMD_DISC => return,
            _ => panic!("unexpected command {cmd}"),
        }
        s.write_all(&out).unwrap();
    }
}

#[test]
fn unaligned_io_is_aligned_and_split_for_the_server() {
    let (a, b) = UnixStream::pair().unwrap();
    let log = std::sync::Arc::new(Mutex::new(Log {
        misaligned: Vec::new(),
        commands: Vec::new(),
    }));
    let disk: Vec<u8> = (0..(256u32 << 10)).map(|i| (i % 251) as u8).collect();
    let expect = disk.clone();
    let server = {
        let log = log.clone();
        std::thread::spawn(move || serve_memory(b, disk, log))
    };
    let c = NbdClient::from_transport(Box::new(a), "").unwrap();
    assert_eq!((c.info().min_block, c.info().max_payload), (512, 64 << 10));

    // Reads across several max-payload windows with unaligned ends.
    let mut buf = vec![0u8; 200_000];
    c.read_exact_at(1001, &mut buf).unwrap();
    assert_eq!(&buf[..], &expect[1001..201_001]);

    // An unaligned write is read-modify-written.
    c.write_all_at(700, &[0xee; 1000]).unwrap();
    let mut b2 = [0u8; 1200];
    c.read_exact_at(600, &mut b2).unwrap();
    assert_eq!(&b2[..100], &expect[600..700]);
    assert!(b2[100..1100].iter().all(|&x| x == 0xee));
    assert_eq!(&b2[1100..], &expect[1700..1800]);

    c.write_zeroes(10_000, 100_000, ZeroMode::KeepAllocated)
        .unwrap();
    let mut b3 = vec![1u8; 100_002];
    c.read_exact_at(9_999, &mut b3).unwrap();
    assert_eq!(b3[0], expect[9_999]);
    assert!(b3[1..100_001].iter().all(|&x| x == 0));
    assert_eq!(b3[100_001], expect[110_000]);
    c.flush().unwrap();
    c.discard(100, 10).unwrap(); // smaller than a block: nothing to send

    let map = c.extents(9_000, 200_000).unwrap();
    assert_eq!(
        map,
        vec![
            Extent {
                offset: 9_000,
                len: 10_240 - 9_000,
                kind: ExtentKind::Data
            },
            Extent {
                offset: 10_240,
                len: 109_568 - 10_240,
                kind: ExtentKind::Hole
            },
            Extent {
                offset: 109_568,
                len: 209_000 - 109_568,
                kind: ExtentKind::Data
            },
        ]
    );
    drop(c);
    server.join().unwrap();
    let l = log.lock().unwrap();
    assert_eq!(l.misaligned, vec![]);
    assert!(
        l.commands
            .iter()
            .filter(|c| c.0 == CMD_READ || c.0 == CMD_WRITE)
            .all(|&(_, _, _, len)| len <= 64 << 10)
    );
    assert!(
        l.commands
            .iter()
            .any(|&(cmd, flags, _, _)| cmd == CMD_WRITE_ZEROES && flags == CMD_FLAG_NO_HOLE)
    );
    assert!(!l.commands.iter().any(|&(cmd, ..)| cmd == CMD_TRIM));
    assert_eq!(l.commands.last().map(|c| c.0), Some(CMD_DISC));
}

// ---------------------------------------------------------------------------------------------
// Against real qemu-nbd.

struct QemuNbd {
    child: Child,
    socket: PathBuf,
}

impl QemuNbd {
    fn start(dir: &Path, image: &Path, format: &str, extra: &[&str]) -> Option<Self> {
        let socket = dir.join(format!("nbd-{format}.sock"));
        let mut cmd = Command::new("qemu-nbd");
        // -e 4: the tests open more than one connection at a time (the default is one).
        cmd.args(["-f", format, "--persistent", "-e", "4", "-x", "exp"])
            .arg(format!("--socket={}", socket.display()))
            .args(extra)
            .arg(image)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipping: qemu-nbd not found");
                return None;
            }
            Err(e) => panic!("qemu-nbd: {e}"),
        };
        let mut me = Self { child, socket };
        // Wait (bounded by attempts, not by a time assertion) for the socket to accept.
        for _ in 0..500 {
            if me.socket.exists() {
                return Some(me);
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("qemu-nbd exited early: {status}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = me.child.kill();
        panic!("qemu-nbd socket never appeared");
    }
    fn uri(&self) -> NbdUri {
        NbdUri::unix(&self.socket, "exp")
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qemu-img map --output=json` as (start, length, data) runs.
fn qemu_map(image: &Path, format: &str) -> Option<Vec<(u64, u64, bool)>> {
    let out = crate::qcow2::tests::tool(
        "qemu-img",
        &[
            "map",
            "-f",
            format,
            "--output=json",
            image.to_str().unwrap(),
        ],
    )?;
    let text = String::from_utf8(out.stdout).unwrap();
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for line in text.lines().filter(|l| l.contains("\"start\"")) {
        let field = |name: &str| -> &str {
            let i = line.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
            line[i..]
                .trim_start()
                .split([',', '}'])
                .next()
                .unwrap()
                .trim()
        };
        let start: u64 = field("start").parse().unwrap();
        let len: u64 = field("length").parse().unwrap();
        let data = field("data") == "true";
        match runs.last_mut() {
            Some(last) if last.2 == data && last.0 + last.1 == start => last.1 += len,
            _ => runs.push((start, len, data)),
        }
    }
    Some(runs)
}

fn as_runs(map: &[Extent]) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for e in map {
        let data = e.kind == ExtentKind::Data;
        match runs.last_mut() {
            Some(last) if last.2 == data && last.0 + last.1 == e.offset => last.1 += e.len,
            _ => runs.push((e.offset, e.len, data)),
        }
    }
    runs
}

#[test]
fn qemu_nbd_raw_read_write_zero_trim_and_map() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x42; 65536], 1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x43; 65536], 5 << 20).unwrap();
    drop(f);
    let Some(srv) = QemuNbd::start(dir.path(), &img, "raw", &[]) else {
        return;
    };
    let c = NbdClient::connect(&srv.uri()).unwrap();
    assert_eq!(c.size(), 8 << 20);
    assert!(c.info().structured_replies);
    assert!(c.info().allocation_context.is_some());
    assert!(!c.is_read_only());

    let mut all = vec![0u8; 8 << 20];
    c.read_exact_at(0, &mut all).unwrap();
    assert_eq!(all, std::fs::read(&img).unwrap());

    if let Some(expect) = qemu_map(&img, "raw") {
        assert_eq!(as_runs(&c.extents(0, 8 << 20).unwrap()), expect);
    }

    c.write_all_at(3 << 20, &[0x99; 5000]).unwrap();
    c.write_zeroes(1 << 20, 4096, ZeroMode::KeepAllocated)
        .unwrap();
    c.write_zeroes(5 << 20, 65536, ZeroMode::MayUnmap).unwrap();
    c.discard(7 << 20, 65536).unwrap();
    c.flush().unwrap();
    let file = std::fs::read(&img).unwrap();
    assert!(file[(3 << 20)..(3 << 20) + 5000].iter().all(|&b| b == 0x99));
    assert!(file[(1 << 20)..(1 << 20) + 4096].iter().all(|&b| b == 0));
    assert!(
        file[(1 << 20) + 4096..(1 << 20) + 65536]
            .iter()
            .all(|&b| b == 0x42)
    );
    assert!(file[(5 << 20)..(5 << 20) + 65536].iter().all(|&b| b == 0));
    c.read_exact_at(0, &mut all).unwrap();
    assert_eq!(all, file);
    if let Some(expect) = qemu_map(&img, "raw") {
        assert_eq!(as_runs(&c.extents(0, 8 << 20).unwrap()), expect);
    }
    assert!(matches!(
        c.read_exact_at((8 << 20) - 1, &mut [0u8; 2]),
        Err(Error::OutOfBounds { .. })
    ));

    // A second client over the URI parser, and an unknown export.
    let uri = format!("nbd+unix:///exp?socket={}", srv.socket.display());
    let c2 = NbdClient::connect(&NbdUri::parse(&uri).unwrap()).unwrap();
    assert_eq!(c2.size(), 8 << 20);
    let e = NbdClient::connect(&NbdUri::unix(&srv.socket, "nope")).unwrap_err();
    assert!(
        matches!(e, Error::Usage(ref m) if m.contains("\"nope\" not found")),
        "{e:?}"
    );
}

#[test]
fn qemu_nbd_qcow2_matches_convert_and_map() {
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = crate::qcow2::tests::make_qcow2(dir.path(), "n.qcow2") else {
        return;
    };
    let Some(srv) = QemuNbd::start(dir.path(), &img, "qcow2", &["--read-only"]) else {
        return;
    };
    let c = NbdClient::connect(&srv.uri()).unwrap();
    assert!(c.is_read_only());
    let raw = dir.path().join("n.raw");
    crate::qcow2::tests::tool(
        "qemu-img",
        &[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    )
    .unwrap();
    let mut all = vec![0u8; usize::try_from(c.size()).unwrap()];
    c.read_exact_at(0, &mut all).unwrap();
    assert_eq!(all, std::fs::read(&raw).unwrap());
    let expect = qemu_map(&img, "qcow2").unwrap();
    assert_eq!(as_runs(&c.extents(0, c.size()).unwrap()), expect);
    assert!(matches!(c.write_all_at(0, b"x"), Err(Error::ReadOnly)));

    let opened = crate::open::open(
        &format!("nbd+unix:///exp?socket={}", srv.socket.display()),
        &crate::open::OpenOptions::new(),
    )
    .unwrap();
    assert_eq!(opened.backend(), crate::open::Backend::Nbd);
    assert_eq!(opened.read().size(), 4 << 20);
    let e = crate::open::open(
        &format!("nbd+unix:///exp?socket={}", srv.socket.display()),
        &crate::open::OpenOptions::new().access(crate::open::Access::ReadWrite),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ReadOnly));
}

#[test]
fn fuzz_nbd_reply_over_mutations() {
    // Seeds: valid conversations the client accepts.
    let mut seeds = Vec::new();
    let mut v = hello(8192, TFLAG_SEND_FLUSH, Some((512, 4096, 1 << 20)));
    hole_chunk(&mut v, 0, 1, 0, 2048);
    data_chunk(&mut v, DONE, 1, 2048, &[1; 2048]);
    let mut p = 7u32.to_be_bytes().to_vec();
    p.extend_from_slice(&8192u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    chunk(&mut v, DONE, REPLY_TYPE_BLOCK_STATUS, 2, &p);
    seeds.push(v);
    seeds.push(hello(1 << 40, 0, None));
    for s in &seeds {
        crate::fuzzing::nbd_reply(s);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..1000 {
        let mut s = seeds[i % seeds.len()].clone();
        let n = s.len() as u64;
        match next() % 3 {
            0 => s.truncate((next() % n) as usize),
            _ => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() % n) as usize;
                    s[at] = next() as u8;
                }
            }
        }
        crate::fuzzing::nbd_reply(&s);
    }
}

#[test]
fn stalled_server_times_out_and_tcp_uri_connects() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stall.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        // Accept, send the first magic only, then wait for the client to give up.
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&NBDMAGIC.to_be_bytes()).unwrap();
        let mut b = [0u8; 1];
        let _ = s.read(&mut b);
    });
    let opts = ConnectOptions::new().io_timeout(Some(std::time::Duration::from_millis(200)));
    let e = NbdClient::connect_with(&NbdUri::unix(&sock, ""), &opts).unwrap_err();
    let Error::Io { source, .. } = &e else {
        panic!("expected io error, got {e:?}")
    };
    assert!(
        matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{source:?}"
    );
    server.join().unwrap();
    assert_eq!(
        ConnectOptions::new().io_timeout(Some(std::time::Duration::ZERO)),
        ConnectOptions::new().io_timeout(None)
    );

    // TCP: a refused port is an i/o error at offset 0.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let e = NbdClient::connect(&NbdUri::parse(&format!("nbd://127.0.0.1:{port}/x")).unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::Io { offset: 0, .. }), "{e:?}");
}

#[test]
fn qemu_nbd_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("tcp.raw");
    std::fs::write(&img, vec![0x5au8; 1 << 20]).unwrap();
    // Find a free port, then let qemu-nbd listen on it.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let child = Command::new("qemu-nbd")
        .args([
            "-f",
            "raw",
            "--persistent",
            "-x",
            "exp",
            "-b",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .arg(&img)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipping: qemu-nbd not found");
            return;
        }
        Err(e) => panic!("qemu-nbd: {e}"),
    };
    let guard = QemuNbd {
        child,
        socket: PathBuf::new(),
    };
    let uri = NbdUri::parse(&format!("nbd://127.0.0.1:{port}/exp")).unwrap();
    let mut client = None;
    for _ in 0..500 {
        match NbdClient::connect(&uri) {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let c = client.expect("qemu-nbd never accepted a tcp connection");
    let mut b = [0u8; 4];
    c.read_exact_at((1 << 20) - 4, &mut b).unwrap();
    assert_eq!(b, [0x5a; 4]);
    drop(c);
    drop(guard);
}

#[test]
fn too_many_read_chunks_is_refused_before_memory_grows() {
    let len = (MAX_READ_CHUNKS + 8) as u32;
    let mut v = hello(u64::from(len), 0, None);
    for i in 0..=MAX_READ_CHUNKS {
        hole_chunk(&mut v, 0, 1, i, 1);
    }
    let c = scripted(v).unwrap();
    let mut buf = vec![0u8; len as usize];
    let e = c.read_exact_at(0, &mut buf).unwrap_err();
    assert_eq!(
        corrupt_detail(&e),
        format!("more than {MAX_READ_CHUNKS} chunks in a read reply")
    );
}
