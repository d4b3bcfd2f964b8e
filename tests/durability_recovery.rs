//! Recovery of the real binary's data directory (SPEC §7, §6a.15, §6a.17; issue 5):
//!
//! - a torn journal tail is dropped with a warning; a damaged record with valid ones after
//!   it, or a damaged snapshot, refuses to start naming the file and the offset; a missing
//!   data directory, empty journals and leftover temporary files are fine;
//! - the successor a grace-period replay hands out is memory-only: after a restart the
//!   replay answers 401;
//! - nothing secret reaches the data directory (or the log).
//!
//! The harness (the binary as a child process, the blocking client, tracked clients) is
//! `tests/durable/`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

mod common;
mod durable;
mod listening;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;

use durable::{
    all_files, assert_current, dcrm_token, files_named, register_one, registration_body, rotate,
    snapshots, Gateway, Setup, Tracked,
};

// === journal damage ===

/// The journal files in `dir`, oldest generation first.
fn journals(dir: &Path) -> Vec<PathBuf> {
    files_named(dir, "journal-", ".log")
}

/// The newest journal, which must hold at least one record.
fn last_journal(dir: &Path) -> PathBuf {
    let path = journals(dir)
        .pop()
        .unwrap_or_else(|| panic!("no journal in {dir:?}"));
    assert!(fs::metadata(&path).unwrap().len() > 0, "{path:?} is empty");
    path
}

/// Byte ranges `(start, end)` of the framed records in a journal (`len: u32 LE`,
/// `crc32c: u32 LE`, payload), read independently of certgate.
fn record_spans(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + 8 + len;
        if len == 0 || end > bytes.len() {
            break;
        }
        spans.push((pos, end));
        pos = end;
    }
    spans
}

/// Whether the log has a WARN line mentioning `word` (case-insensitive).
fn warns_about(log: &str, word: &str) -> bool {
    log.lines()
        .any(|l| l.contains("WARN") && l.to_lowercase().contains(word))
}

/// SPEC §7, §6a.15: a torn last record (crash mid-write) is dropped with a warning and
/// everything acknowledged before it survives; the torn bytes are cut off, so records
/// appended after the restart are read back too.
#[test]
fn torn_journal_tail_is_dropped_with_a_warning_and_earlier_state_survives() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));

    // Acknowledged: A (rotated twice) and B; then S, whose record the "crash" will tear.
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut a = register_one(&mut api);
    let mut b = register_one(&mut api);
    rotate(&mut api, &mut a);
    rotate(&mut api, &mut a);
    let s = register_one(&mut api);
    g.kill9();

    // 1. Cut the last record short, as a crash in the middle of its write would.
    let journal = last_journal(data.path());
    let bytes = fs::read(&journal).unwrap();
    let spans = record_spans(&bytes);
    assert_eq!(
        spans.last().map(|s| s.1),
        Some(bytes.len()),
        "{journal:?} does not end with a whole record"
    );
    let (last_start, last_end) = *spans.last().unwrap();
    fs::write(&journal, &bytes[..last_end - 5]).unwrap();

    let mut g = Gateway::start(&setup);
    // Lines reach the log in batches, a few milliseconds after what they report.
    let log = g.log_until(|l| warns_about(l, "torn"));
    assert!(
        warns_about(&log, "torn"),
        "no warning about the torn tail of {journal:?}; log:\n{log}"
    );
    let mut api = g.api(None);
    assert_current(&mut api, &mut a, &g);
    assert_current(&mut api, &mut b, &g);
    // S's only record was the torn one: it is gone, not half-there.
    let r = api.manage("GET", &s.id, s.token()).unwrap();
    assert_eq!(r.status, 401, "client of the torn record: {}", r.text());
    let len_now = fs::metadata(&journal).unwrap().len() as usize;
    assert!(
        len_now >= last_start,
        "recovery cut valid records from {journal:?}"
    );
    let mut c = register_one(&mut api);
    rotate(&mut api, &mut c);
    g.kill9();

    // 2. Garbage after the last record: a header promising more bytes than follow, then a
    //    few zeroes (a crash after the file grew).
    let journal = last_journal(data.path());
    let mut f = fs::OpenOptions::new().append(true).open(&journal).unwrap();
    f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, b'{', b'"', b'o'])
        .unwrap();
    f.write_all(&[0u8; 13]).unwrap();
    drop(f);

    let mut g = Gateway::start(&setup);
    // Lines reach the log in batches, a few milliseconds after what they report.
    let log = g.log_until(|l| warns_about(l, "torn"));
    assert!(
        warns_about(&log, "torn"),
        "no warning about the garbage after the last record of {journal:?}; log:\n{log}"
    );
    let mut api = g.api(None);
    for client in [&mut a, &mut b, &mut c] {
        assert_current(&mut api, client, &g);
    }
    g.kill9();

    // 3. The garbage was cut off: this restart finds a clean journal and the newest state.
    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    for client in [&mut a, &mut b, &mut c] {
        assert_current(&mut api, client, &g);
    }
    assert!(
        !warns_about(&g.log_text(), "torn"),
        "the torn tail was not cut off at the previous start:\n{}",
        g.log_text()
    );
}

/// SPEC §7, §6a.15: a damaged record followed by valid ones is corruption: the binary
/// refuses to start with a message naming the file and the offset, and leaves the file
/// as it found it.
#[test]
fn corrupt_journal_record_followed_by_valid_ones_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut a = register_one(&mut api);
    for _ in 0..3 {
        register_one(&mut api);
    }
    rotate(&mut api, &mut a);
    g.kill9();

    let journal = last_journal(data.path());
    let mut bytes = fs::read(&journal).unwrap();
    let spans = record_spans(&bytes);
    assert!(spans.len() >= 5, "expected 5 records in {journal:?}");
    // A byte in the middle of the second record's payload.
    let (start, end) = spans[1];
    bytes[(start + 8 + end) / 2] ^= 0x5a;
    fs::write(&journal, &bytes).unwrap();

    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    let name = journal.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.contains(&name),
        "the refusal does not name {name}:\n{log}"
    );
    assert!(
        log.contains("offset") && log.contains(&start.to_string()),
        "the refusal does not name the offset {start}:\n{log}"
    );
    assert_eq!(
        fs::read(&journal).unwrap(),
        bytes,
        "the refused start modified {journal:?} (it must not 'repair' by cutting valid records)"
    );

    // Damage in the first record's length field is corruption too.
    let mut bytes2 = bytes.clone();
    bytes2[(start + 8 + end) / 2] ^= 0x5a; // undo
    bytes2[2] ^= 0x01; // first record's length now points into the middle of nowhere
    fs::write(&journal, &bytes2).unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains(&name) && log.contains("offset"),
        "the refusal does not name {name} and the offset:\n{log}"
    );
}

/// SPEC §7: a damaged snapshot refuses to start, naming the file and the offset; with the
/// original bytes back, everything acknowledged before the (graceful) snapshot is there.
#[test]
fn corrupt_snapshot_refuses_to_start_naming_file_and_offset() {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(Some(data.path()));
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut clients: Vec<Tracked> = (0..4).map(|_| register_one(&mut api)).collect();
    rotate(&mut api, &mut clients[0]);
    drop(api);
    g.signal("TERM");
    let status = g.wait_exit();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", g.log_tail());
    let snapshot = snapshots(data.path())
        .pop()
        .expect("graceful shutdown writes a snapshot");
    let original = fs::read(&snapshot).unwrap();
    let name = snapshot.file_name().unwrap().to_string_lossy().into_owned();

    // A flipped byte in the middle.
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&snapshot, &bytes).unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains(&name) && log.contains("offset"),
        "the refusal does not name {name} and the offset:\n{log}"
    );

    // Truncated.
    fs::write(&snapshot, &original[..original.len() - 3]).unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(
        log.contains(&name) && log.contains("offset"),
        "the refusal does not name {name} and the offset:\n{log}"
    );

    // Restored: starts, and the snapshot held every acknowledged change.
    fs::write(&snapshot, &original).unwrap();
    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    for c in clients.iter_mut() {
        assert_current(&mut api, c, &g);
    }
}

/// A missing data directory is created; an empty journal, an empty newer journal (a crash
/// right after a snapshot opened it) and a leftover temporary snapshot are all fine.
#[test]
fn missing_data_dir_an_earlier_releases_empty_journal_and_leftover_temp_files_start_fine() {
    let tmp = tempfile::tempdir().unwrap();

    // Missing (nested) directory.
    let dir = tmp.path().join("not/yet/there");
    let setup = Setup::new(Some(&dir));
    let mut g = Gateway::start(&setup);
    assert!(dir.is_dir(), "{dir:?} was not created");
    let mut a = register_one(&mut g.api(None));
    g.kill9();
    let mut g = Gateway::start(&setup);
    assert_current(&mut g.api(None), &mut a, &g);
    g.kill9();

    // An empty journal and nothing else.
    let dir = tmp.path().join("empty");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(format!("journal-{:020}.log", 0)), b"").unwrap();
    let setup = Setup::new(Some(&dir));
    let mut g = Gateway::start(&setup);
    let mut b = register_one(&mut g.api(None));
    g.kill9();

    // An empty journal of the next generation after one with records: an earlier release
    // left such files, this one never does (journals are created with their header), so in
    // a directory it has written this is damage, and the start is refused.
    let newest = journals(&dir)
        .iter()
        .filter_map(|p| {
            p.file_stem()?
                .to_str()?
                .strip_prefix("journal-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap()
        + 1;
    let emptied = dir.join(format!("journal-{newest:020}.log"));
    fs::write(&emptied, b"").unwrap();
    let (status, log) = Gateway::refuse(&setup);
    assert!(!status.success(), "exit status {status}");
    assert!(log.contains(&format!("journal-{newest:020}.log")), "{log}");
    fs::remove_file(&emptied).unwrap();
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    assert_current(&mut api, &mut b, &g);
    let mut c = register_one(&mut api);
    drop(api);
    g.kill9();

    // A temporary snapshot left by a crash during a snapshot write.
    let tmp_snapshot = dir.join(format!("snapshot-{:020}.snap.tmp", newest + 1));
    fs::write(&tmp_snapshot, b"\x20\0\0\0partial").unwrap();
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    assert_current(&mut api, &mut b, &g);
    assert_current(&mut api, &mut c, &g);
    drop(api);
    g.kill9();
    assert!(
        !tmp_snapshot.exists(),
        "the leftover {tmp_snapshot:?} is still there"
    );
}

// === the grace successor across a restart ===

/// SPEC §6a.17: the successor a grace-period replay hands out again is kept in memory only,
/// never on disk; after a restart the replay answers 401 and the successor works.
#[test]
fn grace_replay_is_memory_only_and_answers_401_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(Some(data.path()));
    setup.extra = "[management]\nrotation_grace = \"1h\"\n".into();
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut a = register_one(&mut api);
    rotate(&mut api, &mut a);
    // Within the grace period the replaced token gets the same successor again.
    let r = api.manage("GET", &a.id, &a.tokens[0]).unwrap();
    assert_eq!(r.status, 200, "grace replay: {}", r.text());
    assert_eq!(r.field("registration_access_token"), a.token());
    let credentials: Vec<(String, String)> = a
        .tokens
        .iter()
        .chain(&a.secrets)
        .map(|t| ("a credential of the grace test".to_owned(), t.clone()))
        .collect();
    assert_no_secret_in(&all_files(data.path()), &credentials);
    drop(api);
    g.kill9();

    let g = Gateway::start(&setup);
    let mut api = g.api(None);
    let r = api.manage("GET", &a.id, &a.tokens[0]).unwrap();
    assert_eq!(
        r.status,
        401,
        "a grace replay after a restart (SPEC §6a.17): {}",
        r.text()
    );
    let r = api.manage("GET", &a.id, a.token()).unwrap();
    assert_eq!(
        r.status,
        200,
        "the successor after a restart: {}\nlog:\n{}",
        r.text(),
        g.log_tail()
    );
}

// === nothing secret at rest ===

/// Every way a credential could be written: plaintext, its raw bytes, and their standard
/// base64 and hex forms.
fn secret_forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![("plaintext".to_owned(), secret.as_bytes().to_vec())];
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(secret) {
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        forms.push(("raw bytes".into(), raw.clone()));
        forms.push(("base64".into(), STANDARD.encode(&raw).into_bytes()));
        forms.push((
            "base64 (no padding)".into(),
            STANDARD_NO_PAD.encode(&raw).into_bytes(),
        ));
        forms.push(("hex".into(), hex.into_bytes()));
    }
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts no file in `files` holds any form of any of `secrets`; returns the files read.
fn assert_no_secret_in(files: &[PathBuf], secrets: &[(String, String)]) {
    for path in files {
        let bytes = fs::read(path).unwrap();
        for (what, secret) in secrets {
            for (form, needle) in secret_forms(secret) {
                assert!(
                    !contains(&bytes, &needle),
                    "{path:?} contains the {form} of {what} (SPEC §7: digests only)"
                );
            }
        }
    }
}

/// SPEC §7: credentials are at rest only as digests — the data directory (journals and
/// snapshots) holds no registration access token, client secret or access token the test
/// was issued, in any encoding; nor does the log.
#[test]
fn nothing_secret_reaches_the_data_dir_or_the_log() {
    let data = tempfile::tempdir().unwrap();
    let mut setup = Setup::new(Some(data.path())).snapshot_every("1s");
    setup.log_filter = "info,certgate=debug";
    let mut g = Gateway::start(&setup);
    let mut api = g.api(None);
    let mut admin = g.api(Some("admin"));
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, value: String| {
        secrets.push((what.to_owned(), value.clone()));
        value
    };

    let dcrm = keep("dcrm access token", dcrm_token(&mut admin));
    let r = admin
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "admin"),
                ("scope", "dcr"),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("initial access token", r.field("access_token"));

    // A: client_secret_basic; registered, read (rotates), updated (rotates).
    let r = api.register(&registration_body()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let a = r.field("client_id");
    keep(
        "A's registration token",
        r.field("registration_access_token"),
    );
    keep("A's client secret", r.field("client_secret"));
    let r = api
        .manage("GET", &a, &r.field("registration_access_token"))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let token = keep("A's rotated token", r.field("registration_access_token"));
    let secret = keep("A's rotated secret", r.field("client_secret"));
    let auth = format!("Bearer {token}");
    let body = json!({
        "client_id": a,
        "client_secret": secret,
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
        "client_name": "durability",
    });
    let r = api
        .call(
            "PUT",
            &format!("/register/{a}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "PUT: {}", r.text());
    let a_token = keep("A's token after PUT", r.field("registration_access_token"));
    let a_secret = keep("A's secret after PUT", r.field("client_secret"));
    let r = api.token_basic(&a, &a_secret).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = keep("A's access token (revoked)", r.field("access_token"));
    let r = api.token_basic(&a, &a_secret).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("A's access token", r.field("access_token"));
    let basic = common::basic_auth(&a, &a_secret);
    let r = api
        .form(
            "/revoke",
            &[("authorization", &basic)],
            &[("token", &revoked)],
        )
        .unwrap();
    assert_eq!(r.status, 200, "revoke: {}", r.text());

    // B: client_secret_post.
    let r = api
        .register(&json!({
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
        }))
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let b = r.field("client_id");
    let b_token = keep(
        "B's registration token",
        r.field("registration_access_token"),
    );
    let b_secret = keep("B's client secret", r.field("client_secret"));
    let r = api
        .form(
            "/token",
            &[],
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &b),
                ("client_secret", &b_secret),
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("B's access token", r.field("access_token"));

    // C: registered and deleted with its token; and dcrm reads A.
    let r = api.register(&registration_body()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let c = r.field("client_id");
    let c_token = keep(
        "C's registration token",
        r.field("registration_access_token"),
    );
    keep("C's client secret", r.field("client_secret"));
    assert_eq!(api.manage("DELETE", &c, &c_token).unwrap().status, 204);
    assert_eq!(admin.manage("GET", &a, &dcrm).unwrap().status, 200);

    // Let a snapshot happen, then change more so the journal holds records after it.
    let until = Instant::now() + Duration::from_secs(20);
    while snapshots(data.path()).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !snapshots(data.path()).is_empty(),
        "no snapshot with snapshot_interval = \"1s\""
    );
    let r = api.manage("GET", &b, &b_token).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("B's rotated token", r.field("registration_access_token"));
    keep("B's rotated secret", r.field("client_secret"));
    let r = api.manage("GET", &a, &a_token).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    keep("A's last token", r.field("registration_access_token"));
    keep("A's last secret", r.field("client_secret"));
    drop((api, admin));

    // While running: journals (and snapshots) as they are.
    let files = all_files(data.path());
    let everything: Vec<u8> = files.iter().flat_map(|p| fs::read(p).unwrap()).collect();
    assert!(
        contains(&everything, a.as_bytes()) && contains(&everything, b.as_bytes()),
        "the data directory does not even hold the client ids: {files:?}"
    );
    assert_no_secret_in(&files, &secrets);

    // After a graceful stop: the final snapshot too.
    g.signal("TERM");
    let status = g.wait_exit();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", g.log_tail());
    assert_no_secret_in(&all_files(data.path()), &secrets);

    // SPEC §7 also says never in logs.
    assert_no_secret_in(std::slice::from_ref(&g.log), &secrets);
}
