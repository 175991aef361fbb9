//! Transmission over a plain (non-TLS) TCP or unix socket by a small pool of worker threads per
//! connection, with no hand-off between threads on the path of a request.
//!
//! Each worker loops: take the connection's read lock, read one request (header and payload)
//! from the socket, release the lock, execute the request against the backend into its own
//! reused reply buffer, and write the whole reply under the write lock. A request is thus read,
//! executed and answered by one thread (no wake-ups of other threads, no copies between
//! buffers), while up to `max_in_flight` requests run at once: a worker that takes a request
//! when no other worker is waiting for the next one starts another worker, up to the limit.
//!
//! The socket is in blocking mode with `SO_RCVTIMEO`/`SO_SNDTIMEO`: a receive timeout while a
//! request is half-read counts against `request_timeout` (an idle connection may wait forever),
//! and a send timeout is `reply_timeout`. The async side (see `server.rs`) only waits for the
//! workers, turns a server shutdown into `NBD_ESHUTDOWN` replies and, after the grace period,
//! shuts the socket's read side so the workers stop.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::Shutdown;
use rustix::net::sockopt::{Timeout, set_socket_timeout};

use crate::metrics::ExportMetrics;
use crate::proto::*;
use crate::reply::{self, ReplyBuf, ReplyMode, Request, Session, Sink};

/// Bytes read from the socket at once when looking for a header: enough for many small
/// requests per `read`, small enough that most of a large write's payload is then read straight
/// into its payload buffer rather than copied through this one.
const READ_BUF: usize = 64 * 1024;
/// Payload buffers larger than this are released after their request instead of kept.
const PAYLOAD_KEEP: usize = 512 * 1024;
/// Stack of a worker thread: request handling keeps its buffers on the heap.
const WORKER_STACK: usize = 1 << 20;
/// Most requests a worker takes at once when they are already buffered; their replies go out
/// in one `write` (at high queue depths this saves lock hand-offs, wake-ups and syscalls).
const MAX_BATCH: usize = 16;
/// A batch stops growing once its replies may exceed this many bytes, and only requests with
/// payloads up to [`BATCH_PAYLOAD`] join one, so large transfers stay parallel.
const BATCH_REPLY_BYTES: u64 = 256 * 1024;
/// Largest payload of a request that joins a batch.
const BATCH_PAYLOAD: u64 = 64 * 1024;

/// The limits a connection runs under (from `ServerConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_in_flight: u32,
    pub(crate) buffer_budget: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) reply_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a worker panicked; the state it guards stays consistent
    // (counters and a byte buffer), and the connection is being torn down anyway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn violation(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// A counting semaphore over bytes of buffers (payloads and replies) held at once.
#[derive(Debug)]
struct Budget {
    free: Mutex<u32>,
    freed: Condvar,
}

impl Budget {
    fn acquire(&self, n: u32, conn: &Conn) -> bool {
        let mut free = lock(&self.free);
        while *free < n {
            if conn.closing.load(Ordering::Acquire) {
                return false;
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *free -= n;
        true
    }

    fn try_acquire(&self, n: u32) -> bool {
        let mut free = lock(&self.free);
        if *free < n {
            return false;
        }
        *free -= n;
        true
    }

    fn release(&self, n: u32) {
        *lock(&self.free) += n;
        self.freed.notify_all();
    }
}

/// The read side: a buffer of bytes received but not yet parsed.
#[derive(Debug)]
struct ReadSide {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// How many workers exist and how many are waiting for a request (not executing one).
#[derive(Debug, Default)]
struct Workers {
    total: u32,
    idle: u32,
}

/// One connection in direct mode.
pub(crate) struct Conn {
    fd: OwnedFd,
    session: Arc<Session>,
    extended: bool,
    limits: Limits,
    metrics: Arc<ExportMetrics>,
    read: Mutex<ReadSide>,
    write: Mutex<()>,
    budget: Budget,
    workers: Mutex<Workers>,
    /// Shutdown started: new requests are answered with `NBD_ESHUTDOWN`.
    pub(crate) stopping: AtomicBool,
    /// No more requests are read (disconnect, end of stream, error).
    closing: AtomicBool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("export", &self.session.export.name())
            .finish_non_exhaustive()
    }
}

/// A request taken off the wire, with its share of the budget.
struct Taken {
    req: Request,
    /// Where its payload is in the worker's payload buffer.
    payload: std::ops::Range<usize>,
    /// Bytes its reply may take (for batching).
    reply_bytes: u64,
    cost: u32,
}

enum Next {
    Request(Taken),
    /// `NBD_CMD_DISC`, end of stream, or the connection is closing.
    End,
}

impl Conn {
    /// Prepares `fd` (blocking mode, timeouts) for direct transmission.
    ///
    /// # Errors
    /// If the socket options cannot be set.
    pub(crate) fn new(
        fd: OwnedFd,
        session: Arc<Session>,
        limits: Limits,
        metrics: Arc<ExportMetrics>,
    ) -> io::Result<Arc<Self>> {
        rustix::io::ioctl_fionbio(&fd, false)?;
        // Zero would mean "no timeout": keep at least a millisecond.
        let rcv = limits.request_timeout.max(Duration::from_millis(1));
        let snd = limits.reply_timeout.max(Duration::from_millis(1));
        set_socket_timeout(&fd, Timeout::Recv, Some(rcv))?;
        set_socket_timeout(&fd, Timeout::Send, Some(snd))?;
        let extended = session.mode == ReplyMode::Extended;
        Ok(Arc::new(Self {
            fd,
            session,
            extended,
            limits,
            metrics,
            read: Mutex::new(ReadSide {
                buf: vec![0; READ_BUF],
                start: 0,
                end: 0,
            }),
            write: Mutex::new(()),
            budget: Budget {
                free: Mutex::new(limits.buffer_budget),
                freed: Condvar::new(),
            },
            workers: Mutex::new(Workers::default()),
            stopping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }))
    }

    /// The export's session.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Stops reading requests: workers finish what they execute and exit.
    pub(crate) fn close_reads(&self) {
        self.closing.store(true, Ordering::Release);
        // Wakes a worker blocked in read(2); in-flight replies can still be written.
        let _ = rustix::net::shutdown(&self.fd, Shutdown::Read);
        self.budget.freed.notify_all();
    }

    /// Ends the connection after an error: nothing more is read or written.
    fn fail(&self, e: &io::Error) {
        tracing::debug!(error = %e, "connection ended");
        self.closing.store(true, Ordering::Release);
        let _ = rustix::net::shutdown(&self.fd, Shutdown::Both);
        self.budget.freed.notify_all();
    }

    /// Starts a worker thread. `alive` is dropped when the worker exits.
    ///
    /// # Errors
    /// If the thread cannot be created.
    pub(crate) fn spawn_worker<A: Send + Clone + 'static>(
        self: &Arc<Self>,
        alive: A,
    ) -> io::Result<()> {
        {
            let mut w = lock(&self.workers);
            w.total += 1;
            w.idle += 1;
        }
        let conn = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".into())
            .stack_size(WORKER_STACK)
            .spawn(move || conn.worker(&alive));
        if let Err(e) = spawned {
            let mut w = lock(&self.workers);
            w.total -= 1;
            w.idle -= 1;
            return Err(e);
        }
        Ok(())
    }

    fn worker<A: Send + Clone + 'static>(self: &Arc<Self>, alive: &A) {
        let mut payload: Vec<u8> = Vec::new();
        let mut out = ReplyBuf::default();
        let mut batch: Vec<Taken> = Vec::with_capacity(MAX_BATCH);
        loop {
            batch.clear();
            let next = {
                let mut rd = lock(&self.read);
                if self.closing.load(Ordering::Acquire) {
                    break;
                }
                self.take_batch(&mut rd, &mut payload, &mut batch)
            };
            match next {
                Ok(true) => {}
                Ok(false) => {
                    self.close_reads();
                    break;
                }
                Err(e) => {
                    self.fail(&e);
                    break;
                }
            }
            let grow = {
                let mut w = lock(&self.workers);
                w.idle -= 1;
                w.idle == 0 && w.total < self.limits.max_in_flight
            };
            if grow && let Err(e) = self.spawn_worker(alive.clone()) {
                tracing::debug!(error = %e, "cannot start another connection worker");
            }
            let result = self.serve(&batch, &payload, &mut out);
            self.budget
                .release(batch.iter().map(|t| t.cost).fold(0, u32::saturating_add));
            lock(&self.workers).idle += 1;
            if payload.len() > PAYLOAD_KEEP {
                payload = Vec::new();
            }
            if let Err(e) = result {
                self.fail(&e);
                break;
            }
        }
        let mut w = lock(&self.workers);
        w.total -= 1;
        w.idle -= 1;
    }

    /// Takes the next request (waiting for it), then whatever complete small requests are
    /// already buffered behind it. `Ok(false)`: no more requests on this connection.
    fn take_batch(
        &self,
        rd: &mut ReadSide,
        payload: &mut Vec<u8>,
        batch: &mut Vec<Taken>,
    ) -> io::Result<bool> {
        let Next::Request(first) = self.next_request(rd, payload)? else {
            return Ok(false);
        };
        let mut reply_bytes = first.reply_bytes;
        let mut at = first.payload.end;
        batch.push(first);
        while batch.len() < MAX_BATCH && reply_bytes < BATCH_REPLY_BYTES {
            let Some(t) = self.take_buffered(rd, payload, at) else {
                break;
            };
            reply_bytes += t.reply_bytes;
            at = t.payload.end;
            batch.push(t);
        }
        Ok(true)
    }

    /// Executes a batch of requests and writes their replies in one piece.
    fn serve(&self, batch: &[Taken], payload: &[u8], out: &mut ReplyBuf) -> io::Result<()> {
        let start = Instant::now();
        let mut metas = [None; MAX_BATCH];
        out.clear();
        for (t, m) in batch.iter().zip(metas.iter_mut()) {
            let body = payload.get(t.payload.clone()).unwrap_or_default();
            *m = Some(if self.stopping.load(Ordering::Acquire) {
                out.put(&reply::error_reply(
                    self.session.mode,
                    &t.req,
                    NbdError::Shutdown,
                    "server is shutting down",
                ));
                reply::Meta {
                    error: Some(NbdError::Shutdown),
                    read: 0,
                    written: 0,
                }
            } else {
                reply::execute_into(&self.session, &t.req, body, out)
            });
        }
        self.write_reply(out.as_slice())?;
        out.clear();
        let elapsed = start.elapsed();
        for (t, m) in batch.iter().zip(metas.iter()) {
            if let Some(m) = m {
                self.metrics
                    .record(t.req.typ, m.error.is_none(), m.read, m.written, elapsed);
            }
        }
        Ok(())
    }

    fn write_reply(&self, mut bytes: &[u8]) -> io::Result<()> {
        let _w = lock(&self.write);
        while !bytes.is_empty() {
            match rustix::io::write(&self.fd, bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Err(violation("reply not taken in time")),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Buffers at least `need` bytes. `Ok(false)` at a clean end: end of stream with nothing
    /// buffered, or the connection is closing. Once part of a request is buffered, it must be
    /// completed within `request_timeout`; an idle connection may wait forever.
    fn fill(&self, rd: &mut ReadSide, need: usize) -> io::Result<bool> {
        let mut began = (rd.end > rd.start).then(Instant::now);
        while rd.end - rd.start < need {
            if rd.start > 0 {
                rd.buf.copy_within(rd.start..rd.end, 0);
                rd.end -= rd.start;
                rd.start = 0;
            }
            let free = rd.buf.get_mut(rd.end..).unwrap_or_default();
            match rustix::io::read(&self.fd, free) {
                Ok(0) if rd.end == rd.start => return Ok(false),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    rd.end += n;
                    began.get_or_insert_with(Instant::now);
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    if self.closing.load(Ordering::Acquire) {
                        return Ok(false);
                    }
                    if began.is_some_and(|b| b.elapsed() >= self.limits.request_timeout) {
                        return Err(violation("request header not completed in time"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Reads the next request (spec: "Request message") and its payload into `payload`.
    fn next_request(&self, rd: &mut ReadSide, payload: &mut Vec<u8>) -> io::Result<Next> {
        let hdr_len = if self.extended {
            EXTENDED_REQUEST_LEN
        } else {
            REQUEST_LEN
        };
        if !self.fill(rd, hdr_len)? {
            return Ok(Next::End);
        }
        let hdr = rd.buf.get(rd.start..rd.start + hdr_len).unwrap_or_default();
        let Some(req) = Request::parse(hdr, self.extended) else {
            return Err(violation("bad request magic"));
        };
        rd.start += hdr_len;
        let payload_len = req.payload_len(self.extended);
        if payload_len > u64::from(MAX_PAYLOAD) {
            // Spec: "Size constraints": a hard disconnect, and no allocation.
            return Err(violation("request payload above the 32 MiB maximum"));
        }
        if req.typ == CMD_DISC {
            tracing::debug!("client sent disconnect");
            return Ok(Next::End);
        }
        let reply_bytes: u64 = match req.typ {
            CMD_READ => req.length.min(u64::from(MAX_PAYLOAD)),
            CMD_BLOCK_STATUS => 16 * MAX_EXTENTS_PER_REPLY as u64,
            _ => 0,
        };
        // OK: both terms are at most 2^25, the sum fits in u32.
        let cost = u32::try_from(payload_len + reply_bytes + 64 * 1024)
            .unwrap_or(u32::MAX)
            .min(self.limits.buffer_budget);
        if !self.budget.acquire(cost, self) {
            return Ok(Next::End);
        }
        // OK: payload_len <= MAX_PAYLOAD, checked above, before this allocation.
        let n = usize::try_from(payload_len).unwrap_or(0);
        if payload.len() < n {
            payload.resize(n, 0);
        }
        let dst = payload.get_mut(..n).unwrap_or_default();
        // What is already buffered, then straight from the socket into the payload.
        let have = (rd.end - rd.start).min(n);
        if let (Some(d), Some(s)) = (dst.get_mut(..have), rd.buf.get(rd.start..rd.start + have)) {
            d.copy_from_slice(s);
        }
        rd.start += have;
        let mut filled = have;
        while filled < n {
            let rest = dst.get_mut(filled..).unwrap_or_default();
            match rustix::io::read(&self.fd, rest) {
                Ok(0) => {
                    self.budget.release(cost);
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(k) => filled += k,
                Err(Errno::INTR) => {}
                Err(e) => {
                    // AGAIN: no byte of the payload for a whole `request_timeout`.
                    self.budget.release(cost);
                    return Err(if e == Errno::AGAIN {
                        violation("request payload not completed in time")
                    } else {
                        e.into()
                    });
                }
            }
        }
        Ok(Next::Request(Taken {
            req,
            payload: 0..n,
            reply_bytes,
            cost,
        }))
    }

    /// The next request if it is small and already complete in the read buffer (header and
    /// payload), with its payload copied to `payload[at..]`; `None` leaves the buffer as it is
    /// (for [`Conn::next_request`], which also handles disconnects and protocol errors).
    fn take_buffered(&self, rd: &mut ReadSide, payload: &mut Vec<u8>, at: usize) -> Option<Taken> {
        let hdr_len = if self.extended {
            EXTENDED_REQUEST_LEN
        } else {
            REQUEST_LEN
        };
        // Only the bytes received so far: the buffer's tail holds stale data.
        let avail = rd.buf.get(rd.start..rd.end)?;
        let req = Request::parse(avail.get(..hdr_len)?, self.extended)?;
        let payload_len = req.payload_len(self.extended);
        if req.typ == CMD_DISC || payload_len > BATCH_PAYLOAD {
            return None;
        }
        // OK: payload_len <= BATCH_PAYLOAD.
        let n = usize::try_from(payload_len).ok()?;
        let body = avail.get(hdr_len..hdr_len + n)?;
        let reply_bytes = if req.typ == CMD_READ {
            req.length.min(u64::from(MAX_PAYLOAD))
        } else {
            0
        };
        if req.typ == CMD_BLOCK_STATUS || reply_bytes > BATCH_REPLY_BYTES {
            return None;
        }
        // OK: both terms are small (checked above).
        let cost = u32::try_from(payload_len + reply_bytes + 64 * 1024).ok()?;
        if !self.budget.try_acquire(cost) {
            return None;
        }
        if payload.len() < at + n {
            payload.resize(at + n, 0);
        }
        if let Some(dst) = payload.get_mut(at..at + n) {
            dst.copy_from_slice(body);
        }
        rd.start += hdr_len + n;
        Some(Taken {
            req,
            payload: at..at + n,
            reply_bytes,
            cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemBackend;
    use crate::export::Export;

    fn conn() -> (Arc<Conn>, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let session = Session {
            export: Arc::new(Export::new("t", Arc::new(MemBackend::new(1 << 20)))),
            read_only: false,
            mode: ReplyMode::Simple,
            base_allocation: false,
        };
        let limits = Limits {
            max_in_flight: 4,
            buffer_budget: 64 << 20,
            request_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(5),
        };
        let metrics = crate::metrics::Metrics::default().export("t");
        let c = Conn::new(OwnedFd::from(a), Arc::new(session), limits, metrics).unwrap();
        (c, b)
    }

    fn write_request(offset: u64, len: u32) -> Vec<u8> {
        let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&CMD_WRITE.to_be_bytes());
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend(std::iter::repeat_n(0xAB, len as usize));
        b
    }

    // found by the interop tests: a batch looked past the received bytes into stale ones.
    #[test]
    fn batching_only_takes_received_bytes() {
        let (c, _peer) = conn();
        let mut rd = lock(&c.read);
        let req = write_request(0, 512);
        // A complete request sits in the buffer's stale tail; only 10 bytes were received.
        rd.buf[..req.len()].copy_from_slice(&req);
        rd.start = 0;
        rd.end = 10;
        let mut payload = Vec::new();
        assert!(c.take_buffered(&mut rd, &mut payload, 0).is_none());
        assert_eq!((rd.start, rd.end), (0, 10));
        // Header received, payload not yet complete: not taken either.
        rd.end = REQUEST_LEN + 511;
        assert!(c.take_buffered(&mut rd, &mut payload, 0).is_none());
        // All of it: taken, payload copied to where it was asked for.
        rd.end = req.len();
        let t = c.take_buffered(&mut rd, &mut payload, 100).unwrap();
        assert_eq!((t.payload.clone(), t.req.length), (100..612, 512));
        assert_eq!(&payload[100..612], &[0xAB; 512][..]);
        assert_eq!(rd.start, req.len());
        // A disconnect or a bad magic is left for next_request.
        rd.buf[..4].copy_from_slice(&[0, 0, 0, 0]);
        rd.start = 0;
        assert!(c.take_buffered(&mut rd, &mut payload, 0).is_none());
        assert_eq!(rd.start, 0);
    }
}
