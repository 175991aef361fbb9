//! Helpers for rehost's end-to-end tests: tool checks, copy-on-write mutation of big images, and a
//! watchdog so a hang fails loudly instead of stalling CI.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use disk::{BlockRead, Extent, Result};

/// True if `tool` is on PATH; otherwise prints `skipping: <tool> not found (<why>)`.
#[must_use]
pub fn have_tool(tool: &str, why: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()));
    if !found {
        eprintln!("skipping: {tool} not found ({why})");
    }
    found
}

/// A deterministic xorshift PRNG, so every mutation run is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is replaced).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A read-only view of a base device with some bytes replaced and possibly a shorter size:
/// a cheap way to make 1,000 mutated copies of a 300 MiB image.
pub struct Mutated {
    base: Arc<dyn BlockRead>,
    size: u64,
    patches: BTreeMap<u64, u8>,
}

impl Mutated {
    /// `base` with `patches` applied and its size cut to `size` (at most the base size).
    #[must_use]
    pub fn new(base: Arc<dyn BlockRead>, patches: BTreeMap<u64, u8>, size: u64) -> Self {
        let size = size.min(base.size());
        Self {
            base,
            size,
            patches,
        }
    }

    /// A random mutation of `base` focused on `hot` ranges (the bytes a clean parse read):
    /// either a few byte flips there, or a truncation.
    #[must_use]
    pub fn random(base: Arc<dyn BlockRead>, hot: &[(u64, usize)], rng: &mut Rng) -> Self {
        let size = base.size();
        let mut patches = BTreeMap::new();
        if rng.below(10) == 0 {
            let cut = rng.below(size);
            return Self::new(base, patches, cut);
        }
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            let off = if hot.is_empty() || rng.below(8) == 0 {
                rng.below(size)
            } else {
                let (o, l) = hot[usize::try_from(rng.below(hot.len() as u64)).unwrap_or(0)];
                o + rng.below(l as u64)
            };
            let mut b = [0u8; 1];
            if base.read_exact_at(off, &mut b).is_ok() {
                let v = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => b[0] ^ (1 << rng.below(8)),
                    _ => u8::try_from(rng.below(256)).unwrap_or(0),
                };
                patches.insert(off, v);
            }
        }
        Self::new(base, patches, size)
    }
}

impl BlockRead for Mutated {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        disk::check_range(self.size, offset, buf.len() as u64)?;
        self.base.read_exact_at(offset, buf)?;
        let end = offset + buf.len() as u64;
        for (&o, &v) in self.patches.range(offset..end) {
            buf[usize::try_from(o - offset).unwrap_or(0)] = v;
        }
        Ok(())
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        disk::check_range(self.size, offset, len)?;
        Ok(vec![Extent {
            offset,
            len,
            kind: disk::ExtentKind::Data,
        }])
    }
}

/// Runs `f` on another thread and panics if it does not finish within `limit` (a hang).
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish within {limit:?} (hang?)")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}
