//! In-process: RSS and live heap growth per registered client.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use serde_json::json;

use certgate::clock::SystemClock;
use certgate::registry::Registry;

use crate::inprocess::{register_many, registry_inputs, SelfProfile};
use crate::{Error, StoreOpts};

/// RSS growth per registered client.
pub fn memory(opts: &StoreOpts) -> Result<(), Error> {
    use std::mem::size_of;
    let (config, cert) = registry_inputs(&opts.config, None)?;
    let registry = Arc::new(Registry::from_config(&config, Arc::new(SystemClock))?);
    let before = rss_kib()?;
    let heap = HeapCount::start();
    let profile = SelfProfile::start(opts.perf.as_deref(), "register");
    let (secs, metadata_json) =
        register_many(&registry, &cert, opts.clients, opts.certificate_per_client)?;
    profile.stop();
    let (heap_bytes, allocations) = heap.stop();
    let after = rss_kib()?;
    let n = opts.clients as f64;
    let per_client = (after.saturating_sub(before) * 1024) as f64 / n;
    let report = json!({
        "workload": "memory",
        "clients": opts.clients,
        "certificate_per_client": opts.certificate_per_client,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_client": per_client,
        "metadata_json_bytes": metadata_json,
        "overhead_bytes": per_client - metadata_json as f64,
        "heap_bytes_per_client": heap_bytes as f64 / n,
        "allocations_per_client": allocations as f64 / n,
        "size_of": {
            "model::ClientRecord": size_of::<certgate::model::ClientRecord>(),
            "metadata::ClientMetadata": size_of::<certgate::metadata::ClientMetadata>(),
            "model::AccessToken": size_of::<certgate::model::AccessToken>(),
        },
        "register_s": secs,
        "registrations_per_s": n / secs,
    });
    // Freeing a million records one by one only slows the exit down.
    std::mem::forget(registry);
    if opts.json {
        println!("{report}");
    } else {
        println!(
            "memory: {} clients, RSS {} → {} KiB",
            opts.clients, before, after
        );
        println!(
            "  {per_client:.0} B per client = {metadata_json} B metadata JSON + {:.0} B overhead",
            per_client - metadata_json as f64
        );
        println!(
            "  live heap {:.0} B per client in {:.1} allocations (the rest of the RSS is malloc overhead)",
            heap_bytes as f64 / n,
            allocations as f64 / n
        );
        println!("  sizes: {}", report["size_of"]);
        println!(
            "  registered in {secs:.2} s ({:.0} registrations/s on one thread)",
            n / secs
        );
    }
    Ok(())
}

/// (the memory workload only; everywhere else it costs one relaxed load per call).
pub struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        if COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

/// Net heap growth between `start` and `stop`.
pub struct HeapCount;

impl HeapCount {
    pub fn start() -> Self {
        LIVE_BYTES.store(0, Ordering::Relaxed);
        LIVE_ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        Self
    }

    /// (bytes, allocations) still live that were allocated while counting (frees of
    /// older blocks meanwhile make this a slight underestimate).
    pub fn stop(self) -> (i64, i64) {
        COUNTING.store(false, Ordering::Relaxed);
        (
            LIVE_BYTES.load(Ordering::Relaxed),
            LIVE_ALLOCS.load(Ordering::Relaxed),
        )
    }
}

/// Resident set size of this process (`VmRSS`), in KiB.
pub fn rss_kib() -> Result<u64, Error> {
    rss_of("/proc/self/status")
}

/// Resident set size of process `pid` (`VmRSS`), in KiB.
pub fn rss_kib_of(pid: u32) -> Result<u64, Error> {
    rss_of(&format!("/proc/{pid}/status"))
}

fn rss_of(path: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(path)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}
