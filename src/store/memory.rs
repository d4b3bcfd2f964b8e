//! The embedded store: hash tables in this process (clients in `clients`, tokens in
//! `dashmap`s), made durable (when `store.data_dir` is set) by the journal and snapshots.
//!
//! A commit locks the record's shard, compares versions, and marks the client *pending*;
//! the journal writer applies the change once it is on disk (see `journal`). Until then
//! readers see the last committed record and a competing commit waits for the pending one
//! to settle, then reports a conflict so its caller decides again: of N requests racing on
//! one record exactly one commits, and nothing is visible before it is durable (SPEC §7: a
//! request answered 503 changed nothing anyone can see).
//!
//! Lock order: `issued` → `tokens` → `clients` (whose own order is in `clients`); never the
//! other way round, and a map guard is never held across an `.await` or while a commit is
//! queued.
//! Without a data directory a commit is applied at once, by the same callback.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use tokio::sync::Notify;

use super::clients::{Busy, ClientTable};
use super::journal::{Apply, Journal};
use super::snapshot::{self, Recovered};
use super::{Change, FoundToken, SnapshotStats, StoreError};
use crate::clock::Clock;
use crate::model::{AccessToken, ClientRecord};
use crate::secret::Digest;

/// `clients` keys are server-generated random ids; look-ups with hostile keys cannot
/// insert, so a fast non-keyed hash is safe here.
type Fx = rustc_hash::FxBuildHasher;

/// Keys that are SHA-256 digests are uniformly random already: folding their words is
/// hash enough.
pub(super) type ByDigest = std::hash::BuildHasherDefault<DigestHasher>;

/// Hashes a digest by folding its 8-byte words.
#[derive(Default)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A [u8; 32] key arrives as one 32-byte write (after its length, below).
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _: usize) {}
}

/// An access token, and whether a change to it (a spent use) is on its way to disk.
struct TokenSlot {
    /// Shared with every look-up's answer: nothing is copied to read a token.
    token: Arc<AccessToken>,
    pending: bool,
}

/// A certificate in the quota count: the first half of its SHA-256. Two certificates would
/// share a count only if their digests shared 128 bits, which nobody can arrange; and a
/// shared count could only refuse a registration, never allow one. Half the key is about
/// 35 bytes less per client when each client holds its own certificate.
type CertKey = [u8; 16];

fn cert_key(sha: &[u8; 32]) -> CertKey {
    let mut key = [0u8; 16];
    key.copy_from_slice(&sha[..16]);
    key
}

/// The maps, shared with the journal writer's apply callbacks.
struct Maps {
    /// Each client, by id and by registration token.
    clients: ClientTable,
    tokens: DashMap<Digest, TokenSlot, ByDigest>,
    /// Each client's access tokens, oldest first (`tokens.max_active_per_client`).
    issued: DashMap<String, VecDeque<(u64, Digest)>, Fx>,
    /// Registrations per bound certificate, committed and pending.
    /// Keyed hashing (SipHash, random keys): a client picks its certificate, so it could
    /// grind certificates whose digests fold alike and make this table's probes long.
    per_cert: DashMap<CertKey, u32>,
    /// Woken whenever a pending change settles.
    settled: Notify,
}

/// The journal and the snapshot bookkeeping.
struct Durable {
    journal: Journal,
    dir: PathBuf,
    // Serializes snapshots; held only by the (blocking) snapshot task.
    generation: Mutex<u64>,
}

/// The embedded store.
pub struct MemoryStore {
    maps: Arc<Maps>,
    durable: Option<Durable>,
    clock: Arc<dyn Clock>,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store in memory only.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_capacity(clock, (0, 0))
    }

    /// A store whose tables already hold room for (clients, tokens): a restore that knows
    /// what it will insert does not grow them step by step (about 15 % of restoring 1M).
    fn with_capacity(clock: Arc<dyn Clock>, (clients, tokens): (u64, u64)) -> Self {
        let clients = usize::try_from(clients).unwrap_or(0);
        let tokens = usize::try_from(tokens).unwrap_or(0);
        // Many shards keep each shard's lock short, also while a snapshot copies it.
        Self {
            maps: Arc::new(Maps {
                clients: ClientTable::with_capacity(clients),
                tokens: DashMap::with_capacity_and_hasher_and_shard_amount(
                    tokens,
                    ByDigest::default(),
                    64,
                ),
                issued: DashMap::default(),
                per_cert: DashMap::default(),
                settled: Notify::new(),
            }),
            durable: None,
            clock,
        }
    }

    /// A store recovered from `dir` (snapshot + journals), journaling every change there.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let mut store = Self::with_capacity(clock, snapshot::counts(dir).unwrap_or((0, 0)));
        let started = std::time::Instant::now();
        let Recovered { generation, legacy } =
            snapshot::recover(dir, |change| store.maps.restore(change))?;
        let pruned = store.prune();
        // A snapshot loads on several threads: put each client's tokens back in issue order.
        for mut issued in store.maps.issued.iter_mut() {
            issued.make_contiguous().sort_unstable();
        }
        tracing::info!(
            dir = %dir.display(),
            clients = store.maps.clients.len(),
            tokens = store.maps.tokens.len(),
            pruned,
            ms = started.elapsed().as_millis() as u64,
            "registry restored"
        );
        store.durable = Some(Durable {
            journal: Journal::open(dir, generation)?,
            dir: dir.to_owned(),
            generation: Mutex::new(generation),
        });
        if legacy {
            // Written by an earlier release: convert it (a snapshot starts a journal with a
            // header), then mark it, so from now on a missing file is detected.
            store.snapshot()?;
            tracing::info!(dir = %dir.display(), "data directory converted to this release's format");
        }
        snapshot::mark(dir)?;
        Ok(store)
    }

    /// What a data directory holds, read into memory without journaling anything (for
    /// `certgate migrate-store`; a torn tail is cut as a start would).
    pub fn load(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::Unavailable(format!(
                "{}: not a data directory",
                dir.display()
            )));
        }
        let store = Self::with_capacity(clock, snapshot::counts(dir).unwrap_or((0, 0)));
        snapshot::recover(dir, |change| store.maps.restore(change))?;
        store.prune();
        Ok(store)
    }

    /// Every client and every live access token.
    pub fn records(&self) -> (Vec<Arc<ClientRecord>>, Vec<(Digest, AccessToken)>) {
        let clients = self.maps.clients.all();
        let now = self.now();
        let tokens = self
            .maps
            .tokens
            .iter()
            .filter(|s| s.token.is_live(now))
            .map(|s| (*s.key(), (*s.token).clone()))
            .collect();
        (clients, tokens)
    }

    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn journal(&self) -> Option<&Journal> {
        self.durable.as_ref().map(|d| &d.journal)
    }

    /// Queues the change `change` describes with `apply`, or applies it at once without a
    /// journal; returns the sequence number to wait for. `data` is what `apply` consumes:
    /// without a journal nothing is copied for a journal record or boxed for later.
    fn commit<T: Send + 'static>(
        &self,
        data: T,
        change: impl FnOnce(&T) -> Change,
        apply: impl FnOnce(T, bool) + Send + 'static,
    ) -> Option<u64> {
        match self.journal() {
            Some(journal) => {
                let change = change(&data);
                let apply: Apply = Box::new(move |ok| apply(data, ok));
                Some(journal.append(&change, apply))
            }
            None => {
                apply(data, true);
                None
            }
        }
    }

    /// Waits for `seq` to be durable (and applied).
    async fn durable(&self, seq: Option<u64>) -> Result<(), StoreError> {
        match (seq, self.journal()) {
            (Some(seq), Some(journal)) => journal.wait(seq).await,
            _ => Ok(()),
        }
    }

    /// The client `id`, as last committed.
    pub async fn client(&self, id: &str) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        Ok(self.maps.clients.get(id))
    }

    /// The client a registration token digest points at.
    pub async fn client_by_reg_token(
        &self,
        digest: &Digest,
    ) -> Result<Option<Arc<ClientRecord>>, StoreError> {
        Ok(self.maps.clients.by_reg_token(digest))
    }

    /// Inserts a new client, spending one use of `initial` with it.
    pub async fn register(
        &self,
        client: ClientRecord,
        initial: Option<Digest>,
        quota: u32,
    ) -> Result<(), StoreError> {
        let maps = &self.maps;
        // The only wait before the commit is queued: from here on nothing is awaited until
        // the apply callback owns every reservation, so a cancelled request leaks none.
        let spent = match initial {
            None => None,
            Some(digest) => Some((digest, self.take_use(&digest).await?)),
        };
        if let Some(sha) = client.bound {
            let mut n = maps.per_cert.entry(cert_key(&sha)).or_insert(0);
            if *n >= quota {
                drop(n);
                if let Some((digest, _)) = &spent {
                    maps.settle_token(digest, None);
                    maps.settled.notify_waiters();
                }
                return Err(StoreError::Quota);
            }
            *n += 1;
        }
        let seq = self.commit(
            (maps.clone(), client, spent),
            |(_, client, spent)| Change::Register {
                client: Box::new(client.clone()),
                initial: spent.clone(),
            },
            |(maps, client, spent), ok| {
                if let Some((digest, token)) = spent {
                    maps.settle_token(&digest, ok.then_some(token));
                }
                match (ok, client.bound) {
                    // Durable: visible now (its quota slot is already counted).
                    (true, _) => maps.clients.put(client),
                    (false, Some(sha)) => maps.unbind(&sha),
                    (false, None) => {}
                }
                maps.settled.notify_waiters();
            },
        );
        self.durable(seq).await
    }

    /// Marks one use of an initial access token as being spent (the entry stays pending
    /// until the registration settles); returns the token's state after the use.
    async fn take_use(&self, digest: &Digest) -> Result<AccessToken, StoreError> {
        loop {
            let settled = self.maps.settled.notified();
            let mut settled = pin!(settled);
            settled.as_mut().enable();
            {
                let Some(mut slot) = self.maps.tokens.get_mut(digest) else {
                    return Err(StoreError::Spent);
                };
                if !slot.pending {
                    let mut token = (*slot.token).clone();
                    match token.uses_left {
                        Some(n) if n > 0 => token.uses_left = Some(n - 1),
                        _ => return Err(StoreError::Spent),
                    }
                    slot.pending = true;
                    return Ok(token);
                }
            }
            settled.await;
        }
    }

    /// Replaces `old` with `new` if `old` is still the committed version.
    pub async fn replace(&self, old: &ClientRecord, new: ClientRecord) -> Result<(), StoreError> {
        self.change_client(old, Some(new)).await
    }

    /// Deletes `old` if it is still the committed version.
    pub async fn delete(&self, old: &ClientRecord) -> Result<(), StoreError> {
        self.change_client(old, None).await
    }

    async fn change_client(
        &self,
        old: &ClientRecord,
        new: Option<ClientRecord>,
    ) -> Result<(), StoreError> {
        let maps = &self.maps;
        let settled = maps.settled.notified();
        let mut settled = pin!(settled);
        settled.as_mut().enable();
        // Pending from here until the apply callback: no other change to this client is
        // queued meanwhile, so per client the journal's order is the order of versions.
        let previous = match maps.clients.begin_change(&old.client_id, old.version) {
            Ok(previous) => previous,
            Err(Busy::Stale) => return Err(StoreError::Conflict),
            Err(Busy::Pending) => {
                // Another change to this client is on its way to disk: once it settles the
                // caller must look again.
                settled.await;
                return Err(StoreError::Conflict);
            }
        };
        let new = new.map(|mut n| {
            n.version = old.version + 1;
            n
        });
        let seq = self.commit(
            (maps.clone(), previous, new),
            |(_, previous, new)| match new {
                Some(n) => Change::Client(Box::new(n.clone())),
                None => Change::Delete {
                    id: previous.client_id.to_string(),
                },
            },
            |(maps, previous, new), ok| {
                match (ok, new) {
                    (true, Some(n)) => maps.clients.put(n),
                    (true, None) => maps.remove_client(&previous.client_id),
                    (false, _) => maps.clients.abandon_change(&previous.client_id),
                }
                maps.settled.notify_waiters();
            },
        );
        self.durable(seq).await
    }

    /// The access token with digest `digest`.
    pub async fn access_token(&self, digest: &Digest) -> Result<Option<FoundToken>, StoreError> {
        let Some(token) = self.maps.tokens.get(digest).map(|s| s.token.clone()) else {
            return Ok(None);
        };
        let client_alive = self.maps.token_owner_alive(&token);
        Ok(Some(FoundToken {
            token,
            client_alive,
        }))
    }

    /// Stores a new access token; beyond `max_active` tokens of its client, the oldest are
    /// revoked with it. A client's tokens are kept oldest first, so this costs the number
    /// evicted, not the number held. (An expired token not yet pruned still counts until
    /// then, and as the oldest it goes first; two tokens issued at the same instant may both
    /// count the same oldest one: the cap holds again from the next issue on.)
    pub async fn issue_token(
        &self,
        digest: Digest,
        token: AccessToken,
        max_active: u32,
    ) -> Result<(), StoreError> {
        let maps = &self.maps;
        let evicted: Vec<Digest> = match maps.issued.get(&token.client_id) {
            Some(issued) => {
                let excess = (issued.len() + 1).saturating_sub(max_active as usize);
                issued.iter().take(excess).map(|(_, d)| *d).collect()
            }
            None => Vec::new(),
        };
        let seq = self.commit(
            (maps.clone(), token, evicted),
            |(_, token, evicted)| Change::Issue {
                digest,
                token: token.clone(),
                evicted: evicted.clone(),
            },
            move |(maps, token, evicted), ok| {
                if ok {
                    for d in &evicted {
                        maps.forget_token(d);
                    }
                    maps.restore_token(digest, token);
                }
            },
        );
        self.durable(seq).await
    }

    /// Revokes an access token.
    pub async fn revoke_token(&self, digest: &Digest) -> Result<(), StoreError> {
        if !self.maps.tokens.contains_key(digest) {
            return Ok(());
        }
        let digest = *digest;
        let seq = self.commit(
            self.maps.clone(),
            |_| Change::Revoke { digest },
            move |maps, ok| {
                if ok {
                    maps.forget_token(&digest);
                }
            },
        );
        self.durable(seq).await
    }

    /// Number of registered clients.
    pub async fn client_count(&self) -> Result<u64, StoreError> {
        Ok(self.maps.clients.len() as u64)
    }

    /// Why the store cannot commit now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        match self.journal() {
            Some(j) if j.has_failed() => Some("storage: the journal cannot be written".into()),
            _ => None,
        }
    }

    /// Resolves when the journal has failed (never without one).
    pub async fn fatal(&self) {
        match self.journal() {
            Some(j) => j.failure().await,
            None => std::future::pending().await,
        }
    }

    /// Drops expired access tokens and spent initial access tokens, and the index entries
    /// of tokens that are gone. Memory only: replay drops them again after a restart.
    pub fn prune(&self) -> usize {
        let now = self.now();
        let maps = &self.maps;
        let before = maps.tokens.len();
        maps.tokens
            .retain(|_, s| s.pending || (s.token.is_live(now) && maps.token_owner_alive(&s.token)));
        maps.issued.retain(|_, q| {
            q.retain(|(_, d)| maps.tokens.contains_key(d));
            !q.is_empty()
        });
        before.saturating_sub(maps.tokens.len())
    }

    /// Writes a snapshot and drops the journals it covers. Blocking: run it off the async
    /// runtime. Writes continue meanwhile.
    pub fn snapshot(&self) -> Result<Option<SnapshotStats>, StoreError> {
        let Some(durable) = &self.durable else {
            return Ok(None);
        };
        let mut generation = match durable.generation.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let next = *generation + 1;
        // From here on new changes go to journal `next`; every change queued before is
        // written and applied when `rotate` returns, so the copy below has all of them.
        durable.journal.rotate(next)?;
        *generation = next;
        let clients = self.maps.clients.all();
        let now = self.now();
        let tokens: Vec<Change> = self
            .maps
            .tokens
            .iter()
            .filter(|s| s.token.is_live(now))
            .map(|s| Change::Token {
                digest: *s.key(),
                token: (*s.token).clone(),
            })
            .collect();
        let stats = SnapshotStats {
            generation: next,
            bytes: 0,
            clients: clients.len(),
            tokens: tokens.len(),
        };
        let bytes = snapshot::write(&durable.dir, next, &clients, &tokens)?;
        snapshot::remove_older(&durable.dir, next);
        Ok(Some(SnapshotStats { bytes, ..stats }))
    }

    /// A canonical listing of the whole state (digests only, never a credential), one line
    /// per client or token in a fixed order: two equal states give equal dumps.
    pub fn dump(&self) -> String {
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let opt = |d: &Option<[u8; 32]>| d.as_ref().map_or("-".to_owned(), |d| hex(d));
        let mut lines: Vec<String> = self
            .maps
            .clients
            .all()
            .iter()
            .map(|c| {
                format!(
                    "client {} issued={} secret={} bound={} token={} token_iat={} revoked={} grace={} {}",
                    c.client_id,
                    c.issued_at,
                    opt(&c.secret),
                    opt(&c.bound),
                    hex(&c.reg_token.digest),
                    c.reg_token.issued_at,
                    c.reg_token.revoked,
                    c.grace.as_ref().map_or("-".to_owned(), |g| hex(&g.replaced)),
                    c.metadata.json()
                )
            })
            .collect();
        lines.extend(
            self.maps
                .tokens
                .iter()
                .map(|e| format!("token {} {:?}", hex(e.key()), e.token)),
        );
        lines.sort_unstable();
        lines.join("\n")
    }
}

// === impl Maps ===

impl Maps {
    /// Replays one recovered change.
    fn restore(&self, change: Change) {
        match change {
            Change::Client(client) => self.upsert_recovered(*client),
            Change::Register { client, initial } => {
                self.upsert_recovered(*client);
                if let Some((digest, token)) = initial {
                    self.restore_token(digest, token);
                }
            }
            Change::Delete { id } => self.remove_client(&id),
            Change::Token { digest, token } => self.restore_token(digest, token),
            Change::Issue {
                digest,
                token,
                evicted,
            } => {
                self.restore_token(digest, token);
                for d in evicted {
                    self.forget_token(&d);
                }
            }
            Change::Revoke { digest } => self.forget_token(&digest),
        }
    }

    fn upsert_recovered(&self, mut client: ClientRecord) {
        match self.clients.get(&client.client_id) {
            Some(previous) => client.version = previous.version + 1,
            None => {
                if let Some(sha) = client.bound {
                    *self.per_cert.entry(cert_key(&sha)).or_insert(0) += 1;
                }
            }
        }
        self.clients.put(client);
    }

    fn restore_token(&self, digest: Digest, token: AccessToken) {
        let token = Arc::new(token);
        let entry = (token.iat, digest);
        // A client holding tokens already needs no copy of its id as a key. (The queue's
        // shard stays locked while the token is inserted: `issued`, then `tokens`, the
        // order `prune` takes them in too.)
        let mut queue = match self.issued.get_mut(token.client_id.as_str()) {
            Some(queue) => queue,
            None => self.issued.entry(token.client_id.clone()).or_default(),
        };
        let slot = TokenSlot {
            token,
            pending: false,
        };
        if self.tokens.insert(digest, slot).is_none() {
            queue.push_back(entry);
        }
    }

    /// A deletion is durable: the client, its tokens' index entries and its quota slot go.
    /// (Its access tokens die because they are checked against the live client on use.)
    fn remove_client(&self, id: &str) {
        if let Some(rec) = self.clients.remove(id) {
            if let Some(sha) = rec.bound {
                self.unbind(&sha);
            }
        }
        self.issued.remove(id);
    }

    /// Gives back a quota slot.
    fn unbind(&self, sha: &[u8; 32]) {
        self.per_cert.remove_if_mut(&cert_key(sha), |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }

    /// An initial-access use settled: its new state when durable, else unchanged.
    fn settle_token(&self, digest: &Digest, durable: Option<AccessToken>) {
        if let Some(mut slot) = self.tokens.get_mut(digest) {
            if let Some(token) = durable {
                slot.token = Arc::new(token);
            }
            slot.pending = false;
        }
    }

    /// Removes an access token and its index entry.
    fn forget_token(&self, digest: &Digest) {
        if let Some((_, slot)) = self.tokens.remove(digest) {
            if let Some(mut issued) = self.issued.get_mut(&slot.token.client_id) {
                // Evictions take the oldest: usually the first.
                if issued.front().is_some_and(|(_, d)| d == digest) {
                    issued.pop_front();
                } else {
                    issued.retain(|(_, d)| d != digest);
                }
            }
        }
    }

    fn token_owner_alive(&self, token: &AccessToken) -> bool {
        !token.dynamic || self.clients.contains(&token.client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{AuthMethod, ClientRules, Registered};
    use crate::model::RegToken;

    fn client(id: &str, digest: Digest) -> ClientRecord {
        ClientRecord {
            client_id: id.into(),
            version: 0,
            issued_at: 1,
            metadata: Arc::new(Registered::new(
                "{}".to_owned(),
                ClientRules {
                    auth: AuthMethod::TlsClientAuth,
                    client_credentials: false,
                    scope: None,
                    subject: None,
                    x5c: Box::new([]),
                    jwks_uri: false,
                    bound_tokens: false,
                },
            )),
            secret: None,
            bound: None,
            reg_token: RegToken {
                digest,
                issued_at: 1,
                revoked: false,
            },
            grace: None,
        }
    }

    #[tokio::test]
    async fn a_registration_token_finds_its_client_until_it_is_replaced() {
        let store = MemoryStore::new(Arc::new(crate::clock::SystemClock));
        let a = [7u8; 32];
        // Differs from `a` in the last byte only: both are found, each to its own client.
        let mut b = a;
        b[31] ^= 1;
        store.register(client("a", a), None, 10).await.unwrap();
        let found = store.client_by_reg_token(&a).await.unwrap().unwrap();
        assert_eq!(&*found.client_id, "a");
        assert!(store.client_by_reg_token(&b).await.unwrap().is_none());
        store.register(client("b", b), None, 10).await.unwrap();
        let found = store.client_by_reg_token(&b).await.unwrap().unwrap();
        assert_eq!(&*found.client_id, "b");

        // Deleting one client leaves the other's entry in place.
        let old_a = store.client("a").await.unwrap().unwrap();
        store.delete(&old_a).await.unwrap();
        assert!(store.client_by_reg_token(&a).await.unwrap().is_none());
        let found = store.client_by_reg_token(&b).await.unwrap().unwrap();
        assert_eq!(&*found.client_id, "b");

        // A rotation moves the entry to the new digest; the replaced one answers while in
        // grace, and the record found is always the committed one.
        let old_b = store.client("b").await.unwrap().unwrap();
        let mut rotated = (*old_b).clone();
        rotated.reg_token.digest = [9u8; 32];
        store.replace(&old_b, rotated.clone()).await.unwrap();
        assert!(store.client_by_reg_token(&b).await.unwrap().is_none());
        let found = store
            .client_by_reg_token(&[9u8; 32])
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&*found.client_id, found.version), ("b", 1));

        let mut in_grace = (*found).clone();
        in_grace.reg_token.digest = [10u8; 32];
        in_grace.grace = Some(Box::new(crate::model::Grace {
            replaced: [9u8; 32],
            replaced_at: 1,
            token: "t".into(),
            secret: None,
        }));
        store.replace(&found, in_grace).await.unwrap();
        for d in [[9u8; 32], [10u8; 32]] {
            let found = store.client_by_reg_token(&d).await.unwrap().unwrap();
            assert_eq!((&*found.client_id, found.version), ("b", 2));
        }

        // An update that keeps both digests points both entries at the new record.
        let mut updated = (*found_now(&store, "b").await).clone();
        updated.issued_at = 99;
        let old = found_now(&store, "b").await;
        store.replace(&old, updated).await.unwrap();
        for d in [[9u8; 32], [10u8; 32]] {
            let found = store.client_by_reg_token(&d).await.unwrap().unwrap();
            assert_eq!((found.version, found.issued_at), (3, 99));
        }

        // Revoked, the current token stops answering; grace over, the replaced one too.
        let mut revoked = (*found_now(&store, "b").await).clone();
        revoked.reg_token.revoked = true;
        revoked.grace = None;
        let old = found_now(&store, "b").await;
        store.replace(&old, revoked).await.unwrap();
        for d in [[9u8; 32], [10u8; 32]] {
            assert!(store.client_by_reg_token(&d).await.unwrap().is_none());
        }
        assert_eq!(store.client_count().await.unwrap(), 1);
    }

    async fn found_now(store: &MemoryStore, id: &str) -> Arc<ClientRecord> {
        store.client(id).await.unwrap().unwrap()
    }

    #[test]
    fn a_token_live_before_and_after_a_rotation_is_found_throughout_it() {
        // A rotation moves the current token into the grace table; a reader presenting it
        // meanwhile must find the client, before the change or after it. The writer
        // rotates, then puts the old record back; `epoch` is odd from the moment the old
        // record is back until the rotation is done, so a look-up that starts and ends
        // within one odd epoch overlapped only rotations.
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        let table = Arc::new(ClientTable::with_capacity(1));
        let (t1, t2) = ([1u8; 32], [2u8; 32]);
        let plain = client("a", t1);
        let mut rotated = client("a", t2);
        rotated.grace = Some(Box::new(crate::model::Grace {
            replaced: t1,
            replaced_at: 1,
            token: "t".into(),
            secret: None,
        }));
        let epoch = Arc::new(AtomicU64::new(0));
        const ROUNDS: u64 = 50_000;
        let writer = {
            let (table, epoch) = (table.clone(), epoch.clone());
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    table.put(plain.clone());
                    epoch.fetch_add(1, SeqCst);
                    table.put(rotated.clone());
                    epoch.fetch_add(1, SeqCst);
                }
            })
        };
        let mut checked = 0u64;
        loop {
            let before = epoch.load(SeqCst);
            if before == 2 * ROUNDS {
                break;
            }
            let found = table.by_reg_token(&t1).is_some();
            if before % 2 == 1 && epoch.load(SeqCst) == before {
                assert!(found, "missed during a rotation, after {checked} checks");
                checked += 1;
            }
        }
        writer.join().unwrap();
        assert!(checked > 0);
        assert!(table.by_reg_token(&t1).is_some() && table.by_reg_token(&t2).is_some());
    }

    #[tokio::test]
    async fn a_change_in_flight_makes_the_next_one_conflict_until_it_settles() {
        let store = MemoryStore::new(Arc::new(crate::clock::SystemClock));
        store
            .register(client("a", [1u8; 32]), None, 10)
            .await
            .unwrap();
        let rec = store.client("a").await.unwrap().unwrap();
        let table = &store.maps.clients;
        assert!(table.begin_change("a", rec.version).is_ok());
        assert_eq!(
            table.begin_change("a", rec.version).unwrap_err(),
            Busy::Pending
        );
        table.abandon_change("a");
        assert!(table.begin_change("a", rec.version).is_ok());
        assert_eq!(table.begin_change("a", 7).unwrap_err(), Busy::Stale);
        assert_eq!(table.begin_change("b", 0).unwrap_err(), Busy::Stale);
        // Committing ends the pending change.
        let mut next = (*rec).clone();
        next.version += 1;
        table.put(next);
        assert!(table.begin_change("a", rec.version + 1).is_ok());
    }
}
