//! `rehost-images`: build the test images (see the `images` library).
//!
//! ```text
//! rehost-images build NAME   build if not cached; print the raw image's absolute path
//! rehost-images build-all    build every image (root-only images are skipped when not root)
//! rehost-images list         print every image name with its cache state
//! ```

use std::io::Write as _;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: rehost-images build NAME | build-all | list");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = std::io::stdout();
    let mut out = out.lock();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["build", name] => match images::build(name) {
            Ok(p) => {
                let p = std::path::absolute(&p).unwrap_or(p);
                let _ = writeln!(out, "{}", p.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rehost-images: {}", chain(&e));
                ExitCode::from(2)
            }
        },
        ["build-all"] => {
            let mut failed = false;
            for name in images::names() {
                if matches!(images::needs_root(name), Ok(true)) && !rustix_is_root() {
                    eprintln!("rehost-images: skipping {name}: needs root (ntfs-3g mount)");
                    continue;
                }
                let start = std::time::Instant::now();
                match images::build(name) {
                    Ok(p) => {
                        let _ = writeln!(
                            out,
                            "{name}\t{}\t{:.1}s",
                            p.display(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                    Err(e) => {
                        eprintln!("rehost-images: {name}: {}", chain(&e));
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        ["list"] => {
            for name in images::names() {
                let state = match images::key(name) {
                    Ok(k) => {
                        let p = images::cache_dir().join(format!("{name}-{k}.raw"));
                        if p.exists() {
                            format!("cached {}", p.display())
                        } else {
                            "not built".to_owned()
                        }
                    }
                    Err(e) => format!("unavailable: {}", chain(&e)),
                };
                let _ = writeln!(out, "{name}\t{state}");
            }
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

fn rustix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
