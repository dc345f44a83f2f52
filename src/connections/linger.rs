//! Request bodies left unread by a handler that refused the request, read before the answer
//! (module docs of [`super`], "Unread bodies").

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;

/// The most of a request body left unread by its handler that is read before the answer (module
/// docs, "Unread bodies"). A body declared longer is not read at all: its client is reset.
pub const LINGER_BYTES: u64 = 32 * 1024 * 1024;

/// How long reading an unread body may take in all.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Where a request body left unread comes back to the connection (module docs, "Unread bodies").
pub(super) type Unread = Arc<parking_lot::Mutex<Option<Body>>>;

/// A request body that, dropped before its end, leaves its rest in `back`; unless it failed, or
/// its client holds it back until asked (`Expect: 100-continue`) and it was never read.
pub(super) struct Returned {
    inner: Option<Body>,
    back: Unread,
    held_back: bool,
    read: bool,
    done: bool,
}

impl Returned {
    pub(super) fn new(inner: Body, back: Unread, held_back: bool) -> Self {
        Self {
            inner: Some(inner),
            back,
            held_back,
            read: false,
            done: false,
        }
    }
}

impl http_body::Body for Returned {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        this.read = true;
        let r = Pin::new(inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None | Some(Err(_)))) {
            this.done = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            if !self.done && (self.read || !self.held_back) {
                *self.back.lock() = Some(rest);
            }
        }
    }
}

/// Reads and drops `rest`, the unread end of a request body, within [`LINGER_BYTES`] and
/// [`LINGER_TIME`] (module docs, "Unread bodies").
pub(super) async fn linger(mut rest: Body) {
    let mut seen = 0u64;
    let read = async {
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut rest), cx)).await
        {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > LINGER_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, read).await;
}
