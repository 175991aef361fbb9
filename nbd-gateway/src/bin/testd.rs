//! A minimal server process for the crate's durability test, which must SIGKILL a separate
//! process. Users run `rehost gateway serve`.
//!
//! Usage: `nbd-gateway-testd STORE LISTEN`; prints each bound address on stdout.

use std::io::Write as _;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(store), Some(listen)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: nbd-gateway-testd STORE LISTEN");
        return std::process::ExitCode::from(2);
    };
    let listen = match listen.parse() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("nbd-gateway-testd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let opts = nbd_gateway::ServiceOptions {
        store: store.into(),
        listen: vec![listen],
        read_only: false,
        tls_mode: nbd_gateway::TlsMode::Off,
        tls_cert: None,
        tls_key: None,
        metrics: None,
    };
    let result = nbd_gateway::Service::run_blocking(&opts, |service| {
        let mut out = std::io::stdout().lock();
        for a in service.addrs() {
            let _ = writeln!(out, "{a}");
        }
        let _ = out.flush();
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nbd-gateway-testd: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
