//! Bodies. Every response certgate sends is one buffer (its own answers) or a stream passed
//! through from an upstream (edge routes), with backpressure either way.
//!
//! Request bodies are shared ([`RequestBody`]) so that an unread one can outlive its handler:
//! an HTTP/2 stream whose request body is dropped before the answer is sent is reset with
//! CANCEL, and clients such as curl then report a transport error instead of the answer.
//!
//! A body can carry a guard that lives exactly as long as the body is being sent: the
//! server's per-connection watchdog counts a streaming response (a download, an endless
//! event stream) as a request still in flight, not as an idle connection.

use std::any::Any;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// A response body.
pub struct Body {
    kind: Kind,
    guard: Option<Box<dyn Any + Send + Sync>>,
}

enum Kind {
    /// Sent once, then the body ends.
    Full(Option<Bytes>),
    /// Passed through frame by frame.
    Stream(Incoming),
}

impl Body {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            guard: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            guard: None,
        }
    }

    /// Another peer's body, streamed.
    pub fn stream(incoming: Incoming) -> Self {
        Self {
            kind: Kind::Stream(incoming),
            guard: None,
        }
    }

    /// Keeps `guard` alive until the body has been sent (or dropped), with any guard it
    /// already has.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(match self.guard.take() {
            None => Box::new(guard),
            Some(earlier) => Box::new((earlier, guard)),
        });
        self
    }
}

/// A request body that the connection can keep after the handler dropped its request.
#[derive(Clone)]
pub struct RequestBody(Arc<Mutex<Incoming>>);

impl RequestBody {
    /// Wraps the body hyper delivered.
    pub fn new(incoming: Incoming) -> Self {
        Self(Arc::new(Mutex::new(incoming)))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Incoming) -> R) -> R {
        // Held for one poll at a time: one task polls a request body, and the connection
        // only asks `is_end_stream` once the answer is ready (a body still streaming to an
        // upstream may make it wait for that one poll).
        match self.0.lock() {
            Ok(mut incoming) => f(&mut incoming),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.with(|incoming| Pin::new(incoming).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.with(|incoming| incoming.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.with(|incoming| incoming.size_hint())
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
        };
        if let Poll::Ready(None) = polled {
            // Sent: the request is no longer in flight.
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(incoming) => incoming.size_hint(),
        }
    }
}
