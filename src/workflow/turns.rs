//! Turns per instance, in this process. When the transitions of one instance arrive together —
//! the twenty signers of a 会签 deciding at once — each would compute from the same state, all but
//! one would lose the `rev` guard and compute again, and again: n² work for n decisions. Here they
//! queue for their instance instead and compute one after the other, each from the state the one
//! before committed. The `rev` guard stays the rule (several servers on one database, replies,
//! escalations); this only keeps one process from racing itself. Instances share a fixed set of
//! stripes, so memory does not grow with the number of instances.
use std::hash::{BuildHasher, RandomState};

use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

#[derive(Debug)]
pub(super) struct Turns {
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

/// A turn held until dropped; `waited` when another transition of the same stripe went first
/// (what the caller read before may be stale).
pub(super) struct Turn<'a> {
    _guard: MutexGuard<'a, ()>,
    pub(super) waited: bool,
}

impl Turns {
    pub(super) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(super) async fn take(&self, instance_id: &str) -> Turn<'_> {
        let stripe = &self.stripes[self.hasher.hash_one(instance_id) as usize % STRIPES];
        match stripe.try_lock() {
            Ok(guard) => Turn {
                _guard: guard,
                waited: false,
            },
            Err(_) => Turn {
                _guard: stripe.lock().await,
                waited: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

    use super::*;

    #[tokio::test]
    async fn a_second_transition_of_an_instance_waits_for_the_first() {
        let turns = Turns::new();
        let first = turns.take("i1").await;
        assert!(!first.waited);
        let mut second = Box::pin(turns.take("i1"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            second.as_mut().poll(&mut cx).is_pending(),
            "the second waits while the first holds the turn"
        );
        drop(first);
        assert!(second.await.waited);
    }
}
