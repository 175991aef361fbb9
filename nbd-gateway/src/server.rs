//! The server: listeners, the handshake (option haggling) and the transmission loop.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::direct;
use crate::export::{Export, ExportCatalog};
use crate::metrics::Metrics;
use crate::proto::*;
use crate::reply::{self, ReplyMode, Request, Session, be_u16, be_u32};

/// A byte stream the server can speak NBD over (TCP, unix socket, TLS, in-memory duplex).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS policy (spec: "Server-side requirements").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// NOTLS: `NBD_OPT_STARTTLS` is refused with `NBD_REP_ERR_POLICY`.
    #[default]
    Off,
    /// SELECTIVETLS with no TLS-only export: clients may upgrade, or not.
    Allow,
    /// FORCEDTLS: every option but STARTTLS and ABORT fails with `NBD_REP_ERR_TLS_REQD` until
    /// TLS is up.
    Require,
}

/// How the server behaves. Build with [`ServerConfig::default`] and adjust fields.
#[derive(Clone)]
pub struct ServerConfig {
    /// TLS policy; anything but [`TlsMode::Off`] needs `tls_acceptor`.
    pub tls_mode: TlsMode,
    /// The TLS credentials.
    pub tls_acceptor: Option<TlsAcceptor>,
    /// Serve every export read-only.
    pub read_only: bool,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: u32,
    /// Requests executed at once per connection (the in-flight window).
    pub max_in_flight: u32,
    /// Bytes of request payloads and reply buffers held at once per connection. At least
    /// [`MAX_PAYLOAD`] plus overhead, so the largest valid request always fits.
    pub buffer_budget: u32,
    /// Time a client has to finish option haggling.
    pub handshake_timeout: Duration,
    /// Time a client has to read one reply before the connection is dropped.
    pub reply_timeout: Duration,
    /// Time a client has to finish sending a request (header and payload) once it started
    /// one; idle connections between requests are not limited.
    pub request_timeout: Duration,
    /// After shutdown starts, how long a connection answers `NBD_ESHUTDOWN` while waiting for
    /// the client's `NBD_CMD_DISC` before it is closed.
    pub shutdown_grace: Duration,
    /// Serve plain (non-TLS) TCP and unix connections with worker threads that read, execute
    /// and answer each request on one thread (the default, and the fast path); `false` uses
    /// the async reader and writer tasks with the blocking pool, as TLS connections always do.
    pub direct_io: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("tls_mode", &self.tls_mode)
            .field("read_only", &self.read_only)
            .field("max_connections", &self.max_connections)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            tls_mode: TlsMode::Off,
            tls_acceptor: None,
            read_only: false,
            max_connections: 256,
            max_in_flight: 16,
            buffer_budget: 3 * MAX_PAYLOAD,
            handshake_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(2),
            direct_io: true,
        }
    }
}

/// An NBD server over an [`ExportCatalog`].
pub struct Server {
    catalog: Arc<dyn ExportCatalog>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn violation(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// What option haggling has settled so far (reset by STARTTLS).
#[derive(Debug, Default)]
struct Negotiation {
    structured: bool,
    extended: bool,
    /// The export `base:allocation` was selected for by the last `NBD_OPT_SET_META_CONTEXT`.
    meta_export: Option<String>,
}

impl Negotiation {
    fn mode(&self) -> ReplyMode {
        if self.extended {
            ReplyMode::Extended
        } else if self.structured {
            ReplyMode::Structured
        } else {
            ReplyMode::Simple
        }
    }
}

/// Why option haggling ended.
enum HandshakeEnd {
    /// Transmission starts; the bool says whether TLS is on.
    Transmission(Box<dyn Io>, Session, bool),
    Aborted,
}

impl Server {
    /// A server over `catalog`.
    ///
    /// # Errors
    /// [`crate::Error::Usage`] if TLS is asked for without credentials, or the budgets are too
    /// small for the largest valid request.
    pub fn new(catalog: Arc<dyn ExportCatalog>, config: ServerConfig) -> crate::Result<Arc<Self>> {
        if config.tls_mode != TlsMode::Off && config.tls_acceptor.is_none() {
            return Err(crate::Error::Usage(
                "tls mode allow or require needs a certificate and key".into(),
            ));
        }
        if config.buffer_budget < MAX_PAYLOAD + (1 << 20) {
            return Err(crate::Error::Usage(format!(
                "buffer budget {} below the minimum {}",
                config.buffer_budget,
                MAX_PAYLOAD + (1 << 20)
            )));
        }
        if config.max_in_flight == 0 || config.max_connections == 0 {
            return Err(crate::Error::Usage(
                "max_in_flight and max_connections must be at least 1".into(),
            ));
        }
        let connections = Arc::new(Semaphore::new(config.max_connections as usize));
        Ok(Arc::new(Self {
            catalog,
            config,
            metrics: Arc::new(Metrics::default()),
            shutdown: watch::channel(false).0,
            connections,
        }))
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts a graceful shutdown: listeners stop accepting, connections finish their in-flight
    /// requests, answer new ones with `NBD_ESHUTDOWN`, flush, and close.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits until no connection is being served.
    pub async fn wait_idle(&self) {
        // Holding every permit means no connection holds one; they are released right away.
        let _all = self
            .connections
            .acquire_many(self.config.max_connections)
            .await;
    }

    /// Accepts TCP connections until shutdown.
    ///
    /// # Errors
    /// Never at present; accept errors are logged and retried.
    pub async fn serve_tcp(self: &Arc<Self>, listener: TcpListener) -> io::Result<()> {
        let mut stop = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                r = listener.accept() => Some(r),
            };
            match accepted {
                None => return Ok(()),
                Some(Ok((sock, peer))) => {
                    if let Err(e) = sock.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    let fd = sock.as_fd().try_clone_to_owned().ok();
                    self.spawn_connection(sock, peer.to_string(), fd);
                }
                Some(Err(e)) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Accepts unix-socket connections until shutdown.
    ///
    /// # Errors
    /// Never at present; accept errors are logged and retried.
    pub async fn serve_unix(self: &Arc<Self>, listener: UnixListener) -> io::Result<()> {
        let mut stop = self.shutdown.subscribe();
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                r = listener.accept() => Some(r),
            };
            match accepted {
                None => return Ok(()),
                Some(Ok((sock, _))) => {
                    let fd = sock.as_fd().try_clone_to_owned().ok();
                    self.spawn_connection(sock, "unix".to_owned(), fd);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// `fd` is a duplicate of the socket's descriptor, for direct transmission.
    fn spawn_connection<S>(self: &Arc<Self>, io: S, peer: String, fd: Option<OwnedFd>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached, closing");
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.serve(io, &peer, fd).await;
            drop(permit);
        });
    }

    /// Serves one already-accepted connection to its end. Errors end the connection and are
    /// logged at debug level (a misbehaving client is not a server error).
    pub async fn serve_connection<S>(self: &Arc<Self>, io: S, peer: &str)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve(io, peer, None).await;
    }

    async fn serve<S>(self: &Arc<Self>, io: S, peer: &str, fd: Option<OwnedFd>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.metrics.connection_opened();
        let io: Box<dyn Io> = Box::new(io);
        let end = tokio::time::timeout(self.config.handshake_timeout, self.handshake(io)).await;
        match end {
            Err(_) => tracing::debug!(peer, "handshake timed out"),
            Ok(Err(e)) => tracing::debug!(peer, error = %e, "handshake ended"),
            Ok(Ok(HandshakeEnd::Aborted)) => tracing::debug!(peer, "client aborted handshake"),
            Ok(Ok(HandshakeEnd::Transmission(io, session, tls))) => {
                tracing::info!(peer, export = session.export.name(), mode = ?session.mode, tls, "client connected");
                let ended = match fd {
                    Some(fd) if !tls && self.config.direct_io => {
                        // The handshake reads exactly what it parses, so nothing is buffered
                        // in `io`: the duplicate descriptor carries on from here.
                        drop(io);
                        self.transmission_direct(fd, session).await
                    }
                    _ => self.transmission(io, session).await,
                };
                if let Err(e) = ended {
                    tracing::debug!(peer, error = %e, "connection ended");
                }
            }
        }
    }

    async fn lookup(&self, name: &str) -> Result<Option<Arc<Export>>, String> {
        let catalog = Arc::clone(&self.catalog);
        let name = name.to_owned();
        match tokio::task::spawn_blocking(move || catalog.open(&name)).await {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn list(&self) -> Result<Vec<String>, String> {
        let catalog = Arc::clone(&self.catalog);
        match tokio::task::spawn_blocking(move || catalog.list()).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn transmission_flags(&self, export: &Export, mode: ReplyMode) -> (u16, bool) {
        let read_only = self.config.read_only || export.is_read_only();
        // CAN_MULTI_CONN: every connection to an export shares one file, and FLUSH/FUA are
        // fdatasync of that file, which covers writes from every connection.
        let mut flags = TFLAG_HAS_FLAGS
            | TFLAG_SEND_FLUSH
            | TFLAG_SEND_FUA
            | TFLAG_SEND_CACHE
            | TFLAG_CAN_MULTI_CONN;
        if read_only {
            flags |= TFLAG_READ_ONLY;
        } else {
            flags |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES | TFLAG_SEND_FAST_ZERO;
        }
        if mode != ReplyMode::Simple {
            flags |= TFLAG_SEND_DF;
        }
        (flags, read_only)
    }

    async fn handshake(&self, mut io: Box<dyn Io>) -> io::Result<HandshakeEnd> {
        // Spec: "Newstyle negotiation".
        let mut hello = Vec::with_capacity(18);
        hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
        hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
        hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        io.write_all(&hello).await?;
        io.flush().await?;
        let client_flags = io.read_u32().await?;
        if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
            return Err(violation("unknown client flags"));
        }
        let fixed = client_flags & FLAG_C_FIXED_NEWSTYLE != 0;
        let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
        if !fixed && self.config.tls_mode == TlsMode::Require {
            return Err(violation(
                "tls required but client does not speak fixed newstyle",
            ));
        }
        let mut neg = Negotiation::default();
        let mut tls = false;
        for _ in 0..MAX_OPTIONS {
            let mut hdr = [0u8; 16];
            io.read_exact(&mut hdr).await?;
            if hdr.get(..8) != Some(&IHAVEOPT.to_be_bytes()[..]) {
                return Err(violation("bad option magic"));
            }
            let opt = be_u32(&hdr, 8).unwrap_or(0);
            let len = be_u32(&hdr, 12).unwrap_or(0);
            if len > MAX_OPTION_LEN {
                return Err(violation("option payload too long"));
            }
            // OK: len <= MAX_OPTION_LEN (64 KiB), checked before allocating.
            let mut data = vec![0u8; len as usize];
            io.read_exact(&mut data).await?;
            if !fixed && opt != OPT_EXPORT_NAME {
                return Err(violation(
                    "option other than export name from a non-fixed client",
                ));
            }
            if self.is_shutting_down() && opt != OPT_ABORT {
                if opt == OPT_EXPORT_NAME {
                    return Err(violation("shutting down"));
                }
                opt_reply(&mut io, opt, REP_ERR_SHUTDOWN, b"server is shutting down").await?;
                continue;
            }
            if self.config.tls_mode == TlsMode::Require
                && !tls
                && opt != OPT_STARTTLS
                && opt != OPT_ABORT
            {
                if opt == OPT_EXPORT_NAME {
                    return Err(violation("export name before tls"));
                }
                opt_reply(&mut io, opt, REP_ERR_TLS_REQD, b"tls is required").await?;
                continue;
            }
            match opt {
                OPT_EXPORT_NAME => {
                    if neg.extended {
                        return Err(violation("export name after extended headers"));
                    }
                    if data.len() > MAX_STRING {
                        return Err(violation("export name too long"));
                    }
                    let name = String::from_utf8(data)
                        .map_err(|_| violation("export name is not utf-8"))?;
                    let Some(export) = self.lookup(&name).await.ok().flatten() else {
                        return Err(violation("unknown export"));
                    };
                    let (flags, read_only) = self.transmission_flags(&export, neg.mode());
                    let mut reply = Vec::with_capacity(134);
                    reply.extend_from_slice(&export.size().to_be_bytes());
                    reply.extend_from_slice(&flags.to_be_bytes());
                    if !no_zeroes {
                        reply.extend_from_slice(&[0u8; 124]);
                    }
                    io.write_all(&reply).await?;
                    io.flush().await?;
                    let base_allocation = neg.meta_export.as_deref() == Some(&name);
                    let session = Session {
                        export,
                        read_only,
                        mode: neg.mode(),
                        base_allocation,
                    };
                    return Ok(HandshakeEnd::Transmission(io, session, tls));
                }
                OPT_ABORT => {
                    // The client may already have closed; a failed ACK does not matter.
                    let _ = opt_reply(&mut io, opt, REP_ACK, &[]).await;
                    return Ok(HandshakeEnd::Aborted);
                }
                OPT_LIST => {
                    if !data.is_empty() {
                        opt_reply(&mut io, opt, REP_ERR_INVALID, b"list takes no data").await?;
                        continue;
                    }
                    match self.list().await {
                        Ok(names) => {
                            for name in names.iter().filter(|n| n.len() <= MAX_STRING) {
                                let mut d = Vec::with_capacity(4 + name.len());
                                d.extend_from_slice(
                                    &u32::try_from(name.len()).unwrap_or(0).to_be_bytes(),
                                );
                                d.extend_from_slice(name.as_bytes());
                                opt_reply(&mut io, opt, REP_SERVER, &d).await?;
                            }
                            opt_reply(&mut io, opt, REP_ACK, &[]).await?;
                        }
                        Err(msg) => {
                            opt_reply(&mut io, opt, REP_ERR_INVALID, msg.as_bytes()).await?;
                        }
                    }
                }
                OPT_STARTTLS => {
                    if !data.is_empty() {
                        opt_reply(&mut io, opt, REP_ERR_INVALID, b"starttls takes no data").await?;
                        continue;
                    }
                    let acceptor = match (&self.config.tls_acceptor, self.config.tls_mode) {
                        (Some(a), TlsMode::Allow | TlsMode::Require) => a.clone(),
                        _ => {
                            opt_reply(&mut io, opt, REP_ERR_POLICY, b"tls is not enabled").await?;
                            continue;
                        }
                    };
                    if tls {
                        opt_reply(&mut io, opt, REP_ERR_INVALID, b"tls already started").await?;
                        continue;
                    }
                    opt_reply(&mut io, opt, REP_ACK, &[]).await?;
                    let stream = acceptor.accept(io).await?;
                    io = Box::new(stream);
                    tls = true;
                    // Spec: "NBD_OPT_STARTTLS": no negotiation state survives the upgrade.
                    neg = Negotiation::default();
                }
                OPT_INFO | OPT_GO => {
                    let (name, requests) = match parse_info_request(&data) {
                        Ok(v) => v,
                        Err(msg) => {
                            opt_reply(&mut io, opt, REP_ERR_INVALID, msg.as_bytes()).await?;
                            continue;
                        }
                    };
                    let export = match self.lookup(&name).await {
                        Ok(Some(e)) => e,
                        Ok(None) => {
                            let msg = format!("no export named {name:?}");
                            opt_reply(&mut io, opt, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                            continue;
                        }
                        Err(msg) => {
                            opt_reply(&mut io, opt, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                            continue;
                        }
                    };
                    let (flags, read_only) = self.transmission_flags(&export, neg.mode());
                    let mut info = Vec::with_capacity(12);
                    info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                    info.extend_from_slice(&export.size().to_be_bytes());
                    info.extend_from_slice(&flags.to_be_bytes());
                    opt_reply(&mut io, opt, REP_INFO, &info).await?;
                    if requests.contains(&INFO_NAME) {
                        let n = reply::truncate_utf8(export.name(), MAX_STRING);
                        let mut info = INFO_NAME.to_be_bytes().to_vec();
                        info.extend_from_slice(n.as_bytes());
                        opt_reply(&mut io, opt, REP_INFO, &info).await?;
                    }
                    if requests.contains(&INFO_DESCRIPTION) && !export.desc().is_empty() {
                        let d = reply::truncate_utf8(export.desc(), MAX_STRING);
                        let mut info = INFO_DESCRIPTION.to_be_bytes().to_vec();
                        info.extend_from_slice(d.as_bytes());
                        opt_reply(&mut io, opt, REP_INFO, &info).await?;
                    }
                    let mut info = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                    info.extend_from_slice(&MIN_BLOCK.to_be_bytes());
                    info.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                    info.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
                    opt_reply(&mut io, opt, REP_INFO, &info).await?;
                    opt_reply(&mut io, opt, REP_ACK, &[]).await?;
                    if opt == OPT_GO {
                        let base_allocation = neg.meta_export.as_deref() == Some(&name);
                        let session = Session {
                            export,
                            read_only,
                            mode: neg.mode(),
                            base_allocation,
                        };
                        return Ok(HandshakeEnd::Transmission(io, session, tls));
                    }
                }
                OPT_STRUCTURED_REPLY => {
                    let (t, msg): (u32, &[u8]) = if !data.is_empty() {
                        (REP_ERR_INVALID, b"structured reply takes no data")
                    } else if neg.extended {
                        (
                            REP_ERR_EXT_HEADER_REQD,
                            b"extended headers already negotiated",
                        )
                    } else if neg.structured {
                        (REP_ERR_INVALID, b"structured replies already negotiated")
                    } else {
                        neg.structured = true;
                        (REP_ACK, b"")
                    };
                    opt_reply(&mut io, opt, t, msg).await?;
                }
                OPT_EXTENDED_HEADERS => {
                    let (t, msg): (u32, &[u8]) = if !data.is_empty() {
                        (REP_ERR_INVALID, b"extended headers take no data")
                    } else if neg.extended {
                        (REP_ERR_INVALID, b"extended headers already negotiated")
                    } else {
                        neg.extended = true;
                        (REP_ACK, b"")
                    };
                    opt_reply(&mut io, opt, t, msg).await?;
                }
                OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                    if opt == OPT_SET_META_CONTEXT {
                        // Spec: SET replaces the selection "including when this command fails".
                        neg.meta_export = None;
                    }
                    if !neg.structured && !neg.extended {
                        opt_reply(
                            &mut io,
                            opt,
                            REP_ERR_INVALID,
                            b"negotiate structured replies first",
                        )
                        .await?;
                        continue;
                    }
                    let (name, queries) = match parse_meta_request(&data) {
                        Ok(v) => v,
                        Err((t, msg)) => {
                            opt_reply(&mut io, opt, t, msg.as_bytes()).await?;
                            continue;
                        }
                    };
                    if !matches!(self.lookup(&name).await, Ok(Some(_))) {
                        let msg = format!("no export named {name:?}");
                        opt_reply(&mut io, opt, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                        continue;
                    }
                    let selected = if opt == OPT_LIST_META_CONTEXT {
                        queries.is_empty()
                            || queries.iter().any(|q| q == "base:" || q == BASE_ALLOCATION)
                    } else {
                        queries.iter().any(|q| q == BASE_ALLOCATION)
                    };
                    if selected {
                        let id = if opt == OPT_SET_META_CONTEXT {
                            BASE_ALLOCATION_ID
                        } else {
                            0
                        };
                        let mut d = id.to_be_bytes().to_vec();
                        d.extend_from_slice(BASE_ALLOCATION.as_bytes());
                        opt_reply(&mut io, opt, REP_META_CONTEXT, &d).await?;
                        if opt == OPT_SET_META_CONTEXT {
                            neg.meta_export = Some(name);
                        }
                    }
                    opt_reply(&mut io, opt, REP_ACK, &[]).await?;
                }
                _ => {
                    // Unknown option: its payload was read above, so the stream stays in sync.
                    opt_reply(&mut io, opt, REP_ERR_UNSUP, b"unsupported option").await?;
                }
            }
        }
        Err(violation("too many options"))
    }

    /// After a connection's last reply: on server shutdown the export is flushed (durable);
    /// on a client's disconnect it is only settled (its own caches written for other readers),
    /// as durability is what FLUSH and FUA are for and `fdatasync` per disconnect is costly.
    async fn end_of_connection(&self, session: &Arc<Session>) {
        if session.read_only {
            return;
        }
        let shutting_down = self.is_shutting_down();
        let s = Arc::clone(session);
        let done = tokio::task::spawn_blocking(move || {
            let backend = s.export.backend();
            if shutting_down {
                backend.flush()
            } else {
                backend.settle()
            }
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flush at disconnect failed"),
            Err(e) => tracing::warn!(error = %e, "flush task failed"),
        }
    }

    /// Transmission by worker threads over the socket itself (see `direct.rs`).
    async fn transmission_direct(
        self: &Arc<Self>,
        fd: OwnedFd,
        session: Session,
    ) -> io::Result<()> {
        let metrics = self.metrics.export(session.export.name());
        let limits = direct::Limits {
            max_in_flight: self.config.max_in_flight,
            buffer_budget: self.config.buffer_budget,
            request_timeout: self.config.request_timeout,
            reply_timeout: self.config.reply_timeout,
        };
        let conn = direct::Conn::new(fd, Arc::new(session), limits, metrics)?;
        // Every worker holds a sender; `recv` returns `None` once the last one has exited.
        let (alive, mut all_gone) = tokio::sync::mpsc::unbounded_channel::<()>();
        conn.spawn_worker(alive)?;
        let mut stop = self.shutdown.subscribe();
        let mut deadline: Option<Instant> = None;
        let mut reads_closed = false;
        loop {
            let grace = async {
                match deadline {
                    Some(d) if !reads_closed => tokio::time::sleep_until(d).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = all_gone.recv() => break,
                _ = stop.wait_for(|s| *s), if deadline.is_none() => {
                    conn.stopping.store(true, std::sync::atomic::Ordering::Release);
                    deadline = Some(Instant::now() + self.config.shutdown_grace);
                }
                () = grace => {
                    tracing::debug!("shutdown grace period over, closing");
                    conn.close_reads();
                    reads_closed = true;
                }
            }
        }
        // Every request has been answered (spec: "NBD_CMD_DISC").
        self.end_of_connection(conn.session()).await;
        drop(conn);
        Ok(())
    }

    async fn transmission(self: &Arc<Self>, io: Box<dyn Io>, session: Session) -> io::Result<()> {
        let extended = session.mode == ReplyMode::Extended;
        let metrics = self.metrics.export(session.export.name());
        let session = Arc::new(session);
        let (rd, wr) = tokio::io::split(io);
        let mut rd = BufReader::with_capacity(256 * 1024, rd);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight as usize));
        let budget = Arc::new(Semaphore::new(self.config.buffer_budget as usize));
        let (dead_tx, mut dead_rx) = watch::channel(false);
        let writer_task = tokio::spawn(write_replies(
            wr,
            rx,
            dead_tx,
            metrics,
            self.config.reply_timeout,
        ));
        let mut stop = self.shutdown.subscribe();
        let mut deadline: Option<Instant> = None;
        let hdr_len = if extended {
            EXTENDED_REQUEST_LEN
        } else {
            REQUEST_LEN
        };
        let end: io::Result<()> = loop {
            if deadline.is_none() && *stop.borrow() {
                deadline = Some(Instant::now() + self.config.shutdown_grace);
            }
            let grace = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            // Wait for the next request without consuming anything (fill_buf is cancel-safe).
            let more = tokio::select! {
                r = rd.fill_buf() => match r {
                    Ok(b) => !b.is_empty(),
                    Err(e) => break Err(e),
                },
                _ = stop.changed(), if deadline.is_none() => continue,
                () = grace => {
                    tracing::debug!("shutdown grace period over, closing");
                    break Ok(());
                }
                _ = dead_rx.changed() => break Err(violation("reply could not be written")),
            };
            if !more {
                break Ok(());
            }
            let mut hdr = [0u8; EXTENDED_REQUEST_LEN];
            let hdr = hdr.get_mut(..hdr_len).unwrap_or_default();
            match tokio::time::timeout(self.config.request_timeout, rd.read_exact(hdr)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(violation("request header not completed in time")),
            }
            let Some(req) = Request::parse(hdr, extended) else {
                break Err(violation("bad request magic"));
            };
            let payload_len = req.payload_len(extended);
            if payload_len > u64::from(MAX_PAYLOAD) {
                // Spec: "Size constraints" allows a hard disconnect for payloads deemed a denial
                // of service; we never allocate for them.
                break Err(violation("request payload above the 32 MiB maximum"));
            }
            if req.typ == CMD_DISC {
                tracing::debug!("client sent disconnect");
                break Ok(());
            }
            let reply_bytes: u64 = match req.typ {
                CMD_READ => req.length.min(u64::from(MAX_PAYLOAD)),
                CMD_BLOCK_STATUS => 16 * MAX_EXTENTS_PER_REPLY as u64,
                _ => 0,
            };
            // OK: both terms are at most 2^25, the sum fits in u32.
            let cost = u32::try_from(payload_len + reply_bytes + 64 * 1024).unwrap_or(u32::MAX);
            let cost = cost.min(self.config.buffer_budget);
            let slot = Arc::clone(&slots)
                .acquire_owned()
                .await
                .map_err(|_| violation("closed"))?;
            let bytes = Arc::clone(&budget)
                .acquire_many_owned(cost)
                .await
                .map_err(|_| violation("closed"))?;
            // OK: payload_len <= MAX_PAYLOAD, checked above, before this allocation.
            let mut payload = vec![0u8; usize::try_from(payload_len).unwrap_or(0)];
            // A client vanishing or stalling mid-payload: nothing of this request is applied.
            match tokio::time::timeout(self.config.request_timeout, rd.read_exact(&mut payload))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(violation("request payload not completed in time")),
            }
            let start = std::time::Instant::now();
            let permits = (slot, bytes);
            if deadline.is_some() {
                let outcome = reply::Outcome {
                    bytes: reply::error_reply(
                        session.mode,
                        &req,
                        NbdError::Shutdown,
                        "server is shutting down",
                    ),
                    error: Some(NbdError::Shutdown),
                    read: 0,
                    written: 0,
                };
                let _ = tx.send(Done {
                    req,
                    outcome,
                    start,
                    _permits: permits,
                });
            } else {
                let s = Arc::clone(&session);
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    let outcome = reply::execute(&s, &req, &payload);
                    // The writer only goes away after every sender is gone.
                    let _ = tx.send(Done {
                        req,
                        outcome,
                        start,
                        _permits: permits,
                    });
                });
            }
        };
        // Finish every in-flight request before closing (spec: "NBD_CMD_DISC").
        let _all = slots.acquire_many(self.config.max_in_flight).await;
        self.end_of_connection(&session).await;
        drop(tx);
        if let Err(e) = writer_task.await {
            tracing::warn!(error = %e, "reply writer failed");
        }
        end
    }
}

/// A finished request on its way to the client.
struct Done {
    req: Request,
    outcome: reply::Outcome,
    start: std::time::Instant,
    /// The in-flight slot and buffer budget, released once the reply is written.
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Replies at most this large are coalesced into one write with their neighbours.
const COALESCE_MAX: usize = 64 * 1024;
/// Most replies taken from the queue per batch.
const MAX_BATCH: usize = 64;

/// The connection's single writer: takes finished requests in completion order, writes each
/// reply whole (so replies never interleave), coalescing small ones into one write.
async fn write_replies(
    mut wr: tokio::io::WriteHalf<Box<dyn Io>>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Done>,
    dead: watch::Sender<bool>,
    metrics: Arc<crate::metrics::ExportMetrics>,
    reply_timeout: Duration,
) {
    let mut alive = true;
    let mut done: Vec<Done> = Vec::with_capacity(MAX_BATCH);
    let mut batch: Vec<u8> = Vec::with_capacity(COALESCE_MAX);
    while let Some(first) = rx.recv().await {
        done.push(first);
        while done.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(d) => done.push(d),
                Err(_) => break,
            }
        }
        if alive {
            let sent = tokio::time::timeout(reply_timeout, async {
                for d in &done {
                    let bytes = &d.outcome.bytes;
                    if batch.len() + bytes.len() > COALESCE_MAX && !batch.is_empty() {
                        wr.write_all(&batch).await?;
                        batch.clear();
                    }
                    if bytes.len() > COALESCE_MAX {
                        wr.write_all(bytes).await?;
                    } else {
                        batch.extend_from_slice(bytes);
                    }
                }
                if !batch.is_empty() {
                    wr.write_all(&batch).await?;
                    batch.clear();
                }
                wr.flush().await
            })
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                // Keep draining (releasing permits) so the reader never waits on us.
                alive = false;
                batch.clear();
                dead.send_replace(true);
            }
        }
        for d in done.drain(..) {
            metrics.record(
                d.req.typ,
                d.outcome.error.is_none(),
                d.outcome.read,
                d.outcome.written,
                d.start.elapsed(),
            );
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes one option reply (spec: "Fixed newstyle negotiation").
async fn opt_reply(io: &mut Box<dyn Io>, opt: u32, typ: u32, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(20 + data.len());
    buf.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
    buf.extend_from_slice(&opt.to_be_bytes());
    buf.extend_from_slice(&typ.to_be_bytes());
    // OK: every reply is built from strings capped at MAX_STRING or fixed-size fields.
    buf.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    buf.extend_from_slice(data);
    io.write_all(&buf).await?;
    io.flush().await
}

/// Parses `NBD_OPT_INFO`/`NBD_OPT_GO` data (spec: "NBD_OPT_INFO (6) and NBD_OPT_GO (7)").
fn parse_info_request(data: &[u8]) -> Result<(String, Vec<u16>), String> {
    let name_len = be_u32(data, 0).ok_or("option data shorter than 6 bytes")?;
    let name_len = usize::try_from(name_len).map_err(|_| "name length overflows")?;
    if name_len > MAX_STRING {
        return Err(format!("export name length {name_len} above {MAX_STRING}"));
    }
    let name = data
        .get(4..4 + name_len)
        .ok_or_else(|| format!("export name length {name_len} past the option data"))?;
    let name = std::str::from_utf8(name).map_err(|_| "export name is not utf-8")?;
    let count = be_u16(data, 4 + name_len).ok_or("information request count missing")?;
    if count > MAX_INFO_REQUESTS {
        return Err(format!(
            "{count} information requests, at most {MAX_INFO_REQUESTS}"
        ));
    }
    let expected = 6 + name_len + 2 * usize::from(count);
    if data.len() != expected {
        return Err(format!(
            "option data is {} bytes, {expected} expected",
            data.len()
        ));
    }
    let requests = (0..usize::from(count))
        .filter_map(|i| be_u16(data, 6 + name_len + 2 * i))
        .collect();
    Ok((name.to_owned(), requests))
}

/// Parses `NBD_OPT_LIST_META_CONTEXT`/`NBD_OPT_SET_META_CONTEXT` data (spec: "Option types").
fn parse_meta_request(data: &[u8]) -> Result<(String, Vec<String>), (u32, String)> {
    let invalid = |m: String| (REP_ERR_INVALID, m);
    let mut pos = 0usize;
    let string = |pos: &mut usize| -> Result<String, (u32, String)> {
        let len = be_u32(data, *pos).ok_or_else(|| invalid("string length missing".into()))?;
        let len = usize::try_from(len).map_err(|_| invalid("string length overflows".into()))?;
        if len > MAX_STRING {
            return Err(invalid(format!("string length {len} above {MAX_STRING}")));
        }
        let start = *pos + 4;
        let s = data
            .get(start..start + len)
            .ok_or_else(|| invalid(format!("string length {len} past the option data")))?;
        *pos = start + len;
        String::from_utf8(s.to_vec()).map_err(|_| invalid("string is not utf-8".into()))
    };
    let name = string(&mut pos)?;
    let count = be_u32(data, pos).ok_or_else(|| invalid("query count missing".into()))?;
    pos += 4;
    if count > MAX_META_QUERIES {
        return Err((
            REP_ERR_TOO_BIG,
            format!("{count} queries, at most {MAX_META_QUERIES}"),
        ));
    }
    let mut queries = Vec::new();
    for _ in 0..count {
        queries.push(string(&mut pos)?);
    }
    if pos != data.len() {
        return Err(invalid(format!(
            "{} trailing bytes after the queries",
            data.len() - pos
        )));
    }
    Ok((name, queries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &[u8], reqs: &[u16]) -> Vec<u8> {
        let mut d = u32::try_from(name.len()).unwrap().to_be_bytes().to_vec();
        d.extend_from_slice(name);
        d.extend_from_slice(&u16::try_from(reqs.len()).unwrap().to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    #[test]
    fn info_request_good() {
        assert_eq!(
            parse_info_request(&info(b"disk", &[1, 3])).unwrap(),
            ("disk".to_owned(), vec![1, 3])
        );
        assert_eq!(
            parse_info_request(&info(b"", &[])).unwrap(),
            (String::new(), vec![])
        );
    }

    #[test]
    fn info_request_each_bad_field() {
        assert_eq!(
            parse_info_request(&[0, 0]).unwrap_err(),
            "option data shorter than 6 bytes"
        );
        let mut long = info(b"x", &[]);
        long[..4].copy_from_slice(&5000u32.to_be_bytes());
        assert_eq!(
            parse_info_request(&long).unwrap_err(),
            "export name length 5000 above 4096"
        );
        let mut past = info(b"x", &[]);
        past[..4].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(
            parse_info_request(&past).unwrap_err(),
            "export name length 10 past the option data"
        );
        assert_eq!(
            parse_info_request(&info(&[0xff, 0xfe], &[])).unwrap_err(),
            "export name is not utf-8"
        );
        let mut no_count = info(b"x", &[]);
        no_count.truncate(5);
        assert_eq!(
            parse_info_request(&no_count).unwrap_err(),
            "information request count missing"
        );
        let many = info(b"x", &[0; 65]);
        assert_eq!(
            parse_info_request(&many).unwrap_err(),
            "65 information requests, at most 64"
        );
        let mut short = info(b"x", &[1, 2]);
        short.pop();
        assert_eq!(
            parse_info_request(&short).unwrap_err(),
            "option data is 10 bytes, 11 expected"
        );
    }

    fn meta(name: &str, queries: &[&[u8]]) -> Vec<u8> {
        let mut d = u32::try_from(name.len()).unwrap().to_be_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&u32::try_from(queries.len()).unwrap().to_be_bytes());
        for q in queries {
            d.extend_from_slice(&u32::try_from(q.len()).unwrap().to_be_bytes());
            d.extend_from_slice(q);
        }
        d
    }

    #[test]
    fn meta_request_good_and_bad() {
        assert_eq!(
            parse_meta_request(&meta("v", &[b"base:allocation", b"qemu:x"])).unwrap(),
            (
                "v".to_owned(),
                vec!["base:allocation".to_owned(), "qemu:x".to_owned()]
            )
        );
        let e = parse_meta_request(&[0, 0]).unwrap_err();
        assert_eq!(e, (REP_ERR_INVALID, "string length missing".to_owned()));
        let mut trailing = meta("v", &[]);
        trailing.push(1);
        assert_eq!(
            parse_meta_request(&trailing).unwrap_err(),
            (
                REP_ERR_INVALID,
                "1 trailing bytes after the queries".to_owned()
            )
        );
        let mut no_count = meta("v", &[]);
        no_count.truncate(5);
        assert_eq!(
            parse_meta_request(&no_count).unwrap_err(),
            (REP_ERR_INVALID, "query count missing".to_owned())
        );
        let mut too_many = meta("v", &[]);
        let n = too_many.len();
        too_many[n - 4..].copy_from_slice(&65u32.to_be_bytes());
        assert_eq!(
            parse_meta_request(&too_many).unwrap_err(),
            (REP_ERR_TOO_BIG, "65 queries, at most 64".to_owned())
        );
        let big = vec![b'a'; 4097];
        assert_eq!(
            parse_meta_request(&meta("v", &[&big])).unwrap_err(),
            (REP_ERR_INVALID, "string length 4097 above 4096".to_owned())
        );
        let mut cut = meta("v", &[b"base:allocation"]);
        cut.truncate(cut.len() - 1);
        assert_eq!(
            parse_meta_request(&cut).unwrap_err(),
            (
                REP_ERR_INVALID,
                "string length 15 past the option data".to_owned()
            )
        );
        assert_eq!(
            parse_meta_request(&meta("v", &[&[0xc3]])).unwrap_err(),
            (REP_ERR_INVALID, "string is not utf-8".to_owned())
        );
    }

    #[test]
    fn config_validation() {
        let catalog: Arc<dyn ExportCatalog> = Arc::new(crate::StaticCatalog::new());
        let tls = ServerConfig {
            tls_mode: TlsMode::Require,
            ..ServerConfig::default()
        };
        assert_eq!(
            Server::new(Arc::clone(&catalog), tls)
                .unwrap_err()
                .to_string(),
            "tls mode allow or require needs a certificate and key"
        );
        let small = ServerConfig {
            buffer_budget: 1 << 20,
            ..ServerConfig::default()
        };
        assert_eq!(
            Server::new(Arc::clone(&catalog), small)
                .unwrap_err()
                .to_string(),
            "buffer budget 1048576 below the minimum 34603008"
        );
        let zero = ServerConfig {
            max_in_flight: 0,
            ..ServerConfig::default()
        };
        assert!(Server::new(catalog, zero).is_err());
    }
}
