//! `rehost gateway`: serve volumes over NBD and manage the volume store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use nbd_gateway::{
    ConfigFile, ListenAddr, Service, ServiceOptions, Store, TlsMode, parse_tls_mode,
};

/// Serve volumes over NBD and manage the volume store.
#[derive(Debug, clap::Args)]
pub(crate) struct GatewayArgs {
    #[command(subcommand)]
    command: GatewayCommand,
}

#[derive(Debug, clap::Subcommand)]
enum GatewayCommand {
    /// Serve the store's volumes and snapshots over NBD until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Create, list and remove volumes and their snapshots.
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Debug, clap::Args)]
struct StoreArg {
    /// The store directory (created if missing).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TlsArg {
    /// No TLS: STARTTLS is refused.
    Off,
    /// Clients may upgrade to TLS.
    Allow,
    /// Clients must upgrade to TLS before anything else.
    Require,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (keys: store, listen, read_only, tls, tls_cert, tls_key,
    /// metrics); flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The store directory (created if missing).
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Where to listen: HOST:PORT or unix:PATH (repeatable; default 127.0.0.1:10809).
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Serve every export read-only.
    #[arg(long)]
    read_only: bool,
    /// TLS policy (default off); allow and require need --tls-cert and --tls-key.
    #[arg(long, value_enum)]
    tls: Option<TlsArg>,
    /// PEM certificate chain for TLS.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

#[derive(Debug, clap::Subcommand)]
enum VolumeCommand {
    /// Create an empty (sparse) volume.
    Create {
        #[command(flatten)]
        store: StoreArg,
        /// Volume name (A-Z a-z 0-9 . _ -); also its export name.
        name: String,
        /// Size in bytes, or with a suffix K, M, G, T (powers of 1024).
        size: String,
        /// Description shown to NBD clients.
        #[arg(long, default_value = "")]
        description: String,
        /// Data format: raw (a sparse file) or qcow2.
        #[arg(long, default_value = "raw")]
        format: String,
    },
    /// List volumes.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume and all its snapshots.
    Rm {
        #[command(flatten)]
        store: StoreArg,
        /// Volume name.
        name: String,
    },
    /// Take a read-only snapshot, served as VOLUME@SNAPSHOT.
    Snapshot {
        #[command(flatten)]
        store: StoreArg,
        /// Volume name.
        name: String,
        /// Snapshot name.
        snapshot: String,
    },
    /// List a volume's snapshots.
    Snapshots {
        #[command(flatten)]
        store: StoreArg,
        /// Volume name.
        name: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `4096`, `512K`, `10G`, `1TiB` (binary units).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("size {s:?} is not a number with an optional K/M/G/T suffix"))?;
    n.checked_mul(1u64 << shift)
        .with_context(|| format!("size {s:?} overflows 64 bits"))
}

/// Runs `rehost gateway`.
pub(crate) fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        GatewayCommand::Serve(a) => serve(a),
        GatewayCommand::Volume(v) => volume(v),
    }
}

/// The listening address when neither the command line nor the config file names one.
const DEFAULT_LISTEN: &str = "127.0.0.1:10809";

/// Merges the config file (if any) and the flags into validated service options.
fn serve_options(a: ServeArgs) -> anyhow::Result<ServiceOptions> {
    let file = match &a.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let store = a
        .store
        .or(file.store)
        .context("no store: pass --store DIR or set store in the config file")?;
    let listen = if !a.listen.is_empty() {
        a.listen
    } else if !file.listen.is_empty() {
        file.listen
    } else {
        vec![DEFAULT_LISTEN.to_owned()]
    };
    let listen = listen
        .iter()
        .map(|l| l.parse::<ListenAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let tls_mode = match (a.tls, file.tls) {
        (Some(TlsArg::Off), _) => TlsMode::Off,
        (Some(TlsArg::Allow), _) => TlsMode::Allow,
        (Some(TlsArg::Require), _) => TlsMode::Require,
        (None, Some(t)) => parse_tls_mode(&t)?,
        (None, None) => TlsMode::Off,
    };
    Ok(ServiceOptions {
        store,
        listen,
        read_only: a.read_only || file.read_only.unwrap_or(false),
        tls_mode,
        tls_cert: a.tls_cert.or(file.tls_cert),
        tls_key: a.tls_key.or(file.tls_key),
        metrics: a.metrics.or(file.metrics),
    })
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let opts = serve_options(a)?;
    Service::run_blocking(&opts, |service| {
        for addr in service.addrs() {
            eprintln!("rehost: serving NBD on {addr}");
        }
        if let Some(m) = service.metrics_addr() {
            eprintln!("rehost: metrics on http://{m}/metrics");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

fn volume(v: VolumeCommand) -> anyhow::Result<ExitCode> {
    match v {
        VolumeCommand::Create {
            store,
            name,
            size,
            description,
            format,
        } => {
            let size = parse_size(&size)?;
            let info = Store::open(store.store)?.create_volume_with_format(
                &name,
                size,
                &description,
                format.parse()?,
            )?;
            println!("created volume {} ({} bytes)", info.name, info.size);
        }
        VolumeCommand::List { store, json } => {
            let vols = Store::open(store.store)?.list_volumes()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&vols)?);
            } else {
                println!("{:<32} {:>16}  DESCRIPTION", "NAME", "SIZE");
                for v in vols {
                    println!("{:<32} {:>16}  {}", v.name, v.size, v.description);
                }
            }
        }
        VolumeCommand::Rm { store, name } => {
            Store::open(store.store)?.remove_volume(&name)?;
            println!("removed volume {name}");
        }
        VolumeCommand::Snapshot {
            store,
            name,
            snapshot,
        } => {
            let info = Store::open(store.store)?.create_snapshot(&name, &snapshot)?;
            println!(
                "created snapshot {}@{} ({:?})",
                info.volume, info.name, info.method
            );
        }
        VolumeCommand::Snapshots { store, name, json } => {
            let snaps = Store::open(store.store)?.list_snapshots(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snaps)?);
            } else {
                println!("{:<40} {:>16}  METHOD", "EXPORT", "SIZE");
                for s in snaps {
                    let export = format!("{}@{}", s.volume, s.name);
                    println!("{export:<40} {:>16}  {:?}", s.size, s.method);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayArgs,
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let mut full = vec!["gateway", "serve"];
        full.extend_from_slice(args);
        match Cli::parse_from(full).gateway.command {
            GatewayCommand::Serve(a) => a,
            GatewayCommand::Volume(_) => unreachable!("parsed a serve command"),
        }
    }

    #[test]
    fn serve_flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("gw.toml");
        std::fs::write(
            &cfg,
            "store = \"/srv/a\"\nlisten = [\"unix:/run/a.sock\"]\ntls = \"allow\"\nread_only = true\n",
        )
        .unwrap();
        let cfg = cfg.to_str().unwrap();
        let o = serve_options(serve_args(&["--config", cfg])).unwrap();
        assert_eq!(o.store, PathBuf::from("/srv/a"));
        assert_eq!(o.listen, vec![ListenAddr::Unix("/run/a.sock".into())]);
        assert_eq!(o.tls_mode, TlsMode::Allow);
        assert!(o.read_only);
        let o = serve_options(serve_args(&[
            "--config",
            cfg,
            "--store",
            "/srv/b",
            "--listen",
            "127.0.0.1:1",
            "--tls",
            "off",
        ]))
        .unwrap();
        assert_eq!(o.store, PathBuf::from("/srv/b"));
        assert_eq!(
            o.listen,
            vec![ListenAddr::Tcp("127.0.0.1:1".parse().unwrap())]
        );
        assert_eq!(o.tls_mode, TlsMode::Off);
        let o = serve_options(serve_args(&["--store", "/s"])).unwrap();
        assert_eq!(
            o.listen,
            vec![ListenAddr::Tcp(DEFAULT_LISTEN.parse().unwrap())]
        );
        assert_eq!(o.tls_mode, TlsMode::Off);
        let e = serve_options(serve_args(&[])).unwrap_err().to_string();
        assert_eq!(
            e,
            "no store: pass --store DIR or set store in the config file"
        );
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size("3MB").unwrap(), 3 << 20);
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
