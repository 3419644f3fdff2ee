//! The reply reader: brings received mail from its source ([`crate::mail::inbound`]: a Maildir
//! directory or an IMAP mailbox, `mail.inbound`) to [`Workflow::ingest_batch`], the one ingestion
//! function (DESIGN §5).
//!
//! Exactly once: a batch of messages (one IMAP FETCH, or up to 100 Maildir files) is ingested
//! first, in one transaction, and acknowledged (moved to the processed folder) after its commit.
//! Ingestion is idempotent by Message-ID and content hash, so a crash between the two only means
//! the batch is read again on the next pass, logged DUPLICATE without any effect, and then moved;
//! a crash before the commit applied nothing of the batch. A message whose ingestion fails (an
//! error, not a verdict) is left where it is and logged, the rest of its batch is moved and the
//! pass goes on: it never holds up the mail behind it. The next pass reads it again, and after
//! `mail.quarantine_after` failures ingestion records it as QUARANTINED, after which it is moved
//! like any judged mail.
//!
//! Mail larger than the limit arrives as its header only and is ingested as `too_large`
//! ([`Workflow::ingest_too_large`]: an inbound row and an answer telling the sender the limit).
//!
//! [`InboundWorker::run_once`] is one pass; [`InboundWorker::spawn`] is the loop: open the
//! source, pass, wait (Maildir: a poll; IMAP: IDLE), pass… Any error closes the source and opens
//! it again after a backoff ([`crate::backoff`]).
use std::{path::PathBuf, sync::Arc};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use crate::mail::inbound::{ImapTls, InboundSource, MAILDIR_POLL, SWEEP_EVERY};
use crate::{
    backoff::Backoff,
    mail::inbound::{Content, Fetched, MailSource, delivered_to, open_source},
    workflow::{Workflow, inbound::ReceivedMail},
};

/// The wait before opening the source again after consecutive failures.
const REOPEN_BACKOFF: Backoff = Backoff {
    base_ms: 500,
    max_ms: 60_000,
    floor_ms: 500,
};

/// Reads replies from its source into the workflow; see the module documentation.
#[derive(Debug)]
pub struct InboundWorker {
    workflow: Arc<Workflow>,
    source: InboundSource,
    processed_folder: String,
    ca_file: Option<PathBuf>,
}

impl InboundWorker {
    pub fn new(
        workflow: Arc<Workflow>,
        source: InboundSource,
        processed_folder: String,
        ca_file: Option<PathBuf>,
    ) -> Self {
        Self {
            workflow,
            source,
            processed_folder,
            ca_file,
        }
    }

    fn open_source(&self) -> Option<Box<dyn MailSource>> {
        open_source(
            &self.source,
            &self.processed_folder,
            self.ca_file.clone(),
            self.workflow.store().clone(),
        )
    }

    /// One pass: open the source (IMAP: connect, log in), ingest and acknowledge everything
    /// waiting, close it. Returns how many messages were ingested.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let Some(mut source) = self.open_source() else {
            return Ok(0);
        };
        source.open().await?;
        let ingested = self.pass(source.as_mut()).await;
        source.close().await;
        ingested
    }

    /// The loop (see the module documentation); stops when `shutdown` is cancelled, finishing
    /// the pass in flight. Errors are logged and backed off, never kill the loop.
    pub fn spawn(self, shutdown: CancellationToken, tracker: &TaskTracker) {
        tracker.spawn(async move { self.run(shutdown).await });
    }

    async fn run(self, shutdown: CancellationToken) {
        tracing::info!(source = ?self.source, processed_folder = %self.processed_folder, "inbound reader started");
        if let Some(mut source) = self.open_source() {
            let mut failures: u32 = 0;
            while !shutdown.is_cancelled() {
                let opened = tokio::select! {
                    () = shutdown.cancelled() => break,
                    r = source.open() => r,
                };
                let result = match opened {
                    Ok(()) => self.serve(source.as_mut(), &shutdown, &mut failures).await,
                    Err(e) => Err(e),
                };
                source.close().await;
                let Err(error) = result else { break };
                failures = failures.saturating_add(1);
                let wait = REOPEN_BACKOFF.wait(failures);
                tracing::error!(error = %format!("{error:#}"), retry_in = ?wait, source = ?self.source, "inbound reader failed; starting again");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        tracing::info!("inbound reader stopped");
    }

    /// Passes and waits on an open source until shutdown (`Ok`) or an error.
    async fn serve(
        &self,
        source: &mut dyn MailSource,
        shutdown: &CancellationToken,
        failures: &mut u32,
    ) -> anyhow::Result<()> {
        loop {
            self.pass(source).await?;
            *failures = 0;
            if shutdown.is_cancelled() {
                return Ok(());
            }
            source.wait(shutdown).await?;
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Everything waiting in the source, batch by batch: ingest, then acknowledge.
    async fn pass(&self, source: &mut dyn MailSource) -> anyhow::Result<usize> {
        source.begin_pass().await?;
        let mut ingested = 0;
        while let Some(batch) = source.next_batch().await? {
            let handled = self.ingest(source.transport(), &batch).await;
            ingested += handled.iter().filter(|ok| **ok).count();
            source.settle(&handled).await?;
        }
        source.end_pass().await?;
        Ok(ingested)
    }

    /// Ingests one batch (its mails in one transaction); whether each one was.
    async fn ingest(&self, transport: &'static str, batch: &[Fetched]) -> Vec<bool> {
        let mut handled = vec![false; batch.len()];
        let mails: Vec<(usize, &[u8], Option<String>)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, fetched)| match &fetched.content {
                Content::Mail(raw) => Some((i, raw.as_slice(), delivered_to(raw))),
                Content::TooLarge { .. } => None,
            })
            .collect();
        if !mails.is_empty() {
            let received: Vec<ReceivedMail<'_>> = mails
                .iter()
                .map(|(_, raw, to)| ReceivedMail {
                    raw,
                    delivered_to: to.as_deref(),
                    transport,
                })
                .collect();
            let results = self.workflow.ingest_batch(&received).await;
            for ((i, _, _), result) in mails.iter().zip(results) {
                let origin = &batch[*i].origin;
                match result {
                    Ok(record) => {
                        tracing::info!(
                            %origin, inbound_id = %record.id, message_id = %record.message_id,
                            verdict = ?record.verdict, "inbound mail ingested ({transport})"
                        );
                        handled[*i] = true;
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), %origin, "ingesting a received mail failed: it stays for the next pass");
                    }
                }
            }
        }
        for (i, fetched) in batch.iter().enumerate() {
            let Content::TooLarge { header, size } = &fetched.content else {
                continue;
            };
            let origin = &fetched.origin;
            match self
                .workflow
                .ingest_too_large(header, *size, delivered_to(header).as_deref(), transport)
                .await
            {
                Ok(record) => {
                    tracing::warn!(
                        %origin, size, limit = crate::mail::inbound::MAX_INBOUND_BYTES,
                        inbound_id = %record.id,
                        "inbound mail larger than the limit: only its header was read (too_large)"
                    );
                    handled[i] = true;
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), %origin, "ingesting the header of an oversized mail failed: it stays for the next pass");
                }
            }
        }
        handled
    }
}
