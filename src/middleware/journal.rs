//! [`JournalLayer`]: records every call in the request journal (the admin
//! API): its request messages as they are read, its replies as they are sent,
//! its status, and (through the call's `Answered` slot) the stubs that
//! answered. Outermost in the stack, so it sees what the client sees (auth
//! refusals and deadlines included). Installed only when the admin API is on.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{FutureExt as _, Stream};
use tower_layer::Layer;
use tower_service::Service;

use crate::Error;
use crate::call::{Answer, BoxFuture, CallRequest, Output, Replies, Reply};
use crate::journal::{Entry, Journal};

/// Records calls in a [`Journal`].
#[derive(Debug, Clone)]
pub struct JournalLayer {
    journal: Arc<Journal>,
}

impl JournalLayer {
    /// Records into `journal`.
    pub fn new(journal: Arc<Journal>) -> Self {
        Self { journal }
    }
}

impl<S> Layer<S> for JournalLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { journal: self.journal.clone(), inner }
    }
}

/// The service [`JournalLayer`] makes.
#[derive(Debug, Clone)]
pub struct Recorded<S> {
    journal: Arc<Journal>,
    inner: S,
}

impl<S> Service<CallRequest> for Recorded<S>
where
    S: Service<CallRequest, Response = Answer, Error = Error>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Error;
    type Future = BoxFuture<Result<Answer, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut call: CallRequest) -> Self::Future {
        let Some(entry) = self.journal.start(call.route.clone(), call.generation(), call.metadata(), call.peer_addr())
        else {
            return Box::pin(self.inner.call(call));
        };
        let seen = entry.clone();
        call.tap_requests(move |raw| seen.request(raw));
        let call = call.with_answered(Some(entry.answered.clone()));
        let guard = Guard(Some(entry));
        Box::pin(self.inner.call(call).map(move |result| record(result, guard)))
    }
}

/// Marks the call CANCELLED if it is dropped before its end.
struct Guard(Option<Arc<Entry>>);

impl Guard {
    fn done(&mut self, code: tonic::Code, message: String) {
        if let Some(e) = self.0.take() {
            e.done(code, message);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.done(tonic::Code::Cancelled, "the client went away before the call ended".into());
    }
}

fn record(result: Result<Answer, Error>, mut guard: Guard) -> Result<Answer, Error> {
    match result {
        Err(e) => {
            guard.done(e.code(), e.status_message());
            Err(e)
        }
        Ok(answer) => Ok(match &answer.body {
            Output::One(reply) => {
                if let Some(e) = &guard.0 {
                    e.reply(reply);
                }
                guard.done(tonic::Code::Ok, String::new());
                answer
            }
            Output::Many(_) => answer.map_stream(|s| -> Replies { Box::pin(Watched { inner: s, guard }) }),
        }),
    }
}

/// A reply stream whose replies and end are recorded.
struct Watched {
    inner: Replies,
    guard: Guard,
}

impl Stream for Watched {
    type Item = Result<Reply, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = std::task::ready!(this.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(reply)) => {
                if let Some(e) = &this.guard.0 {
                    e.reply(reply);
                }
            }
            Some(Err(e)) => this.guard.done(e.code(), e.status_message()),
            None => this.guard.done(tonic::Code::Ok, String::new()),
        }
        Poll::Ready(item)
    }
}
