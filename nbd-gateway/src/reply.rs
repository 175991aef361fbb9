//! Request execution and reply encoding for the transmission phase (spec: "Transmission").
//!
//! Everything here is sync: [`execute`] runs on the blocking pool and returns the complete bytes
//! of one reply, which the connection then writes in one piece so replies never interleave.

use std::sync::Arc;

use crate::backend::{Run, ZeroOutcome, ZeroRequest};
use crate::export::Export;
use crate::proto::*;

/// Which reply headers the connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyMode {
    /// Neither structured replies nor extended headers: simple replies only.
    Simple,
    /// `NBD_OPT_STRUCTURED_REPLY`: 20-byte chunk headers.
    Structured,
    /// `NBD_OPT_EXTENDED_HEADERS`: 32-byte request and reply headers, 64-bit lengths.
    Extended,
}

/// What a connection negotiated for transmission.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) export: Arc<Export>,
    pub(crate) read_only: bool,
    pub(crate) mode: ReplyMode,
    /// `base:allocation` was selected for this export.
    pub(crate) base_allocation: bool,
}

/// One parsed request header (spec: "Request message").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) flags: u16,
    pub(crate) typ: u16,
    pub(crate) cookie: u64,
    pub(crate) offset: u64,
    /// Effect length, or payload length for `NBD_CMD_WRITE`.
    pub(crate) length: u64,
}

impl Request {
    /// Parses a compact (28-byte) or extended (32-byte) header. `None` if the magic is wrong,
    /// which the caller treats as a hard disconnect.
    pub(crate) fn parse(hdr: &[u8], extended: bool) -> Option<Self> {
        let magic = be_u32(hdr, 0)?;
        let expected = if extended {
            EXTENDED_REQUEST_MAGIC
        } else {
            REQUEST_MAGIC
        };
        if magic != expected {
            return None;
        }
        let length = if extended {
            be_u64(hdr, 24)?
        } else {
            u64::from(be_u32(hdr, 24)?)
        };
        Some(Self {
            flags: be_u16(hdr, 4)?,
            typ: be_u16(hdr, 6)?,
            cookie: be_u64(hdr, 8)?,
            offset: be_u64(hdr, 16)?,
            length,
        })
    }

    /// How many payload bytes follow the header on the wire.
    pub(crate) fn payload_len(&self, extended: bool) -> u64 {
        // qemu (8.2 to 10) sends extended WRITE requests without NBD_CMD_FLAG_PAYLOAD_LEN, so
        // WRITE always carries `length` payload bytes, with or without the flag.
        if self.typ == CMD_WRITE || (extended && self.flags & CMD_FLAG_PAYLOAD_LEN != 0) {
            self.length
        } else {
            0
        }
    }
}

pub(crate) fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
pub(crate) fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
pub(crate) fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The result of one request: the reply bytes plus what the metrics need.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) bytes: Vec<u8>,
    pub(crate) error: Option<NbdError>,
    pub(crate) read: u64,
    pub(crate) written: u64,
}

impl Outcome {
    fn ok(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            error: None,
            read: 0,
            written: 0,
        }
    }
}

/// Where reply bytes are appended: a fresh `Vec` or a reused [`ReplyBuf`].
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Appends `n` bytes for the caller to fill and returns them (their old contents are
    /// unspecified: a reused buffer is not zeroed again).
    fn grow(&mut self, n: usize) -> &mut [u8];
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.len();
        self.resize(start + n, 0);
        self.get_mut(start..).unwrap_or_default()
    }
}

/// A reply buffer reused from request to request by one worker: its storage only grows, so
/// reads are not preceded by zeroing the bytes they are about to overwrite.
#[derive(Debug, Default)]
pub(crate) struct ReplyBuf {
    buf: Vec<u8>,
    len: usize,
}

/// Reads shorter than this are sent as one data chunk, holes or not.
const MIN_SPARSE_READ: u64 = 64 * 1024;

/// A [`ReplyBuf`] larger than this after a request is released instead of kept.
const REPLY_BUF_KEEP: usize = 512 * 1024;

impl ReplyBuf {
    /// Empties the buffer, keeping its storage unless it grew past [`REPLY_BUF_KEEP`].
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        if self.buf.len() > REPLY_BUF_KEEP {
            self.buf = Vec::new();
        }
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Drops everything after the first `len` bytes.
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The replies so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.len);
        self.buf
    }
}

impl Sink for ReplyBuf {
    fn put(&mut self, bytes: &[u8]) {
        self.grow(bytes.len()).copy_from_slice(bytes);
    }

    fn grow(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        let end = start + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.len = end;
        self.buf.get_mut(start..end).unwrap_or_default()
    }
}

fn simple_header(buf: &mut impl Sink, cookie: u64, error: u32) {
    let mut h = [0u8; SIMPLE_REPLY_LEN];
    h[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&error.to_be_bytes());
    h[8..].copy_from_slice(&cookie.to_be_bytes());
    buf.put(&h);
}

/// Appends a structured or extended chunk header (spec: "Structured reply chunk message";
/// extension-ext-header: "Extended reply chunk message").
fn chunk_header(
    buf: &mut impl Sink,
    mode: ReplyMode,
    flags: u16,
    typ: u16,
    req: &Request,
    len: u64,
) {
    let mut h = [0u8; EXTENDED_REPLY_LEN];
    if mode == ReplyMode::Extended {
        h[..4].copy_from_slice(&EXTENDED_REPLY_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&typ.to_be_bytes());
        h[8..16].copy_from_slice(&req.cookie.to_be_bytes());
        h[16..24].copy_from_slice(&req.offset.to_be_bytes());
        h[24..32].copy_from_slice(&len.to_be_bytes());
        buf.put(&h);
    } else {
        h[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&typ.to_be_bytes());
        h[8..16].copy_from_slice(&req.cookie.to_be_bytes());
        // Chunk payloads are bounded by MAX_PAYLOAD plus a small overhead, far below u32::MAX.
        h[16..20].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        buf.put(h.get(..STRUCTURED_REPLY_LEN).unwrap_or_default());
    }
}

/// A successful reply without payload.
pub(crate) fn ok_reply(mode: ReplyMode, req: &Request) -> Vec<u8> {
    let mut buf = Vec::with_capacity(EXTENDED_REPLY_LEN);
    // With structured replies a simple reply is allowed for everything but READ; with extended
    // headers simple replies are forbidden.
    if mode == ReplyMode::Extended || (mode == ReplyMode::Structured && req.typ == CMD_READ) {
        chunk_header(&mut buf, mode, REPLY_FLAG_DONE, REPLY_TYPE_NONE, req, 0);
    } else {
        simple_header(&mut buf, req.cookie, 0);
    }
    buf
}

/// An error reply (an error chunk when structured replies are on, so a message can go along).
pub(crate) fn error_reply(mode: ReplyMode, req: &Request, err: NbdError, msg: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    if mode == ReplyMode::Simple {
        simple_header(&mut buf, req.cookie, err.code());
        return buf;
    }
    let msg = truncate_utf8(msg, MAX_STRING);
    // OK: msg is at most MAX_STRING (4096) bytes.
    let msg_len = u16::try_from(msg.len()).unwrap_or(0);
    let msg = if msg_len == 0 { "" } else { msg };
    chunk_header(
        &mut buf,
        mode,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        req,
        6 + u64::from(msg_len),
    );
    buf.extend_from_slice(&err.code().to_be_bytes());
    buf.extend_from_slice(&msg_len.to_be_bytes());
    buf.extend_from_slice(msg.as_bytes());
    buf
}

pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

fn fail(sess: &Session, req: &Request, err: NbdError, msg: &str) -> Outcome {
    tracing::debug!(
        cookie = req.cookie,
        cmd = req.typ,
        ?err,
        msg,
        "request failed"
    );
    Outcome {
        bytes: error_reply(sess.mode, req, err, msg),
        error: Some(err),
        read: 0,
        written: 0,
    }
}

fn io_fail(sess: &Session, req: &Request, e: &std::io::Error) -> Outcome {
    fail(sess, req, NbdError::from_io(e), &e.to_string())
}

fn in_range(size: u64, offset: u64, len: u64) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

/// Checks the command flags (spec: "Command flags": unknown or inapplicable flags are EINVAL).
fn check_flags(sess: &Session, req: &Request) -> Result<(), &'static str> {
    let mut allowed = CMD_FLAG_FUA;
    match req.typ {
        CMD_READ if sess.mode != ReplyMode::Simple => allowed |= CMD_FLAG_DF,
        CMD_WRITE_ZEROES => allowed |= CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
        CMD_BLOCK_STATUS => allowed |= CMD_FLAG_REQ_ONE,
        _ => {}
    }
    if sess.mode == ReplyMode::Extended && req.typ == CMD_WRITE {
        allowed |= CMD_FLAG_PAYLOAD_LEN;
    }
    if req.flags & !allowed != 0 {
        return Err("command flags not valid for this command");
    }
    Ok(())
}

/// What the metrics need to know about one executed request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) error: Option<NbdError>,
    pub(crate) read: u64,
    pub(crate) written: u64,
}

/// [`execute`], appending the reply to a reused buffer: reads are encoded straight into `out`
/// (no zeroing, no copy), other commands' short replies are copied there.
pub(crate) fn execute_into(
    sess: &Session,
    req: &Request,
    payload: &[u8],
    out: &mut ReplyBuf,
) -> Meta {
    if req.typ == CMD_READ && check_flags(sess, req).is_ok() {
        let size = sess.export.backend().size();
        return read_into(sess, req, size, out);
    }
    let o = execute(sess, req, payload);
    out.put(&o.bytes);
    Meta {
        error: o.error,
        read: o.read,
        written: o.written,
    }
}

/// Executes one request against the export and encodes its reply. `payload` is the request's
/// payload, already read from the wire (and bounded by [`MAX_PAYLOAD`]).
pub(crate) fn execute(sess: &Session, req: &Request, payload: &[u8]) -> Outcome {
    if !matches!(
        req.typ,
        CMD_READ
            | CMD_WRITE
            | CMD_FLUSH
            | CMD_TRIM
            | CMD_CACHE
            | CMD_WRITE_ZEROES
            | CMD_BLOCK_STATUS
    ) {
        return fail(sess, req, NbdError::Inval, "unknown command");
    }
    if let Err(msg) = check_flags(sess, req) {
        return fail(sess, req, NbdError::Inval, msg);
    }
    if req.typ != CMD_WRITE && !payload.is_empty() {
        return fail(sess, req, NbdError::Inval, "unexpected payload");
    }
    let backend = sess.export.backend();
    let size = backend.size();
    let fua = req.flags & CMD_FLAG_FUA != 0;
    let written_ok = |written: u64| -> Outcome {
        if fua && let Err(e) = backend.flush() {
            return io_fail(sess, req, &e);
        }
        Outcome {
            bytes: ok_reply(sess.mode, req),
            error: None,
            read: 0,
            written,
        }
    };
    match req.typ {
        CMD_READ => {
            let mut out = ReplyBuf::default();
            let meta = read_into(sess, req, size, &mut out);
            Outcome {
                bytes: out.into_vec(),
                error: meta.error,
                read: meta.read,
                written: meta.written,
            }
        }
        CMD_WRITE => {
            if sess.read_only {
                return fail(sess, req, NbdError::Perm, "export is read-only");
            }
            if !in_range(size, req.offset, payload.len() as u64) {
                return fail(
                    sess,
                    req,
                    NbdError::NoSpc,
                    "write past the end of the export",
                );
            }
            match backend.write_at(payload, req.offset) {
                Ok(()) => written_ok(payload.len() as u64),
                Err(e) => io_fail(sess, req, &e),
            }
        }
        CMD_FLUSH => {
            if req.offset != 0 || req.length != 0 {
                return fail(
                    sess,
                    req,
                    NbdError::Inval,
                    "flush offset and length must be zero",
                );
            }
            match backend.flush() {
                Ok(()) => Outcome::ok(ok_reply(sess.mode, req)),
                Err(e) => io_fail(sess, req, &e),
            }
        }
        CMD_TRIM => {
            if sess.read_only {
                return fail(sess, req, NbdError::Perm, "export is read-only");
            }
            if !in_range(size, req.offset, req.length) {
                return fail(
                    sess,
                    req,
                    NbdError::Inval,
                    "trim past the end of the export",
                );
            }
            match backend.trim(req.offset, req.length) {
                Ok(()) => written_ok(0),
                Err(e) => io_fail(sess, req, &e),
            }
        }
        CMD_WRITE_ZEROES => {
            if sess.read_only {
                return fail(sess, req, NbdError::Perm, "export is read-only");
            }
            if !in_range(size, req.offset, req.length) {
                return fail(
                    sess,
                    req,
                    NbdError::NoSpc,
                    "write zeroes past the end of the export",
                );
            }
            let zr = ZeroRequest {
                may_unmap: req.flags & CMD_FLAG_NO_HOLE == 0,
                fast_only: req.flags & CMD_FLAG_FAST_ZERO != 0,
            };
            match backend.write_zeroes(req.offset, req.length, zr) {
                Ok(ZeroOutcome::NotFast) => fail(
                    sess,
                    req,
                    NbdError::NotSup,
                    "no fast zeroing on this storage",
                ),
                Ok(_) => written_ok(0),
                Err(e) => io_fail(sess, req, &e),
            }
        }
        CMD_CACHE => {
            if !in_range(size, req.offset, req.length) {
                return fail(
                    sess,
                    req,
                    NbdError::Inval,
                    "cache past the end of the export",
                );
            }
            // CACHE is a hint: a failed readahead changes nothing (spec: "NBD_CMD_CACHE").
            if let Err(e) = backend.cache(req.offset, req.length) {
                tracing::debug!(error = %e, "readahead hint failed");
            }
            Outcome::ok(ok_reply(sess.mode, req))
        }
        _ => block_status(sess, req, size),
    }
}

/// Replaces what `out` holds after `mark` by `o`'s reply.
fn into_buf(o: Outcome, out: &mut ReplyBuf, mark: usize) -> Meta {
    out.truncate(mark);
    out.put(&o.bytes);
    Meta {
        error: o.error,
        read: o.read,
        written: o.written,
    }
}

fn read_into(sess: &Session, req: &Request, size: u64, out: &mut ReplyBuf) -> Meta {
    let mark = out.len();
    if req.length > u64::from(MAX_PAYLOAD) {
        let o = fail(
            sess,
            req,
            NbdError::Overflow,
            "read longer than the 32 MiB maximum payload",
        );
        return into_buf(o, out, mark);
    }
    if !in_range(size, req.offset, req.length) {
        let o = fail(
            sess,
            req,
            NbdError::Inval,
            "read past the end of the export",
        );
        return into_buf(o, out, mark);
    }
    // OK: length <= MAX_PAYLOAD (2^25) fits in usize.
    let n = usize::try_from(req.length).unwrap_or(0);
    let backend = sess.export.backend();
    let done = Meta {
        error: None,
        read: req.length,
        written: 0,
    };
    if sess.mode == ReplyMode::Simple {
        simple_header(out, req.cookie, 0);
        if let Err(e) = backend.read_at(out.grow(n), req.offset) {
            return into_buf(io_fail(sess, req, &e), out, mark);
        }
        return done;
    }
    if n == 0 {
        out.put(&ok_reply(sess.mode, req));
        return Meta { read: 0, ..done };
    }
    // Short reads skip the hole search: two lseek calls cost more than sending the zeroes.
    let runs = if req.flags & CMD_FLAG_DF != 0 || req.length < MIN_SPARSE_READ {
        Vec::new()
    } else {
        backend
            .runs(req.offset, req.length, MAX_READ_CHUNKS)
            .unwrap_or_default()
    };
    let chunks = read_chunks(&runs, req.offset, req.length);
    let last = chunks.len().saturating_sub(1);
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        if c.hole {
            chunk_header(out, sess.mode, flags, REPLY_TYPE_OFFSET_HOLE, req, 12);
            out.put(&c.offset.to_be_bytes());
            // OK: a hole inside one read is at most MAX_PAYLOAD bytes.
            out.put(&u32::try_from(c.len).unwrap_or(0).to_be_bytes());
        } else {
            chunk_header(
                out,
                sess.mode,
                flags,
                REPLY_TYPE_OFFSET_DATA,
                req,
                8 + c.len,
            );
            out.put(&c.offset.to_be_bytes());
            let data = out.grow(usize::try_from(c.len).unwrap_or(0));
            if let Err(e) = backend.read_at(data, c.offset) {
                return into_buf(io_fail(sess, req, &e), out, mark);
            }
        }
    }
    done
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) hole: bool,
}

/// Turns an allocation map into read chunks covering exactly `offset..offset+len`: short holes
/// become data, neighbours of one kind merge, and whatever the map did not cover is data.
pub(crate) fn read_chunks(runs: &[Run], offset: u64, len: u64) -> Vec<Chunk> {
    let end = offset.saturating_add(len);
    let mut out: Vec<Chunk> = Vec::new();
    let mut pos = offset;
    for r in runs {
        if pos >= end {
            break;
        }
        let l = r.len.min(end - pos);
        if l == 0 {
            break;
        }
        let hole = r.hole && l >= MIN_HOLE_CHUNK;
        push_chunk(&mut out, pos, l, hole);
        pos += l;
    }
    if pos < end {
        push_chunk(&mut out, pos, end - pos, false);
    }
    out
}

fn push_chunk(out: &mut Vec<Chunk>, offset: u64, len: u64, hole: bool) {
    if let Some(last) = out.last_mut()
        && last.hole == hole
    {
        last.len += len;
        return;
    }
    out.push(Chunk { offset, len, hole });
}

fn block_status(sess: &Session, req: &Request, size: u64) -> Outcome {
    if !sess.base_allocation {
        return fail(
            sess,
            req,
            NbdError::Inval,
            "no metadata context was negotiated",
        );
    }
    if req.length == 0 || !in_range(size, req.offset, req.length) {
        return fail(
            sess,
            req,
            NbdError::Inval,
            "block status range empty or past the end",
        );
    }
    let max = if req.flags & CMD_FLAG_REQ_ONE != 0 {
        1
    } else {
        MAX_EXTENTS_PER_REPLY
    };
    let runs = match sess.export.backend().runs(req.offset, req.length, max) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => vec![Run {
            len: req.length,
            hole: false,
        }],
        Err(e) => return io_fail(sess, req, &e),
    };
    let status = |r: &Run| if r.hole { STATE_HOLE | STATE_ZERO } else { 0 };
    let mut buf = Vec::new();
    let count = runs.len();
    if sess.mode == ReplyMode::Extended {
        let plen = 8 + 16 * count as u64;
        chunk_header(
            &mut buf,
            sess.mode,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS_EXT,
            req,
            plen,
        );
        buf.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        // OK: count <= MAX_EXTENTS_PER_REPLY (2^18).
        buf.extend_from_slice(&u32::try_from(count).unwrap_or(0).to_be_bytes());
        for r in &runs {
            buf.extend_from_slice(&r.len.to_be_bytes());
            buf.extend_from_slice(&u64::from(status(r)).to_be_bytes());
        }
    } else {
        let plen = 4 + 8 * count as u64;
        chunk_header(
            &mut buf,
            sess.mode,
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            req,
            plen,
        );
        buf.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        for r in &runs {
            // OK: compact requests have 32-bit lengths and runs never exceed the request.
            buf.extend_from_slice(&u32::try_from(r.len).unwrap_or(u32::MAX).to_be_bytes());
            buf.extend_from_slice(&status(r).to_be_bytes());
        }
    }
    Outcome::ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;

    fn session(mode: ReplyMode, read_only: bool, base_allocation: bool) -> Session {
        let backend = Arc::new(MemBackend::new(1 << 16));
        Session {
            export: Arc::new(Export::new("t", backend)),
            read_only,
            mode,
            base_allocation,
        }
    }

    fn req(flags: u16, typ: u16, offset: u64, length: u64) -> Request {
        Request {
            flags,
            typ,
            cookie: 0xC0FFEE,
            offset,
            length,
        }
    }

    fn hdr(magic: u32, flags: u16, typ: u16, len: u64, extended: bool) -> Vec<u8> {
        let mut b = magic.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&typ.to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&4096u64.to_be_bytes());
        if extended {
            b.extend_from_slice(&len.to_be_bytes());
        } else {
            b.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        }
        b
    }

    #[test]
    fn request_parse_fields_and_magic() {
        let r = Request::parse(&hdr(REQUEST_MAGIC, 1, CMD_WRITE, 512, false), false).unwrap();
        assert_eq!(
            (r.flags, r.typ, r.cookie, r.offset, r.length),
            (1, CMD_WRITE, 7, 4096, 512)
        );
        assert_eq!(r.payload_len(false), 512);
        let r = Request::parse(
            &hdr(EXTENDED_REQUEST_MAGIC, 0, CMD_TRIM, 1 << 40, true),
            true,
        )
        .unwrap();
        assert_eq!((r.length, r.payload_len(true)), (1 << 40, 0));
        let r = Request::parse(
            &hdr(
                EXTENDED_REQUEST_MAGIC,
                CMD_FLAG_PAYLOAD_LEN,
                CMD_BLOCK_STATUS,
                16,
                true,
            ),
            true,
        )
        .unwrap();
        assert_eq!(r.payload_len(true), 16);
        // Compact magic on an extended connection, and the reverse, are refused.
        assert!(Request::parse(&hdr(REQUEST_MAGIC, 0, 0, 0, true), true).is_none());
        assert!(Request::parse(&hdr(EXTENDED_REQUEST_MAGIC, 0, 0, 0, false), false).is_none());
        assert!(Request::parse(&[0u8; 3], false).is_none());
    }

    fn error_code(bytes: &[u8], mode: ReplyMode) -> u32 {
        match mode {
            ReplyMode::Simple => be_u32(bytes, 4).unwrap(),
            ReplyMode::Structured => be_u32(bytes, 20).unwrap(),
            ReplyMode::Extended => be_u32(bytes, 32).unwrap(),
        }
    }

    #[test]
    fn each_error_branch() {
        let cases: &[(bool, bool, Request, NbdError)] = &[
            (false, false, req(0, 42, 0, 0), NbdError::Inval),
            (false, false, req(1 << 9, CMD_READ, 0, 1), NbdError::Inval),
            (
                false,
                false,
                req(CMD_FLAG_NO_HOLE, CMD_READ, 0, 1),
                NbdError::Inval,
            ),
            (
                false,
                false,
                req(CMD_FLAG_REQ_ONE, CMD_WRITE, 0, 0),
                NbdError::Inval,
            ),
            (
                false,
                false,
                req(0, CMD_READ, 0, u64::from(MAX_PAYLOAD) + 1),
                NbdError::Overflow,
            ),
            (false, false, req(0, CMD_READ, 1 << 16, 1), NbdError::Inval),
            (false, false, req(0, CMD_READ, u64::MAX, 2), NbdError::Inval),
            (true, false, req(0, CMD_WRITE, 0, 1), NbdError::Perm),
            (
                false,
                false,
                req(0, CMD_WRITE, (1 << 16) - 1, 2),
                NbdError::NoSpc,
            ),
            (true, false, req(0, CMD_TRIM, 0, 1), NbdError::Perm),
            (false, false, req(0, CMD_TRIM, 1 << 16, 1), NbdError::Inval),
            (true, false, req(0, CMD_WRITE_ZEROES, 0, 1), NbdError::Perm),
            (
                false,
                false,
                req(0, CMD_WRITE_ZEROES, 1, 1 << 16),
                NbdError::NoSpc,
            ),
            (false, false, req(0, CMD_FLUSH, 1, 0), NbdError::Inval),
            (false, false, req(0, CMD_CACHE, 1 << 16, 1), NbdError::Inval),
            (
                false,
                false,
                req(0, CMD_BLOCK_STATUS, 0, 1),
                NbdError::Inval,
            ),
            (false, true, req(0, CMD_BLOCK_STATUS, 0, 0), NbdError::Inval),
            (
                false,
                true,
                req(0, CMD_BLOCK_STATUS, 0, (1 << 16) + 1),
                NbdError::Inval,
            ),
        ];
        for mode in [
            ReplyMode::Simple,
            ReplyMode::Structured,
            ReplyMode::Extended,
        ] {
            for (read_only, meta, r, err) in cases {
                let s = session(mode, *read_only, *meta);
                let payload = if r.typ == CMD_WRITE {
                    vec![0u8; usize::try_from(r.length).unwrap()]
                } else {
                    Vec::new()
                };
                let o = execute(&s, r, &payload);
                assert_eq!(o.error, Some(*err), "{mode:?} {r:?}");
                assert_eq!(error_code(&o.bytes, mode), err.code(), "{mode:?} {r:?}");
            }
        }
        // A payload on a command without one.
        let s = session(ReplyMode::Extended, false, false);
        let o = execute(&s, &req(CMD_FLAG_PAYLOAD_LEN, CMD_FLUSH, 0, 0), &[1]);
        assert_eq!(o.error, Some(NbdError::Inval));
        // DF without structured replies.
        let s = session(ReplyMode::Simple, false, false);
        let o = execute(&s, &req(CMD_FLAG_DF, CMD_READ, 0, 1), &[]);
        assert_eq!(o.error, Some(NbdError::Inval));
    }

    #[test]
    fn error_chunk_layout_and_message() {
        let r = req(0, CMD_READ, 0, 1);
        let b = error_reply(ReplyMode::Structured, &r, NbdError::Inval, "bad");
        assert_eq!(be_u32(&b, 0), Some(STRUCTURED_REPLY_MAGIC));
        assert_eq!(be_u16(&b, 4), Some(REPLY_FLAG_DONE));
        assert_eq!(be_u16(&b, 6), Some(REPLY_TYPE_ERROR));
        assert_eq!(be_u64(&b, 8), Some(0xC0FFEE));
        assert_eq!(be_u32(&b, 16), Some(9));
        assert_eq!(be_u32(&b, 20), Some(22));
        assert_eq!(be_u16(&b, 24), Some(3));
        assert_eq!(&b[26..], b"bad");
        let long = "é".repeat(3000);
        let b = error_reply(ReplyMode::Extended, &r, NbdError::Io, &long);
        assert_eq!(be_u64(&b, 24), Some(6 + 4096));
        assert_eq!(b.len(), 32 + 6 + 4096);
    }

    #[test]
    fn successful_replies_per_mode() {
        let s = session(ReplyMode::Simple, false, false);
        let o = execute(&s, &req(CMD_FLAG_FUA, CMD_WRITE, 10, 3), b"abc");
        assert_eq!((o.error, o.written, o.bytes.len()), (None, 3, 16));
        let o = execute(&s, &req(0, CMD_READ, 9, 5), &[]);
        assert_eq!(&o.bytes[16..], b"\0abc\0");
        assert_eq!(o.read, 5);
        let s = session(ReplyMode::Structured, false, true);
        let o = execute(&s, &req(0, CMD_READ, 10, 3), &[]);
        assert_eq!(be_u16(&o.bytes, 6), Some(REPLY_TYPE_OFFSET_DATA));
        assert_eq!(be_u64(&o.bytes, 20), Some(10));
        let o = execute(&s, &req(0, CMD_READ, 10, 0), &[]);
        assert_eq!(o.bytes.len(), 20);
        assert_eq!(be_u16(&o.bytes, 6), Some(REPLY_TYPE_NONE));
        let o = execute(&s, &req(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 0, 100), &[]);
        assert_eq!(be_u16(&o.bytes, 6), Some(REPLY_TYPE_BLOCK_STATUS));
        assert_eq!(be_u32(&o.bytes, 16), Some(12));
        assert_eq!(be_u32(&o.bytes, 20), Some(BASE_ALLOCATION_ID));
        assert_eq!(be_u32(&o.bytes, 24), Some(100));
        assert_eq!(be_u32(&o.bytes, 28), Some(0));
        let s = session(ReplyMode::Extended, false, false);
        let o = execute(&s, &req(0, CMD_FLUSH, 0, 0), &[]);
        assert_eq!(be_u32(&o.bytes, 0), Some(EXTENDED_REPLY_MAGIC));
        assert_eq!(be_u16(&o.bytes, 6), Some(REPLY_TYPE_NONE));
    }

    #[test]
    fn read_chunks_merge_and_cover() {
        let runs = [
            Run {
                len: 100,
                hole: false,
            },
            Run {
                len: 1000,
                hole: true,
            },
            Run {
                len: 8192,
                hole: true,
            },
            Run {
                len: 5,
                hole: false,
            },
        ];
        assert_eq!(
            read_chunks(&runs, 0, 20000),
            vec![
                // The 1000-byte hole is under MIN_HOLE_CHUNK: sent as data.
                Chunk {
                    offset: 0,
                    len: 1100,
                    hole: false
                },
                Chunk {
                    offset: 1100,
                    len: 8192,
                    hole: true
                },
                // What the map did not cover is data.
                Chunk {
                    offset: 9292,
                    len: 10708,
                    hole: false
                },
            ]
        );
        // A short hole becomes data and merges with its neighbours.
        let runs = [
            Run {
                len: 10,
                hole: false,
            },
            Run {
                len: 100,
                hole: true,
            },
            Run {
                len: 10,
                hole: false,
            },
        ];
        assert_eq!(
            read_chunks(&runs, 50, 120),
            vec![Chunk {
                offset: 50,
                len: 120,
                hole: false
            }]
        );
        // Runs longer than the request are clipped.
        assert_eq!(
            read_chunks(
                &[Run {
                    len: 1 << 30,
                    hole: true
                }],
                7,
                8192
            ),
            vec![Chunk {
                offset: 7,
                len: 8192,
                hole: true
            }]
        );
        assert_eq!(read_chunks(&[], 0, 0), vec![]);
    }

    #[test]
    fn io_errors_map_to_nbd_errors() {
        let e = |n: i32| NbdError::from_io(&std::io::Error::from_raw_os_error(n));
        assert_eq!(e(28), NbdError::NoSpc);
        assert_eq!(e(122), NbdError::NoSpc);
        assert_eq!(e(27), NbdError::NoSpc);
        assert_eq!(e(30), NbdError::Perm);
        assert_eq!(e(12), NbdError::NoMem);
        assert_eq!(e(5), NbdError::Io);
        assert_eq!(NbdError::from_io(&std::io::Error::other("x")), NbdError::Io);
    }
}
