//! Response bodies fed by a pump task through a small channel: the channel
//! bounds memory per client, and a pump that stops without saying `End`
//! surfaces as a body error, so a client never sees a clean end of a
//! truncated file.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The body type of every response from [`crate::RepoProxy::handle`].
pub type Body = BoxBody<Bytes, io::Error>;

#[derive(Debug)]
pub(crate) enum Msg {
    Data(Bytes),
    End,
    Err(io::Error),
}

#[derive(Debug)]
struct ChannelBody {
    rx: mpsc::Receiver<Msg>,
    done: bool,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Msg::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Msg::End)) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Msg::Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(io::Error::other("transfer aborted"))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A body and the sender its pump writes to.
pub(crate) fn channel() -> (mpsc::Sender<Msg>, Body) {
    let (tx, rx) = mpsc::channel(1);
    (tx, ChannelBody { rx, done: false }.boxed())
}

pub(crate) fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn text(s: String) -> Body {
    http_body_util::Full::new(Bytes::from(s))
        .map_err(|never| match never {})
        .boxed()
}
