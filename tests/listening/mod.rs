//! Where a `certgate` child process listens.
//!
//! The tests that run the real binary configure every listener on port 0 and read the ports
//! the kernel chose from the one `certgate listening` line the binary logs once it has bound
//! them (`tls=…`, `proxy=Some(…)`, `admin=Some(…)`; text or `--log-format json`). No port is
//! picked before the binary binds it, so no other process can take it in between.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The addresses a `certgate listening` line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub tls: SocketAddr,
    pub proxy: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl Bound {
    pub fn tls_port(&self) -> u16 {
        self.tls.port()
    }

    /// The proxy listener's port; panics if the configuration has none.
    pub fn proxy_port(&self) -> u16 {
        self.proxy.expect("certgate has a proxy listener").port()
    }

    /// The admin listener's port; panics if the configuration has none.
    pub fn admin_port(&self) -> u16 {
        self.admin.expect("certgate has an admin listener").port()
    }
}

/// How waiting for the `certgate listening` line ended.
pub enum Listening {
    Bound(Bound),
    /// The process exited without logging it.
    Exited(ExitStatus),
    /// Neither within the time limit.
    TimedOut,
}

/// Polls `log` (the child's stderr) until it holds a `certgate listening` line, `child`
/// exits, or `timeout` passes.
pub fn wait(child: &mut Child, log: &Path, timeout: Duration) -> Listening {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(bound) = parse(&fs::read_to_string(log).unwrap_or_default()) {
            return Listening::Bound(bound);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The line may have been written just before the exit.
            return match parse(&fs::read_to_string(log).unwrap_or_default()) {
                Some(bound) => Listening::Bound(bound),
                None => Listening::Exited(status),
            };
        }
        if Instant::now() > deadline {
            return Listening::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The addresses of the first complete `certgate listening` line in `log`, if any.
pub fn parse(log: &str) -> Option<Bound> {
    log.split_inclusive('\n')
        .filter(|line| line.ends_with('\n') && line.contains("certgate listening"))
        .find_map(parse_line)
}

fn parse_line(line: &str) -> Option<Bound> {
    if let Ok(event) = serde_json::from_str::<Value>(line) {
        // tracing-subscriber's JSON format nests the event's fields under "fields".
        let fields = event.get("fields").unwrap_or(&event);
        let field = |name: &str| fields.get(name)?.as_str().map(str::to_owned);
        return bound(field("tls")?, field("proxy")?, field("admin")?);
    }
    // The text format: `… certgate listening tls=A proxy=Some(B) admin=None issuer=…`, the
    // field names possibly wrapped in ANSI colour codes.
    let plain = strip_ansi(line);
    let field = |name: &str| {
        plain
            .split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    bound(field("tls")?, field("proxy")?, field("admin")?)
}

fn bound(tls: String, proxy: String, admin: String) -> Option<Bound> {
    Some(Bound {
        tls: tls.parse().ok()?,
        proxy: optional(&proxy)?,
        admin: optional(&admin)?,
    })
}

/// `None` or `Some(addr)` (a `Debug`-formatted `Option<SocketAddr>`).
fn optional(text: &str) -> Option<Option<SocketAddr>> {
    if text == "None" {
        return Some(None);
    }
    let addr = text.strip_prefix("Some(")?.strip_suffix(')')?;
    Some(Some(addr.parse().ok()?))
}

/// `text` without ANSI escape sequences (`ESC [ … final byte`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
