//! The journal: one writer thread, group commit, fsync before anything is applied.
//!
//! Request handlers never touch the file. A commit frames its record and queues it with a
//! sequence number and an *apply* callback. The writer drains everything queued, writes it
//! in one `write`, calls `fdatasync` once, and only then runs the callbacks (which make the
//! changes visible in memory) and moves the durable watermark: concurrent commits share one
//! fsync, and nothing is visible before it is on disk. Running the callbacks on the writer
//! thread (not in the request's future) means a cancelled request can never leave a change
//! half applied.
//!
//! When a write or fsync fails, every queued and later commit is refused (its callback runs
//! with `false`) and the store reports itself failed: the process stops acknowledging
//! changes and exits so a supervisor restarts it on what the disk holds (SPEC §7).

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::watch;

use super::{codec, frame, Change, StoreError};

/// Runs once the record's fate is known: `true` when it is durable.
pub type Apply = Box<dyn FnOnce(bool) + Send>;

enum Cmd {
    Append(u64, Vec<u8>, Apply),
    /// Close the current journal and start generation `.0`; reply when done.
    Rotate(u64, mpsc::Sender<Result<(), String>>),
}

/// Handle to the journal writer thread.
pub struct Journal {
    // The mutex makes "take the next sequence number" and "queue the record" one step, so
    // the writer sees records in sequence order. It is a leaf lock held for a channel send.
    tx: Mutex<(u64, mpsc::Sender<Cmd>)>,
    durable: watch::Receiver<u64>,
    failed: Arc<AtomicBool>,
}

/// The journal file name of generation `gen`.
pub fn journal_path(dir: &Path, gen: u64) -> PathBuf {
    dir.join(format!("journal-{gen:020}.log"))
}

// === impl Journal ===

impl Journal {
    /// Starts the writer on `journal-<gen>.log` in `dir`, appending; the file is created
    /// (with its header) if it does not exist.
    pub fn open(dir: &Path, gen: u64) -> Result<Self, StoreError> {
        let file = open_append(dir, gen)?;
        let (tx, rx) = mpsc::channel();
        let (durable_tx, durable) = watch::channel(0u64);
        let failed = Arc::new(AtomicBool::new(false));
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
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the journal thread: {e}"))
            })?;
        Ok(Self {
            tx: Mutex::new((0, tx)),
            durable,
            failed,
        })
    }

    /// Queues `change`; `apply` runs on the writer thread once its fate is known. Call it
    /// while the state it describes is still locked, so changes to one record reach the
    /// journal in the order they were decided. Returns the sequence number to `wait` for.
    pub fn append(&self, change: &Change, apply: Apply) -> u64 {
        let mut buf = Vec::with_capacity(1024);
        frame::encode_with(&mut buf, |out| codec::encode(change, out));
        let mut guard = match self.tx.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard.0 += 1;
        let seq = guard.0;
        if let Err(mpsc::SendError(Cmd::Append(_, _, apply))) =
            guard.1.send(Cmd::Append(seq, buf, apply))
        {
            self.failed.store(true, Ordering::SeqCst);
            apply(false);
        }
        seq
    }

    /// Waits until record `seq` is durable (and applied).
    pub async fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.durable.clone();
        loop {
            if *rx.borrow_and_update() >= seq {
                return Ok(());
            }
            if self.failed.load(Ordering::SeqCst) {
                return Err(failed());
            }
            if rx.changed().await.is_err() {
                return Err(failed());
            }
        }
    }

    /// Resolves when the journal has failed (for the fail-stop exit).
    pub async fn failure(&self) {
        let mut rx = self.durable.clone();
        while !self.failed.load(Ordering::SeqCst) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Finishes the current journal — every record queued before is written, fsynced and
    /// applied when this returns — and starts generation `gen` (for a snapshot).
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
                .map_err(|_| failed())?;
        }
        answer
            .recv()
            .map_err(|_| failed())?
            .map_err(StoreError::Unavailable)
    }

    /// Whether a write or fsync has failed (no change is acknowledged any more).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

fn failed() -> StoreError {
    StoreError::Unavailable("storage: the journal cannot be written".into())
}

/// Opens journal `gen` for appending. A new journal is created whole — header written and
/// synced under a temporary name, then renamed — so a journal without its header is damage,
/// never a crash artefact.
fn open_append(dir: &Path, gen: u64) -> Result<File, StoreError> {
    let path = journal_path(dir, gen);
    let err = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{}: {what}: {e}", path.display()))
    };
    if !path.exists() {
        let tmp = path.with_extension("log.tmp");
        let mut header = Vec::new();
        frame::encode_with(&mut header, |o| codec::encode_journal_header(gen, o));
        let mut file = File::create(&tmp).map_err(|e| err("cannot create", e))?;
        file.write_all(&header)
            .and_then(|()| file.sync_all())
            .map_err(|e| err("cannot write", e))?;
        fs::rename(&tmp, &path).map_err(|e| err("cannot rename", e))?;
        sync_dir(dir).map_err(|e| err("cannot sync the directory", e))?;
    }
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| err("cannot open", e))
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
    failed: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(64 * 1024);
        let mut applies: Vec<Apply> = Vec::new();
        while let Ok(first) = self.rx.recv() {
            let mut pending = Some(first);
            let mut last_seq = None;
            batch.clear();
            // Group commit: take everything already queued, up to a rotation.
            while let Some(cmd) = pending.take() {
                match cmd {
                    Cmd::Append(seq, bytes, apply) => {
                        batch.extend_from_slice(&bytes);
                        applies.push(apply);
                        last_seq = Some(seq);
                        pending = self.rx.try_recv().ok();
                    }
                    Cmd::Rotate(gen, reply) => {
                        self.flush(&batch, &mut applies, last_seq.take());
                        batch.clear();
                        let r = if self.failed.load(Ordering::SeqCst) {
                            Err("the journal has failed".to_owned())
                        } else {
                            self.rotate(gen)
                        };
                        let _ = reply.send(r);
                        pending = self.rx.try_recv().ok();
                    }
                }
            }
            self.flush(&batch, &mut applies, last_seq);
        }
    }

    /// Writes and syncs `batch`, then applies its records (or refuses them all).
    fn flush(&mut self, batch: &[u8], applies: &mut Vec<Apply>, last_seq: Option<u64>) {
        let Some(seq) = last_seq else { return };
        let ok = !self.failed.load(Ordering::SeqCst)
            && match self
                .file
                .write_all(batch)
                .and_then(|()| self.file.sync_data())
            {
                Ok(()) => true,
                Err(e) => {
                    // After a failed fsync the kernel may have dropped the dirty pages: the
                    // only safe answer is to stop acknowledging changes.
                    tracing::error!(error = %e, "journal write failed; refusing every further change");
                    self.failed.store(true, Ordering::SeqCst);
                    false
                }
            };
        for apply in applies.drain(..) {
            apply(ok);
        }
        if ok {
            self.durable.send_replace(seq);
        } else {
            self.durable.send_modify(|_| {});
        }
    }

    fn rotate(&mut self, gen: u64) -> Result<(), String> {
        match open_append(&self.dir, gen) {
            Ok(file) => {
                self.file = file;
                Ok(())
            }
            Err(e) => {
                // A journal that cannot be started is a journal that cannot be written.
                self.failed.store(true, Ordering::SeqCst);
                self.durable.send_modify(|_| {});
                Err(e.to_string())
            }
        }
    }
}

/// Deletes a journal file that a snapshot has made redundant.
pub fn remove(dir: &Path, gen: u64) {
    let path = journal_path(dir, gen);
    if let Err(e) = fs::remove_file(&path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove an old journal");
    }
}
