//! The long-running service behind `rehost gateway serve`: listeners, metrics, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::server::{Server, ServerConfig, TlsMode};
use crate::store::Store;
use crate::{Error, Result};

/// Where to listen: a TCP address, or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP socket address (port 0 picks a free port).
    Tcp(SocketAddr),
    /// A unix socket path (an existing socket file there is replaced).
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(Error::Usage("empty unix socket path".into()));
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            Error::Usage(format!(
                "listen address {s:?} is neither HOST:PORT nor unix:PATH"
            ))
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The store directory.
    pub store: PathBuf,
    /// Listening addresses (at least one).
    pub listen: Vec<ListenAddr>,
    /// Serve every export read-only.
    pub read_only: bool,
    /// TLS policy.
    pub tls_mode: TlsMode,
    /// PEM certificate chain (needed unless `tls_mode` is off).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (needed unless `tls_mode` is off).
    pub tls_key: Option<PathBuf>,
    /// Address of the Prometheus `/metrics` endpoint, if any.
    pub metrics: Option<SocketAddr>,
}

/// Threads of the blocking pool that runs storage calls.
const MAX_BLOCKING_THREADS: usize = 64;

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// The `rehost gateway serve --config FILE` format (TOML). Every key is optional; command-line
/// flags override it.
///
/// ```toml
/// store = "/srv/rehost-gateway"
/// listen = ["0.0.0.0:10809", "unix:/run/rehost-gateway.sock"]
/// read_only = false
/// tls = "require"            # off | allow | require
/// tls_cert = "/etc/rehost/server-cert.pem"
/// tls_key = "/etc/rehost/server-key.pem"
/// metrics = "127.0.0.1:9109"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The store directory.
    pub store: Option<PathBuf>,
    /// Listening addresses (`HOST:PORT` or `unix:PATH`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// Serve every export read-only.
    pub read_only: Option<bool>,
    /// TLS policy: `off`, `allow` or `require`.
    pub tls: Option<String>,
    /// PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Metrics endpoint address.
    pub metrics: Option<SocketAddr>,
}

/// Largest configuration file read.
const MAX_CONFIG: u64 = 1 << 20;

impl ConfigFile {
    /// Parses a configuration file's text.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the problem (unknown keys, wrong types).
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Usage(format!("config: {e}")))
    }

    /// Reads and parses a configuration file.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read, [`Error::Usage`] if it is larger than 1 MiB or does
    /// not parse.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_CONFIG {
            return Err(Error::Usage(format!(
                "config {} is {len} bytes, at most {MAX_CONFIG}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text)
    }
}

/// Parses a TLS policy name.
///
/// # Errors
/// [`Error::Usage`] for anything but `off`, `allow`, `require`.
pub fn parse_tls_mode(s: &str) -> Result<TlsMode> {
    match s {
        "off" => Ok(TlsMode::Off),
        "allow" => Ok(TlsMode::Allow),
        "require" => Ok(TlsMode::Require),
        other => Err(Error::Usage(format!(
            "tls mode {other:?} is not one of off, allow, require"
        ))),
    }
}

/// A bound, not yet running service.
pub struct Service {
    server: Arc<Server>,
    listeners: Vec<Bound>,
    addrs: Vec<ListenAddr>,
    metrics: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("addrs", &self.addrs)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Opens the store and binds every address. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Usage`] for inconsistent options, [`Error::Io`] if binding fails, [`Error::Tls`].
    pub async fn bind(opts: &ServiceOptions) -> Result<Self> {
        if opts.listen.is_empty() {
            return Err(Error::Usage("at least one listen address is needed".into()));
        }
        let tls_acceptor = match (opts.tls_mode, &opts.tls_cert, &opts.tls_key) {
            (TlsMode::Off, _, _) => None,
            (_, Some(c), Some(k)) => Some(crate::tls::acceptor_from_pem(c, k)?),
            _ => {
                return Err(Error::Usage(
                    "tls allow or require needs both a certificate and a key".into(),
                ));
            }
        };
        let store = Store::open(&opts.store)?;
        let config = ServerConfig {
            tls_mode: opts.tls_mode,
            tls_acceptor,
            read_only: opts.read_only,
            ..ServerConfig::default()
        };
        let server = Server::new(Arc::new(store), config)?;
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in &opts.listen {
            match addr {
                ListenAddr::Tcp(a) => {
                    let l = TcpListener::bind(a)
                        .await
                        .map_err(|e| Error::io(a.to_string(), e))?;
                    let local = l.local_addr().map_err(|e| Error::io(a.to_string(), e))?;
                    addrs.push(ListenAddr::Tcp(local));
                    listeners.push(Bound::Tcp(l));
                }
                ListenAddr::Unix(p) => {
                    if let Ok(meta) = std::fs::symlink_metadata(p)
                        && std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type())
                    {
                        std::fs::remove_file(p).map_err(|e| Error::io(p, e))?;
                    }
                    let l = UnixListener::bind(p).map_err(|e| Error::io(p, e))?;
                    addrs.push(addr.clone());
                    listeners.push(Bound::Unix(l, p.clone()));
                }
            }
        }
        let (metrics, metrics_addr) = match opts.metrics {
            Some(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .map_err(|e| Error::io(a.to_string(), e))?;
                let local = l.local_addr().map_err(|e| Error::io(a.to_string(), e))?;
                (Some(l), Some(local))
            }
            None => (None, None),
        };
        Ok(Self {
            server,
            listeners,
            addrs,
            metrics,
            metrics_addr,
        })
    }

    /// Builds a multi-threaded tokio runtime, binds, calls `on_bound` (to print the addresses),
    /// and runs until shutdown: the whole of `rehost gateway serve` for a sync caller.
    ///
    /// # Errors
    /// As [`Service::bind`] and [`Service::run`]; [`Error::Io`] if the runtime cannot start.
    pub fn run_blocking(opts: &ServiceOptions, on_bound: impl FnOnce(&Self)) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            // Storage calls run on the blocking pool; bound it (each connection also bounds
            // its own in-flight requests).
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("nbd-gateway")
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        runtime.block_on(async {
            let service = Self::bind(opts).await?;
            on_bound(&service);
            service.run().await
        })
    }

    /// The bound addresses (with real ports for port 0).
    pub fn addrs(&self) -> &[ListenAddr] {
        &self.addrs
    }

    /// The bound metrics address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The server, e.g. to call [`Server::shutdown`] from elsewhere.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Serves until SIGTERM or SIGINT (or [`Server::shutdown`]), then shuts down gracefully:
    /// stops accepting, lets connections finish in-flight requests and flush, and returns.
    ///
    /// # Errors
    /// [`Error::Io`] if the signal handlers cannot be installed.
    pub async fn run(self) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut sockets = Vec::new();
        for l in self.listeners {
            let server = Arc::clone(&self.server);
            match l {
                Bound::Tcp(l) => {
                    tasks.spawn(async move { server.serve_tcp(l).await });
                }
                Bound::Unix(l, p) => {
                    sockets.push(p);
                    tasks.spawn(async move { server.serve_unix(l).await });
                }
            }
        }
        let metrics_task = self.metrics.map(|l| {
            tokio::spawn(crate::metrics::serve_metrics(
                l,
                Arc::clone(self.server.metrics()),
            ))
        });
        for a in &self.addrs {
            tracing::info!(addr = %a, "listening");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::io("SIGTERM", e))?;
        let mut stop = self.server.shutdown_receiver();
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = stop.wait_for(|s| *s) => tracing::info!("shutting down"),
        }
        self.server.shutdown();
        while tasks.join_next().await.is_some() {}
        for p in sockets {
            let _ = std::fs::remove_file(p);
        }
        // Connections answer ESHUTDOWN for the grace period, then close; cap the wait anyway.
        let grace = self.server.config().shutdown_grace + Duration::from_secs(10);
        if tokio::time::timeout(grace, self.server.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period");
        }
        if let Some(t) = metrics_task {
            t.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_parses_and_rejects_unknown_keys() {
        let c = ConfigFile::parse(
            "store = \"/srv/gw\"\nlisten = [\"unix:/run/x.sock\"]\ntls = \"allow\"\nmetrics = \"127.0.0.1:9109\"\n",
        )
        .unwrap();
        assert_eq!(c.store, Some(PathBuf::from("/srv/gw")));
        assert_eq!(c.listen, vec!["unix:/run/x.sock".to_owned()]);
        assert_eq!(c.tls.as_deref(), Some("allow"));
        assert_eq!(c.metrics, Some("127.0.0.1:9109".parse().unwrap()));
        assert_eq!(c.read_only, None);
        assert_eq!(ConfigFile::parse("").unwrap(), ConfigFile::default());
        let e = ConfigFile::parse("stor = \"/x\"").unwrap_err().to_string();
        assert!(
            e.starts_with("config: ") && e.contains("unknown field `stor`"),
            "{e}"
        );
        assert_eq!(parse_tls_mode("require").unwrap(), TlsMode::Require);
        assert_eq!(
            parse_tls_mode("on").unwrap_err().to_string(),
            "tls mode \"on\" is not one of off, allow, require"
        );
    }

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "127.0.0.1:10809".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:10809".parse().unwrap())
        );
        assert_eq!(
            "[::1]:0".parse::<ListenAddr>().unwrap().to_string(),
            "[::1]:0"
        );
        assert_eq!(
            "unix:/run/nbd.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/nbd.sock".into())
        );
        assert_eq!(
            "unix:".parse::<ListenAddr>().unwrap_err().to_string(),
            "empty unix socket path"
        );
        assert_eq!(
            "localhost".parse::<ListenAddr>().unwrap_err().to_string(),
            "listen address \"localhost\" is neither HOST:PORT nor unix:PATH"
        );
    }

    #[test]
    fn metrics_endpoint_serves_prometheus_text() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ServiceOptions {
            store: dir.path().join("store"),
            listen: vec![ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())],
            read_only: false,
            tls_mode: TlsMode::Off,
            tls_cert: None,
            tls_key: None,
            metrics: Some("127.0.0.1:0".parse().unwrap()),
        };
        rt.block_on(async {
            let service = Service::bind(&opts).await.unwrap();
            let addr = service.metrics_addr().unwrap();
            let m = service.server().metrics().export("disk\"0");
            m.record(0, true, 4096, 0, Duration::from_micros(70));
            m.record(1, false, 0, 0, Duration::from_millis(3));
            let server = Arc::clone(service.server());
            let task = tokio::spawn(service.run());
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
            for line in [
                "nbd_requests_total{export=\"disk\\\"0\",command=\"read\"} 1",
                "nbd_errors_total{export=\"disk\\\"0\",command=\"write\"} 1",
                "nbd_read_bytes_total{export=\"disk\\\"0\"} 4096",
                "nbd_request_duration_seconds_bucket{export=\"disk\\\"0\",le=\"0.0001\"} 1",
                "nbd_request_duration_seconds_bucket{export=\"disk\\\"0\",le=\"+Inf\"} 2",
                "nbd_request_duration_seconds_count{export=\"disk\\\"0\"} 2",
            ] {
                assert!(body.contains(line), "missing {line}\n{body}");
            }
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /other HTTP/1.1\r\n\r\n").await.unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).await.unwrap();
            assert!(body.starts_with("HTTP/1.1 404"), "{body}");
            server.shutdown();
            task.await.unwrap().unwrap();
        });
    }

    #[test]
    fn tls_needs_credentials() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ServiceOptions {
            store: dir.path().to_owned(),
            listen: vec![ListenAddr::Unix(dir.path().join("s"))],
            read_only: false,
            tls_mode: TlsMode::Require,
            tls_cert: None,
            tls_key: None,
            metrics: None,
        };
        let e = rt.block_on(Service::bind(&opts)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "tls allow or require needs both a certificate and a key"
        );
        let opts = ServiceOptions {
            listen: vec![],
            tls_mode: TlsMode::Off,
            ..opts
        };
        let e = rt.block_on(Service::bind(&opts)).unwrap_err();
        assert_eq!(e.to_string(), "at least one listen address is needed");
    }
}
