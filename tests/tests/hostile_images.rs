//! Hostile input (issue 2): inspection of 1,000 mutated copies of the builder images neither
//! panics, nor hangs, nor allocates beyond a stated cap.
//!
//! Mutations are copy-on-write ([`e2e::Mutated`]) so a 300 MiB image costs nothing to copy. Most
//! flips land in bytes a clean inspection of the image actually read (recorded with
//! `CountingDisk`), where the parsers are; the rest land anywhere, and one in ten mutations is a
//! truncation. The seed is fixed, so a failure names a reproducible mutation.
#![allow(
    unsafe_code,
    reason = "a counting global allocator is the only way to bound memory"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use disk::open::{OpenOptions, open};
use disk::testkit::CountingDisk;
use disk::{BlockRead, SharedRead};
use e2e::{Mutated, Rng, within};

/// No single inspection may hold more than this much heap at once (house principle 2).
const LIVE_CAP: usize = 1 << 30;
/// Total mutated copies, spread over the images.
const MUTATIONS: usize = 1000;
/// One inspection of a damaged image must finish within this (a hang otherwise).
const HANG_LIMIT: Duration = Duration::from_secs(60);

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's layout unchanged and
// only adds atomic bookkeeping, so the allocator contract holds exactly as for `System`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded with the same layout, as the caller promised it is valid.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                + (new_size - layout.size());
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: `ptr`/`layout` come from a previous allocation by `System`; forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn hot_ranges(dev: SharedRead) -> Vec<(u64, usize)> {
    let counting = Arc::new(CountingDisk::new(dev));
    let _ = inspect::inspect(counting.clone(), "clean", "raw").expect("clean image inspects");
    counting.log()
}

#[test]
fn inspect_survives_mutated_builder_images() {
    let names = images::names();
    let per_image = MUTATIONS.div_ceil(names.len());
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    let mut done = 0usize;
    let mut with_findings = 0usize;
    for name in names {
        let path = images::build(name).unwrap_or_else(|e| panic!("build {name}: {e}"));
        let opened = open(path.to_str().unwrap(), &OpenOptions::new()).unwrap();
        let base = opened.read();
        let hot = hot_ranges(base.clone());
        assert!(
            !hot.is_empty(),
            "{name}: a clean inspection reads something"
        );
        for i in 0..per_image {
            let m: Arc<dyn BlockRead> = Arc::new(Mutated::random(base.clone(), &hot, &mut rng));
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let what = format!("{name} mutation {i}");
            let r = within(HANG_LIMIT, &what, move || {
                inspect::inspect(m, "mutated", "raw")
            });
            let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
            assert!(
                peak < LIVE_CAP,
                "{what}: inspection held {peak} bytes, over the {LIVE_CAP}-byte cap"
            );
            // Damage becomes findings or a clean error, never a panic (a panic fails `within`'s
            // thread and so this test).
            if let Ok(r) = r
                && !r.findings.is_empty()
            {
                with_findings += 1;
            }
            done += 1;
        }
    }
    assert!(done >= MUTATIONS, "ran {done} mutations");
    // The mutations must actually hit parsers: most damaged images produce findings.
    assert!(
        with_findings > done / 4,
        "only {with_findings} of {done} mutated images produced findings"
    );
    eprintln!("{done} mutated images inspected; {with_findings} produced findings");
}
