//! The one shape of every server stream (WatchTasks, WatchMessages): replay what the client asked
//! to see first, then forward the matching items of an in-process broadcast as their transactions
//! commit. A client too slow to keep up loses its place in the broadcast and is told so with
//! ABORTED (it reconciles with the matching List call); server shutdown ends the stream with
//! UNAVAILABLE so that clients reconnect elsewhere instead of waiting.
use std::{future::Future, pin::Pin};

use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub(super) type LiveStream<M> = Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// What a live stream sends and how.
#[derive(Debug)]
pub(super) struct Live<E> {
    /// Sent first, in this order, before anything live.
    pub(super) initial: Vec<E>,
    /// Subscribed before `initial` was read, so nothing committed in between is missed.
    pub(super) events: broadcast::Receiver<E>,
    pub(super) shutdown: CancellationToken,
    /// How to reconcile after falling behind, for the ABORTED message ("list tasks ...").
    pub(super) resync_hint: &'static str,
}

impl<E: Clone + Send + 'static> Live<E> {
    /// Spawns the forwarder: items of `initial`, then each live item for which `matches` holds,
    /// each turned into the wire message by `convert`.
    pub(super) fn forward<M, Fut>(
        self,
        matches: impl Fn(&E) -> bool + Send + 'static,
        convert: impl Fn(E) -> Fut + Send + 'static,
    ) -> LiveStream<M>
    where
        M: Send + 'static,
        Fut: Future<Output = M> + Send,
    {
        let Live {
            initial,
            mut events,
            shutdown,
            resync_hint,
        } = self;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            for item in initial {
                if tx.send(Ok(convert(item).await)).await.is_err() {
                    return;
                }
            }
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("server is shutting down"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(item) if matches(&item) => {
                        if tx.send(Ok(convert(item).await)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        let _ = tx
                            .send(Err(Status::aborted(format!(
                                "the stream fell {missed} items behind; {resync_hint}"
                            ))))
                            .await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}
