//! Hostile clients speaking raw bytes: every malformed input gets the specified error or a
//! disconnect, the server keeps serving others, and only valid writes change the export.

#![allow(
    clippy::cast_possible_truncation,
    reason = "wire fields built from small test values"
)]

mod common;

use std::io::Write;

use common::*;

const SIZE: u64 = 4 << 20;

#[test]
fn bad_option_magic_disconnects() {
    let t = TestServer::start();
    t.volume("v", SIZE);
    let mut c = t.connect();
    c.greet(3);
    c.s.write_all(&[0x42; 16]).unwrap();
    assert!(c.closed());
}

#[test]
fn unknown_client_flags_disconnect() {
    let t = TestServer::start();
    let mut c = t.connect();
    c.greet(3 | 0x80);
    assert!(c.closed());
}

#[test]
fn oversize_option_length_disconnects_without_reading_it() {
    let t = TestServer::start();
    let mut c = t.connect();
    c.greet(3);
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&99u32.to_be_bytes());
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    c.s.write_all(&b).unwrap();
    assert!(c.closed());
}

#[test]
fn unknown_option_is_unsupported_and_payload_consumed() {
    let t = TestServer::start();
    t.volume("v", SIZE);
    let mut c = t.connect();
    c.greet(3);
    let r = c.opt(99, &[0xAB; 1000]);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, REP_ERR_UNSUP);
    // The stream is still in sync: a GO works.
    let r = c.opt(OPT_GO, &Raw::go_data("v", &[]));
    assert_eq!(r.last().unwrap().typ, REP_ACK);
}

#[test]
fn options_out_of_order_and_malformed_are_refused() {
    let t = TestServer::start();
    t.volume("v", SIZE);
    let mut c = t.connect();
    c.greet(3);
    // Meta contexts before structured replies.
    let r = c.opt(
        OPT_SET_META_CONTEXT,
        &Raw::meta_data("v", &["base:allocation"]),
    );
    assert_eq!(r[0].typ, REP_ERR_INVALID);
    // LIST with data.
    assert_eq!(c.opt(OPT_LIST, b"x")[0].typ, REP_ERR_INVALID);
    // STARTTLS when TLS is off.
    assert_eq!(c.opt(OPT_STARTTLS, &[])[0].typ, REP_ERR_POLICY);
    // STRUCTURED_REPLY with data, then twice.
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, b"x")[0].typ, REP_ERR_INVALID);
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, &[])[0].typ, REP_ACK);
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, &[])[0].typ, REP_ERR_INVALID);
    // Extended headers after structured replies are fine; then structured is refused.
    assert_eq!(c.opt(OPT_EXTENDED_HEADERS, &[])[0].typ, REP_ACK);
    assert_eq!(
        c.opt(OPT_STRUCTURED_REPLY, &[])[0].typ,
        REP_ERR_EXT_HEADER_REQD
    );
    // GO with a name length past the data.
    let mut bad = 100u32.to_be_bytes().to_vec();
    bad.extend_from_slice(b"v\0\0");
    assert_eq!(c.opt(OPT_GO, &bad)[0].typ, REP_ERR_INVALID);
    // GO with a name over 4096 bytes.
    let long = "a".repeat(5000);
    assert_eq!(
        c.opt(OPT_GO, &Raw::go_data(&long, &[]))[0].typ,
        REP_ERR_INVALID
    );
    // INFO with trailing bytes.
    let mut trailing = Raw::go_data("v", &[]);
    trailing.push(0);
    assert_eq!(c.opt(OPT_INFO, &trailing)[0].typ, REP_ERR_INVALID);
    // Unknown export.
    assert_eq!(
        c.opt(OPT_GO, &Raw::go_data("nope", &[]))[0].typ,
        REP_ERR_UNKNOWN
    );
    // Meta query with a length past the data.
    let mut q = Raw::meta_data("v", &[]);
    q.truncate(q.len() - 4);
    q.extend_from_slice(&1u32.to_be_bytes());
    q.extend_from_slice(&50u32.to_be_bytes());
    assert_eq!(c.opt(OPT_LIST_META_CONTEXT, &q)[0].typ, REP_ERR_INVALID);
    // Too many queries.
    let many: Vec<&str> = vec!["base:allocation"; 65];
    assert_eq!(
        c.opt(OPT_SET_META_CONTEXT, &Raw::meta_data("v", &many))[0].typ,
        REP_ERR_TOO_BIG
    );
    // After all that, the session still works.
    let r = c.opt(OPT_INFO, &Raw::go_data("v", &[1, 2, 3]));
    assert_eq!(r.last().unwrap().typ, REP_ACK);
    let kinds: Vec<u16> = r[..r.len() - 1]
        .iter()
        .map(|x| u16::from_be_bytes([x.data[0], x.data[1]]))
        .collect();
    assert_eq!(kinds, vec![0, 1, 2, 3]);
    assert_eq!(&r[1].data[2..], b"v");
    assert_eq!(&r[2].data[2..], b"test volume");
    assert_eq!(c.opt(OPT_ABORT, &[])[0].typ, REP_ACK);
    assert!(c.closed());
}

#[test]
fn export_name_of_unknown_export_disconnects() {
    let t = TestServer::start();
    let mut c = t.connect();
    c.greet(3);
    c.send_opt(OPT_EXPORT_NAME, b"missing");
    assert!(c.closed());
}

#[test]
fn export_name_old_style_works_with_and_without_zeroes() {
    let t = TestServer::start();
    t.volume("v", SIZE);
    for (flags, tail) in [(3u32, 10usize), (1, 134)] {
        let mut c = t.connect();
        c.greet(flags);
        c.send_opt(OPT_EXPORT_NAME, b"v");
        let b = c.read_exact(tail);
        assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), SIZE);
        assert!(b[10..].iter().all(|&x| x == 0));
        assert_eq!(c.read_simple(0, 512).unwrap(), vec![0u8; 512]);
    }
}

#[test]
fn list_and_meta_context_listing() {
    let t = TestServer::start();
    t.volume("a", SIZE);
    t.volume("b", SIZE);
    t.store.create_snapshot("a", "s1").unwrap();
    let mut c = t.connect();
    c.greet(3);
    let r = c.opt(OPT_LIST, &[]);
    let names: Vec<String> = r[..r.len() - 1]
        .iter()
        .map(|x| {
            assert_eq!(x.typ, REP_SERVER);
            String::from_utf8(x.data[4..].to_vec()).unwrap()
        })
        .collect();
    assert_eq!(names, ["a", "a@s1", "b"]);
    c.opt(OPT_STRUCTURED_REPLY, &[]);
    for queries in [
        &[][..],
        &["base:"][..],
        &["base:allocation", "x-other:foo"][..],
    ] {
        let r = c.opt(OPT_LIST_META_CONTEXT, &Raw::meta_data("a", queries));
        assert_eq!(r.len(), 2, "{queries:?}");
        assert_eq!(r[0].typ, REP_META_CONTEXT);
        assert_eq!(&r[0].data[4..], b"base:allocation");
    }
    let r = c.opt(OPT_LIST_META_CONTEXT, &Raw::meta_data("a", &["x-other:"]));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].typ, REP_ACK);
}

#[test]
fn transmission_errors_are_the_specified_ones() {
    transmission_errors_are_the_specified_ones_on(true);
}

/// The same through the async reader/writer path (what TLS connections use).
#[test]
fn transmission_errors_are_the_specified_ones_async_path() {
    transmission_errors_are_the_specified_ones_on(false);
}

fn transmission_errors_are_the_specified_ones_on(direct_io: bool) {
    let t = TestServer::start_with(nbd_gateway::ServerConfig {
        direct_io,
        ..Default::default()
    });
    let path = t.volume("v", SIZE);
    t.store.create_snapshot("v", "snap").unwrap();
    let mut c = t.connect();
    c.handshake("v", false, false, false);
    assert_eq!(c.read_simple(SIZE - 512, 1024), Err(EINVAL));
    assert_eq!(c.read_simple(u64::MAX - 10, 512), Err(EINVAL));
    assert_eq!(c.simple_cmd(0, CMD_READ, 0, 64 << 20), EOVERFLOW);
    assert_eq!(c.write(0, SIZE - 10, &[1u8; 20]), ENOSPC);
    assert_eq!(c.write(0, u64::MAX - 5, &[1u8; 20]), ENOSPC);
    assert_eq!(c.simple_cmd(0, CMD_WRITE_ZEROES, SIZE, 1), ENOSPC);
    assert_eq!(c.simple_cmd(0, CMD_TRIM, SIZE - 1, 2), EINVAL);
    assert_eq!(c.simple_cmd(0, CMD_CACHE, SIZE, 1), EINVAL);
    assert_eq!(c.simple_cmd(0, 99, 0, 0), EINVAL);
    assert_eq!(c.simple_cmd(0x4000, CMD_FLUSH, 0, 0), EINVAL);
    assert_eq!(c.simple_cmd(FLAG_DF, CMD_READ, 0, 512), EINVAL);
    assert_eq!(c.simple_cmd(FLAG_REQ_ONE, CMD_TRIM, 0, 512), EINVAL);
    assert_eq!(c.simple_cmd(0, CMD_BLOCK_STATUS, 0, 512), EINVAL);
    assert_eq!(c.simple_cmd(0, CMD_FLUSH, 0, 5), EINVAL);
    // Unknown flags on a write: EINVAL, and the payload is consumed.
    assert_eq!(c.write(0x100, 0, &[9u8; 4096]), EINVAL);
    // Valid operations still work afterwards.
    assert_eq!(c.write(FLAG_FUA, 4096, &[7u8; 4096]), 0);
    assert_eq!(c.read_simple(4096, 4096).unwrap(), vec![7u8; 4096]);
    assert_eq!(c.simple_cmd(0, CMD_FLUSH, 0, 0), 0);
    assert_eq!(c.simple_cmd(0, CMD_CACHE, 0, 4096), 0);
    assert_eq!(c.simple_cmd(FLAG_FAST_ZERO, CMD_WRITE_ZEROES, 0, 8192), 0);
    assert_eq!(c.read_simple(4096, 4096).unwrap(), vec![0u8; 4096]);
    // The file on disk holds exactly the valid writes.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; SIZE as usize]);

    // The snapshot refuses writes with EPERM and consumes the payload.
    let mut s = t.connect();
    let flags = s.handshake("v@snap", false, false, false);
    assert_ne!(flags & 2, 0, "snapshot must be advertised read-only");
    assert_eq!(s.write(0, 0, &[1u8; 65536]), EPERM);
    assert_eq!(s.simple_cmd(0, CMD_TRIM, 0, 4096), EPERM);
    assert_eq!(s.simple_cmd(0, CMD_WRITE_ZEROES, 0, 4096), EPERM);
    assert_eq!(s.read_simple(0, 4096).unwrap(), vec![0u8; 4096]);
    assert_eq!(s.simple_cmd(0, CMD_FLUSH, 0, 0), 0);
}

#[test]
fn oversize_write_payload_disconnects() {
    let t = TestServer::start();
    t.volume("v", SIZE);
    let mut c = t.connect();
    c.handshake("v", false, false, false);
    c.request(0, CMD_WRITE, 1, 0, (32 << 20) + 1);
    assert!(c.closed());
    // Another client is unaffected.
    let mut d = t.connect();
    d.handshake("v", false, false, false);
    assert_eq!(d.read_simple(0, 16).unwrap(), vec![0u8; 16]);
}

#[test]
fn bad_request_magic_disconnects() {
    let t = TestServer::start();
    t.volume("v", SIZE);
    let mut c = t.connect();
    c.handshake("v", false, false, false);
    c.s.write_all(&[0u8; 28]).unwrap();
    assert!(c.closed());
}

#[test]
fn disconnect_mid_write_payload_changes_nothing() {
    let t = TestServer::start();
    let path = t.volume("v", SIZE);
    {
        let mut c = t.connect();
        c.handshake("v", false, false, false);
        c.request(0, CMD_WRITE, 1, 0, 65536);
        c.s.write_all(&[0xEE; 1000]).unwrap();
    }
    let mut d = t.connect();
    d.handshake("v", false, false, false);
    assert_eq!(d.read_simple(0, 65536).unwrap(), vec![0u8; 65536]);
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; SIZE as usize]);
}

#[test]
fn structured_reads_split_data_and_holes() {
    structured_reads_split_data_and_holes_on(true);
}

/// The same through the async reader/writer path (what TLS connections use).
#[test]
fn structured_reads_split_data_and_holes_async_path() {
    structured_reads_split_data_and_holes_on(false);
}

fn structured_reads_split_data_and_holes_on(direct_io: bool) {
    let t = TestServer::start_with(nbd_gateway::ServerConfig {
        direct_io,
        ..Default::default()
    });
    let path = t.volume("v", SIZE);
    poke(&path, 1 << 20, &[0x5A; 65536]);
    let mut c = t.connect();
    let flags = c.handshake("v", true, false, true);
    assert_ne!(
        flags & (1 << 7),
        0,
        "DF must be advertised with structured replies"
    );
    c.request(0, CMD_READ, 5, 0, 2 << 20);
    let mut covered = 0u64;
    let mut data_bytes = Vec::new();
    loop {
        let Reply::Chunk {
            flags,
            typ,
            cookie,
            payload,
        } = c.reply()
        else {
            panic!("simple reply to a structured read");
        };
        assert_eq!(cookie, 5);
        let off = u64::from_be_bytes(payload[..8].try_into().unwrap());
        match typ {
            1 => {
                data_bytes.push((off, payload.len() - 8));
                assert!(payload[8..].iter().all(|&b| b == 0x5A));
                covered += payload.len() as u64 - 8;
            }
            2 => covered += u64::from(u32::from_be_bytes(payload[8..12].try_into().unwrap())),
            other => panic!("chunk type {other}"),
        }
        if flags & 1 != 0 {
            break;
        }
    }
    assert_eq!(covered, 2 << 20);
    assert_eq!(data_bytes, vec![(1 << 20, 65536)]);
    // DF: one data chunk with the zeroes present.
    c.request(FLAG_DF, CMD_READ, 6, (1 << 20) - 4096, 8192);
    let Reply::Chunk {
        flags,
        typ,
        payload,
        ..
    } = c.reply()
    else {
        panic!()
    };
    assert_eq!((flags, typ, payload.len()), (1, 1, 8 + 8192));
    assert!(payload[8..8 + 4096].iter().all(|&b| b == 0));
    assert!(payload[8 + 4096..].iter().all(|&b| b == 0x5A));
    // An error on a structured read is an error chunk.
    c.request(0, CMD_READ, 7, SIZE, 1);
    let r = c.reply();
    assert_eq!(Raw::error_of(&r), EINVAL);
    // Block status: hole, data, hole; REQ_ONE gives one extent no longer than asked.
    c.request(0, CMD_BLOCK_STATUS, 8, 0, SIZE);
    let Reply::Chunk { typ, payload, .. } = c.reply() else {
        panic!()
    };
    assert_eq!(typ, 5);
    let ext: Vec<(u32, u32)> = payload[4..]
        .chunks(8)
        .map(|e| {
            (
                u32::from_be_bytes(e[..4].try_into().unwrap()),
                u32::from_be_bytes(e[4..].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        ext,
        vec![
            (1 << 20, 3),
            (65536, 0),
            ((SIZE - (1 << 20) - 65536) as u32, 3)
        ]
    );
    c.request(FLAG_REQ_ONE, CMD_BLOCK_STATUS, 9, 0, 4096);
    let Reply::Chunk { payload, .. } = c.reply() else {
        panic!()
    };
    assert_eq!(payload.len(), 12);
    assert_eq!(&payload[4..], &[0, 0, 16, 0, 0, 0, 0, 3]);
}

#[test]
fn extended_headers_block_status_and_writes() {
    extended_headers_block_status_and_writes_on(true);
}

/// The same through the async reader/writer path (what TLS connections use).
#[test]
fn extended_headers_block_status_and_writes_async_path() {
    extended_headers_block_status_and_writes_on(false);
}

fn extended_headers_block_status_and_writes_on(direct_io: bool) {
    let t = TestServer::start_with(nbd_gateway::ServerConfig {
        direct_io,
        ..Default::default()
    });
    let path = t.volume("v", SIZE);
    let mut c = t.connect();
    c.handshake("v", false, true, true);
    // WRITE with and without PAYLOAD_LEN (qemu omits it).
    for (flags, off) in [(0u16, 0u64), (1 << 5, 8192)] {
        c.request(flags, CMD_WRITE, 1, off, 4096);
        c.s.write_all(&[3u8; 4096]).unwrap();
        let r = c.reply();
        let Reply::Chunk { flags, typ, .. } = r else {
            panic!("extended headers forbid simple replies: {r:?}")
        };
        assert_eq!((flags, typ), (1, 0));
    }
    // A payload on a command without one is consumed, then EINVAL.
    c.request(1 << 5, CMD_FLUSH, 2, 0, 100);
    c.s.write_all(&[0u8; 100]).unwrap();
    assert_eq!(Raw::error_of(&c.reply()), EINVAL);
    // 64-bit effect length: block status over the whole export.
    c.request(0, CMD_BLOCK_STATUS, 3, 0, SIZE);
    let Reply::Chunk { typ, payload, .. } = c.reply() else {
        panic!()
    };
    assert_eq!(typ, 6);
    let count = u32::from_be_bytes(payload[4..8].try_into().unwrap());
    assert_eq!(count as usize, (payload.len() - 8) / 16);
    let first_len = u64::from_be_bytes(payload[8..16].try_into().unwrap());
    let first_flags = u64::from_be_bytes(payload[16..24].try_into().unwrap());
    assert_eq!((first_len, first_flags), (4096, 0));
    let f = std::fs::read(&path).unwrap();
    assert!(f[..4096].iter().all(|&b| b == 3));
    assert!(f[8192..12288].iter().all(|&b| b == 3));
}

#[test]
fn many_concurrent_hostile_and_good_clients() {
    many_concurrent_hostile_and_good_clients_on(true);
}

/// The same through the async reader/writer path (what TLS connections use).
#[test]
fn many_concurrent_hostile_and_good_clients_async_path() {
    many_concurrent_hostile_and_good_clients_on(false);
}

fn many_concurrent_hostile_and_good_clients_on(direct_io: bool) {
    let t = TestServer::start_with(nbd_gateway::ServerConfig {
        direct_io,
        ..Default::default()
    });
    let path = t.volume("v", SIZE);
    t.store.create_snapshot("v", "s").unwrap();
    let sock = t.sock.clone();
    let mut threads = Vec::new();
    for i in 0..64u64 {
        let sock = sock.clone();
        threads.push(std::thread::spawn(move || {
            let mut c = Raw::connect(&sock);
            match i % 8 {
                0 => {
                    c.greet(3);
                    c.s.write_all(&[0xFF; 64]).unwrap();
                    assert!(c.closed());
                }
                1 => {
                    c.handshake("v", false, false, false);
                    c.request(0, CMD_WRITE, 1, 0, 1 << 30);
                    assert!(c.closed());
                }
                2 => {
                    c.handshake("v", true, false, false);
                    c.request(0, CMD_WRITE, 1, 4096 * i, 65536);
                    let _ = c.s.write_all(&[0xEE; 100]);
                }
                3 => {
                    c.handshake("v@s", false, false, false);
                    assert_eq!(c.write(0, 4096 * i, &[0xEE; 4096]), EPERM);
                }
                4 => {
                    c.handshake("v", false, true, false);
                    assert_eq!(c.simple_cmd(0, CMD_READ, u64::MAX, 1), EINVAL);
                    assert_eq!(c.simple_cmd(0, 77, 0, 0), EINVAL);
                }
                5 => {
                    c.greet(3);
                    c.send_opt(OPT_GO, &[0xFF; 3]);
                    assert_eq!(c.read_opt_reply().typ, REP_ERR_INVALID);
                }
                _ => {
                    // Well-behaved: write our own block (distinct per client), read it back.
                    c.handshake("v", i % 2 == 0, false, false);
                    let data = vec![u8::try_from(i).unwrap(); 4096];
                    assert_eq!(c.write(FLAG_FUA, 4096 * i, &data), 0);
                    if i % 2 == 1 {
                        assert_eq!(c.read_simple(4096 * i, 4096).unwrap(), data);
                    }
                    c.request(0, CMD_DISC, 0, 0, 0);
                    assert!(c.closed());
                }
            }
        }));
    }
    for th in threads {
        th.join().unwrap();
    }
    let f = std::fs::read(&path).unwrap();
    for i in 0..64u64 {
        let block = &f[(4096 * i) as usize..(4096 * (i + 1)) as usize];
        let expect = if i % 8 >= 6 { i as u8 } else { 0 };
        assert!(block.iter().all(|&b| b == expect), "block {i}");
    }
    assert!(f[4096 * 64..].iter().all(|&b| b == 0));
}

#[test]
fn shutdown_answers_eshutdown_then_closes() {
    shutdown_answers_eshutdown_then_closes_on(true);
}

/// The same through the async reader/writer path (what TLS connections use).
#[test]
fn shutdown_answers_eshutdown_then_closes_async_path() {
    shutdown_answers_eshutdown_then_closes_on(false);
}

fn shutdown_answers_eshutdown_then_closes_on(direct_io: bool) {
    let config = nbd_gateway::ServerConfig {
        shutdown_grace: std::time::Duration::from_secs(10),
        direct_io,
        ..Default::default()
    };
    let t = TestServer::start_with(config);
    t.volume("v", SIZE);
    let mut c = t.connect();
    c.handshake("v", false, false, false);
    assert_eq!(c.write(0, 0, &[1u8; 512]), 0);
    let mut h = t.connect();
    h.greet(3);
    t.server.shutdown();
    // Give the connection task a moment to observe the signal (no wall-clock assertion).
    let mut err = 0;
    for _ in 0..200 {
        err = c.simple_cmd(0, CMD_FLUSH, 0, 0);
        if err == ESHUTDOWN {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(err, ESHUTDOWN);
    assert_eq!(h.opt(OPT_LIST, &[])[0].typ, REP_ERR_SHUTDOWN);
    c.request(0, CMD_DISC, 0, 0, 0);
    assert!(c.closed());
    // New connections are no longer accepted.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        std::os::unix::net::UnixStream::connect(&t.sock).is_err() || {
            let mut n = t.connect();
            n.closed()
        }
    );
}

#[test]
fn stalled_requests_are_dropped_but_idle_connections_are_not() {
    for direct_io in [true, false] {
        let t = TestServer::start_with(nbd_gateway::ServerConfig {
            request_timeout: std::time::Duration::from_millis(200),
            direct_io,
            ..Default::default()
        });
        let path = t.volume("v", SIZE);
        let mut idle = t.connect();
        idle.handshake("v", false, false, false);
        let mut half = t.connect();
        half.handshake("v", false, false, false);
        half.s.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
        assert!(half.closed(), "half a header (direct_io {direct_io})");
        let mut mid = t.connect();
        mid.handshake("v", false, false, false);
        mid.request(0, CMD_WRITE, 1, 0, 4096);
        mid.s.write_all(&[0xEE; 100]).unwrap();
        assert!(mid.closed(), "half a payload (direct_io {direct_io})");
        // Idle for longer than the request timeout: still served.
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(idle.read_simple(0, 512).unwrap(), vec![0u8; 512]);
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; SIZE as usize]);
    }
}

/// Many small requests sent in one go (as qemu and fio do at high queue depths): workers take
/// several at once; every one gets exactly one reply, reads see the writes before them.
#[test]
fn pipelined_small_requests_are_each_answered() {
    for direct_io in [true, false] {
        let t = TestServer::start_with(nbd_gateway::ServerConfig {
            direct_io,
            ..Default::default()
        });
        let path = t.volume("v", SIZE);
        let mut c = t.connect();
        c.handshake("v", false, false, false);
        let mut wire = Vec::new();
        let header = |flags: u16, typ: u16, cookie: u64, offset: u64, len: u32| {
            let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
            b.extend_from_slice(&flags.to_be_bytes());
            b.extend_from_slice(&typ.to_be_bytes());
            b.extend_from_slice(&cookie.to_be_bytes());
            b.extend_from_slice(&offset.to_be_bytes());
            b.extend_from_slice(&len.to_be_bytes());
            b
        };
        for i in 0..40u64 {
            wire.extend(header(0, CMD_WRITE, 1000 + i, 4096 * i, 4096));
            wire.extend(vec![i as u8 + 1; 4096]);
        }
        wire.extend(header(0, CMD_FLUSH, 2000, 0, 0));
        wire.extend(header(0, 99, 2001, 0, 0));
        wire.extend(header(0, CMD_READ, 2002, SIZE, 512));
        c.s.write_all(&wire).unwrap();
        let mut answered = std::collections::BTreeMap::new();
        for _ in 0..43 {
            let Reply::Simple { error, cookie } = c.reply() else {
                panic!("simple replies only")
            };
            assert!(
                answered.insert(cookie, error).is_none(),
                "cookie {cookie} twice"
            );
        }
        for i in 0..40u64 {
            assert_eq!(answered[&(1000 + i)], 0);
        }
        assert_eq!(
            (answered[&2000], answered[&2001], answered[&2002]),
            (0, EINVAL, EINVAL)
        );
        // Reads pipelined behind each other, answered with their data.
        let mut wire = Vec::new();
        for i in 0..40u64 {
            wire.extend(header(0, CMD_READ, 3000 + i, 4096 * i, 4096));
        }
        c.s.write_all(&wire).unwrap();
        for _ in 0..40 {
            let Reply::Simple { error, cookie } = c.reply() else {
                panic!("simple replies only")
            };
            assert_eq!(error, 0);
            let i = cookie - 3000;
            assert_eq!(c.read_exact(4096), vec![i as u8 + 1; 4096], "read {i}");
        }
        c.request(0, CMD_DISC, 0, 0, 0);
        assert!(c.closed());
        let f = std::fs::read(&path).unwrap();
        for i in 0..40usize {
            assert!(
                f[4096 * i..4096 * (i + 1)]
                    .iter()
                    .all(|&b| b == i as u8 + 1)
            );
        }
    }
}
