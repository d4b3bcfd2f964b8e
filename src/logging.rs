//! The shipped logging: `tracing` events (one access-log line per request among them) as
//! text or JSON lines on stderr.
//!
//! Lines are appended to a shared buffer and written by a thread of their own, in batches:
//! a request pays a short lock and a copy, never a syscall, a wake-up or an allocation, and
//! a slow terminal, pipe or disk never blocks a runtime thread. The writer thread wakes when
//! the buffer passes [`FLUSH_AT`] or [`FLUSH_EVERY`] after the first line of a batch, so a
//! line reaches stderr within that time. If stderr stalls for long, lines beyond
//! [`MAX_BUFFERED`] are dropped and counted, and the count is logged once it drains.

use std::io::{IsTerminal as _, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `tracing_subscriber`'s text lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A batch this large is written at once.
pub const FLUSH_AT: usize = 64 * 1024;
/// No line waits longer than this for its batch.
pub const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// Beyond this much unwritten text, new lines are dropped (and counted).
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// Installs the global subscriber: `RUST_LOG` (default `info`), `format`, stderr.
pub fn init(format: LogFormat) -> LogGuard {
    // Colour only for a terminal: escape codes in a file or a log pipeline are noise.
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = BatchWriter::spawn(std::io::stderr());
    let _ = tracing_subscriber::util::SubscriberInitExt::try_init(dispatch(
        std::env::var("RUST_LOG").ok().as_deref(),
        format,
        ansi,
        writer,
    ));
    guard
}

/// The shipped subscriber for a `RUST_LOG` value, writing to `writer`.
///
/// A plain level and `target=level` list (what operators set) is a static
/// [`Targets`](tracing_subscriber::filter::Targets) filter, decided once per call site;
/// anything else (span and field directives) falls back to `EnvFilter`, which costs more per
/// event.
pub fn dispatch<W>(
    rust_log: Option<&str>,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> tracing::Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;

    let spec = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    match spec.parse::<Targets>() {
        Ok(targets) => formatted(
            tracing_subscriber::registry().with(targets),
            format,
            ansi,
            writer,
        ),
        Err(_) => formatted(
            tracing_subscriber::registry().with(tracing_subscriber::EnvFilter::new(spec)),
            format,
            ansi,
            writer,
        ),
    }
}

/// `filtered` with the line format on top: one shape whatever the filter's type.
fn formatted<S, W>(filtered: S, format: LogFormat, ansi: bool, writer: W) -> tracing::Dispatch
where
    S: tracing::Subscriber
        + for<'a> tracing_subscriber::registry::LookupSpan<'a>
        + Send
        + Sync
        + 'static,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;

    match format {
        LogFormat::Text => filtered
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(TextLines::default())
                    .with_ansi(ansi)
                    .with_writer(writer),
            )
            .into(),
        LogFormat::Json => filtered
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .event_format(JsonLines::default())
                    .with_writer(writer),
            )
            .into(),
    }
}

/// The target of the access log: one line per request.
pub const ACCESS_TARGET: &str = "certgate::access";

/// `tracing_subscriber`'s default text line, written directly for access-log lines.
///
/// There is one access line per request, so its cost is paid on every request: the default
/// formatter spent about as much on it as certgate's whole routing does (styling wrappers
/// even without colour, a timestamp computed from scratch, span lookups). An access line
/// without colour and outside any span is written here, byte for byte as the default
/// formatter would; anything else goes to the default formatter.
#[derive(Default)]
struct TextLines {
    full: tracing_subscriber::fmt::format::Format,
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for TextLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if writer.has_ansi_escapes() || !written_directly(ctx, event) {
            return self.full.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        write_timestamp(&mut writer)?;
        writer.write_str(match *meta.level() {
            tracing::Level::TRACE => " TRACE ",
            tracing::Level::DEBUG => " DEBUG ",
            tracing::Level::INFO => "  INFO ",
            tracing::Level::WARN => "  WARN ",
            tracing::Level::ERROR => " ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = PlainFields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// `tracing_subscriber`'s default JSON line, written directly for access-log lines outside
/// any span (the default serializer cost five times the text line); anything else goes to
/// the default formatter.
struct JsonLines {
    full: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
}

impl Default for JsonLines {
    fn default() -> Self {
        Self {
            full: tracing_subscriber::fmt::format().json(),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if !written_directly(ctx, event) {
            return self.full.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_str("\",\"fields\":{")?;
        let mut fields = JsonFields {
            writer: &mut writer,
            first: true,
            scratch: String::new(),
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Whether `event` is an access line outside any span: the lines [`TextLines`] and
/// [`JsonLines`] write themselves.
fn written_directly<S, N>(
    ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
    event: &tracing::Event<'_>,
) -> bool
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    event.metadata().target() == ACCESS_TARGET && ctx.event_scope().is_none()
}

/// `value` as a JSON string, escaped as `serde_json` escapes it.
fn write_json_str(w: &mut impl std::fmt::Write, value: &str) -> std::fmt::Result {
    if crate::json::is_plain(value) {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        match serde_json::to_string(value) {
            Ok(quoted) => w.write_str(&quoted),
            Err(_) => Err(std::fmt::Error),
        }
    }
}

/// The event's fields as `tracing_serde` writes them: numbers and booleans as such,
/// strings and everything else (its `Debug` text) as JSON strings.
struct JsonFields<'a, W> {
    writer: &'a mut W,
    first: bool,
    /// A `Debug` value's text, before it is escaped.
    scratch: String,
    result: std::fmt::Result,
}

impl<W: std::fmt::Write> JsonFields<'_, W> {
    /// Writes the separator and `"name":`.
    fn key(&mut self, field: &tracing::field::Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(',');
        }
        self.first = false;
        self.result = self
            .result
            .and_then(|()| write_json_str(self.writer, field.name()))
            .and_then(|()| self.writer.write_char(':'));
        self.result.is_ok()
    }

    /// An integer as serde_json writes it (the same digits), without `core::fmt`.
    fn integer(&mut self, field: &tracing::field::Field, value: impl itoa::Integer) {
        if self.key(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn number(&mut self, field: &tracing::field::Field, value: impl std::fmt::Display) {
        if self.key(field) {
            self.result = write!(self.writer, "{value}");
        }
    }
}

impl<W: std::fmt::Write> tracing::field::Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if self.key(field) {
            self.result = write_json_str(self.writer, value);
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.integer(field, value);
    }

    fn record_u128(&mut self, field: &tracing::field::Field, value: u128) {
        self.integer(field, value);
    }

    fn record_i128(&mut self, field: &tracing::field::Field, value: i128) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.number(field, value);
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if self.key(field) {
            // serde_json's own text for a float (and `null` for NaN and infinities).
            self.result = match serde_json::to_string(&value) {
                Ok(text) => self.writer.write_str(&text),
                Err(_) => Err(std::fmt::Error),
            };
        }
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !self.key(field) {
            return;
        }
        self.scratch.clear();
        self.result = std::fmt::Write::write_fmt(&mut self.scratch, format_args!("{value:?}"))
            .and_then(|()| write_json_str(self.writer, &self.scratch));
    }
}

/// `SystemTime::now()` as `tracing_subscriber` writes it (`2026-11-30T10:18:12.901891Z`);
/// the part up to the second is formatted once per second per thread.
fn write_timestamp(w: &mut impl std::fmt::Write) -> std::fmt::Result {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let mut micros = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut n = since.subsec_micros();
    for digit in micros[1..7].iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let text = humantime::format_rfc3339_seconds(now).to_string();
            cached.1 = text.trim_end_matches('Z').to_owned();
            cached.0 = secs;
        }
        w.write_str(&cached.1)
    })?;
    // Only ASCII digits and punctuation were written into `micros`.
    w.write_str(std::str::from_utf8(&micros).unwrap_or(".000000Z"))
}

/// `tracing_subscriber`'s default field text (`name=value`, strings quoted as `Debug`
/// quotes them), without its styling wrappers.
struct PlainFields<'a, W> {
    writer: &'a mut W,
    first: bool,
    result: std::fmt::Result,
}

impl<W: std::fmt::Write> PlainFields<'_, W> {
    /// Writes the separator and `name=`; `false` for a field the default format omits.
    fn name(&mut self, field: &tracing::field::Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }

    /// An integer as `Debug` writes it, without the formatting machinery.
    fn integer(&mut self, field: &tracing::field::Field, value: impl itoa::Integer) {
        if self.name(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }
}

impl<W: std::fmt::Write> tracing::field::Visit for PlainFields<'_, W> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if !self.name(field) {
            return;
        }
        if field.name() == "message" {
            // A message is written as it is, never quoted.
            self.result = self.writer.write_str(value);
            return;
        }
        // `Debug` escapes nothing else in printable ASCII, and is slower to ask.
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.result = if plain {
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.integer(field, value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.name(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

/// Keeps the log writer thread running; dropping it writes what is buffered and stops it.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closed = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where every thread's log lines go (a [`MakeWriter`]): the shared batch buffer.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

struct State {
    buf: Vec<u8>,
    /// The writer thread waits for a first line (and must be woken for it).
    idle: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it cannot leave the buffer inconsistent: keep logging.
        match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl BatchWriter {
    /// Starts the writer thread for `out`.
    pub fn spawn<W: Write + Send + 'static>(out: W) -> (Self, LogGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(FLUSH_AT),
                idle: false,
                closed: false,
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("certgate-log".into())
            .spawn(move || write_batches(&worker, out))
            .ok();
        (
            Self {
                shared: shared.clone(),
            },
            LogGuard { shared, thread },
        )
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.shared.lock();
        if state.buf.len() + line.len() > MAX_BUFFERED {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(line);
        // Wake the writer only when it sleeps without a deadline, or a batch just filled:
        // under load it is woken by its own timer, not by every line.
        let wake = state.idle || (before < FLUSH_AT && state.buf.len() >= FLUSH_AT);
        state.idle = false;
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer thread: waits for a batch, swaps the buffer out, writes it with no lock held.
fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::with_capacity(FLUSH_AT);
    loop {
        let mut state = shared.lock();
        if state.buf.is_empty() && !state.closed {
            state.idle = true;
            while state.idle && state.buf.is_empty() && !state.closed {
                state = match shared.wake.wait(state) {
                    Ok(s) => s,
                    Err(p) => p.into_inner(),
                };
            }
        }
        // A first line arrived: let the batch grow for a moment, unless it is full already.
        if state.buf.len() < FLUSH_AT && !state.closed {
            state = match shared.wake.wait_timeout(state, FLUSH_EVERY) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
        std::mem::swap(&mut batch, &mut state.buf);
        let closed = state.closed;
        drop(state);
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "certgate: {dropped} log lines dropped: stderr did not keep up"
            );
        }
        // A failed write loses this batch only; there is nowhere else to report it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > 4 * FLUSH_AT {
            batch = Vec::with_capacity(FLUSH_AT);
        }
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

/// One event's writer: `tracing_subscriber` formats a whole line, then writes it once.
pub struct LineWriter<'a>(&'a BatchWriter);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Writes the same events through `format` and through `tracing_subscriber`'s own
    /// formatter for it; returns both outputs.
    fn both_ways(format: LogFormat) -> (String, String) {
        use tracing_subscriber::layer::SubscriberExt as _;

        let ours = Sink::default();
        let theirs = Sink::default();
        let (o, t) = (ours.clone(), theirs.clone());
        let fast = dispatch(Some("info"), format, false, move || o.clone());
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || t.clone());
        let default: tracing::Dispatch = match format {
            LogFormat::Text => tracing_subscriber::registry().with(layer).into(),
            LogFormat::Json => tracing_subscriber::registry().with(layer.json()).into(),
        };
        let emit = || {
            let peer: std::net::SocketAddr = ([127, 0, 0, 1], 43568).into();
            tracing::info!(
                target: ACCESS_TARGET,
                method = %http::Method::GET,
                path = %"/register/abc",
                status = 200u16,
                latency_us = 43u64,
                client_id = "",
                thumbprint = "q\"uo\\te\u{e9}\t\u{7f}",
                peer = %peer,
            );
            tracing::info!(
                target: ACCESS_TARGET,
                r#type = "raw",
                delta = -3i64,
                ok = true,
                ratio = 0.5f64,
                odd = ?"a\nb",
                "with a message {}",
                7
            );
            tracing::info!(target: ACCESS_TARGET, message = "a \"str\" message", n = 1u8);
            let span = tracing::info_span!("conn", id = 3);
            span.in_scope(|| tracing::info!(target: ACCESS_TARGET, status = 404u16));
            tracing::warn!(target: "certgate::other", reason = "x", "not an access line");
        };
        tracing::dispatcher::with_default(&fast, emit);
        tracing::dispatcher::with_default(&default, emit);
        let text = |s: &Sink| String::from_utf8(s.0.lock().unwrap().clone()).unwrap();
        (text(&ours), text(&theirs))
    }

    #[test]
    fn an_access_line_is_the_line_the_default_formatter_writes() {
        // 2026-11-30T10:18:12.901891Z
        fn stamp(l: &str) -> (bool, u8, u8, u8) {
            let b = l.as_bytes();
            (b.len() > 27, b[10], b[19], b[26])
        }
        let (ours, theirs) = both_ways(LogFormat::Text);
        assert_eq!(ours.lines().count(), 5, "{ours}");
        for (a, b) in ours.lines().zip(theirs.lines()) {
            assert_eq!(stamp(a), (true, b'T', b'.', b'Z'), "{a}");
            assert_eq!(stamp(b), (true, b'T', b'.', b'Z'), "{b}");
            assert_eq!(a[27..], b[27..]);
        }
        assert!(
            ours.contains(r#"thumbprint="q\"uo\\teé\t\u{7f}""#),
            "{ours}"
        );

        let (ours, theirs) = both_ways(LogFormat::Json);
        assert_eq!(ours.lines().count(), 5, "{ours}");
        for (a, b) in ours.lines().zip(theirs.lines()) {
            let mut a: serde_json::Value = serde_json::from_str(a).unwrap();
            let mut b: serde_json::Value = serde_json::from_str(b).unwrap();
            for v in [&mut a, &mut b] {
                let time = v["timestamp"].take();
                assert_eq!(stamp(time.as_str().unwrap()), (false, b'T', b'.', b'Z'));
            }
            assert_eq!(a, b);
        }
        // Key order and spacing too, not only the same JSON value.
        let first = |s: &str| s.lines().next().unwrap()[42..].to_owned();
        assert_eq!(first(&ours), first(&theirs));
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::spawn(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let mut line = w.make_writer();
                        line.write_all(format!("t{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let mine: Vec<u32> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..5000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn a_line_reaches_the_output_without_waiting_for_a_full_batch() {
        let sink = Sink::default();
        let (writer, _guard) = BatchWriter::spawn(sink.clone());
        writer.make_writer().write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line never came");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"one line\n");
    }

    #[test]
    fn a_stalled_output_drops_lines_and_says_how_many() {
        /// Blocks every write until released.
        struct Stalled(Arc<(Mutex<bool>, Condvar)>, Sink);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (lock, cv) = &*self.0;
                let mut open = lock.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                self.1.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::spawn(Stalled(gate.clone(), sink.clone()));
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        // Far more than MAX_BUFFERED while the output is stalled: the callers never block.
        for _ in 0..(2 * MAX_BUFFERED / line.len()) {
            writer.make_writer().write_all(&line).unwrap();
        }
        {
            let (lock, cv) = &*gate;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("log lines dropped"), "no drop notice");
        // The batch in the stalled write, and a full buffer behind it.
        assert!(text.len() <= 2 * MAX_BUFFERED + 200, "{} bytes", text.len());
    }
}
