//! Group commit: concurrent transitions share one transaction and one commit (one fsync).
//!
//! Every caller of [`Store::write`] hands its work to one writer task. The writer takes what is
//! queued (up to [`MAX_JOBS`]), opens one transaction, runs each job in a savepoint of its own —
//! a job that fails or asks to be undone is rolled back alone — commits once, and only then
//! answers each caller. A caller is therefore answered only for work that is durable, and the
//! disk flush and the transaction's fixed cost are paid once per group instead of once per
//! transition. With one job queued there is no savepoint: the transaction is the job's own.
//!
//! A job must not begin another transaction or call `write` (on SQLite it would wait for the
//! writer that runs it). It may read through the pool.
use std::{
    any::Any,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::{FutureExt, future::BoxFuture};
use tokio::sync::{mpsc, oneshot};

use super::{Store, Tx};
use crate::error::{Error, Result};

/// Jobs per transaction at most: enough to share a flush among all concurrent callers of a busy
/// server, few enough that one group's latency stays small.
const MAX_JOBS: usize = 64;

/// What a job asks for its writes.
#[derive(Debug)]
pub enum Step<T> {
    /// Commit them (with the group).
    Keep(T),
    /// Roll them back (e.g. the state it decided from changed); the caller still gets `T`.
    Undo(T),
}

type Erased = Box<dyn Any + Send>;
type RunFn = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<(bool, Erased)>> + Send>;

struct Job {
    run: RunFn,
    reply: oneshot::Sender<Result<Erased>>,
}

/// The handle to the writer task; dropping every handle stops it.
#[derive(Clone)]
pub(super) struct GroupWriter {
    jobs: mpsc::UnboundedSender<Job>,
    counts: Arc<Counts>,
    writers: u64,
}

/// How many groups (transactions) and jobs the writer ran: jobs per group is the sharing.
#[derive(Debug, Default)]
struct Counts {
    groups: AtomicU64,
    jobs: AtomicU64,
}

/// What [`Store::group_commits`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommits {
    /// Transactions the writer committed or rolled back.
    pub groups: u64,
    /// Writes they held.
    pub jobs: u64,
    /// Writer tasks taking groups side by side.
    pub writers: u64,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter")
    }
}

impl GroupWriter {
    /// Starts `writers` writer tasks over `store` (a store without a group writer of its own),
    /// taking groups from one queue: one on SQLite (one writer anyway), several on PostgreSQL,
    /// whose row locks let groups of different instances commit side by side.
    pub(super) fn start(store: Store, writers: usize) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let counts = Arc::new(Counts::default());
        for _ in 0..writers.max(1) {
            tokio::spawn(run(store.clone(), queue.clone(), counts.clone()));
        }
        Self {
            jobs,
            counts,
            writers: writers.max(1) as u64,
        }
    }
}

impl Store {
    /// Groups and jobs the group writer has run so far (for the bench and tests).
    pub fn group_commits(&self) -> GroupCommits {
        self.group
            .as_ref()
            .map_or_else(GroupCommits::default, |g| GroupCommits {
                groups: g.counts.groups.load(Ordering::Relaxed),
                jobs: g.counts.jobs.load(Ordering::Relaxed),
                writers: g.writers,
            })
    }

    /// Runs `job` in a transaction shared with other concurrent writes and returns its answer
    /// once that transaction committed (see the module's comment).
    pub async fn write<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Step<T>>> + Send + 'static,
    {
        let Some(group) = &self.group else {
            let mut tx = self.begin().await?;
            return match job(&mut tx).await? {
                Step::Keep(v) => {
                    tx.commit().await?;
                    Ok(v)
                }
                Step::Undo(v) => Ok(v),
            };
        };
        let (reply, answer) = oneshot::channel();
        let run: RunFn = Box::new(move |tx| {
            Box::pin(async move {
                Ok(match job(tx).await? {
                    Step::Keep(v) => (true, Box::new(v) as Erased),
                    Step::Undo(v) => (false, Box::new(v) as Erased),
                })
            })
        });
        group
            .jobs
            .send(Job { run, reply })
            .map_err(|_| stopped("the database writer has stopped"))?;
        let erased = answer
            .await
            .map_err(|_| stopped("the database writer dropped a write"))??;
        erased
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| stopped("the database writer answered with the wrong type"))
    }
}

fn stopped(why: &str) -> Error {
    Error::Internal(anyhow::anyhow!("{why}"))
}

async fn run(
    store: Store,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    counts: Arc<Counts>,
) {
    loop {
        // One writer takes a group at a time; the others wait for the queue meanwhile.
        let group = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_JOBS {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group
        };
        counts.groups.fetch_add(1, Ordering::Relaxed);
        counts.jobs.fetch_add(group.len() as u64, Ordering::Relaxed);
        commit_together(&store, group).await;
    }
}

async fn commit_together(store: &Store, group: Vec<Job>) {
    let alone = group.len() == 1;
    let mut tx = match store.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let why = format!("beginning a transaction: {e}");
            for job in group {
                let _ = job.reply.send(Err(stopped(&why)));
            }
            return;
        }
    };
    let mut answers = Vec::with_capacity(group.len());
    let mut broken = None;
    for job in group {
        if broken.is_some() {
            answers.push((
                job.reply,
                Err(stopped("an earlier write of its group failed")),
            ));
            continue;
        }
        if !alone && let Err(e) = tx.execute_raw("SAVEPOINT rf_job").await {
            broken = Some(format!("a savepoint: {e}"));
            answers.push((job.reply, Err(stopped("a savepoint failed"))));
            continue;
        }
        let result = match AssertUnwindSafe((job.run)(&mut tx)).catch_unwind().await {
            Ok(result) => result,
            Err(_) => Err(stopped("a write panicked; it was rolled back")),
        };
        let keep = matches!(result, Ok((true, _)));
        let end = match (alone, keep) {
            (true, _) => Ok(()),
            (false, true) => tx.execute_raw("RELEASE SAVEPOINT rf_job").await,
            (false, false) => match tx.execute_raw("ROLLBACK TO SAVEPOINT rf_job").await {
                Ok(()) => tx.execute_raw("RELEASE SAVEPOINT rf_job").await,
                Err(e) => Err(e),
            },
        };
        if let Err(e) = end {
            broken = Some(format!("ending a savepoint: {e}"));
        }
        if alone && !keep {
            // Nothing else in this transaction: rolling it back is the job's undo.
            broken = Some(String::new());
        }
        answers.push((job.reply, result.map(|(_, v)| v)));
    }
    let committed = match broken {
        Some(why) if why.is_empty() => Ok(()),
        Some(why) => Err(why),
        None => tx.commit().await.map_err(|e| format!("committing: {e}")),
    };
    for (reply, result) in answers {
        let _ = reply.send(match (&committed, result) {
            (Ok(()), result) => result,
            (Err(_), Err(e)) => Err(e),
            (Err(why), Ok(_)) => Err(stopped(&format!("not written: {why}"))),
        });
    }
}

impl Tx {
    async fn execute_raw(&mut self, sql: &'static str) -> Result<()> {
        sqlx::query::<sqlx::Any>(sql)
            .execute(&mut *self.inner)
            .await?;
        Ok(())
    }
}
