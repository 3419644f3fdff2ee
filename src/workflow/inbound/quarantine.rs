//! Received mail that keeps failing (DESIGN §12: a mail that errors gets a verdict and never
//! blocks the mail behind it). A failed ingestion is counted by content hash, in its own
//! statement outside the batch's transaction; at `mail.quarantine_after` failures the mail is
//! recorded as QUARANTINED, with the error in its reason and its content hash claimed, and its
//! transport moves it out of the way like any judged mail. Failures that are not the mail's own
//! (the database unreachable, a batch rolled back for another mail) are not counted.
use serde_json::json;

use super::{ReceivedMail, describe, header_block, new_record, subject_of};
use crate::{
    error::{Error, Result},
    mail::reply::{self, OutcomeWords},
    model::{InboundEmail, Verdict},
    workflow::Workflow,
};

/// A mail that was fine but shared a transaction that failed: not the mail's own failure, so it
/// does not count towards quarantining it.
#[derive(Debug, thiserror::Error)]
#[error("rolled back with its batch: {0}")]
pub(super) struct RolledBackWithBatch(pub(super) String);

impl Workflow {
    /// Counts a failed ingestion of `mail` (unless the failure was not the mail's own: the
    /// database unreachable, or its batch rolled back); at `mail.quarantine_after` failures the
    /// mail is recorded as QUARANTINED, with the error in its reason, and that record returned.
    pub(super) async fn quarantine_if_failing(
        &self,
        mail: &ReceivedMail<'_>,
        error: &Error,
    ) -> Option<InboundEmail> {
        let own = match error {
            Error::Internal(e) => !e.chain().any(|cause| {
                cause.is::<RolledBackWithBatch>() || crate::store::is_transient(cause)
            }),
            // Its instance kept changing under it: nothing wrong with the mail.
            Error::Aborted(_) => false,
            _ => true,
        };
        if !own {
            return None;
        }
        let now = self.now();
        let mut record = new_record(mail.raw, mail.raw.len() as u64, mail.transport, now);
        let attempts = match self
            .store
            .note_inbound_failure(&record.sha256, &format!("{error:#}"), now)
            .await
        {
            Ok(attempts) => attempts,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "counting a failed ingestion failed");
                return None;
            }
        };
        let limit = self.mailer.inbound_limits().quarantine_after;
        if attempts < limit {
            tracing::warn!(attempts, limit, sha256 = %record.sha256, "a received mail failed; it will be tried again, then quarantined");
            return None;
        }
        // The header only, for the log: the rest is what failed.
        let header = header_block(mail.raw);
        let reading = reply::read_reply(
            header,
            &OutcomeWords::defaults(&["approve", "reject"]),
            mail.delivered_to,
        );
        describe(&mut record, &reading);
        record.subject = subject_of(header);
        record.verdict = Verdict::Quarantined;
        let error: String = format!("{error:#}").chars().take(500).collect();
        record.reason = format!("reading or recording it failed {attempts} times: {error}");
        record.answered = false;
        match self.write_quarantined(record.clone()).await {
            Ok(record) => Some(record),
            Err(first) => {
                // Perhaps a header field is what the database refuses: the bare facts instead.
                let bare = InboundEmail {
                    sender: String::new(),
                    subject: String::new(),
                    message_id: String::new(),
                    correlation: json!({}),
                    explanation: Vec::new(),
                    authentication_results: String::new(),
                    delegate_to: String::new(),
                    ..record
                };
                match self.write_quarantined(bare).await {
                    Ok(record) => Some(record),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), first = %format!("{first:#}"), "recording a quarantined mail failed");
                        None
                    }
                }
            }
        }
    }

    /// The log row of a quarantined mail (a copy already logged becomes `duplicate`); its
    /// content hash is claimed, so the same bytes are never tried again.
    async fn write_quarantined(&self, mut record: InboundEmail) -> Result<InboundEmail> {
        let mut tx = self.store.begin().await?;
        if let Some(first) = tx
            .claim_inbound(&format!("sha256:{}", record.sha256), &record.id)
            .await?
        {
            record.verdict = Verdict::Duplicate;
            record.reason = format!("already received as {first}");
        }
        tx.insert_inbound(&record).await?;
        tx.commit().await?;
        tracing::warn!(inbound = %record.id, verdict = record.verdict.as_str(), reason = %record.reason, "received mail quarantined");
        Ok(record)
    }
}
