//! The embedded store's client records, found by client id and by registration token.
//!
//! Each record is held once, as an `Arc`, and every index entry is that pointer: the id and
//! the digests the tables are keyed by are read from the record itself. A `DashMap` keyed by
//! a copy of the id (16 bytes) with a slot beside it, plus an index from half a digest to
//! the id, came to about 140 bytes of table per client at a million clients; these tables
//! are 8 bytes per slot, about 40.
//!
//! Lock order: an id shard, then a token shard, one of each at a time. Readers never hold
//! two locks: a look-up by token finds the id, then reads the id's shard.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use super::memory::ByDigest;
use crate::model::ClientRecord;
use crate::secret::Digest;

/// Shards per table: enough that a commit rarely waits for another one's shard.
const SHARD_BITS: u32 = 6;

/// Records by client id, and the ids whose change is on its way to disk.
#[derive(Default)]
struct IdShard {
    records: HashTable<Arc<ClientRecord>>,
    /// Usually empty: one entry per client with a change in flight in this shard.
    pending: Vec<Arc<str>>,
}

/// Records by one of their registration token digests.
type TokenShard = HashTable<Arc<ClientRecord>>;

/// The digest a token table files a record under.
type TokenKey = fn(&ClientRecord) -> Option<Digest>;

/// The current registration token, unless revoked.
fn current(rec: &ClientRecord) -> Option<Digest> {
    (!rec.reg_token.revoked).then_some(rec.reg_token.digest)
}

/// The token just replaced, while its successor may still be replayed.
fn replaced(rec: &ClientRecord) -> Option<Digest> {
    rec.grace.as_ref().map(|g| g.replaced)
}

/// Why a change could not be started.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Busy {
    /// The client is gone, or its version moved on.
    Stale,
    /// Another change to the client is on its way to disk.
    Pending,
}

/// The client records, indexed.
pub(super) struct ClientTable {
    ids: Shards<IdShard>,
    /// By the current registration token.
    current: Shards<TokenShard>,
    /// By the replaced token of a client in its rotation grace.
    replaced: Shards<TokenShard>,
}

impl ClientTable {
    /// Tables with room for `capacity` clients.
    pub fn with_capacity(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(1 << SHARD_BITS);
        Self {
            ids: Shards::new(|| IdShard {
                records: HashTable::with_capacity(per_shard),
                pending: Vec::new(),
            }),
            current: Shards::new(|| HashTable::with_capacity(per_shard)),
            replaced: Shards::new(HashTable::new),
        }
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.ids.all().map(|s| s.records.len()).sum()
    }

    /// The client `id`.
    pub fn get(&self, id: &str) -> Option<Arc<ClientRecord>> {
        let hash = id_hash(id);
        let shard = self.ids.read(hash);
        shard.records.find(hash, |r| *r.client_id == *id).cloned()
    }

    /// Whether the client `id` exists.
    pub fn contains(&self, id: &str) -> bool {
        let hash = id_hash(id);
        let shard = self.ids.read(hash);
        shard.records.find(hash, |r| *r.client_id == *id).is_some()
    }

    /// The client whose live registration token has digest `digest`, as last committed.
    pub fn by_reg_token(&self, digest: &Digest) -> Option<Arc<ClientRecord>> {
        let hash = digest_hash(digest);
        let find = |table: &Shards<TokenShard>, key: TokenKey| {
            let shard = table.read(hash);
            shard
                .find(hash, |r| key(r) == Some(*digest))
                .map(|r| r.client_id.clone())
        };
        let id = find(&self.current, current).or_else(|| find(&self.replaced, replaced))?;
        // An index entry is updated just after its record: read the record itself.
        self.get(&id)
            .filter(|r| current(r) == Some(*digest) || replaced(r) == Some(*digest))
    }

    /// Every client, in no particular order.
    pub fn all(&self) -> Vec<Arc<ClientRecord>> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.ids.all() {
            out.extend(shard.records.iter().cloned());
        }
        out
    }

    /// Marks the client pending if `version` is still its committed version and no other
    /// change is in flight; returns the committed record.
    pub fn begin_change(&self, id: &str, version: u64) -> Result<Arc<ClientRecord>, Busy> {
        let hash = id_hash(id);
        let mut shard = self.ids.write(hash);
        let rec = shard
            .records
            .find(hash, |r| *r.client_id == *id)
            .filter(|r| r.version == version)
            .cloned()
            .ok_or(Busy::Stale)?;
        if shard.pending.iter().any(|p| **p == *id) {
            return Err(Busy::Pending);
        }
        shard.pending.push(rec.client_id.clone());
        Ok(rec)
    }

    /// The change begun on `id` did not happen.
    pub fn abandon_change(&self, id: &str) {
        let hash = id_hash(id);
        unmark(&mut self.ids.write(hash), id);
    }

    /// Makes `rec` the client's committed record (inserting it, or replacing the one held),
    /// and ends its pending change.
    pub fn put(&self, rec: ClientRecord) {
        let rec = Arc::new(rec);
        let hash = id_hash(&rec.client_id);
        let mut shard = self.ids.write(hash);
        unmark(&mut shard, &rec.client_id);
        let previous = match shard
            .records
            .find_mut(hash, |r| r.client_id == rec.client_id)
        {
            Some(slot) => Some(std::mem::replace(slot, rec.clone())),
            None => {
                shard
                    .records
                    .insert_unique(hash, rec.clone(), |r| id_hash(&r.client_id));
                None
            }
        };
        // Still under the id shard's lock: changes to one client reach the token tables in
        // the order they were committed.
        self.reindex(previous.as_deref(), Some(&rec));
    }

    /// Removes the client `id`; returns its last record.
    pub fn remove(&self, id: &str) -> Option<Arc<ClientRecord>> {
        let hash = id_hash(id);
        let mut shard = self.ids.write(hash);
        unmark(&mut shard, id);
        let (rec, _) = shard
            .records
            .find_entry(hash, |r| *r.client_id == *id)
            .ok()?
            .remove();
        self.reindex(Some(&rec), None);
        Some(rec)
    }

    /// Moves the token tables' entries of one client from `old` to `new`. New entries go in
    /// before old ones come out: a token live in both records (the one a rotation moves
    /// into its grace) is never missing from both tables, even for a moment.
    fn reindex(&self, old: Option<&ClientRecord>, new: Option<&Arc<ClientRecord>>) {
        let tables = [
            (&self.current, current as TokenKey),
            (&self.replaced, replaced as TokenKey),
        ];
        for (table, key) in tables {
            let (Some(n), Some(after)) = (new, new.and_then(|n| key(n))) else {
                continue;
            };
            let hash = digest_hash(&after);
            let mut shard = table.write(hash);
            match shard.find_mut(hash, filed(key, after, &n.client_id)) {
                // Filed under the same digest already: point it at the new record.
                Some(slot) => *slot = n.clone(),
                None => {
                    let rehash =
                        move |r: &Arc<ClientRecord>| digest_hash(&key(r).unwrap_or_default());
                    shard.insert_unique(hash, n.clone(), rehash);
                }
            }
        }
        for (table, key) in tables {
            let (Some(o), Some(before)) = (old, old.and_then(key)) else {
                continue;
            };
            if new.and_then(|n| key(n)) == Some(before) {
                continue;
            }
            let hash = digest_hash(&before);
            if let Ok(entry) = table
                .write(hash)
                .find_entry(hash, filed(key, before, &o.client_id))
            {
                entry.remove();
            }
        }
    }
}

/// Matches the entry of client `id` filed under `digest`.
fn filed(key: TokenKey, digest: Digest, id: &str) -> impl Fn(&Arc<ClientRecord>) -> bool + '_ {
    move |r| key(r) == Some(digest) && *r.client_id == *id
}

fn unmark(shard: &mut IdShard, id: &str) {
    if let Some(i) = shard.pending.iter().position(|p| **p == *id) {
        shard.pending.swap_remove(i);
    }
}

fn id_hash(id: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(id)
}

fn digest_hash(digest: &Digest) -> u64 {
    ByDigest::default().hash_one(digest)
}

/// A table split into shards, each behind its own lock.
struct Shards<S> {
    shards: Box<[RwLock<S>]>,
}

impl<S> Shards<S> {
    fn new(make: impl Fn() -> S) -> Self {
        Self {
            shards: (0..1 << SHARD_BITS).map(|_| RwLock::new(make())).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<S> {
        // The bits just below the top seven: hashbrown uses the top seven as a tag and the
        // low ones for the bucket, so a shard's entries still differ in both.
        &self.shards[((hash << 7) >> (64 - SHARD_BITS)) as usize]
    }

    // A panic while a lock is held cannot leave a table half-changed (hashbrown's own
    // operations do not unwind midway), so a poisoned lock is used as it is.
    fn read(&self, hash: u64) -> RwLockReadGuard<'_, S> {
        self.shard(hash)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self, hash: u64) -> RwLockWriteGuard<'_, S> {
        self.shard(hash)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn all(&self) -> impl Iterator<Item = RwLockReadGuard<'_, S>> {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}
