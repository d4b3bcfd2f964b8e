//! In-process: snapshot write and restore time.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use certgate::clock::SystemClock;
use certgate::registry::Registry;

use crate::inprocess::{block_on, register_many, registry_inputs, SelfProfile};
use crate::{Error, StoreOpts};

/// Snapshot write and restore time of a registry of `clients` clients.
pub fn snapshot(opts: &StoreOpts) -> Result<(), Error> {
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("certgate-bench-");
    let dir = match &opts.tmp {
        Some(base) => tmp.tempdir_in(base)?,
        None => tmp.tempdir()?,
    };
    let (config, cert) = registry_inputs(&opts.config, Some(dir.path()))?;
    let clock = Arc::new(SystemClock);
    let registry = Arc::new(Registry::from_config(&config, clock.clone())?);
    // Every registration returns once its journal record is on disk, as a server's would.
    let (register_secs, _) =
        register_many(&registry, &cert, opts.clients, opts.certificate_per_client)?;
    let journal_bytes = files_size(dir.path(), "journal-")?;

    let profile = SelfProfile::start(opts.perf.as_deref(), "write");
    let started = Instant::now();
    let stats = registry.snapshot()?.ok_or("the registry has no data dir")?;
    let write_secs = started.elapsed().as_secs_f64();
    profile.stop();
    // Dropping a million records costs seconds and is not what is measured; the journal
    // writer thread stays behind idle (nothing appends to it any more).
    std::mem::forget(registry);

    let profile = SelfProfile::start(opts.perf.as_deref(), "restore");
    let started = Instant::now();
    let restored = Registry::from_config(&config, clock)?;
    let restore_secs = started.elapsed().as_secs_f64();
    profile.stop();
    let restored_clients = block_on(restored.store().client_count())? as usize;
    std::mem::forget(restored);
    if restored_clients != opts.clients {
        return Err(format!(
            "restored {restored_clients} clients, expected {}",
            opts.clients
        )
        .into());
    }
    let report = json!({
        "workload": "snapshot",
        "clients": opts.clients,
        "register_s": register_secs,
        "journal_bytes": journal_bytes,
        "write_s": write_secs,
        "snapshot_bytes": stats.bytes,
        "restore_s": restore_secs,
        "restored_clients": restored_clients,
    });
    if opts.json {
        println!("{report}");
    } else {
        println!("snapshot: {} clients", opts.clients);
        println!(
            "  write   {write_secs:.2} s, {:.1} MB ({:.0} B per client)",
            stats.bytes as f64 / 1e6,
            stats.bytes as f64 / opts.clients as f64
        );
        println!("  restore {restore_secs:.2} s ({restored_clients} clients)");
        println!(
            "  (registering took {register_secs:.2} s; journal {:.1} MB)",
            journal_bytes as f64 / 1e6
        );
    }
    Ok(())
}

pub fn files_size(dir: &Path, prefix: &str) -> Result<u64, Error> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}
