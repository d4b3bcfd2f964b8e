//! Snapshots and start-up recovery.
//!
//! A snapshot `snapshot-<gen>.snap` holds the state that every journal before generation
//! `<gen>` produced (and possibly some changes of journal `<gen>` itself: it is taken while
//! writes continue, which replay tolerates because records carry resulting states). It is
//! written to a temporary file, fsynced, renamed, and the directory fsynced.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::codec::SnapshotHeader;
use super::frame::{self, Tail};
use super::journal::{self, journal_path, sync_dir};
use super::{codec, Change, StoreError};
use crate::model::ClientRecord;

/// Present in every data directory this release has written: from then on every journal
/// must start with its header and every generation must be there, so a deleted or emptied
/// file is detected instead of silently starting with less (SPEC §7).
pub const MARKER: &str = "certgate-data";

/// What recovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// The journal generation to keep appending to.
    pub generation: u64,
    /// Written by an earlier release (no marker): to be converted by a snapshot.
    pub legacy: bool,
}

/// Marks `dir` as written by this release (after its first journal exists).
pub fn mark(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(MARKER);
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let io = |e: std::io::Error| unavailable(format!("{}: {e}", path.display()));
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(b"certgate data directory, format 2\n")
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    sync_dir(dir).map_err(io)
}

fn unavailable(why: String) -> StoreError {
    StoreError::Unavailable(why)
}

/// The snapshot file name of generation `gen`.
pub fn snapshot_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("snapshot-{gen:020}.snap"))
}

/// Writes snapshot `gen` atomically, `clients` and then `others` (tokens); returns its size
/// in bytes.
///
/// The records are encoded on every core, batch by batch, and the batches written in
/// order: the file lists clients in the order of the map's shards, so the threads that
/// restore it (each taking a contiguous part) insert into different shards. Clients are
/// encoded from the shared records themselves, never copied first.
pub fn write(
    dir: &Path,
    gen: u64,
    clients: &[Arc<ClientRecord>],
    others: &[Change],
) -> Result<u64, StoreError> {
    let path = snapshot_path(dir, gen);
    let tmp = path.with_extension("snap.tmp");
    let io = |e: std::io::Error| unavailable(format!("{}: {e}", tmp.display()));
    let mut file = fs::File::create(&tmp).map_err(io)?;
    let mut head = Vec::new();
    let header = SnapshotHeader {
        generation: gen,
        counts: Some((clients.len() as u64, others.len() as u64)),
    };
    frame::encode_with(&mut head, |o| codec::encode_header(&header, o));
    file.write_all(&head).map_err(io)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let batches = clients.len().div_ceil(BATCH) + others.len().div_ceil(BATCH);
    // The disk writes what is already written while later batches are encoded: a flusher
    // thread fdatasyncs every FLUSH_EVERY bytes, so the final fsync has little left to do.
    let flusher = file.try_clone().map_err(io)?;
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let flush_error: Mutex<Option<std::io::Error>> = Mutex::new(None);
    let out = Ordered {
        state: Mutex::new(Turn {
            file,
            next: 0,
            unflushed: 0,
        }),
        turn: Condvar::new(),
        flush: Mutex::new(Some(flush_tx)),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for () in flush_rx {
                // An error here must fail the snapshot: the final fsync on the same open
                // file would not report it again.
                if let Err(e) = flusher.sync_data() {
                    if let Ok(mut slot) = flush_error.lock() {
                        *slot = Some(e);
                    }
                    return;
                }
            }
        });
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let out = &out;
                scope.spawn(move || {
                    let _unblock = UnblockOnPanic(out);
                    let mut packer = Packer::default();
                    // Batch k goes to thread k mod threads.
                    for k in (t..batches).step_by(threads) {
                        packer.clear();
                        let c = clients.len().div_ceil(BATCH);
                        if k < c {
                            let part = &clients[k * BATCH..clients.len().min((k + 1) * BATCH)];
                            for client in part {
                                packer.push(|o| codec::encode_client(client, o));
                            }
                        } else {
                            let k = k - c;
                            let part = &others[k * BATCH..others.len().min((k + 1) * BATCH)];
                            for change in part {
                                packer.push(|o| codec::encode(change, o));
                            }
                        }
                        out.write(k, packer.finish())?;
                    }
                    Ok::<(), std::io::Error>(())
                })
            })
            .collect();
        // The error to report is the one that happened, not another thread giving up
        // because of it.
        let mut first: Option<std::io::Error> = None;
        let mut gave_up = false;
        for worker in workers {
            let r = worker
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a snapshot thread panicked")));
            if let Err(e) = r {
                // The others may wait for this one's turn: let them see the failure.
                out.fail();
                if e.get_ref().is_some_and(|inner| inner.is::<AnotherFailed>()) {
                    gave_up = true;
                } else if first.is_none() {
                    first = Some(e);
                }
            }
        }
        // No more flushes: the flusher's loop ends with the channel.
        if let Ok(mut flush) = out.flush.lock() {
            flush.take();
        }
        match first {
            Some(e) => Err(e),
            None if gave_up => Err(std::io::Error::other(AnotherFailed)),
            None => Ok(()),
        }
    })
    .map_err(io)?;
    if let Some(e) = flush_error.into_inner().ok().flatten() {
        return Err(io(e));
    }
    let mut file = out
        .state
        .into_inner()
        .map_err(|_| io(std::io::Error::other("a snapshot thread panicked")))?
        .file;
    let mut tail = Vec::new();
    let n = (clients.len() + others.len()) as u64;
    frame::encode_with(&mut tail, |o| codec::encode_trailer(n, o));
    file.write_all(&tail).map_err(io)?;
    file.sync_all().map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    drop(file);
    fs::rename(&tmp, &path)
        .map_err(|e| unavailable(format!("{}: cannot rename: {e}", path.display())))?;
    sync_dir(dir).map_err(|e| unavailable(format!("{}: cannot sync: {e}", dir.display())))?;
    Ok(size)
}

/// Records per turn of a snapshot writer (about 6 MB of clients before compression).
const BATCH: usize = 8192;

/// Framed records per compressed batch record: large enough for LZ4 to find the
/// repetitions (its window is 64 KiB), small enough for a reader to hold several.
const BATCH_BYTES: usize = 1 << 20;

/// A writer's records, packed into compressed batch records (format 3).
#[derive(Default)]
struct Packer {
    /// Framed records not packed yet.
    framed: Vec<u8>,
    /// Batch records (and records too large for a batch), ready to write.
    packed: Vec<u8>,
}

impl Packer {
    /// Adds the record `encode` appends.
    fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.framed.len();
        frame::encode_with(&mut self.framed, encode);
        if self.framed.len() - start >= BATCH_BYTES {
            // A record this large is written as it is, after the batch before it: a batch
            // holding it could exceed what a reader accepts of one record.
            let record = self.framed.split_off(start);
            self.seal();
            self.packed.extend_from_slice(&record);
        } else if self.framed.len() >= BATCH_BYTES {
            self.seal();
        }
    }

    /// Packs the records added since the last batch into one.
    fn seal(&mut self) {
        let Self { framed, packed } = self;
        if !framed.is_empty() {
            frame::encode_with(packed, |o| codec::encode_batch(framed, o));
            framed.clear();
        }
    }

    /// Everything added, packed.
    fn finish(&mut self) -> &[u8] {
        self.seal();
        &self.packed
    }

    fn clear(&mut self) {
        self.framed.clear();
        self.packed.clear();
    }
}

/// The snapshot file and whose turn it is to write.
struct Ordered {
    state: Mutex<Turn>,
    turn: Condvar,
    /// Asks the flusher thread for an fdatasync (`None` once the writers are done).
    flush: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
}

struct Turn {
    file: fs::File,
    /// The next batch number to write.
    next: usize,
    /// Bytes written since the last flush request.
    unflushed: u64,
}

/// Bytes written between two requests to the flusher.
const FLUSH_EVERY: u64 = 64 << 20;

/// Wakes the other writers if this one panics, so none waits forever for its turn.
struct UnblockOnPanic<'a>(&'a Ordered);

impl Drop for UnblockOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

/// What a writer reports when it stops because another one failed.
#[derive(Debug)]
struct AnotherFailed;

impl std::fmt::Display for AnotherFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another snapshot thread failed")
    }
}

impl std::error::Error for AnotherFailed {}

/// A batch number no thread has: once failed, nobody waits for a turn any more.
const FAILED: usize = usize::MAX;

impl Ordered {
    /// Writes batch `k` once batches `0..k` are written.
    fn write(&self, k: usize, bytes: &[u8]) -> std::io::Result<()> {
        let poisoned = || std::io::Error::other("a snapshot thread panicked");
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        while state.next != k {
            if state.next == FAILED {
                return Err(std::io::Error::other(AnotherFailed));
            }
            state = self.turn.wait(state).map_err(|_| poisoned())?;
        }
        let result = state.file.write_all(bytes);
        state.next = if result.is_ok() { k + 1 } else { FAILED };
        state.unflushed += bytes.len() as u64;
        let flush = state.unflushed >= FLUSH_EVERY;
        if flush {
            state.unflushed = 0;
        }
        drop(state);
        self.turn.notify_all();
        if flush {
            if let Ok(sender) = self.flush.lock() {
                // A flush still running covers this one's bytes soon enough: never wait.
                let _ = sender.as_ref().map(|s| s.try_send(()));
            }
        }
        result
    }

    fn fail(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.next = FAILED;
        }
        self.turn.notify_all();
    }
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

/// The (clients, access tokens) the newest snapshot in `dir` holds, as its header says, so
/// a restore can size its tables before it starts; `None` when there is no snapshot or it
/// does not say (format 1). Only a hint: `recover` checks the file.
pub fn counts(dir: &Path) -> Option<(u64, u64)> {
    use std::io::Read as _;
    let (snapshots, _) = generations(dir).ok()?;
    let gen = *snapshots.last()?;
    let file = fs::File::open(snapshot_path(dir, gen)).ok()?;
    let len = file.metadata().ok()?.len();
    let mut head = Vec::with_capacity(64);
    file.take(64).read_to_end(&mut head).ok()?;
    let (records, _) = frame::decode(&head);
    let header = codec::decode_header(records.first()?)?;
    let (clients, tokens) = header.counts.filter(|_| header.generation == gen)?;
    // Every framed record takes more than 48 bytes, and LZ4 packs at most 255 bytes into
    // one: counts the file cannot hold are damage (which `recover` reports), not a size to
    // reserve.
    (clients.saturating_add(tokens) <= len.saturating_mul(255) / 48).then_some((clients, tokens))
}

/// Loads the newest snapshot and replays the journals after it, calling `apply` for each
/// change in order.
///
/// A torn last record is dropped with a warning (and cut off, so new records do not follow
/// garbage) when nothing but empty journals follows it — a graceful stop on a full disk can
/// leave one. Any other damage refuses to start, naming the file and byte offset; so does a
/// file that should be there and is not (a journal generation, or the snapshot a journal
/// continues from), or a journal emptied of its header.
///
/// `apply` is called from several threads while the snapshot loads (a snapshot holds each
/// record once, so its records commute), then in order for the journals.
pub fn recover(dir: &Path, apply: impl Fn(Change) + Sync) -> Result<Recovered, StoreError> {
    fs::create_dir_all(dir)
        .map_err(|e| unavailable(format!("{}: cannot create: {e}", dir.display())))?;
    for entry in fs::read_dir(dir)
        .map_err(|e| unavailable(format!("{}: {e}", dir.display())))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().ends_with(".tmp") {
            // An interrupted snapshot or journal start: what it replaces is still complete.
            let _ = fs::remove_file(entry.path());
        }
    }
    let marked = dir.join(MARKER).exists();
    let (snapshots, journals) = generations(dir)?;
    if snapshots.is_empty() && journals.is_empty() {
        if marked {
            return Err(damaged(dir, "journal-00000000000000000000.log is missing"));
        }
        // A new data directory.
        return Ok(Recovered {
            generation: 0,
            legacy: false,
        });
    }
    let base = snapshots.last().copied();
    if let Some(gen) = base {
        load_snapshot(&snapshot_path(dir, gen), gen, &apply, READ_CHUNK)?;
    }
    let first = base.unwrap_or(0);
    let live: Vec<u64> = journals.iter().copied().filter(|g| *g >= first).collect();
    // Every generation from the snapshot's (or 0) to the newest must be there.
    let mut expected = first;
    for gen in &live {
        if *gen != expected {
            break;
        }
        expected += 1;
    }
    if live.first() != Some(&first) || expected != live.last().map_or(first, |g| g + 1) {
        let missing = journal_path(dir, expected);
        let why = match base {
            Some(b) if expected == b => format!(
                "{} is missing: the journal that continues snapshot-{b:020}.snap",
                missing.display()
            ),
            None if expected == 0 => format!(
                "{} is missing: no snapshot covers the changes before it",
                missing.display()
            ),
            _ => format!("{} is missing", missing.display()),
        };
        return Err(damaged(dir, &why));
    }
    let contents: Vec<Vec<u8>> = live
        .iter()
        .map(|gen| {
            let path = journal_path(dir, *gen);
            fs::read(&path)
                .map_err(|e| unavailable(format!("{}: cannot read: {e}", path.display())))
        })
        .collect::<Result<_, _>>()?;
    let records: Vec<usize> = contents
        .iter()
        .zip(&live)
        .map(|(bytes, gen)| check_journal_start(dir, *gen, bytes, marked))
        .collect::<Result<_, _>>()?;
    for (i, gen) in live.iter().enumerate() {
        // A torn tail is a torn tail whatever empty journals a stop left after it.
        let last = records[i + 1..].iter().all(|n| *n == 0);
        replay_journal(&journal_path(dir, *gen), &contents[i], last, &apply)?;
    }
    // Journals a snapshot already covers (a crash between rename and clean-up).
    for g in journals.iter().filter(|g| **g < first) {
        journal::remove(dir, *g);
    }
    Ok(Recovered {
        generation: live.last().copied().unwrap_or(first),
        legacy: !marked,
    })
}

fn damaged(dir: &Path, why: &str) -> StoreError {
    unavailable(format!(
        "{}: damaged data directory, refusing to start with less than was acknowledged: {why}",
        dir.display()
    ))
}

/// Checks a journal's header (required in a marked directory) and returns how many
/// records follow it.
fn check_journal_start(
    dir: &Path,
    gen: u64,
    bytes: &[u8],
    marked: bool,
) -> Result<usize, StoreError> {
    let (records, tail) = frame::decode(bytes);
    if let (true, Tail::Corrupt { offset }) = (records.is_empty(), tail) {
        return Err(unavailable(format!(
            "{}: corrupt journal at byte offset {offset}: damaged record followed by more data",
            journal_path(dir, gen).display()
        )));
    }
    let header = records
        .first()
        .and_then(|r| codec::decode_journal_header(r));
    match header {
        Some((1, g)) if g == gen => Ok(records.len() - 1),
        Some(_) => Err(damaged(
            dir,
            &format!(
                "{}: unexpected journal header",
                journal_path(dir, gen).display()
            ),
        )),
        None if marked => Err(damaged(
            dir,
            &format!(
                "{}: the journal header is missing (emptied or overwritten)",
                journal_path(dir, gen).display()
            ),
        )),
        // An earlier release wrote journals without a header.
        None => Ok(records.len()),
    }
}

fn load_snapshot(
    path: &Path,
    gen: u64,
    apply: &(impl Fn(Change) + Sync),
    read_chunk: usize,
) -> Result<(), StoreError> {
    let mut file = fs::File::open(path)
        .map_err(|e| unavailable(format!("{}: cannot read: {e}", path.display())))?;
    let corrupt = |offset: u64, why: &str| {
        unavailable(format!(
            "{}: corrupt snapshot at byte offset {offset}: {why}",
            path.display()
        ))
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(threads);
    let rx = Mutex::new(rx);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut applied = 0u64;
                    let mut result = Ok(());
                    loop {
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break,
                        };
                        let Ok(Chunk {
                            base,
                            bytes,
                            records,
                        }) = next
                        else {
                            break;
                        };
                        // After a failure, keep receiving so the reader never blocks.
                        if result.is_err() {
                            continue;
                        }
                        for record in records {
                            let at = record.start;
                            match restore(&bytes[record], apply) {
                                Ok(n) => applied += n,
                                Err(e) => {
                                    result = Err(corrupt(
                                        base + at as u64 - 8,
                                        &format!("unreadable record: {e}"),
                                    ));
                                    failed.store(true, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                    }
                    result.map(|()| applied)
                })
            })
            .collect();
        let read = read_chunks(&mut file, gen, read_chunk, &tx, &failed, &corrupt);
        drop(tx);
        let mut applied = 0;
        let mut result = Ok(());
        for worker in workers {
            match worker.join() {
                Ok(Ok(n)) => applied += n,
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => result = result.and(Err(corrupt(0, "a restore thread panicked"))),
            }
        }
        result?;
        let (last, offset) = read?;
        match codec::decode_trailer(&last) {
            Some(count) if count == applied => Ok(()),
            Some(_) => Err(corrupt(offset, "record count does not match the trailer")),
            None => Err(corrupt(offset, "missing trailer (truncated)")),
        }
    })
}

/// Applies one snapshot record, or each record of a batch; how many were applied.
fn restore(record: &[u8], apply: &impl Fn(Change)) -> Result<u64, String> {
    let Some(batch) = codec::decode_batch(record) else {
        apply(codec::decode(record)?);
        return Ok(1);
    };
    let framed = batch?;
    let (records, tail) = frame::decode(&framed);
    if tail != Tail::Clean {
        return Err("damaged record inside a batch".into());
    }
    for record in &records {
        apply(codec::decode(record)?);
    }
    Ok(records.len() as u64)
}

/// Whole records of a snapshot, checked (framing and CRC) by the reader, for a restore
/// thread to decode.
struct Chunk {
    /// File offset of `bytes[0]`.
    base: u64,
    bytes: Vec<u8>,
    /// Where each record's payload lies in `bytes`.
    records: Vec<std::ops::Range<usize>>,
}

/// Bytes read from a snapshot at a time.
const READ_CHUNK: usize = 8 << 20;

/// Reads a snapshot in chunks and hands each chunk's whole records to the restore threads,
/// after checking the header; returns the last record (the trailer, if the file is whole)
/// and its offset. Reading in chunks keeps a restore from holding the whole file in memory
/// beside the registry it builds.
fn read_chunks(
    file: &mut fs::File,
    gen: u64,
    read_chunk: usize,
    tx: &std::sync::mpsc::SyncSender<Chunk>,
    failed: &AtomicBool,
    corrupt: &dyn Fn(u64, &str) -> StoreError,
) -> Result<(Vec<u8>, u64), StoreError> {
    use std::io::Read as _;
    let mut buf: Vec<u8> = Vec::new();
    // File offset of buf[0].
    let mut base = 0u64;
    let mut header = true;
    loop {
        // Appends up to a chunk, into spare capacity (nothing zeroed first).
        let got = (&mut *file)
            .take(read_chunk as u64)
            .read_to_end(&mut buf)
            .map_err(|e| unavailable(format!("cannot read a snapshot: {e}")))?;
        let eof = got < read_chunk;
        let (records, tail) = frame::decode(&buf);
        match tail {
            Tail::Clean => {}
            // A record the chunk cut short may hold what looks like records (a batch whose
            // records LZ4 kept as they were): only the rest of the file can tell.
            Tail::Torn { offset } | Tail::Corrupt { offset }
                if !eof && frame::cut_short(&buf, offset) => {}
            Tail::Torn { offset } | Tail::Corrupt { offset } => {
                return Err(corrupt(base + offset as u64, "damaged record"))
            }
        }
        let at = |r: &[u8]| r.as_ptr() as usize - buf.as_ptr() as usize;
        let mut records = &records[..];
        let mut skip = 0;
        if header {
            let Some((&first, rest)) = records.split_first() else {
                if eof {
                    return Err(corrupt(0, "missing header"));
                }
                continue;
            };
            if codec::decode_header(first).map(|h| h.generation) != Some(gen) {
                return Err(corrupt(0, "unexpected header"));
            }
            header = false;
            skip = at(first) + first.len();
            records = rest;
        }
        // The last whole record stays behind: it may be the trailer.
        let split = records.last().map_or(skip, |last| at(last) - 8);
        let ready: Vec<_> = records
            .iter()
            .take(records.len().saturating_sub(1))
            .map(|r| at(r)..at(r) + r.len())
            .collect();
        let rest = buf.split_off(split);
        if !ready.is_empty() {
            if failed.load(Ordering::Relaxed) {
                return Err(corrupt(base, "an earlier record was unreadable"));
            }
            let chunk = Chunk {
                base,
                bytes: std::mem::replace(&mut buf, rest),
                records: ready,
            };
            if tx.send(chunk).is_err() {
                return Err(corrupt(base, "the restore threads stopped"));
            }
        } else {
            buf = rest;
        }
        base += split as u64;
        if eof {
            break;
        }
    }
    let (records, _) = frame::decode(&buf);
    match records.as_slice() {
        [last] => Ok((last.to_vec(), base)),
        _ => Err(corrupt(base, "missing trailer (truncated)")),
    }
}

fn replay_journal(
    path: &Path,
    bytes: &[u8],
    last: bool,
    apply: &impl Fn(Change),
) -> Result<(), StoreError> {
    let (records, tail) = frame::decode(bytes);
    let mut offset = 0usize;
    for record in records {
        if offset == 0 && codec::decode_journal_header(record).is_some() {
            offset += 8 + record.len();
            continue;
        }
        let change = codec::decode(record).map_err(|e| {
            unavailable(format!(
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
                .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
            file.set_len(offset as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    unavailable(format!("{}: cannot cut the torn tail: {e}", path.display()))
                })
        }
        Tail::Torn { offset } | Tail::Corrupt { offset } => Err(unavailable(format!(
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
        .map_err(|e| unavailable(format!("{}: {e}", dir.display())))?
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

    /// A journal file as this release writes it: header, then `records` deletions.
    fn journal(dir: &Path, gen: u64, records: usize) {
        let mut out = Vec::new();
        frame::encode_with(&mut out, |o| codec::encode_journal_header(gen, o));
        for i in 0..records {
            frame::encode_with(&mut out, |o| {
                codec::encode(
                    &Change::Delete {
                        id: format!("j{gen}-{i}"),
                    },
                    o,
                )
            });
        }
        fs::write(journal_path(dir, gen), out).unwrap();
    }

    fn snapshot(dir: &Path, gen: u64, records: usize) {
        let changes: Vec<Change> = (0..records)
            .map(|i| Change::Delete {
                id: format!("s{i}"),
            })
            .collect();
        write(dir, gen, &[], &changes).unwrap();
    }

    fn count(dir: &Path) -> Result<(Recovered, usize), StoreError> {
        let n = std::sync::atomic::AtomicUsize::new(0);
        let r = recover(dir, |_| {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })?;
        Ok((r, n.into_inner()))
    }

    #[test]
    fn a_snapshot_read_in_chunks_of_any_size_loads_every_record_and_finds_damage() {
        let dir = tempfile::tempdir().unwrap();
        snapshot(dir.path(), 1, 500);
        let path = snapshot_path(dir.path(), 1);
        let load = |chunk: usize| {
            let n = std::sync::atomic::AtomicUsize::new(0);
            load_snapshot(
                &path,
                1,
                &|_| {
                    n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                },
                chunk,
            )
            .map(|()| n.into_inner())
        };
        // Chunks smaller than a record, around a record's size, and larger than the file.
        for chunk in [1, 7, 19, 64, 1000, 1 << 20] {
            assert_eq!(load(chunk).unwrap(), 500, "chunk {chunk}");
        }
        // A flipped byte in the middle: refused, naming the record's offset, whatever the
        // chunk size.
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        for chunk in [7, 64, 1 << 20] {
            let err = load(chunk).unwrap_err().to_string();
            assert!(err.contains("corrupt snapshot at byte offset"), "{err}");
        }
    }

    /// The ids a snapshot restores, in file order per restore thread.
    fn restored_ids(path: &Path, gen: u64) -> Vec<String> {
        let ids = Mutex::new(Vec::new());
        load_snapshot(
            path,
            gen,
            &|c| {
                if let Change::Delete { id } = c {
                    ids.lock().unwrap().push(id);
                }
            },
            READ_CHUNK,
        )
        .unwrap();
        let mut ids = ids.into_inner().unwrap();
        ids.sort();
        ids
    }

    #[test]
    fn records_are_written_in_compressed_batches_and_one_too_large_for_a_batch_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let large = "L".repeat(BATCH_BYTES);
        let mut changes: Vec<Change> = (0..3000)
            .map(|i| Change::Delete {
                id: format!("client-{i:05}"),
            })
            .collect();
        changes.insert(1000, Change::Delete { id: large.clone() });
        write(dir.path(), 1, &[], &changes).unwrap();
        let path = snapshot_path(dir.path(), 1);
        let bytes = fs::read(&path).unwrap();
        // Header, a batch, the large record as it is, a batch, the trailer.
        let (records, tail) = frame::decode(&bytes);
        assert_eq!(tail, Tail::Clean);
        let batches = records.iter().filter(|r| codec::decode_batch(r).is_some());
        assert_eq!((records.len(), batches.count()), (5, 2));
        // The small records (25 bytes each, framed) take under half that; the large one
        // (which LZ4 would shrink to nothing) is there as it is.
        let small = bytes.len() - BATCH_BYTES;
        assert!(small < 3000 * 25 / 2, "{small} bytes");
        let mut want: Vec<String> = changes
            .into_iter()
            .map(|c| match c {
                Change::Delete { id } => id,
                _ => unreachable!(),
            })
            .collect();
        want.sort();
        assert_eq!(restored_ids(&path, 1), want);
    }

    #[test]
    fn a_snapshot_of_format_2_with_plain_records_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        frame::encode_with(&mut out, |o| {
            o.push(codec::HEADER);
            o.extend_from_slice(&2u32.to_le_bytes());
            o.extend_from_slice(&1u64.to_le_bytes());
            o.extend_from_slice(&3u64.to_le_bytes());
            o.extend_from_slice(&0u64.to_le_bytes());
        });
        for id in ["a", "b", "c"] {
            frame::encode_with(&mut out, |o| {
                codec::encode(&Change::Delete { id: id.into() }, o)
            });
        }
        frame::encode_with(&mut out, |o| codec::encode_trailer(3, o));
        let path = snapshot_path(dir.path(), 1);
        fs::write(&path, &out).unwrap();
        assert_eq!(counts(dir.path()), Some((3, 0)));
        assert_eq!(restored_ids(&path, 1), ["a", "b", "c"]);
    }

    #[test]
    fn recover_on_an_empty_dir_starts_at_generation_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (r, n) = count(dir.path()).unwrap();
        assert_eq!(
            r,
            Recovered {
                generation: 0,
                legacy: false
            }
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn snapshot_and_journals_replay_and_a_truncated_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        snapshot(dir.path(), 3, 10);
        journal(dir.path(), 3, 2);
        journal(dir.path(), 4, 1);
        mark(dir.path()).unwrap();
        let (r, n) = count(dir.path()).unwrap();
        assert_eq!(
            r,
            Recovered {
                generation: 4,
                legacy: false
            }
        );
        assert_eq!(n, 13);

        let path = snapshot_path(dir.path(), 3);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = count(dir.path()).unwrap_err().to_string();
        assert!(err.contains("snapshot-00000000000000000003.snap"), "{err}");
        assert!(err.contains("offset"), "{err}");
    }

    #[test]
    fn a_deleted_journal_or_snapshot_refuses_to_start_naming_it() {
        // The journal that continues the snapshot.
        let dir = tempfile::tempdir().unwrap();
        snapshot(dir.path(), 2, 5);
        journal(dir.path(), 2, 3);
        mark(dir.path()).unwrap();
        fs::remove_file(journal_path(dir.path(), 2)).unwrap();
        let err = count(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("journal-00000000000000000002.log is missing"),
            "{err}"
        );

        // A generation in the middle.
        let dir = tempfile::tempdir().unwrap();
        journal(dir.path(), 0, 3);
        journal(dir.path(), 1, 3);
        journal(dir.path(), 2, 3);
        mark(dir.path()).unwrap();
        fs::remove_file(journal_path(dir.path(), 1)).unwrap();
        let err = count(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("journal-00000000000000000001.log is missing"),
            "{err}"
        );

        // The snapshot a journal continues from (and the journals it replaced).
        let dir = tempfile::tempdir().unwrap();
        snapshot(dir.path(), 4, 5);
        journal(dir.path(), 4, 3);
        mark(dir.path()).unwrap();
        fs::remove_file(snapshot_path(dir.path(), 4)).unwrap();
        let err = count(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("journal-00000000000000000000.log is missing"),
            "{err}"
        );

        // Everything, in a directory this release wrote.
        let dir = tempfile::tempdir().unwrap();
        journal(dir.path(), 0, 3);
        mark(dir.path()).unwrap();
        fs::remove_file(journal_path(dir.path(), 0)).unwrap();
        assert!(count(dir.path()).is_err());
    }

    #[test]
    fn an_emptied_journal_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        snapshot(dir.path(), 1, 5);
        journal(dir.path(), 1, 20);
        mark(dir.path()).unwrap();
        fs::write(journal_path(dir.path(), 1), b"").unwrap();
        let err = count(dir.path()).unwrap_err().to_string();
        assert!(err.contains("journal-00000000000000000001.log"), "{err}");
        assert!(err.contains("header is missing"), "{err}");
    }

    #[test]
    fn an_earlier_releases_directory_loads_without_headers_or_marker() {
        let dir = tempfile::tempdir().unwrap();
        snapshot(dir.path(), 1, 5);
        let mut out = Vec::new();
        frame::encode_with(&mut out, |o| {
            codec::encode(&Change::Delete { id: "x".into() }, o)
        });
        fs::write(journal_path(dir.path(), 1), &out).unwrap();
        fs::write(journal_path(dir.path(), 2), b"").unwrap();
        let (r, n) = count(dir.path()).unwrap();
        assert_eq!(
            r,
            Recovered {
                generation: 2,
                legacy: true
            }
        );
        assert_eq!(n, 6);
    }

    #[test]
    fn a_torn_tail_before_empty_later_journals_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        journal(dir.path(), 0, 4);
        let path = journal_path(dir.path(), 0);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        // What a graceful stop on a full disk leaves: the next generation, empty.
        journal(dir.path(), 1, 0);
        mark(dir.path()).unwrap();
        let (r, n) = count(dir.path()).unwrap();
        assert_eq!(r.generation, 1);
        assert_eq!(n, 3);
        // The torn record was cut off: a second start is clean.
        assert_eq!(count(dir.path()).unwrap().1, 3);

        // With records after it, the same damage is corruption.
        journal(dir.path(), 1, 1);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(count(dir.path()).is_err());
    }
}
