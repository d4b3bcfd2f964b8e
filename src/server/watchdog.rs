//! Per-connection time boxes that hyper does not give: a connection that sends nothing, or
//! stays idle, is closed (SPEC §8), and a closed connection lingers so a client still
//! sending a body can read the answer it got (RFC 9112 §9.6).
//!
//! hyper's own HTTP/1 `header_read_timeout` also runs while a keep-alive connection waits
//! for its next request (so it would cut `idle_timeout` short), and nothing in hyper bounds
//! the wait for the first bytes that decide HTTP/1 or HTTP/2, nor an HTTP/2 connection that
//! answers PINGs but never opens a stream. One watchdog per connection covers all of them
//! from three facts: when the connection started, whether a request is in flight, and since
//! when it has been idle (or reading a request head).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

/// "No request head has started since the connection went idle."
const NONE: u64 = u64::MAX;

/// How long a closed connection keeps reading (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// How much a lingering connection reads before it gives up.
const LINGER_BYTES: usize = 1 << 20;

/// What the watchdog knows about one connection; updated by the service and the I/O
/// wrapper, read by the watchdog when its timer fires.
pub struct Activity {
    start: Instant,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// Whether bytes arriving on an idle connection start a request head (HTTP/1). On
    /// HTTP/2 they may be PINGs or settings, which do not.
    reads_start_heads: bool,
    in_flight: AtomicU32,
    requests: AtomicU64,
    /// Milliseconds since `start` when the last request finished.
    idle_since: AtomicU64,
    /// Milliseconds since `start` when bytes of the next head arrived (`NONE`: not yet).
    head_since: AtomicU64,
    /// An answer went out before its request body had all arrived.
    body_left_unread: AtomicBool,
    /// Bytes arrived while the current request was in flight (its body, or a pipelined
    /// next request).
    read_in_flight: AtomicBool,
    /// A request came over HTTP/2 (the auto builder also takes prior-knowledge HTTP/2).
    saw_http2: AtomicBool,
    /// Milliseconds since `start` the watchdog sleeps until: a change that moves the
    /// deadline before it wakes the watchdog (rarely: deadlines mostly move later).
    wake_at: AtomicU64,
    earlier: Notify,
}

impl Activity {
    /// A connection that has just been accepted (and, on TLS, handshaken).
    pub fn new(header_read_timeout: Duration, idle_timeout: Duration, http1: bool) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            header_read_timeout,
            idle_timeout,
            reads_start_heads: http1,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            body_left_unread: AtomicBool::new(false),
            read_in_flight: AtomicBool::new(false),
            saw_http2: AtomicBool::new(false),
            wake_at: AtomicU64::new(NONE),
            earlier: Notify::new(),
        })
    }

    /// The watchdog is about to sleep until `at`.
    pub fn sleeping_until(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.start).as_millis() as u64;
        self.wake_at.store(ms, Ordering::SeqCst);
    }

    /// Resolves when the deadline moved before the watchdog's wake-up time.
    pub async fn earlier(&self) {
        self.earlier.notified().await
    }

    /// A new deadline `after` from now: wake the watchdog if it sleeps past it.
    fn moved(&self, now_ms: u64, after: Duration) {
        let deadline = now_ms + after.as_millis() as u64;
        if deadline < self.wake_at.load(Ordering::SeqCst) {
            self.earlier.notify_one();
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A request reached the service; the returned guard marks it finished when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        self.read_in_flight.store(false, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            self.read_in_flight.store(true, Ordering::Relaxed);
        }
        if self.reads_start_heads
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
        {
            let now = self.now_ms();
            self.head_since.store(now, Ordering::Relaxed);
            self.moved(now, self.header_read_timeout);
        }
    }

    /// When the connection must be closed if nothing changes, or `None` while a request
    /// is in flight.
    pub fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = Duration::from_millis;
        let at = if self.requests.load(Ordering::Relaxed) == 0 {
            // The first request head must be complete within header_read_timeout of the
            // handshake, however slowly its bytes trickle in.
            self.start + self.header_read_timeout
        } else {
            match self.head_since.load(Ordering::Relaxed) {
                NONE => self.start + ms(self.idle_since.load(Ordering::SeqCst)) + self.idle_timeout,
                since => self.start + ms(since) + self.header_read_timeout,
            }
        };
        Some(at)
    }

    /// The client may still be sending: the answer to a request went out before its body
    /// had all arrived.
    pub fn body_left_unread(&self) {
        self.body_left_unread.store(true, Ordering::Relaxed);
    }

    /// A request arrived over HTTP/2.
    pub fn http2(&self) {
        self.saw_http2.store(true, Ordering::Relaxed);
    }

    /// Whether closing now cannot reset anything the client still sends: an HTTP/1
    /// connection that answered at least one request, read each request's body to its end,
    /// has no request in flight, and received nothing since its last request arrived whole
    /// with its head (no body still coming, no pipelined or partial next head). Only then
    /// is the linger skipped (nginx's `lingering_close on` decides much the same); an
    /// HTTP/2 peer may still send frames, so it always lingers.
    fn closes_cleanly(&self) -> bool {
        self.reads_start_heads
            && !self.saw_http2.load(Ordering::Relaxed)
            && self.requests.load(Ordering::Relaxed) > 0
            && self.in_flight.load(Ordering::SeqCst) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
            && !self.read_in_flight.load(Ordering::Relaxed)
            && !self.body_left_unread.load(Ordering::Relaxed)
    }

    /// How long to sleep before looking again while a request is in flight.
    pub fn recheck(&self) -> Duration {
        self.idle_timeout.min(self.header_read_timeout)
    }
}

/// A request in flight; finished when dropped.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = self.0.now_ms();
        self.0.idle_since.store(now, Ordering::SeqCst);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.moved(now, self.0.idle_timeout);
        }
    }
}

/// The connection's byte stream, watched: reads feed [`Activity`], and when hyper drops it
/// the socket lingers (reading and discarding) unless the client already closed its side or
/// cannot be sending any more ([`Activity::closes_cleanly`]).
/// It also holds the listener slot, which is given back only when the socket is closed.
pub struct Watched<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<T>,
    activity: Arc<Activity>,
    permit: Option<OwnedSemaphorePermit>,
    eof: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Watched<T> {
    /// Wraps an accepted (and handshaken) stream.
    pub fn new(inner: T, activity: Arc<Activity>, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner: Some(inner),
            activity,
            permit: Some(permit),
            eof: false,
        }
    }

    fn inner(&mut self) -> io::Result<&mut T> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let inner = match self.inner() {
            Ok(i) => i,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let r = Pin::new(inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            if buf.filled().len() == before {
                self.eof = true;
            } else {
                self.activity.on_read();
            }
        }
        r
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.inner() {
            Ok(i) => Pin::new(i).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.inner() {
            Ok(i) => Pin::new(i).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner() {
            Ok(i) => Pin::new(i).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner() {
            Ok(i) => Pin::new(i).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Watched<T> {
    fn drop(&mut self) {
        let (Some(inner), permit) = (self.inner.take(), self.permit.take()) else {
            return;
        };
        // A lingering close costs a task, a buffer and a timer per connection (a quarter
        // of certgate's own work per connection when each carries one request): only pay
        // it when the client may still be sending.
        if self.eof || self.activity.closes_cleanly() {
            return;
        }
        // Closing a socket with unread data makes the kernel send a reset, which can destroy
        // the response the client has not read yet (a 413 to a client still uploading):
        // keep reading for a while instead. The slot stays taken until the socket closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(inner, permit));
        }
    }
}

async fn linger<T: AsyncRead + AsyncWrite + Unpin>(
    mut io: T,
    permit: Option<OwnedSemaphorePermit>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        // Our side is done (hyper may already have said so): the client sees the end of
        // the response, then its own close ends the linger at once.
        let _ = io.shutdown().await;
        while total < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    drop(io);
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http1() -> Arc<Activity> {
        Activity::new(Duration::from_secs(5), Duration::from_secs(60), true)
    }

    #[test]
    fn a_connection_closes_without_lingering_only_when_the_client_cannot_be_sending() {
        // Nothing answered yet: a head may be on its way (or hyper refused one).
        let a = http1();
        assert!(!a.closes_cleanly());
        // One request answered with its body read to the end.
        drop(a.begin());
        assert!(a.closes_cleanly());
        // Bytes of the next head arrived.
        a.on_read();
        assert!(!a.closes_cleanly());

        // A request in flight.
        let a = http1();
        let in_flight = a.begin();
        assert!(!a.closes_cleanly());
        drop(in_flight);
        assert!(a.closes_cleanly());
        // An answer went out before its body had all arrived (a 413 to an upload).
        a.body_left_unread();
        assert!(!a.closes_cleanly());

        // Bytes arrived while a request was in flight: a body in several reads, or a
        // pipelined next request hyper may not serve.
        let a = http1();
        let in_flight = a.begin();
        a.on_read();
        drop(in_flight);
        assert!(!a.closes_cleanly());
        // The next request arrived whole; it was answered.
        drop(a.begin());
        assert!(a.closes_cleanly());
        // HTTP/2 without ALPN (prior knowledge) on a connection built as HTTP/1.
        a.http2();
        assert!(!a.closes_cleanly());

        // HTTP/2: the peer may still send frames.
        let a = Activity::new(Duration::from_secs(5), Duration::from_secs(60), false);
        drop(a.begin());
        assert!(!a.closes_cleanly());
    }
}
