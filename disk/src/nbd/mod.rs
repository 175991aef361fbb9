//! A synchronous NBD client: an export on an NBD server as a [`BlockRead`] + [`BlockWrite`].
//!
//! It speaks fixed-newstyle negotiation with `NBD_OPT_GO`, structured replies and the
//! `base:allocation` metadata context when the server offers them, and falls back to simple replies
//! and `NBD_OPT_EXPORT_NAME` when it does not. One request is in flight at a time (the connection
//! sits behind a mutex), which keeps the client small and every reply easy to check.
//!
//! The server is not trusted (house style S11, S12): every reply is checked against the request it
//! answers (cookie, chunk types, offsets inside the request, lengths at most what was asked), every
//! length is capped before a buffer is sized, and every loop is bounded. After a protocol violation
//! the connection is marked broken and every later request fails without touching the socket.

mod proto;
mod uri;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use proto::*;
pub use uri::{DEFAULT_PORT, MAX_STRING_LEN, NbdTransport, NbdUri, is_nbd_uri};

use crate::block::{BlockRead, BlockWrite, Extent, ExtentKind, ZeroMode, check_range};
use crate::raw::push_extent;
use crate::{Error, Result};

/// Most option replies we accept for one option before calling the server hostile.
const MAX_OPTION_REPLIES: usize = 64;
/// Longest option reply payload we accept: a 4096-byte string plus its fixed fields.
const MAX_OPTION_REPLY_LEN: u32 = 8192;
/// Longest error chunk payload: error, message length, a 4096-byte message and an offset.
const MAX_ERROR_CHUNK_LEN: u32 = 4 + 2 + 4096 + 8;
/// Most chunks accepted in one structured reply beyond one per requested byte.
const CHUNK_SLACK: u64 = 64;
/// Most content and error chunks accepted in one read reply. Each is remembered until the reply
/// ends (to refuse overlaps), so this bounds memory; 2^17 chunks is 512-byte granularity over a
/// 64 MiB request, finer than any real server fragments a 32 MiB read.
const MAX_READ_CHUNKS: u64 = 1 << 17;
/// Most `NBD_CMD_BLOCK_STATUS` round trips in one [`BlockRead::extents`] call; the rest is data.
const MAX_STATUS_ROUNDS: usize = 1 << 16;
/// Length asked for in one block status request (any u32 is allowed; this keeps it aligned).
const STATUS_REQUEST_LEN: u64 = 1 << 30;

/// Anything the client can talk NBD over: TCP, a Unix socket, or a test double.
pub trait Transport: Read + Write + Send {}
impl<T: Read + Write + Send> Transport for T {}

/// What the server told us about the export during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags (NBD protocol, "Transmission flags").
    pub flags: u16,
    /// Minimum block size: every request is aligned to it.
    pub min_block: u32,
    /// Preferred block size.
    pub preferred_block: u32,
    /// Largest payload per request, already capped at 32 MiB.
    pub max_payload: u32,
    /// Whether structured replies were negotiated.
    pub structured_replies: bool,
    /// The `base:allocation` context id, if negotiated.
    pub allocation_context: Option<u32>,
}

impl ExportInfo {
    /// Whether the server said the export is read-only.
    #[must_use]
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }
    /// Whether the server accepts `NBD_CMD_FLUSH`.
    #[must_use]
    pub fn can_flush(&self) -> bool {
        self.flags & TFLAG_SEND_FLUSH != 0
    }
    /// Whether the server accepts the FUA flag.
    #[must_use]
    pub fn can_fua(&self) -> bool {
        self.flags & TFLAG_SEND_FUA != 0
    }
    /// Whether the server accepts `NBD_CMD_TRIM`.
    #[must_use]
    pub fn can_trim(&self) -> bool {
        self.flags & TFLAG_SEND_TRIM != 0
    }
    /// Whether the server accepts `NBD_CMD_WRITE_ZEROES`.
    #[must_use]
    pub fn can_write_zeroes(&self) -> bool {
        self.flags & TFLAG_SEND_WRITE_ZEROES != 0
    }
}

struct Conn {
    stream: Box<dyn Transport>,
    next_cookie: u64,
    /// Why the connection can no longer be used, after a protocol violation or transport error.
    broken: Option<String>,
}

/// A connected NBD export.
pub struct NbdClient {
    conn: Mutex<Conn>,
    info: ExportInfo,
    name: String,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("export", &self.name)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn hs_corrupt(detail: impl Into<String>) -> Error {
    Error::corrupt("nbd handshake", 0, detail)
}

fn hs_io(e: std::io::Error) -> Error {
    Error::io(0, e)
}

fn read_u16(r: &mut dyn Transport) -> std::io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
fn read_u32(r: &mut dyn Transport) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn read_u64(r: &mut dyn Transport) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Reads and drops `n` bytes in bounded pieces.
fn skip(r: &mut dyn Transport, mut n: u64) -> std::io::Result<()> {
    let mut sink = [0u8; 4096];
    while n > 0 {
        let k = usize::try_from(n).map_or(sink.len(), |n| n.min(sink.len()));
        // OK to slice: k <= sink.len().
        r.read_exact(&mut sink[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn u32_len(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Usage(format!("nbd message of {n} bytes is too long")))
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::Usage(format!("length {n} does not fit in memory")))
}

/// One option reply: its type and payload (at most [`MAX_OPTION_REPLY_LEN`] bytes).
struct OptReply {
    kind: u32,
    data: Vec<u8>,
}

impl OptReply {
    fn message(&self) -> String {
        String::from_utf8_lossy(self.data.get(..MAX_STRING_BYTES).unwrap_or(&self.data))
            .into_owned()
    }
}

const MAX_STRING_BYTES: usize = uri::MAX_STRING_LEN;

fn send_option(t: &mut dyn Transport, opt: u32, data: &[u8]) -> Result<()> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&opt.to_be_bytes());
    msg.extend_from_slice(&u32_len(data.len())?.to_be_bytes());
    msg.extend_from_slice(data);
    t.write_all(&msg).map_err(hs_io)?;
    t.flush().map_err(hs_io)
}

fn read_option_reply(t: &mut dyn Transport, opt: u32) -> Result<OptReply> {
    let magic = read_u64(t).map_err(hs_io)?;
    if magic != OPT_REPLY_MAGIC {
        return Err(hs_corrupt(format!(
            "option reply magic {magic:#x}, expected {OPT_REPLY_MAGIC:#x}"
        )));
    }
    let echoed = read_u32(t).map_err(hs_io)?;
    if echoed != opt {
        return Err(hs_corrupt(format!(
            "reply to option {echoed}, expected {opt}"
        )));
    }
    let kind = read_u32(t).map_err(hs_io)?;
    let len = read_u32(t).map_err(hs_io)?;
    if len > MAX_OPTION_REPLY_LEN {
        return Err(hs_corrupt(format!(
            "option reply length {len} exceeds {MAX_OPTION_REPLY_LEN}"
        )));
    }
    let mut data = vec![0u8; to_usize(u64::from(len))?];
    t.read_exact(&mut data).map_err(hs_io)?;
    Ok(OptReply { kind, data })
}

fn be_u16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        d.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn be_u32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        d.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn be_u64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        d.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn option_error(what: &str, export: &str, r: &OptReply) -> Error {
    let msg = r.message();
    let detail = if msg.is_empty() {
        String::new()
    } else {
        format!(": {msg}")
    };
    match r.kind {
        REP_ERR_UNKNOWN => Error::Usage(format!(
            "nbd export {export:?} not found on the server{detail}"
        )),
        REP_ERR_TLS_REQD => Error::unsupported("nbd server", format!("requires tls{detail}")),
        k => Error::io(
            0,
            std::io::Error::other(format!("nbd {what} refused: {}{detail}", rep_err_name(k))),
        ),
    }
}

/// Block sizes from `NBD_INFO_BLOCK_SIZE`, validated ("Size constraints").
fn parse_block_size(d: &[u8]) -> Result<(u32, u32, u32)> {
    let (Some(min), Some(pref), Some(max)) = (be_u32(d, 2), be_u32(d, 6), be_u32(d, 10)) else {
        return Err(hs_corrupt("block size info truncated"));
    };
    if !min.is_power_of_two() || min > MAX_MIN_BLOCK {
        return Err(hs_corrupt(format!(
            "minimum block size {min} is not a power of two in 1..={MAX_MIN_BLOCK}"
        )));
    }
    if max < min {
        return Err(hs_corrupt(format!(
            "maximum payload {max} below the minimum block size {min}"
        )));
    }
    Ok((min, pref, max))
}

/// Negotiates the export named `export` over `t` (fixed newstyle).
fn handshake(t: &mut dyn Transport, export: &str) -> Result<ExportInfo> {
    if export.len() > MAX_STRING_BYTES {
        return Err(Error::Usage(format!(
            "nbd export name is {} bytes, at most {MAX_STRING_BYTES} allowed",
            export.len()
        )));
    }
    let magic = read_u64(t).map_err(hs_io)?;
    if magic != NBDMAGIC {
        return Err(hs_corrupt(format!(
            "server magic {magic:#x}, expected NBDMAGIC"
        )));
    }
    let magic = read_u64(t).map_err(hs_io)?;
    if magic == CLISERV_MAGIC {
        return Err(Error::unsupported("nbd server", "oldstyle negotiation"));
    }
    if magic != IHAVEOPT {
        return Err(hs_corrupt(format!(
            "second magic {magic:#x}, expected IHAVEOPT"
        )));
    }
    let hflags = read_u16(t).map_err(hs_io)?;
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Error::unsupported(
            "nbd server",
            "no fixed newstyle negotiation",
        ));
    }
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let cflags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    t.write_all(&cflags.to_be_bytes()).map_err(hs_io)?;

    // Structured replies first: metadata contexts depend on them.
    send_option(t, OPT_STRUCTURED_REPLY, &[])?;
    let r = read_option_reply(t, OPT_STRUCTURED_REPLY)?;
    let structured = match r.kind {
        REP_ACK => true,
        k if k & REP_FLAG_ERROR != 0 => {
            tracing::debug!(
                reason = rep_err_name(k),
                "nbd server refused structured replies"
            );
            false
        }
        k => {
            return Err(hs_corrupt(format!(
                "reply type {k} to structured reply option"
            )));
        }
    };

    let name = export.as_bytes();
    let name_len = u32_len(name.len())?;
    let mut allocation_context = None;
    if structured {
        let query = META_BASE_ALLOCATION.as_bytes();
        let mut d = Vec::new();
        d.extend_from_slice(&name_len.to_be_bytes());
        d.extend_from_slice(name);
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&u32_len(query.len())?.to_be_bytes());
        d.extend_from_slice(query);
        send_option(t, OPT_SET_META_CONTEXT, &d)?;
        let mut done = false;
        for _ in 0..MAX_OPTION_REPLIES {
            let r = read_option_reply(t, OPT_SET_META_CONTEXT)?;
            match r.kind {
                REP_META_CONTEXT => {
                    let id = be_u32(&r.data, 0)
                        .ok_or_else(|| hs_corrupt("meta context reply shorter than 4 bytes"))?;
                    if r.data.get(4..) == Some(query) {
                        allocation_context = Some(id);
                    }
                }
                REP_ACK => {
                    done = true;
                    break;
                }
                k if k & REP_FLAG_ERROR != 0 => {
                    tracing::debug!(
                        reason = rep_err_name(k),
                        "nbd server refused base:allocation"
                    );
                    allocation_context = None;
                    done = true;
                    break;
                }
                k => return Err(hs_corrupt(format!("reply type {k} to set meta context"))),
            }
        }
        if !done {
            return Err(hs_corrupt(format!(
                "more than {MAX_OPTION_REPLIES} replies to set meta context"
            )));
        }
    }

    let mut d = Vec::new();
    d.extend_from_slice(&name_len.to_be_bytes());
    d.extend_from_slice(name);
    d.extend_from_slice(&1u16.to_be_bytes());
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(t, OPT_GO, &d)?;
    let mut export_info: Option<(u64, u16)> = None;
    let mut sizes: Option<(u32, u32, u32)> = None;
    let mut acked = false;
    for _ in 0..MAX_OPTION_REPLIES {
        let r = read_option_reply(t, OPT_GO)?;
        match r.kind {
            REP_INFO => {
                let Some(info_type) = be_u16(&r.data, 0) else {
                    return Err(hs_corrupt("info reply shorter than 2 bytes"));
                };
                let len = u32_len(r.data.len())?;
                match info_type {
                    INFO_EXPORT => {
                        if len != INFO_EXPORT_LEN {
                            return Err(hs_corrupt(format!(
                                "export info length {len}, expected {INFO_EXPORT_LEN}"
                            )));
                        }
                        let size = be_u64(&r.data, 2)
                            .ok_or_else(|| hs_corrupt("export info truncated"))?;
                        let flags = be_u16(&r.data, 10)
                            .ok_or_else(|| hs_corrupt("export info truncated"))?;
                        export_info = Some((size, flags));
                    }
                    INFO_BLOCK_SIZE => {
                        if len != INFO_BLOCK_SIZE_LEN {
                            return Err(hs_corrupt(format!(
                                "block size info length {len}, expected {INFO_BLOCK_SIZE_LEN}"
                            )));
                        }
                        sizes = Some(parse_block_size(&r.data)?);
                    }
                    _ => {} // The client must ignore information it does not understand.
                }
            }
            REP_ACK => {
                acked = true;
                break;
            }
            REP_ERR_UNSUP => {
                // An old server without NBD_OPT_GO: fall back to NBD_OPT_EXPORT_NAME.
                send_option(t, OPT_EXPORT_NAME, name)?;
                let size = read_u64(t).map_err(hs_io)?;
                let flags = read_u16(t).map_err(hs_io)?;
                if !no_zeroes {
                    skip(t, 124).map_err(hs_io)?;
                }
                export_info = Some((size, flags));
                acked = true;
                break;
            }
            k if k & REP_FLAG_ERROR != 0 => return Err(option_error("export", export, &r)),
            k => return Err(hs_corrupt(format!("reply type {k} to go"))),
        }
    }
    if !acked {
        return Err(hs_corrupt(format!(
            "more than {MAX_OPTION_REPLIES} replies to go"
        )));
    }
    let (size, flags) =
        export_info.ok_or_else(|| hs_corrupt("server accepted go without export info"))?;
    if flags & TFLAG_HAS_FLAGS == 0 {
        tracing::debug!(flags, "nbd server did not set NBD_FLAG_HAS_FLAGS");
    }
    let (min_block, preferred_block, max) = sizes.unwrap_or((1, 4096, MAX_PAYLOAD));
    // Cap the payload, keep it a multiple of the minimum block (min <= 2^16 <= cap, so >= min).
    let max_payload = max.min(MAX_PAYLOAD) / min_block * min_block;
    Ok(ExportInfo {
        size,
        flags,
        min_block,
        preferred_block,
        max_payload,
        structured_replies: structured,
        allocation_context,
    })
}

/// A server-side error reported in a reply.
fn server_error(offset: u64, code: u32, msg: &str) -> Error {
    let name = errno_name(code);
    let text = if msg.is_empty() {
        format!("nbd server error {name} ({code})")
    } else {
        format!("nbd server error {name} ({code}): {msg}")
    };
    Error::io(offset, std::io::Error::new(errno_kind(code), text))
}

/// A reply header: simple or one structured chunk.
enum Header {
    Simple { error: u32 },
    Chunk { flags: u16, kind: u16, len: u32 },
}

/// Records `start..end` as covered by a content chunk, refusing overlaps.
fn cover(map: &mut BTreeMap<u64, u64>, start: u64, end: u64) -> bool {
    if let Some((_, &prev_end)) = map.range(..=start).next_back()
        && prev_end > start
    {
        return false;
    }
    if let Some((&next_start, _)) = map.range(start..).next()
        && next_start < end
    {
        return false;
    }
    map.insert(start, end);
    true
}

impl Conn {
    fn check(&self) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::io(
                0,
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!("nbd connection unusable after an earlier failure: {why}"),
                ),
            )),
            None => Ok(()),
        }
    }

    /// Marks the connection broken and returns the error.
    fn fail(&mut self, e: Error) -> Error {
        if self.broken.is_none() {
            self.broken = Some(e.to_string());
        }
        e
    }

    fn corrupt(&mut self, offset: u64, detail: impl Into<String>) -> Error {
        self.fail(Error::corrupt("nbd reply", offset, detail))
    }

    fn io(&mut self, offset: u64, e: std::io::Error) -> Error {
        self.fail(Error::io(offset, e))
    }

    fn send(&mut self, cmd: u16, flags: u16, offset: u64, len: u32, payload: &[u8]) -> Result<u64> {
        self.check()?;
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let mut h = [0u8; 28];
        h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&cmd.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..24].copy_from_slice(&offset.to_be_bytes());
        h[24..28].copy_from_slice(&len.to_be_bytes());
        let res = self
            .stream
            .write_all(&h)
            .and_then(|()| self.stream.write_all(payload))
            .and_then(|()| self.stream.flush());
        match res {
            Ok(()) => Ok(cookie),
            Err(e) => Err(self.io(offset, e)),
        }
    }

    fn header(&mut self, cookie: u64, offset: u64) -> Result<Header> {
        let r = (|| -> std::io::Result<(u32, Option<Header>, u64)> {
            let magic = read_u32(&mut *self.stream)?;
            match magic {
                SIMPLE_REPLY_MAGIC => {
                    let error = read_u32(&mut *self.stream)?;
                    let c = read_u64(&mut *self.stream)?;
                    Ok((magic, Some(Header::Simple { error }), c))
                }
                STRUCTURED_REPLY_MAGIC => {
                    let flags = read_u16(&mut *self.stream)?;
                    let kind = read_u16(&mut *self.stream)?;
                    let c = read_u64(&mut *self.stream)?;
                    let len = read_u32(&mut *self.stream)?;
                    Ok((magic, Some(Header::Chunk { flags, kind, len }), c))
                }
                _ => Ok((magic, None, 0)),
            }
        })();
        let (magic, header, got) = r.map_err(|e| self.io(offset, e))?;
        let Some(header) = header else {
            return Err(self.corrupt(offset, format!("reply magic {magic:#x} unknown")));
        };
        if got != cookie {
            return Err(self.corrupt(offset, format!("reply cookie {got}, expected {cookie}")));
        }
        Ok(header)
    }

    /// Reads the rest of an error chunk of `len` bytes: `(error, message, offset if any)`.
    fn error_chunk(&mut self, offset: u64, kind: u16, len: u32) -> Result<(u32, String)> {
        if !(6..=MAX_ERROR_CHUNK_LEN).contains(&len) {
            return Err(self.corrupt(
                offset,
                format!("error chunk length {len} not in 6..={MAX_ERROR_CHUNK_LEN}"),
            ));
        }
        let mut d = vec![0u8; to_usize(u64::from(len))?];
        self.stream
            .read_exact(&mut d)
            .map_err(|e| self.io(offset, e))?;
        // OK to unwrap: len >= 6 was checked above.
        let code = be_u32(&d, 0).unwrap_or(0);
        let msg_len = usize::from(be_u16(&d, 4).unwrap_or(0));
        let Some(msg) = d.get(6..6 + msg_len) else {
            return Err(self.corrupt(
                offset,
                format!("error message length {msg_len} exceeds chunk"),
            ));
        };
        let msg = String::from_utf8_lossy(msg).into_owned();
        if kind == REPLY_TYPE_ERROR_OFFSET {
            let Some(at) = be_u64(&d, 6 + msg_len) else {
                return Err(self.corrupt(offset, "error offset chunk without offset"));
            };
            return Ok((code, format!("{msg} (at {at:#x})")));
        }
        Ok((code, msg))
    }

    /// Reads the reply to a command without reply payload (write, flush, trim, write zeroes).
    fn ack(&mut self, cookie: u64, offset: u64) -> Result<()> {
        let mut err: Option<(u32, String)> = None;
        for _ in 0..CHUNK_SLACK {
            match self.header(cookie, offset)? {
                Header::Simple { error: 0 } => return Ok(()),
                Header::Simple { error } => return Err(server_error(offset, error, "")),
                Header::Chunk { flags, kind, len } => {
                    if kind & REPLY_TYPE_ERROR_BIT != 0 {
                        let e = self.error_chunk(offset, kind, len)?;
                        err.get_or_insert(e);
                    } else if kind == REPLY_TYPE_NONE && len == 0 {
                        if flags & REPLY_FLAG_DONE == 0 {
                            return Err(self.corrupt(offset, "none chunk without done flag"));
                        }
                    } else {
                        return Err(self.corrupt(
                            offset,
                            format!("unexpected chunk type {kind} length {len}"),
                        ));
                    }
                    if flags & REPLY_FLAG_DONE != 0 {
                        return match err {
                            Some((code, msg)) => Err(server_error(offset, code, &msg)),
                            None => Ok(()),
                        };
                    }
                }
            }
        }
        Err(self.corrupt(offset, format!("more than {CHUNK_SLACK} chunks in a reply")))
    }

    /// Reads `buf.len()` bytes at `offset` (one request, already aligned and capped).
    fn read(&mut self, offset: u64, buf: &mut [u8], structured: bool) -> Result<()> {
        let len = u32_len(buf.len())?;
        let cookie = self.send(CMD_READ, 0, offset, len, &[])?;
        if !structured {
            return match self.header(cookie, offset)? {
                Header::Simple { error: 0 } => {
                    self.stream.read_exact(buf).map_err(|e| self.io(offset, e))
                }
                Header::Simple { error } => Err(server_error(offset, error, "")),
                Header::Chunk { .. } => {
                    Err(self.corrupt(offset, "structured reply without negotiation"))
                }
            };
        }
        let end = offset + u64::from(len);
        let mut covered: BTreeMap<u64, u64> = BTreeMap::new();
        let mut total = 0u64;
        let mut err: Option<(u32, String)> = None;
        let max_chunks = (u64::from(len) + CHUNK_SLACK).min(MAX_READ_CHUNKS);
        let mut chunks = 0u64;
        loop {
            chunks += 1;
            if chunks > max_chunks {
                return Err(self.corrupt(
                    offset,
                    format!("more than {max_chunks} chunks in a read reply"),
                ));
            }
            let (flags, kind, clen) = match self.header(cookie, offset)? {
                Header::Simple { error: 0 } => {
                    return Err(self.corrupt(offset, "simple reply to a structured read"));
                }
                // Servers must not, but an early error this way is harmless to accept.
                Header::Simple { error } => return Err(server_error(offset, error, "")),
                Header::Chunk { flags, kind, len } => (flags, kind, len),
            };
            match kind {
                REPLY_TYPE_OFFSET_DATA => {
                    if clen < 9 {
                        return Err(
                            self.corrupt(offset, format!("data chunk length {clen} below 9"))
                        );
                    }
                    let at = read_u64(&mut *self.stream).map_err(|e| self.io(offset, e))?;
                    let n = u64::from(clen - 8);
                    let Some(stop) = at.checked_add(n).filter(|&s| at >= offset && s <= end) else {
                        return Err(self.corrupt(
                            offset,
                            format!("data chunk {at:#x}+{n} outside request {offset:#x}+{len}"),
                        ));
                    };
                    if !cover(&mut covered, at, stop) {
                        return Err(
                            self.corrupt(offset, format!("data chunk {at:#x}+{n} overlaps"))
                        );
                    }
                    // In range: offset <= at < stop <= end and end - offset == buf.len().
                    let from = to_usize(at - offset)?;
                    let dst = buf
                        .get_mut(from..from + to_usize(n)?)
                        .ok_or_else(|| Error::Usage("read chunk outside buffer".into()))?;
                    self.stream
                        .read_exact(dst)
                        .map_err(|e| self.io(offset, e))?;
                    total += n;
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    if clen != 12 {
                        return Err(
                            self.corrupt(offset, format!("hole chunk length {clen}, expected 12"))
                        );
                    }
                    let at = read_u64(&mut *self.stream).map_err(|e| self.io(offset, e))?;
                    let n = u64::from(read_u32(&mut *self.stream).map_err(|e| self.io(offset, e))?);
                    let Some(stop) = at
                        .checked_add(n)
                        .filter(|&s| n > 0 && at >= offset && s <= end)
                    else {
                        return Err(self.corrupt(
                            offset,
                            format!("hole chunk {at:#x}+{n} outside request {offset:#x}+{len}"),
                        ));
                    };
                    if !cover(&mut covered, at, stop) {
                        return Err(
                            self.corrupt(offset, format!("hole chunk {at:#x}+{n} overlaps"))
                        );
                    }
                    let from = to_usize(at - offset)?;
                    buf.get_mut(from..from + to_usize(n)?)
                        .ok_or_else(|| Error::Usage("read chunk outside buffer".into()))?
                        .fill(0);
                    total += n;
                }
                REPLY_TYPE_NONE if clen == 0 => {
                    if flags & REPLY_FLAG_DONE == 0 {
                        return Err(self.corrupt(offset, "none chunk without done flag"));
                    }
                }
                k if k & REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(offset, k, clen)?;
                    err.get_or_insert(e);
                }
                k => {
                    return Err(self.corrupt(
                        offset,
                        format!("unexpected chunk type {k} length {clen} in read reply"),
                    ));
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        if let Some((code, msg)) = err {
            return Err(server_error(offset, code, &msg));
        }
        if total != u64::from(len) {
            return Err(self.corrupt(offset, format!("read reply covered {total} of {len} bytes")));
        }
        Ok(())
    }

    /// One `NBD_CMD_BLOCK_STATUS` round trip: the descriptors from `offset`, clipped to `len`.
    fn block_status(&mut self, ctx: u32, offset: u64, len: u32) -> Result<Vec<(u64, u32)>> {
        let cookie = self.send(CMD_BLOCK_STATUS, 0, offset, len, &[])?;
        let mut out: Vec<(u64, u32)> = Vec::new();
        let mut err: Option<(u32, String)> = None;
        let mut seen = false;
        for _ in 0..CHUNK_SLACK {
            let (flags, kind, clen) = match self.header(cookie, offset)? {
                Header::Simple { error: 0 } => {
                    return Err(self.corrupt(offset, "simple reply to block status"));
                }
                Header::Simple { error } => return Err(server_error(offset, error, "")),
                Header::Chunk { flags, kind, len } => (flags, kind, len),
            };
            match kind {
                REPLY_TYPE_BLOCK_STATUS => {
                    let max = 4 + 8 * MAX_STATUS_DESCRIPTORS;
                    if clen < 12 || (clen - 4) % 8 != 0 || clen > max {
                        return Err(self.corrupt(
                            offset,
                            format!("block status chunk length {clen} not 4+8n in 12..={max}"),
                        ));
                    }
                    let id = read_u32(&mut *self.stream).map_err(|e| self.io(offset, e))?;
                    let mut covered = 0u64;
                    for _ in 0..(clen - 4) / 8 {
                        let n = read_u32(&mut *self.stream).map_err(|e| self.io(offset, e))?;
                        let st = read_u32(&mut *self.stream).map_err(|e| self.io(offset, e))?;
                        if n == 0 {
                            return Err(self.corrupt(offset, "block status descriptor of length 0"));
                        }
                        // Only our context counts, and only up to what we asked for.
                        if id == ctx && !seen && covered < u64::from(len) {
                            let n = u64::from(n).min(u64::from(len) - covered);
                            out.push((n, st));
                            covered += n;
                        }
                    }
                    if id == ctx {
                        seen = true;
                    }
                }
                REPLY_TYPE_NONE if clen == 0 => {
                    if flags & REPLY_FLAG_DONE == 0 {
                        return Err(self.corrupt(offset, "none chunk without done flag"));
                    }
                }
                k if k & REPLY_TYPE_ERROR_BIT != 0 => {
                    let e = self.error_chunk(offset, k, clen)?;
                    err.get_or_insert(e);
                }
                k => {
                    return Err(self.corrupt(
                        offset,
                        format!("unexpected chunk type {k} length {clen} in block status reply"),
                    ));
                }
            }
            if flags & REPLY_FLAG_DONE != 0 {
                if let Some((code, msg)) = err {
                    return Err(server_error(offset, code, &msg));
                }
                if out.is_empty() {
                    return Err(self.corrupt(offset, "block status reply without descriptors"));
                }
                return Ok(out);
            }
        }
        Err(self.corrupt(offset, format!("more than {CHUNK_SLACK} chunks in a reply")))
    }
}

/// Default limit on one socket read or write: a stalled server fails the request instead of
/// hanging the caller forever.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(300);

/// How to connect (house style S14: options, not positional flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    io_timeout: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            io_timeout: Some(DEFAULT_IO_TIMEOUT),
        }
    }
}

impl ConnectOptions {
    /// Defaults: [`DEFAULT_IO_TIMEOUT`] on every socket operation.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the limit on one socket read, write or TCP connect; `None` waits forever.
    #[must_use]
    pub fn io_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.io_timeout = timeout.filter(|d| !d.is_zero());
        self
    }
}

fn tcp_connect(host: &str, port: u16, timeout: Option<Duration>) -> std::io::Result<TcpStream> {
    let Some(limit) = timeout else {
        return TcpStream::connect((host, port));
    };
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, limit) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )
    }))
}

impl NbdClient {
    /// Connects to the export `uri` names and negotiates, with [`ConnectOptions::default`].
    ///
    /// # Errors
    /// [`Error::Io`] if the server cannot be reached or refuses; [`Error::Usage`] if the export
    /// does not exist; [`Error::Unsupported`] for oldstyle or TLS-only servers; [`Error::Corrupt`]
    /// (structure `"nbd handshake"`) if the server breaks the protocol.
    pub fn connect(uri: &NbdUri) -> Result<Self> {
        Self::connect_with(uri, &ConnectOptions::default())
    }

    /// Connects with explicit options.
    ///
    /// # Errors
    /// As [`NbdClient::connect`].
    pub fn connect_with(uri: &NbdUri, opts: &ConnectOptions) -> Result<Self> {
        let t = opts.io_timeout;
        let stream: Box<dyn Transport> = match uri.transport() {
            NbdTransport::Tcp { host, port } => {
                let s = tcp_connect(host, *port, t).map_err(hs_io)?;
                // Requests are written whole; don't let Nagle hold the last segment back.
                s.set_nodelay(true).map_err(hs_io)?;
                s.set_read_timeout(t).map_err(hs_io)?;
                s.set_write_timeout(t).map_err(hs_io)?;
                Box::new(s)
            }
            NbdTransport::Unix { socket } => {
                let s = UnixStream::connect(socket).map_err(hs_io)?;
                s.set_read_timeout(t).map_err(hs_io)?;
                s.set_write_timeout(t).map_err(hs_io)?;
                Box::new(s)
            }
        };
        Self::from_transport(stream, uri.export())
    }

    /// Negotiates over an already connected transport (a socket pair, a test double).
    ///
    /// # Errors
    /// As [`NbdClient::connect`].
    pub fn from_transport(mut stream: Box<dyn Transport>, export: &str) -> Result<Self> {
        let info = handshake(&mut *stream, export)?;
        tracing::debug!(export, ?info, "nbd export negotiated");
        Ok(Self {
            conn: Mutex::new(Conn {
                stream,
                next_cookie: 1,
                broken: None,
            }),
            info,
            name: export.to_string(),
        })
    }

    /// What the server said about the export.
    #[must_use]
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Whether the export is read-only.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.info.read_only()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_writable(&self) -> Result<()> {
        if self.is_read_only() {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// `offset..end` widened to the minimum block, clipped to the export.
    fn aligned(&self, offset: u64, end: u64) -> (u64, u64) {
        let a = u64::from(self.info.min_block);
        let start = offset / a * a;
        let stop = end.div_ceil(a).saturating_mul(a).min(self.info.size);
        (start, stop)
    }

    /// Splits `start..stop` into requests of at most the maximum payload.
    fn windows(&self, start: u64, stop: u64) -> impl Iterator<Item = (u64, u64)> {
        let w = u64::from(self.info.max_payload.max(self.info.min_block));
        let mut at = start;
        std::iter::from_fn(move || {
            if at >= stop {
                return None;
            }
            let n = (stop - at).min(w);
            let here = at;
            at += n;
            Some((here, n))
        })
    }

    /// Sends one command without payload per window over the block-aligned interior of the
    /// range; returns the unaligned head and tail that were left out.
    fn interior_commands(
        &self,
        conn: &mut Conn,
        cmd: u16,
        flags: u16,
        offset: u64,
        end: u64,
    ) -> Result<[(u64, u64); 2]> {
        let a = u64::from(self.info.min_block);
        let istart = offset.div_ceil(a).saturating_mul(a).min(end);
        let istop = (end / a * a).max(istart);
        for (at, n) in self.windows(istart, istop) {
            // OK: windows are at most max_payload <= 2^25 bytes.
            let n32 = u32::try_from(n).unwrap_or(MAX_PAYLOAD);
            let cookie = conn.send(cmd, flags, at, n32, &[])?;
            conn.ack(cookie, at)?;
        }
        Ok([(offset, istart), (istop, end)])
    }

    fn write_locked(&self, conn: &mut Conn, offset: u64, buf: &[u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let (start, stop) = self.aligned(offset, end);
        for (at, n) in self.windows(start, stop) {
            let n32 = u32::try_from(n).unwrap_or(MAX_PAYLOAD);
            if at >= offset && at + n <= end {
                let from = to_usize(at - offset)?;
                let src = buf
                    .get(from..from + to_usize(n)?)
                    .ok_or_else(|| Error::Usage("write window outside buffer".into()))?;
                let cookie = conn.send(CMD_WRITE, 0, at, n32, src)?;
                conn.ack(cookie, at)?;
            } else {
                // An unaligned edge: read-modify-write the whole block window.
                let mut tmp = vec![0u8; to_usize(n)?];
                conn.read(at, &mut tmp, self.info.structured_replies)?;
                let lo = offset.max(at);
                let hi = end.min(at + n);
                let dst = tmp
                    .get_mut(to_usize(lo - at)?..to_usize(hi - at)?)
                    .ok_or_else(|| Error::Usage("write window outside buffer".into()))?;
                let src = buf
                    .get(to_usize(lo - offset)?..to_usize(hi - offset)?)
                    .ok_or_else(|| Error::Usage("write window outside buffer".into()))?;
                dst.copy_from_slice(src);
                let cookie = conn.send(CMD_WRITE, 0, at, n32, &tmp)?;
                conn.ack(cookie, at)?;
            }
        }
        Ok(())
    }

    fn write_zero_buffers(&self, conn: &mut Conn, offset: u64, end: u64) -> Result<()> {
        if offset >= end {
            return Ok(());
        }
        let chunk = (end - offset).min(u64::from(self.info.max_payload.max(1)));
        let zeros = vec![0u8; to_usize(chunk)?];
        let mut at = offset;
        while at < end {
            let n = (end - at).min(chunk);
            // OK to slice: n <= chunk == zeros.len().
            self.write_locked(conn, at, &zeros[..to_usize(n)?])?;
            at += n;
        }
        Ok(())
    }
}

impl BlockRead for NbdClient {
    fn size(&self) -> u64 {
        self.info.size
    }

    fn logical_sector_size(&self) -> u32 {
        self.info.min_block.max(512)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.info.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let (start, stop) = self.aligned(offset, end);
        let mut conn = self.lock();
        for (at, n) in self.windows(start, stop) {
            if at >= offset && at + n <= end {
                let from = to_usize(at - offset)?;
                let dst = buf
                    .get_mut(from..from + to_usize(n)?)
                    .ok_or_else(|| Error::Usage("read window outside buffer".into()))?;
                conn.read(at, dst, self.info.structured_replies)?;
            } else {
                let mut tmp = vec![0u8; to_usize(n)?];
                conn.read(at, &mut tmp, self.info.structured_replies)?;
                let lo = offset.max(at);
                let hi = end.min(at + n);
                let src = tmp
                    .get(to_usize(lo - at)?..to_usize(hi - at)?)
                    .ok_or_else(|| Error::Usage("read window outside buffer".into()))?;
                buf.get_mut(to_usize(lo - offset)?..to_usize(hi - offset)?)
                    .ok_or_else(|| Error::Usage("read window outside buffer".into()))?
                    .copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.info.size, offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset + len;
        let Some(ctx) = self.info.allocation_context else {
            return Ok(vec![Extent {
                offset,
                len,
                kind: ExtentKind::Data,
            }]);
        };
        let (start, stop) = self.aligned(offset, end);
        let a = u64::from(self.info.min_block);
        let step = STATUS_REQUEST_LEN / a * a;
        let mut out = Vec::new();
        let mut pos = start;
        let mut conn = self.lock();
        for _ in 0..MAX_STATUS_ROUNDS {
            if pos >= stop {
                break;
            }
            let ask = (stop - pos).min(step);
            let ask32 = u32::try_from(ask).unwrap_or(u32::MAX);
            let descs = conn.block_status(ctx, pos, ask32)?;
            for (n, st) in descs {
                let kind = if st & (STATE_HOLE | STATE_ZERO) == STATE_HOLE | STATE_ZERO {
                    ExtentKind::Hole
                } else if st & STATE_ZERO != 0 {
                    ExtentKind::Zero
                } else {
                    // Data, or a hole that does not read as zeroes: its bytes must be read.
                    ExtentKind::Data
                };
                let lo = pos.max(offset);
                let hi = (pos + n).min(end);
                if hi > lo {
                    push_extent(&mut out, lo, hi - lo, kind);
                }
                pos += n;
            }
        }
        let covered = pos.min(end).max(offset);
        if covered < end {
            push_extent(&mut out, covered, end - covered, ExtentKind::Data);
        }
        Ok(out)
    }
}

impl BlockWrite for NbdClient {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_range(self.info.size, offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        self.write_locked(&mut conn, offset, buf)
    }

    fn flush(&self) -> Result<()> {
        self.check_writable()?;
        if !self.info.can_flush() {
            // The server has no write cache it lets us flush: completed writes are its best.
            return Ok(());
        }
        let mut conn = self.lock();
        let cookie = conn.send(CMD_FLUSH, 0, 0, 0, &[])?;
        conn.ack(cookie, 0)
    }

    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        self.check_writable()?;
        check_range(self.info.size, offset, len)?;
        let end = offset + len;
        let mut conn = self.lock();
        if !self.info.can_write_zeroes() {
            return self.write_zero_buffers(&mut conn, offset, end);
        }
        let flags = match mode {
            ZeroMode::KeepAllocated => CMD_FLAG_NO_HOLE,
            ZeroMode::MayUnmap => 0,
        };
        let edges = self.interior_commands(&mut conn, CMD_WRITE_ZEROES, flags, offset, end)?;
        for (lo, hi) in edges {
            self.write_zero_buffers(&mut conn, lo, hi)?;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        check_range(self.info.size, offset, len)?;
        if !self.info.can_trim() || len == 0 {
            return Ok(());
        }
        let mut conn = self.lock();
        // Discard is advisory: unaligned edges are simply left alone.
        self.interior_commands(&mut conn, CMD_TRIM, 0, offset, offset + len)
            .map(|_| ())
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        if conn.broken.is_none() {
            // A polite disconnect; the server sends no reply. Errors no longer matter.
            let _ = conn.send(CMD_DISC, 0, 0, 0, &[]);
        }
    }
}

#[cfg(test)]
mod tests;
