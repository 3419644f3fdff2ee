//! Reading and checking received mail (DESIGN §5), before anything is written. The checks
//! themselves are [`verify`] and [`decide`]: pure functions of the facts — the reply as read, the
//! approval context it names, its task, the sender's account, the token keys, the time — that
//! return a verdict, so that every refusal is tested without a database. What surrounds them
//! gathers those facts from committed state, for a whole chunk of mails at once (one query for
//! the contexts, one for their tasks, one for the senders), so that a backlog costs a few reads
//! per chunk instead of several per mail.
use std::collections::{HashMap, HashSet};

use futures_util::{StreamExt, stream};

use super::{
    Action, AnswerFacts, Correlated, Effect, Judgement, Plan, ReceivedMail, describe, judged, mib,
    new_record, our_context_id, read_contained, subject_of,
};
use crate::{
    engine::definition::{NodeKind, UserTaskSpec},
    error::{Error, Result},
    mail::{
        reply::{BounceReport, Correlation, InboundAuth, OutcomeWords, ReplyKind, ReplyReading},
        token::{self, KeyRing, TokenError},
    },
    model::{
        ApprovalContext, ApprovalStatus, CompletedVia, InboundEmail, Task, TaskStatus, User,
        Verdict,
    },
    workflow::{Actor, Workflow, tasks::CompleteTask},
};

/// Mails of a chunk whose completions are prepared at once (each reads its instance on a
/// connection of its own).
const PREPARED_AT_ONCE: usize = 4;

/// A mail as first read: with the default outcomes, before anything is known of its task.
#[derive(Debug)]
pub(super) enum FirstLook {
    /// Boxed: far larger than the other variant.
    Read(Box<(InboundEmail, ReplyReading)>),
    /// Over [`super::MAX_INBOUND_BYTES`]: judged by its header alone.
    TooLarge,
}

/// What the store holds about the mails of one chunk, read together.
#[derive(Debug, Default)]
pub(super) struct Known {
    /// Approval contexts by id: those named by the chunk's tokens and by our Message-IDs in its
    /// In-Reply-To and References.
    contexts: HashMap<String, ApprovalContext>,
    /// The tasks of those contexts, by id.
    tasks: HashMap<String, Task>,
    /// The senders of the chunk by address (lower case): the registered user whose address or
    /// alias it is, `None` for a stranger.
    users: HashMap<String, Option<User>>,
}

/// The facts one reply is judged on, all gathered beforehand.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts<'a> {
    /// The reply as first read (default outcomes): its kind and what correlates it.
    pub(super) reading: &'a ReplyReading,
    /// The approval context it was tied to, and how; `None` when nothing of ours was found.
    pub(super) found: Option<&'a Correlated>,
    /// The registered user whose address or alias the From is.
    pub(super) sender: Option<&'a User>,
    /// The context's task (`None` only when the store has no such task).
    pub(super) task: Option<&'a Task>,
    pub(super) keys: &'a KeyRing,
    pub(super) auth: &'a InboundAuth,
    pub(super) now: i64,
}

/// What [`verify`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verified {
    /// Judged on the mail alone, about no approval (a robot's, unreadable, several From, nothing
    /// of ours found): the log row names no context.
    Unrelated(Judgement),
    /// A delivery report: not a reply, see [`Workflow::judge_bounce`].
    Bounce,
    /// About the approval found, and refused.
    Refused(Judgement),
    /// Every check passed: the reply may decide its task.
    Open,
}

/// What a reply that passed [`verify`] asks for, read with its task's outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    Complete {
        outcome: String,
        comment: String,
    },
    /// A hand-over to this address; the task allows it.
    Delegate {
        address: String,
        comment: String,
    },
    Refused(Judgement),
}

/// The checks of a mail that need nothing but the mail: `None` when it is a reply to be
/// correlated and verified.
fn screened(reading: &ReplyReading) -> Option<Verified> {
    if reading.correlation.from_count > 1 {
        // Which of them answered cannot be told: nothing is decided, and nobody answered
        // (an answer could go to a bystander named in the header).
        let mut judgement = judged(
            Verdict::SeveralFrom,
            format!(
                "the message names {} From mailboxes; a reply must come from exactly one",
                reading.correlation.from_count
            ),
        );
        judgement.silent = true;
        return Some(Verified::Unrelated(judgement));
    }
    match reading.kind {
        ReplyKind::AutoReply => Some(Verified::Unrelated(judged(
            Verdict::AutoReply,
            "an automatic reply: logged and ignored",
        ))),
        ReplyKind::Bounce => Some(Verified::Bounce),
        ReplyKind::Unparseable => Some(Verified::Unrelated(judged(
            Verdict::Unparseable,
            "no readable text in the message",
        ))),
        _ => None,
    }
}

/// Every check of DESIGN §5 but the reading itself, in order: one From, not a robot, something
/// of ours found, the sender authenticated, the token's signature, the sender the approver, the
/// context still pending and valid, the task still open and still the approver's. An error only
/// when a fact the checks need is missing from the store (the context's task).
pub(super) fn verify(facts: &Facts<'_>) -> Result<Verified> {
    if let Some(screened) = screened(facts.reading) {
        return Ok(screened);
    }
    let c = &facts.reading.correlation;
    let Some(found) = facts.found else {
        return Ok(Verified::Unrelated(judged(
            Verdict::UnknownToken,
            "no reply token, Message-ID or subject tag of ours was found",
        )));
    };
    // Before anything else about the approval: a sender that is not proven is not asked about
    // its approval either.
    if let Err(why) = facts.auth.check(&c.authentication_results, &c.from) {
        return Ok(Verified::Refused(judged(Verdict::AuthFailed, why)));
    }
    let context = &found.context;
    let Some(parts) = &found.token else {
        return Ok(Verified::Refused(judged(
            Verdict::UnknownToken,
            format!(
                "found through {} but the reply token is missing: reply to the approval mail and keep its last line",
                found.path
            ),
        )));
    };
    // Keyed by the context's own key id, whatever key the token names.
    match token::verify(
        facts.keys,
        parts,
        context.kid,
        &context.approver_email,
        context.valid_until,
    ) {
        Ok(()) => {}
        Err(TokenError::UnknownKey | TokenError::BadSignature | TokenError::WrongKey) => {
            return Ok(Verified::Refused(judged(
                Verdict::BadSignature,
                "the reply token's signature does not match",
            )));
        }
    }
    // The address the approval was sent to, or an alias the approver had then — and still the
    // approver's now. An address added since (UpsertUser) never decides this context.
    let from = c.from.to_lowercase();
    let issued_to =
        from == context.approver_email.to_lowercase() || context.approver_aliases.contains(&from);
    if !issued_to || facts.sender.is_none_or(|u| u.id != context.approver) {
        return Ok(Verified::Refused(judged(
            Verdict::SenderMismatch,
            format!(
                "{} is not the address this approval was sent to, nor one of the approver's aliases when it was sent",
                c.from
            ),
        )));
    }
    let task = || {
        facts
            .task
            .ok_or_else(|| Error::not_found("task", &context.task_id))
    };
    match context.status {
        ApprovalStatus::Used => {
            return Ok(Verified::Refused(already_handled(context, task()?)));
        }
        // A context is revoked when its task closes too (withdrawn, cancelled, decided through
        // the API): then the approver is told what became of the task.
        ApprovalStatus::Revoked if task()?.status != TaskStatus::Open => {
            return Ok(Verified::Refused(already_handled(context, task()?)));
        }
        ApprovalStatus::Revoked => {
            return Ok(Verified::Refused(judged(
                Verdict::Revoked,
                format!("the approval was revoked: {}", context.revoke_reason),
            )));
        }
        ApprovalStatus::Expired => {
            return Ok(Verified::Refused(judged(
                Verdict::Expired,
                "the approval has expired",
            )));
        }
        ApprovalStatus::Pending => {}
    }
    if context.valid_until <= facts.now {
        return Ok(Verified::Refused(judged(
            Verdict::Expired,
            format!(
                "replies were accepted until {}",
                crate::clock::rfc3339(context.valid_until)
            ),
        )));
    }
    let task = task()?;
    if task.status != TaskStatus::Open || task.assignee != context.approver {
        return Ok(Verified::Refused(already_handled(context, task)));
    }
    Ok(Verified::Open)
}

/// Why a reply to `context` comes too late, told from what became of its `task`.
pub(super) fn already_handled(context: &ApprovalContext, task: &Task) -> Judgement {
    let reason = match (task.status, task.completed_at) {
        (TaskStatus::Completed, Some(at)) => format!(
            "already handled by {} at {} ({})",
            task.completed_by,
            crate::clock::rfc3339(at),
            task.outcome
        ),
        (TaskStatus::Open, _) => format!("the task is now assigned to {}", task.assignee),
        (status, _) => format!("the task is {}", status.as_str()),
    };
    let verdict = if context.status == ApprovalStatus::Used {
        Verdict::AlreadyUsed
    } else {
        Verdict::TaskClosed
    };
    judged(verdict, reason)
}

/// What a verified reply asks for, from its reading with the task's outcomes
/// (`allow_delegate`: the task's definition lets it be handed on by mail).
pub(super) fn decide(reading: &ReplyReading, allow_delegate: bool) -> Decision {
    match (reading.kind, reading.outcome.as_deref()) {
        (ReplyKind::Decision, Some(outcome)) => Decision::Complete {
            outcome: outcome.to_string(),
            comment: reading.comment.clone(),
        },
        (ReplyKind::Ambiguous, _) => {
            let named = reading.ambiguous.join(", ");
            Decision::Refused(judged(
                Verdict::Ambiguous,
                format!("the reply names several outcomes: {named}"),
            ))
        }
        (ReplyKind::Delegate, _) => {
            let address = reading.delegate_to.clone().unwrap_or_default();
            if allow_delegate {
                Decision::Delegate {
                    address,
                    comment: reading.comment.clone(),
                }
            } else {
                Decision::Refused(judged(
                    Verdict::NoDecision,
                    format!(
                        "this task cannot be handed on by mail (its process does not allow it: replyflow:allowDelegate); it was not delegated to {address}"
                    ),
                ))
            }
        }
        _ => Decision::Refused(judged(
            Verdict::NoDecision,
            "no decision on the first line of the reply",
        )),
    }
}

/// Whether a hand-over to `address` may go to `user` (its registered owner, if any).
fn delegate_refusal(
    address: &str,
    user: Option<&User>,
    context: &ApprovalContext,
) -> Option<Judgement> {
    match user {
        None => Some(judged(
            Verdict::NoDecision,
            format!(
                "{address} is not the address of a registered user: the task was not delegated"
            ),
        )),
        Some(user) if user.id == context.approver => Some(judged(
            Verdict::NoDecision,
            format!(
                "{address} is your own address: the task is already yours, nothing was delegated"
            ),
        )),
        Some(_) => None,
    }
}

/// The outcome words of a user task: the defaults for its outcome ids, with its labels and
/// keywords.
fn outcome_words(spec: &UserTaskSpec) -> Vec<OutcomeWords> {
    let ids: Vec<&str> = spec.outcomes.iter().map(|o| o.id.as_str()).collect();
    let mut words = OutcomeWords::defaults(&ids);
    for (word, spec) in words.iter_mut().zip(&spec.outcomes) {
        word.label = spec.label.clone();
        for keyword in &spec.keywords {
            if !word.keywords.contains(keyword) {
                word.keywords.push(keyword.clone());
            }
        }
    }
    words
}

/// The outcome words every mail is first read with.
fn default_words() -> Vec<OutcomeWords> {
    OutcomeWords::defaults(&["approve", "reject"])
}

/// Two lists of outcome words read a reply alike (the reader is a function of them).
fn same_words(a: &[OutcomeWords], b: &[OutcomeWords]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.id == b.id && a.number == b.number && a.label == b.label && a.keywords == b.keywords
        })
}

/// The first reading of a mail (CPU only): its log row and what it says with the default words.
pub(super) fn first_look(mail: &ReceivedMail<'_>, now: i64) -> Result<FirstLook> {
    if mail.raw.len() > super::MAX_INBOUND_BYTES {
        return Ok(FirstLook::TooLarge);
    }
    let mut record = new_record(mail.raw, mail.raw.len() as u64, mail.transport, now);
    let reading = read_contained(mail.raw, &default_words(), mail.delivered_to)?;
    describe(&mut record, &reading);
    record.subject = subject_of(mail.raw);
    Ok(FirstLook::Read(Box::new((record, reading))))
}

/// The approval contexts a reply may name, in the order correlation tries them: its token's,
/// then our Message-IDs in In-Reply-To and References.
fn named_contexts(c: &Correlation) -> Vec<String> {
    let token = c
        .token
        .as_deref()
        .and_then(token::parse)
        .map(|parts| parts.context_id);
    token
        .into_iter()
        .chain(
            c.in_reply_to
                .iter()
                .chain(&c.references)
                .filter_map(|id| our_context_id(id)),
        )
        .collect()
}

impl Workflow {
    /// Judges the mails of a chunk (committed state only): what to write for each, in order.
    pub(super) async fn judge_chunk(&self, mails: &[ReceivedMail<'_>]) -> Vec<Result<Plan>> {
        let looks: Vec<Result<FirstLook>> = mails
            .iter()
            .map(|mail| first_look(mail, self.now()))
            .collect();
        match self.known_about(&looks).await {
            Ok(known) => {
                // The futures are made first: a stream that maps with a closure borrowing `known`
                // would not be `Send` for every lifetime the server's futures need.
                let judging: Vec<_> = mails
                    .iter()
                    .zip(looks)
                    .map(|(mail, look)| self.judge_looked(mail, look, &known))
                    .collect();
                stream::iter(judging)
                    .buffered(PREPARED_AT_ONCE)
                    .collect()
                    .await
            }
            // Perhaps one mail's data is what the database refused: each mail alone, so that the
            // failure stays that mail's.
            Err(e) if mails.len() == 1 => vec![Err(e)],
            Err(_) => {
                let mut plans = Vec::with_capacity(mails.len());
                for (mail, look) in mails.iter().zip(looks) {
                    let look = [look];
                    let plan = match self.known_about(&look).await {
                        Ok(known) => {
                            let [look] = look;
                            self.judge_looked(mail, look, &known).await
                        }
                        Err(e) => Err(e),
                    };
                    plans.push(plan);
                }
                plans
            }
        }
    }

    /// Reads what the checks of these mails need: the contexts they name, the tasks of those,
    /// their senders' accounts. A few statements for the lot.
    async fn known_about(&self, looks: &[Result<FirstLook>]) -> Result<Known> {
        let readings = || {
            looks.iter().filter_map(|look| match look {
                Ok(FirstLook::Read(read)) => Some(&read.1),
                _ => None,
            })
        };
        let mut context_ids: Vec<String> = readings()
            .filter(|r| screened(r).is_none())
            .flat_map(|r| named_contexts(&r.correlation))
            .collect();
        dedup(&mut context_ids);
        let mut addresses: Vec<String> = readings()
            .map(|r| r.correlation.from.to_lowercase())
            .filter(|a| a.contains('@'))
            .collect();
        dedup(&mut addresses);
        let contexts = self.store.approval_contexts(&context_ids).await?;
        let mut task_ids: Vec<String> = contexts.values().map(|c| c.task_id.clone()).collect();
        dedup(&mut task_ids);
        let tasks = self.store.tasks_by_ids(&task_ids).await?;
        let users = self.store.users_by_addresses(&addresses).await?;
        Ok(Known {
            contexts,
            tasks,
            users,
        })
    }

    /// Judges one mail from its first reading and what the store holds about it.
    async fn judge_looked(
        &self,
        mail: &ReceivedMail<'_>,
        look: Result<FirstLook>,
        known: &Known,
    ) -> Result<Plan> {
        let (record, first) = match look? {
            FirstLook::TooLarge => {
                let size = u64::try_from(mail.raw.len()).unwrap_or(u64::MAX);
                let mut plan = self
                    .judge_too_large(
                        super::header_block(mail.raw),
                        size,
                        mail.delivered_to,
                        mail.transport,
                    )
                    .await?;
                plan.facts = self.answer_facts(&plan.record, None, known).await?;
                return Ok(plan);
            }
            FirstLook::Read(read) => *read,
        };
        let mut plan = self.judge_read(mail, record, &first, known).await?;
        let task = plan.facts.task.take();
        plan.facts = self.answer_facts(&plan.record, task, known).await?;
        Ok(plan)
    }

    async fn judge_read(
        &self,
        mail: &ReceivedMail<'_>,
        mut record: InboundEmail,
        first: &ReplyReading,
        known: &Known,
    ) -> Result<Plan> {
        let found = match screened(first) {
            Some(_) => None,
            None => self.correlate(&first.correlation, known).await?,
        };
        let sender = self.user_at(&first.correlation.from, known).await?;
        let facts = Facts {
            reading: first,
            found: found.as_ref(),
            sender: sender.as_ref(),
            task: found
                .as_ref()
                .and_then(|f| known.tasks.get(&f.context.task_id)),
            keys: self.mailer.keys(),
            auth: self.mailer.inbound_auth(),
            now: record.received_at,
        };
        let verified = verify(&facts)?;
        let task = facts.task.cloned();
        let (found, task) = match (verified, found) {
            (Verified::Unrelated(judgement), _) => {
                return Ok(Plan::new(record, Action::Record(judgement)));
            }
            (Verified::Bounce, _) => {
                let report = first.bounce.clone().unwrap_or_default();
                return self.judge_bounce(record, report).await;
            }
            (verified, Some(found)) => {
                record.context_id = found.context.id.clone();
                record.task_id = found.context.task_id.clone();
                record.instance_id = found.context.instance_id.clone();
                match (verified, task) {
                    (Verified::Open, Some(task)) => (found, task),
                    (Verified::Refused(judgement), _) => {
                        return Ok(Plan::new(record, Action::Record(judgement)));
                    }
                    _ => return Err(Error::not_found("task", &found.context.task_id)),
                }
            }
            (_, None) => {
                return Err(Error::Internal(anyhow::anyhow!(
                    "a reply was verified without an approval context"
                )));
            }
        };
        // Read again with the outcomes the task really has (unless they read alike).
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let spec: Option<&UserTaskSpec> = match graph.node(&task.activity_id).map(|(_, n)| &n.kind)
        {
            Some(NodeKind::UserTask(spec)) => Some(spec),
            _ => None,
        };
        let outcomes = spec.map_or_else(default_words, outcome_words);
        let again;
        let reading = if same_words(&outcomes, &default_words()) {
            first
        } else {
            again = read_contained(mail.raw, &outcomes, mail.delivered_to)?;
            &again
        };
        describe(&mut record, reading);
        match decide(reading, spec.is_some_and(|s| s.allow_delegate)) {
            Decision::Complete { outcome, comment } => {
                let request = CompleteTask {
                    task_id: found.context.task_id.clone(),
                    outcome,
                    comment,
                    variables: Default::default(),
                    request_id: String::new(),
                    via: CompletedVia::Email,
                };
                // Conditions are evaluated here, while only reading, not under the write lock.
                let prepared = self
                    .prepare_completion(
                        &Actor::new(found.context.approver.clone()),
                        &found.context.instance_id,
                        &request,
                    )
                    .await?
                    .map(Box::new);
                let effect = Effect::Decide { request, prepared };
                Ok(
                    Plan::new(record, Action::Apply(Box::new((found.context, effect))))
                        .with_task(task),
                )
            }
            Decision::Delegate { address, comment } => {
                let user = self.user_at(&address, known).await?;
                if let Some(judgement) = delegate_refusal(&address, user.as_ref(), &found.context) {
                    return Ok(Plan::new(record, Action::Record(judgement)));
                }
                let Some(to) = user else {
                    return Err(Error::not_found("user", &address));
                };
                let effect = Effect::Delegate { to, comment };
                Ok(Plan::new(
                    record,
                    Action::Apply(Box::new((found.context, effect))),
                ))
            }
            Decision::Refused(judgement) => Ok(Plan::new(record, Action::Record(judgement))),
        }
    }

    /// Records a mail over [`super::MAX_INBOUND_BYTES`] as `too_large`, read from its header
    /// alone (`header`: the bytes up to the blank line; the body is never fetched), and tells the
    /// sender the limit. `size`: the whole mail's. The content hash that makes a re-fetch a
    /// duplicate is the header's.
    pub(super) async fn judge_too_large(
        &self,
        header: &[u8],
        size: u64,
        delivered_to: Option<&str>,
        transport: &str,
    ) -> Result<Plan> {
        let header = &header[..header.len().min(super::MAX_HEADER_BYTES)];
        let mut record = new_record(header, size, transport, self.now());
        let reading = read_contained(header, &default_words(), delivered_to)?;
        describe(&mut record, &reading);
        record.subject = subject_of(header);
        let limit = mib(super::MAX_INBOUND_BYTES as u64);
        record.explanation = vec![format!(
            "only the header was read: the message is {size} bytes, over the limit of {limit}"
        )];
        if let Some(found) = self
            .correlate(&reading.correlation, &Known::default())
            .await?
        {
            record.context_id = found.context.id;
            record.task_id = found.context.task_id;
            record.instance_id = found.context.instance_id;
        }
        let mut judgement = judged(
            Verdict::TooLarge,
            format!(
                "the message is {}; replies of up to {limit} are read",
                mib(size)
            ),
        );
        // An out-of-office or a bounce this large is still a robot's: never answered.
        judgement.silent = matches!(reading.kind, ReplyKind::AutoReply | ReplyKind::Bounce);
        Ok(Plan::new(record, Action::Record(judgement)))
    }

    /// Ties a reply to its approval context: token, In-Reply-To/References, subject tag, in that
    /// order. Contexts in `known` are taken from there; others are read.
    async fn correlate(&self, c: &Correlation, known: &Known) -> Result<Option<Correlated>> {
        if let Some(text) = &c.token
            && let Some(parts) = token::parse(text)
            && let Some(context) = self.context_by_id(&parts.context_id, known).await?
        {
            let path = if c.token_source == "plus_address" {
                "plus_address"
            } else {
                "body_token"
            };
            return Ok(Some(Correlated {
                context,
                path,
                token: Some(parts),
            }));
        }
        for message_id in c.in_reply_to.iter().chain(&c.references) {
            if let Some(context_id) = our_context_id(message_id)
                && let Some(context) = self.context_by_id(&context_id, known).await?
            {
                return Ok(Some(Correlated {
                    context,
                    path: "in_reply_to",
                    token: None,
                }));
            }
        }
        if let Some(tag) = &c.subject_tag
            && let Some(context) = self.store.approval_by_tag(tag).await?
        {
            return Ok(Some(Correlated {
                context,
                path: "subject_tag",
                token: None,
            }));
        }
        Ok(None)
    }

    /// An approval context: as read with the chunk, else read now.
    async fn context_by_id(&self, id: &str, known: &Known) -> Result<Option<ApprovalContext>> {
        match known.contexts.get(id) {
            Some(context) => Ok(Some(context.clone())),
            None => self.store.approval_context(id).await,
        }
    }

    /// A bounce: tied to the approval it names; one without a failure or without a mail named
    /// is only logged.
    async fn judge_bounce(&self, mut record: InboundEmail, report: BounceReport) -> Result<Plan> {
        for id in &report.original_message_ids {
            if let Some(context_id) = our_context_id(id)
                && let Some(context) = self.store.approval_context(&context_id).await?
            {
                record.context_id = context.id;
                record.task_id = context.task_id;
                record.instance_id = context.instance_id;
                break;
            }
        }
        let (diagnostic, to) = super::bounce_words(&report);
        if !report.failed || report.original_message_ids.is_empty() {
            let reason = if report.original_message_ids.is_empty() {
                format!("a delivery status notification that names no mail of ours ({diagnostic})")
            } else {
                format!(
                    "a delivery notice without a failure (delayed or relayed) about <{}>{to}: nothing marked",
                    report.original_message_ids.join(">, <")
                )
            };
            return Ok(Plan::new(
                record,
                Action::Record(judged(Verdict::Bounce, reason)),
            ));
        }
        Ok(Plan::new(record, Action::Bounce(report)))
    }

    /// The registered user whose address or alias `address` is: as read with the chunk, else
    /// read now.
    async fn user_at(&self, address: &str, known: &Known) -> Result<Option<User>> {
        match known.users.get(&address.to_lowercase()) {
            Some(user) => Ok(user.clone()),
            None => self.store.user_by_address(address).await,
        }
    }

    /// What an answer to `record` needs to read: its sender's locale and its task (`task` when
    /// the checks read it already). Nothing for mail that is never answered.
    pub(super) async fn answer_facts(
        &self,
        record: &InboundEmail,
        task: Option<Task>,
        known: &Known,
    ) -> Result<AnswerFacts> {
        let sender = record.sender.to_lowercase();
        if !sender.contains('@') {
            return Ok(AnswerFacts::default());
        }
        let user = self.user_at(&sender, known).await?;
        let registered = user.is_some();
        let locale = user.map(|u| u.locale).unwrap_or_default();
        let task = match task {
            Some(task) => Some(task),
            None => match known.tasks.get(&record.task_id) {
                Some(task) => Some(task.clone()),
                None if !record.task_id.is_empty() => self.task(&record.task_id).await.ok(),
                None => None,
            },
        };
        Ok(AnswerFacts {
            registered,
            locale,
            task,
        })
    }
}

/// Removes repeats, keeping the first of each (the keys of one batched read).
fn dedup(keys: &mut Vec<String>) {
    let mut seen = HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
}

#[cfg(test)]
mod tests;
