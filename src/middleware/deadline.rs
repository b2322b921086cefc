//! Deadlines: the whole call, not just its first response, must end by the
//! deadline the protocol adapter read (`grpc-timeout`). Past it, a call still
//! waiting for its answer gets DEADLINE_EXCEEDED, and a reply stream still
//! streaming ends with DEADLINE_EXCEEDED.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::Error;
use crate::call::{Answer, BoxFuture, CallRequest, Replies, Reply};

/// Enforces [`CallRequest::deadline`] on the whole call.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline(inner)
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct Deadline<S>(S);

impl<S> Service<CallRequest> for Deadline<S>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Error;
    type Future = futures_util::future::Either<S::Future, BoxFuture<Result<Answer, Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, call: CallRequest) -> Self::Future {
        let Some(deadline) = call.deadline() else {
            return futures_util::future::Either::Left(self.0.call(call));
        };
        let fut = self.0.call(call);
        futures_util::future::Either::Right(Box::pin(async move {
            match tokio::time::timeout_at(deadline, fut).await {
                Ok(answer) => Ok(answer?.map_stream(|s| Box::pin(Bounded::new(s, deadline)) as Replies)),
                Err(_) => Err(Error::deadline_exceeded("deadline exceeded before the handler answered")),
            }
        }))
    }
}

/// A reply stream that ends with DEADLINE_EXCEEDED at the deadline.
struct Bounded {
    inner: Option<Replies>,
    sleep: Pin<Box<Sleep>>,
}

impl Bounded {
    fn new(inner: Replies, deadline: Instant) -> Self {
        Self { inner: Some(inner), sleep: Box::pin(tokio::time::sleep_until(deadline)) }
    }
}

impl Stream for Bounded {
    type Item = Result<Reply, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            if item.is_none() {
                this.inner = None;
            }
            return Poll::Ready(item);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            // Dropping the stream cancels whatever produces it.
            this.inner = None;
            return Poll::Ready(Some(Err(Error::deadline_exceeded("deadline exceeded while streaming replies"))));
        }
        Poll::Pending
    }
}
