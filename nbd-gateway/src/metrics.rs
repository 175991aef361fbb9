//! Per-export counters and a Prometheus text endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];
/// Command names, indexed by NBD command number (spec: "Request types"); the last is "other".
pub(crate) const COMMAND_NAMES: [&str; 9] = [
    "read",
    "write",
    "disc",
    "flush",
    "trim",
    "cache",
    "write_zeroes",
    "block_status",
    "other",
];
/// Longest HTTP request head the metrics endpoint reads.
const MAX_HTTP_REQUEST: usize = 8192;
/// How long the metrics endpoint waits for a request head.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of one export.
#[derive(Debug, Default)]
pub struct ExportMetrics {
    requests: [AtomicU64; COMMAND_NAMES.len()],
    errors: [AtomicU64; COMMAND_NAMES.len()],
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl ExportMetrics {
    /// Records one finished request.
    pub(crate) fn record(&self, cmd: u16, ok: bool, read: u64, written: u64, latency: Duration) {
        let i = usize::from(cmd).min(COMMAND_NAMES.len() - 1);
        if let Some(c) = self.requests.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if !ok && let Some(c) = self.errors.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(
            u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Requests of command `cmd` seen so far.
    pub fn requests(&self, cmd: u16) -> u64 {
        let i = usize::from(cmd).min(COMMAND_NAMES.len() - 1);
        self.requests
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Bytes returned by reads so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes accepted by writes so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }
}

/// Every export's counters, keyed by export name.
#[derive(Debug, Default)]
pub struct Metrics {
    exports: Mutex<BTreeMap<String, Arc<ExportMetrics>>>,
    connections: AtomicU64,
}

impl Metrics {
    /// The counters of `export`, created on first use.
    pub fn export(&self, export: &str) -> Arc<ExportMetrics> {
        let mut map = self
            .exports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(map.entry(export.to_owned()).or_default())
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let map = self
            .exports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut s = String::new();
        // Writing to a String cannot fail; the results are ignored deliberately.
        let _ = writeln!(s, "# HELP nbd_connections_total Connections accepted.");
        let _ = writeln!(s, "# TYPE nbd_connections_total counter");
        let _ = writeln!(
            s,
            "nbd_connections_total {}",
            self.connections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP nbd_requests_total Requests by export and command."
        );
        let _ = writeln!(s, "# TYPE nbd_requests_total counter");
        for (name, m) in map.iter() {
            let name = escape(name);
            for (cmd, c) in COMMAND_NAMES.iter().zip(&m.requests) {
                let _ = writeln!(
                    s,
                    "nbd_requests_total{{export=\"{name}\",command=\"{cmd}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP nbd_errors_total Requests answered with an error."
        );
        let _ = writeln!(s, "# TYPE nbd_errors_total counter");
        for (name, m) in map.iter() {
            let name = escape(name);
            for (cmd, c) in COMMAND_NAMES.iter().zip(&m.errors) {
                let _ = writeln!(
                    s,
                    "nbd_errors_total{{export=\"{name}\",command=\"{cmd}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(s, "# HELP nbd_read_bytes_total Bytes sent by reads.");
        let _ = writeln!(s, "# TYPE nbd_read_bytes_total counter");
        for (name, m) in map.iter() {
            let _ = writeln!(
                s,
                "nbd_read_bytes_total{{export=\"{}\"}} {}",
                escape(name),
                m.bytes_read()
            );
        }
        let _ = writeln!(
            s,
            "# HELP nbd_written_bytes_total Bytes accepted by writes."
        );
        let _ = writeln!(s, "# TYPE nbd_written_bytes_total counter");
        for (name, m) in map.iter() {
            let _ = writeln!(
                s,
                "nbd_written_bytes_total{{export=\"{}\"}} {}",
                escape(name),
                m.bytes_written()
            );
        }
        let _ = writeln!(s, "# HELP nbd_request_duration_seconds Request latency.");
        let _ = writeln!(s, "# TYPE nbd_request_duration_seconds histogram");
        for (name, m) in map.iter() {
            let name = escape(name);
            for (bound, b) in LATENCY_BUCKETS.iter().zip(&m.latency_buckets) {
                let _ = writeln!(
                    s,
                    "nbd_request_duration_seconds_bucket{{export=\"{name}\",le=\"{bound}\"}} {}",
                    b.load(Ordering::Relaxed)
                );
            }
            let count = m.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                s,
                "nbd_request_duration_seconds_bucket{{export=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let sum = Duration::from_nanos(m.latency_sum_ns.load(Ordering::Relaxed)).as_secs_f64();
            let _ = writeln!(
                s,
                "nbd_request_duration_seconds_sum{{export=\"{name}\"}} {sum}"
            );
            let _ = writeln!(
                s,
                "nbd_request_duration_seconds_count{{export=\"{name}\"}} {count}"
            );
        }
        s
    }
}

/// Escapes a label value (Prometheus text format: backslash, quote and newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted.
///
/// # Errors
/// Only if accepting fails fatally; per-connection errors are logged and ignored.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    loop {
        let (mut sock, peer) = listener.accept().await?;
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(HTTP_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HTTP_REQUEST {
                    let n = sock.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(buf.get(..n).unwrap_or_default());
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let first = head.split(|&b| b == b'\r').next().unwrap_or_default();
            let (status, body) = if first.starts_with(b"GET /metrics ") || first == b"GET /metrics"
            {
                ("200 OK", metrics.render())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(reply.as_bytes()).await {
                tracing::debug!(%peer, error = %e, "metrics reply failed");
            }
            let _ = sock.shutdown().await;
        });
    }
}
