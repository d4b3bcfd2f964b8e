//! The journal: one writer thread, group commit, fsync before acknowledgement.
//!
//! Request handlers never touch the file. The registry frames each change and sends it
//! (with a sequence number) to the writer thread; after its domain call a handler waits
//! until the durable watermark passes the last sequence number issued so far. The writer
//! drains everything queued, writes it in one `write`, calls `fdatasync` once, and moves
//! the watermark: concurrent writers share one fsync.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

use tokio::sync::watch;

use super::{codec, frame, Change, StoreError};

enum Cmd {
    Append(u64, Vec<u8>),
    /// Close the current journal and start generation `.0`; reply when done.
    Rotate(u64, mpsc::Sender<Result<(), String>>),
}

/// Handle to the journal writer thread.
pub struct Journal {
    // The mutex makes "take the next sequence number" and "queue the record" one step, so
    // the writer sees records in sequence order. It is a leaf lock held for a channel send.
    tx: Mutex<(u64, mpsc::Sender<Cmd>)>,
    durable: watch::Receiver<u64>,
    failed: std::sync::Arc<AtomicBool>,
    dir: PathBuf,
}

/// The journal file name of generation `gen`.
pub fn journal_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal-{gen:020}.log"))
}

// === impl Journal ===

impl Journal {
    /// Starts the writer on `journal-<gen>.log` in `dir` (appending if it exists).
    pub fn open(dir: &Path, gen: u64) -> Result<Self, StoreError> {
        let file = open_append(dir, gen)?;
        let (tx, rx) = mpsc::channel();
        let (durable_tx, durable) = watch::channel(0u64);
        let failed = std::sync::Arc::new(AtomicBool::new(false));
        let writer = Writer {
            dir: dir.to_owned(),
            file,
            rx,
            durable: durable_tx,
            failed: failed.clone(),
        };
        std::thread::Builder::new()
            .name("certgate-journal".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError(format!("cannot start the journal thread: {e}")))?;
        Ok(Self {
            tx: Mutex::new((0, tx)),
            durable,
            failed,
            dir: dir.to_owned(),
        })
    }

    /// Queues a change. Call it while the state it describes is still locked, so changes
    /// to one client reach the journal in the order they happened.
    pub fn append(&self, change: &Change) {
        let mut buf = Vec::with_capacity(1024);
        frame::encode_with(&mut buf, |out| codec::encode(change, out));
        let mut guard = match self.tx.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.0 += 1;
        let seq = guard.0;
        if guard.1.send(Cmd::Append(seq, buf)).is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
    }

    /// The sequence number of the last queued change.
    pub fn last_seq(&self) -> u64 {
        match self.tx.lock() {
            Ok(g) => g.0,
            Err(p) => p.into_inner().0,
        }
    }

    /// Waits until every change queued before this call is on disk.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let target = self.last_seq();
        let mut rx = self.durable.clone();
        loop {
            if self.failed.load(Ordering::SeqCst) {
                return Err(StoreError(
                    "the journal cannot be written; changes are refused".into(),
                ));
            }
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(StoreError("the journal writer stopped".into()));
            }
        }
    }

    /// Finishes the current journal and starts generation `gen` (for a snapshot).
    pub fn rotate(&self, gen: u64) -> Result<(), StoreError> {
        let (reply, answer) = mpsc::channel();
        {
            let guard = match self.tx.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard
                .1
                .send(Cmd::Rotate(gen, reply))
                .map_err(|_| StoreError("the journal writer stopped".into()))?;
        }
        answer
            .recv()
            .map_err(|_| StoreError("the journal writer stopped".into()))?
            .map_err(StoreError)
    }

    /// Whether a write or fsync has failed (no change is acknowledged any more).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn open_append(dir: &Path, gen: u64) -> Result<File, StoreError> {
    let path = journal_path(dir, gen);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| StoreError(format!("{}: cannot open: {e}", path.display())))?;
    // The new directory entry must survive a crash too.
    sync_dir(dir).map_err(|e| StoreError(format!("{}: cannot sync: {e}", dir.display())))?;
    Ok(file)
}

/// fsyncs a directory so a created or renamed entry is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

struct Writer {
    dir: PathBuf,
    file: File,
    rx: mpsc::Receiver<Cmd>,
    durable: watch::Sender<u64>,
    failed: std::sync::Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(64 * 1024);
        while let Ok(first) = self.rx.recv() {
            let mut pending = Some(first);
            let mut last_seq = None;
            batch.clear();
            // Group commit: take everything already queued, up to a rotation.
            while let Some(cmd) = pending.take() {
                match cmd {
                    Cmd::Append(seq, bytes) => {
                        batch.extend_from_slice(&bytes);
                        last_seq = Some(seq);
                        pending = self.rx.try_recv().ok();
                    }
                    Cmd::Rotate(gen, reply) => {
                        let r = self
                            .flush(&batch, last_seq.take())
                            .and_then(|()| self.rotate(gen));
                        batch.clear();
                        let _ = reply.send(r);
                        pending = self.rx.try_recv().ok();
                    }
                }
            }
            if let Err(e) = self.flush(&batch, last_seq) {
                tracing::error!(error = %e, "journal write failed; refusing further changes");
            }
        }
    }

    fn flush(&mut self, batch: &[u8], last_seq: Option<u64>) -> Result<(), String> {
        let Some(seq) = last_seq else { return Ok(()) };
        if self.failed.load(Ordering::SeqCst) {
            return Err("journal already failed".into());
        }
        let r = self
            .file
            .write_all(batch)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = r {
            // After a failed fsync the kernel may have dropped the dirty pages: the only
            // safe answer is to stop acknowledging changes.
            self.failed.store(true, Ordering::SeqCst);
            self.durable.send_modify(|_| {});
            return Err(format!("journal write failed: {e}"));
        }
        self.durable.send_replace(seq);
        Ok(())
    }

    fn rotate(&mut self, gen: u64) -> Result<(), String> {
        self.file = open_append(&self.dir, gen).map_err(|e| e.0)?;
        Ok(())
    }
}

/// Deletes a journal file that a snapshot has made redundant.
pub fn remove(dir: &Path, gen: u64) {
    let path = journal_path(dir, gen);
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove an old journal");
    }
}
