//! Snapshots and start-up recovery.
//!
//! A snapshot `snapshot-<gen>.snap` holds the state that every journal before generation
//! `<gen>` produced (and possibly some changes of journal `<gen>` itself: it is taken while
//! writes continue, which replay tolerates because records carry resulting states). It is
//! written to a temporary file, fsynced, renamed, and the directory fsynced.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::frame::{self, Tail};
use super::journal::{self, journal_path, sync_dir};
use super::{codec, Change, StoreError};

/// The snapshot file name of generation `gen`.
pub fn snapshot_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("snapshot-{gen:020}.snap"))
}

/// Writes `changes` as snapshot `gen` atomically; returns its size in bytes.
pub fn write(
    dir: &Path,
    gen: u64,
    changes: impl Iterator<Item = Change>,
) -> Result<u64, StoreError> {
    let path = snapshot_path(dir, gen);
    let tmp = path.with_extension("snap.tmp");
    let io = |e: std::io::Error| StoreError(format!("{}: {e}", tmp.display()));
    let mut file = fs::File::create(&tmp).map_err(io)?;
    // Frames are encoded straight into one large buffer that goes to the file as is: no
    // second copy through a BufWriter (copying dominates the cost of a snapshot).
    const CHUNK: usize = 8 << 20;
    let mut chunk = Vec::with_capacity(CHUNK + (64 << 10));
    frame::encode_with(&mut chunk, |o| codec::encode_header(gen, o));
    let mut n = 0u64;
    for change in changes {
        frame::encode_with(&mut chunk, |o| codec::encode(&change, o));
        n += 1;
        if chunk.len() >= CHUNK {
            file.write_all(&chunk).map_err(io)?;
            chunk.clear();
        }
    }
    frame::encode_with(&mut chunk, |o| codec::encode_trailer(n, o));
    file.write_all(&chunk).map_err(io)?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    drop(file);
    fs::rename(&tmp, &path)
        .map_err(|e| StoreError(format!("{}: cannot rename: {e}", path.display())))?;
    sync_dir(dir).map_err(|e| StoreError(format!("{}: cannot sync: {e}", dir.display())))?;
    Ok(size)
}

/// Removes snapshots and journals older than generation `gen`.
pub fn remove_older(dir: &Path, gen: u64) {
    let Ok((snapshots, journals)) = generations(dir) else {
        return;
    };
    for g in snapshots.into_iter().filter(|g| *g < gen) {
        let _ = fs::remove_file(snapshot_path(dir, g));
    }
    for g in journals.into_iter().filter(|g| *g < gen) {
        journal::remove(dir, g);
    }
}

/// Loads the newest snapshot and replays the journals after it, calling `apply` for each
/// change in order. Returns the generation to keep appending to.
///
/// A torn last record of the last journal is dropped with a warning (and cut off, so new
/// records do not follow garbage); any other damage refuses to start, naming the file and
/// byte offset.
///
/// `apply` is called from several threads while the snapshot loads (a snapshot holds each
/// client once, so its records commute), then in order for the journals.
pub fn recover(dir: &Path, apply: impl Fn(Change) + Sync) -> Result<u64, StoreError> {
    fs::create_dir_all(dir)
        .map_err(|e| StoreError(format!("{}: cannot create: {e}", dir.display())))?;
    for entry in fs::read_dir(dir)
        .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            // An interrupted snapshot write: the previous snapshot is still complete.
            let _ = fs::remove_file(entry.path());
        }
    }
    let (snapshots, journals) = generations(dir)?;
    let base = snapshots.last().copied();
    if let Some(gen) = base {
        load_snapshot(&snapshot_path(dir, gen), gen, &apply)?;
    }
    let live: Vec<u64> = journals
        .iter()
        .copied()
        .filter(|g| base.is_none_or(|b| *g >= b))
        .collect();
    for (i, gen) in live.iter().enumerate() {
        let last = i + 1 == live.len();
        replay_journal(&journal_path(dir, *gen), last, &apply)?;
    }
    // Journals a snapshot already covers (a crash between rename and clean-up).
    for g in journals.iter().filter(|g| base.is_some_and(|b| **g < b)) {
        journal::remove(dir, *g);
    }
    Ok(live.last().copied().or(base).unwrap_or(0))
}

fn load_snapshot(
    path: &Path,
    gen: u64,
    apply: &(impl Fn(Change) + Sync),
) -> Result<(), StoreError> {
    let bytes =
        fs::read(path).map_err(|e| StoreError(format!("{}: cannot read: {e}", path.display())))?;
    let (records, tail) = frame::decode(&bytes);
    let corrupt = |offset: usize, why: &str| {
        StoreError(format!(
            "{}: corrupt snapshot at byte offset {offset}: {why}",
            path.display()
        ))
    };
    match tail {
        Tail::Clean => {}
        Tail::Torn { offset } | Tail::Corrupt { offset } => {
            return Err(corrupt(offset, "damaged record"))
        }
    }
    let Some((&first, rest)) = records.split_first() else {
        return Err(corrupt(0, "missing header"));
    };
    if codec::decode_header(first) != Some((1, gen)) {
        return Err(corrupt(0, "unexpected header"));
    }
    let Some((&last, body)) = rest.split_last() else {
        return Err(corrupt(bytes.len(), "missing trailer (truncated)"));
    };
    let offset_of = |record: &[u8]| record.as_ptr() as usize - bytes.as_ptr() as usize - 8;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let per_thread = body.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = body
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    for record in part {
                        let change = codec::decode(record).map_err(|e| {
                            corrupt(offset_of(record), &format!("unreadable record: {e}"))
                        })?;
                        apply(change);
                    }
                    Ok::<(), StoreError>(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| corrupt(0, "a restore thread panicked"))??;
        }
        Ok::<(), StoreError>(())
    })?;
    let n = body.len() as u64;
    let offset = offset_of(last);
    match codec::decode_trailer(last) {
        Some(count) if count == n => Ok(()),
        Some(_) => Err(corrupt(offset, "record count does not match the trailer")),
        None => Err(corrupt(offset, "missing trailer (truncated)")),
    }
}

fn replay_journal(path: &Path, last: bool, apply: &impl Fn(Change)) -> Result<(), StoreError> {
    let bytes =
        fs::read(path).map_err(|e| StoreError(format!("{}: cannot read: {e}", path.display())))?;
    let (records, tail) = frame::decode(&bytes);
    let mut offset = 0usize;
    for record in records {
        let change = codec::decode(record).map_err(|e| {
            StoreError(format!(
                "{}: corrupt journal at byte offset {offset}: unreadable record: {e}",
                path.display()
            ))
        })?;
        apply(change);
        offset += 8 + record.len();
    }
    match tail {
        Tail::Clean => Ok(()),
        Tail::Torn { offset } if last => {
            tracing::warn!(
                file = %path.display(),
                offset,
                dropped_bytes = bytes.len() - offset,
                "dropping a torn record at the end of the journal (crash during a write)"
            );
            let file = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
            file.set_len(offset as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    StoreError(format!("{}: cannot cut the torn tail: {e}", path.display()))
                })
        }
        Tail::Torn { offset } | Tail::Corrupt { offset } => Err(StoreError(format!(
            "{}: corrupt journal at byte offset {offset}: damaged record followed by more data",
            path.display()
        ))),
    }
}

/// Snapshot and journal generations present in `dir`, ascending.
fn generations(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), StoreError> {
    let mut snapshots = Vec::new();
    let mut journals = Vec::new();
    for entry in fs::read_dir(dir)
        .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?
        .flatten()
    {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(g) = name
            .strip_prefix("snapshot-")
            .and_then(|s| s.strip_suffix(".snap"))
        {
            if let Ok(g) = g.parse() {
                snapshots.push(g);
            }
        } else if let Some(g) = name
            .strip_prefix("journal-")
            .and_then(|s| s.strip_suffix(".log"))
        {
            if let Ok(g) = g.parse() {
                journals.push(g);
            }
        }
    }
    snapshots.sort_unstable();
    journals.sort_unstable();
    Ok((snapshots, journals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_on_an_empty_dir_starts_at_generation_zero() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let gen = recover(dir.path(), |_| {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(gen.unwrap(), 0);
        assert_eq!(n.into_inner(), 0);
    }

    #[test]
    fn snapshot_round_trip_and_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let changes = (0..10).map(|i| Change::Delete {
            id: format!("c{i}"),
        });
        write(dir.path(), 3, changes).unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let gen = recover(dir.path(), |c| seen.lock().unwrap().push(c)).unwrap();
        assert_eq!(gen, 3);
        assert_eq!(seen.into_inner().unwrap().len(), 10);

        let path = snapshot_path(dir.path(), 3);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = recover(dir.path(), |_| {}).unwrap_err();
        assert!(
            err.0.contains("snapshot-00000000000000000003.snap"),
            "{err}"
        );
        assert!(err.0.contains("offset"), "{err}");
    }
}
