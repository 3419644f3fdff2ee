//! The checks of a reply, one refusal at a time, without a database: mary was sent an approval
//! mail for her expense task; what she (or someone else) sends back is read by the real reader
//! and judged from the facts alone.
use super::{
    Correlated, Decision, Facts, Verified, decide, default_words, delegate_refusal, verify,
};
use crate::{
    mail::{
        reply::{self, InboundAuth, ReplyReading},
        token::{self, KeyRing},
    },
    model::{ApprovalContext, ApprovalStatus, Task, TaskStatus, User, Verdict},
    workflow::inbound::Judgement,
};

const NOW: i64 = 1_790_000_000_000;
const DAY: i64 = 86_400_000;

/// Mary's pending approval of task t1, mailed to mary@corp.test (her alias then:
/// mary.alias@corp.test), valid for one more day.
struct Approval {
    keys: KeyRing,
    context: ApprovalContext,
    task: Task,
    mary: User,
    bob: User,
    auth: InboundAuth,
}

fn approval() -> Approval {
    let keys = KeyRing::new(vec![(1, b"the server's secret".to_vec())]).expect("a key ring");
    let context = ApprovalContext {
        id: token::new_context_id(),
        task_id: "t1".into(),
        instance_id: "i1".into(),
        approver: "mary".into(),
        approver_email: "mary@corp.test".into(),
        approver_aliases: vec!["mary.alias@corp.test".into()],
        kid: 1,
        sent_at: NOW - DAY,
        valid_until: NOW + DAY,
        status: ApprovalStatus::Pending,
        message_id: "<rf.abcdefghijklm.1@corp.test>".into(),
        subject_tag: "RF-k3x9q2ab".into(),
        last_mail_at: NOW - DAY,
        revoke_reason: String::new(),
        used_at: None,
    };
    let task = Task {
        id: "t1".into(),
        instance_id: "i1".into(),
        definition_key: "expense".into(),
        definition_version: 1,
        business_key: "e-1".into(),
        activity_id: "manager_approval".into(),
        name: "经理审批".into(),
        assignee: "mary".into(),
        status: TaskStatus::Open,
        outcome: String::new(),
        comment: String::new(),
        completed_by: String::new(),
        completed_via: None,
        group_id: String::new(),
        from_activity: String::new(),
        created_at: NOW - DAY,
        completed_at: None,
        owner: String::new(),
        delegation: crate::model::Delegation::None,
    };
    let mary = User {
        id: "mary".into(),
        email: "mary@corp.test".into(),
        // mary.new was added after the approval mail went out.
        email_aliases: vec!["mary.alias@corp.test".into(), "mary.new@corp.test".into()],
        ..Default::default()
    };
    let bob = User {
        id: "bob".into(),
        email: "bob@corp.test".into(),
        ..Default::default()
    };
    Approval {
        keys,
        context,
        task,
        mary,
        bob,
        auth: InboundAuth::default(),
    }
}

/// A plain-text mail as a client sends it.
fn mail(headers: &str, body: &str) -> ReplyReading {
    let raw = format!(
        "{headers}Subject: Re: 报销审批\r\nMessage-ID: <reply-1@corp.test>\r\n\
         Date: Sat, 21 Nov 2026 23:41:00 +0800\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    reply::read_reply(raw.as_bytes(), &default_words(), None)
}

impl Approval {
    fn token(&self) -> String {
        token::issue(
            &self.keys,
            &self.context.id,
            &self.context.approver_email,
            self.context.valid_until,
        )
    }

    /// A reply from `from` to the approval mail's plus address (its token).
    fn reply(&self, from: &str, body: &str) -> ReplyReading {
        self.reply_with_token(from, &self.token(), body)
    }

    fn reply_with_token(&self, from: &str, token: &str, body: &str) -> ReplyReading {
        mail(
            &format!("From: {from}\r\nTo: approvals+{token}@corp.test\r\n"),
            body,
        )
    }

    /// The registered user of an address, as the store would find it.
    fn user_at(&self, address: &str) -> Option<&User> {
        [&self.mary, &self.bob]
            .into_iter()
            .find(|u| u.email == address || u.email_aliases.iter().any(|a| a == address))
    }

    /// What the checks say about `reading` at `now`, tied to mary's context by its token (or by
    /// In-Reply-To when it has none).
    fn verify_at(&self, reading: &ReplyReading, now: i64) -> Verified {
        let token = reading.correlation.token.as_deref().and_then(token::parse);
        let found = Correlated {
            context: self.context.clone(),
            path: if token.is_some() {
                "plus_address"
            } else {
                "in_reply_to"
            },
            token,
        };
        verify(&Facts {
            reading,
            found: Some(&found),
            sender: self.user_at(&reading.correlation.from),
            task: Some(&self.task),
            keys: &self.keys,
            auth: &self.auth,
            now,
        })
        .expect("every fact the checks need is there")
    }

    fn verify(&self, reading: &ReplyReading) -> Verified {
        self.verify_at(reading, NOW)
    }
}

/// The judgement of a refused reply (about mary's approval or about none).
fn refusal(verified: Verified) -> Judgement {
    match verified {
        Verified::Refused(judgement) | Verified::Unrelated(judgement) => judgement,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn marys_reply_to_her_own_approval_mail_passes_every_check() {
    let a = approval();
    assert_eq!(a.verify(&a.reply("mary@corp.test", "同意")), Verified::Open);
    // The address is compared without regard to case.
    assert_eq!(a.verify(&a.reply("Mary@Corp.Test", "同意")), Verified::Open);
}

#[test]
fn a_forged_token_is_a_bad_signature() {
    let a = approval();
    let guessed = KeyRing::new(vec![(1, b"an attacker's guess".to_vec())]).expect("a key ring");
    let forged = token::issue(
        &guessed,
        &a.context.id,
        &a.context.approver_email,
        a.context.valid_until,
    );
    let judgement = refusal(a.verify(&a.reply_with_token("mary@corp.test", &forged, "同意")));
    assert_eq!(judgement.verdict, Verdict::BadSignature);

    // A token for a later validity than the context's is not the context's either.
    let stretched = token::issue(
        &a.keys,
        &a.context.id,
        &a.context.approver_email,
        a.context.valid_until + DAY,
    );
    let judgement = refusal(a.verify(&a.reply_with_token("mary@corp.test", &stretched, "同意")));
    assert_eq!(judgement.verdict, Verdict::BadSignature);
}

#[test]
fn a_token_signed_with_another_key_than_the_contexts_is_refused() {
    let mut a = approval();
    a.keys = KeyRing::new(vec![
        (1, b"the server's secret".to_vec()),
        (2, b"the rotated secret".to_vec()),
    ])
    .expect("a key ring");
    // Signed with key 2 (valid in the ring), but the context was issued with key 1.
    let other_key = token::issue(
        &a.keys,
        &a.context.id,
        &a.context.approver_email,
        a.context.valid_until,
    );
    let judgement = refusal(a.verify(&a.reply_with_token("mary@corp.test", &other_key, "同意")));
    assert_eq!(judgement.verdict, Verdict::BadSignature);
}

#[test]
fn a_reply_from_someone_else_is_a_sender_mismatch() {
    let a = approval();
    let judgement = refusal(a.verify(&a.reply("bob@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::SenderMismatch);
    assert!(judgement.reason.contains("bob@corp.test"), "{judgement:?}");
    // A stranger too.
    let judgement = refusal(a.verify(&a.reply("eve@elsewhere.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::SenderMismatch);
}

#[test]
fn only_the_aliases_mary_had_when_the_mail_went_out_may_answer_it() {
    let a = approval();
    assert_eq!(
        a.verify(&a.reply("mary.alias@corp.test", "同意")),
        Verified::Open
    );
    let judgement = refusal(a.verify(&a.reply("mary.new@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::SenderMismatch);
}

#[test]
fn an_alias_that_is_no_longer_marys_is_refused() {
    let mut a = approval();
    a.mary.email_aliases.clear();
    a.bob.email_aliases = vec!["mary.alias@corp.test".into()];
    let judgement = refusal(a.verify(&a.reply("mary.alias@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::SenderMismatch);
}

#[test]
fn a_reply_after_the_validity_is_expired() {
    let a = approval();
    let reply = a.reply("mary@corp.test", "同意");
    assert_eq!(
        a.verify_at(&reply, a.context.valid_until - 1),
        Verified::Open
    );
    let judgement = refusal(a.verify_at(&reply, a.context.valid_until));
    assert_eq!(judgement.verdict, Verdict::Expired);
    assert!(
        judgement.reason.starts_with("replies were accepted until "),
        "{judgement:?}"
    );

    // Expired by the scheduler already.
    let mut a = approval();
    a.context.status = ApprovalStatus::Expired;
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "同意")));
    assert_eq!(
        judgement,
        Judgement {
            verdict: Verdict::Expired,
            reason: "the approval has expired".into(),
            silent: false,
        }
    );
}

#[test]
fn a_revoked_approval_says_why_or_what_became_of_the_task() {
    let mut a = approval();
    a.context.status = ApprovalStatus::Revoked;
    a.context.revoke_reason = "the approver's address changed".into();
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::Revoked);
    assert_eq!(
        judgement.reason,
        "the approval was revoked: the approver's address changed"
    );

    // Revoked because the task was decided through the API.
    a.task.status = TaskStatus::Completed;
    a.task.completed_by = "bob".into();
    a.task.outcome = "reject".into();
    a.task.completed_at = Some(NOW - 1000);
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::TaskClosed);
    assert!(
        judgement.reason.starts_with("already handled by bob at ")
            && judgement.reason.ends_with("(reject)"),
        "{judgement:?}"
    );
}

#[test]
fn a_used_approval_is_already_used() {
    let mut a = approval();
    a.context.status = ApprovalStatus::Used;
    a.task.status = TaskStatus::Completed;
    a.task.completed_by = "mary".into();
    a.task.outcome = "approve".into();
    a.task.completed_at = Some(NOW - 1000);
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "驳回")));
    assert_eq!(judgement.verdict, Verdict::AlreadyUsed);
    assert!(
        judgement.reason.starts_with("already handled by mary at "),
        "{judgement:?}"
    );
}

#[test]
fn a_task_handed_to_someone_else_is_closed_to_mary() {
    let mut a = approval();
    a.task.assignee = "bob".into();
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::TaskClosed);
    assert_eq!(judgement.reason, "the task is now assigned to bob");

    let mut a = approval();
    a.task.status = TaskStatus::Cancelled;
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::TaskClosed);
    assert_eq!(judgement.reason, "the task is cancelled");
}

#[test]
fn a_mail_from_several_mailboxes_is_judged_on_its_header_and_never_answered() {
    let a = approval();
    let both = mail(
        &format!(
            "From: mary@corp.test, bob@corp.test\r\nTo: approvals+{}@corp.test\r\n",
            a.token()
        ),
        "同意",
    );
    let judgement = refusal(a.verify(&both));
    assert_eq!(judgement.verdict, Verdict::SeveralFrom);
    assert!(judgement.silent);
    assert!(matches!(a.verify(&both), Verified::Unrelated(_)));
}

#[test]
fn robots_and_unreadable_mail_are_not_about_the_approval() {
    let a = approval();
    let away = mail(
        &format!(
            "From: mary@corp.test\r\nTo: approvals+{}@corp.test\r\nAuto-Submitted: auto-replied\r\n",
            a.token()
        ),
        "I am out of the office until Monday.",
    );
    assert!(matches!(
        a.verify(&away),
        Verified::Unrelated(Judgement {
            verdict: Verdict::AutoReply,
            ..
        })
    ));
}

#[test]
fn a_reply_with_nothing_of_ours_is_an_unknown_token() {
    let a = approval();
    let reading = mail(
        "From: mary@corp.test\r\nTo: approvals@corp.test\r\n",
        "同意",
    );
    let verified = verify(&Facts {
        reading: &reading,
        found: None,
        sender: Some(&a.mary),
        task: None,
        keys: &a.keys,
        auth: &a.auth,
        now: NOW,
    })
    .expect("nothing more is needed");
    assert!(matches!(
        verified,
        Verified::Unrelated(Judgement {
            verdict: Verdict::UnknownToken,
            ..
        })
    ));
}

#[test]
fn a_reply_found_by_its_thread_but_without_the_token_is_refused() {
    let a = approval();
    let threaded = mail(
        &format!(
            "From: mary@corp.test\r\nTo: approvals@corp.test\r\nIn-Reply-To: {}\r\n",
            a.context.message_id
        ),
        "同意",
    );
    let judgement = refusal(a.verify(&threaded));
    assert_eq!(judgement.verdict, Verdict::UnknownToken);
    assert!(
        judgement.reason.starts_with("found through in_reply_to"),
        "{judgement:?}"
    );
}

#[test]
fn a_sender_the_receiving_mta_did_not_authenticate_is_refused_first() {
    let mut a = approval();
    a.auth = InboundAuth::from_settings(Some("mx.corp.test"), "dkim").expect("settings");
    // Even a reply that would otherwise pass says nothing until its sender is proven.
    let judgement = refusal(a.verify(&a.reply("mary@corp.test", "同意")));
    assert_eq!(judgement.verdict, Verdict::AuthFailed);

    let signed = mail(
        &format!(
            "Authentication-Results: mx.corp.test; dkim=pass header.d=corp.test\r\n\
             From: mary@corp.test\r\nTo: approvals+{}@corp.test\r\n",
            a.token()
        ),
        "同意",
    );
    assert_eq!(a.verify(&signed), Verified::Open);
}

#[test]
fn a_context_whose_task_is_missing_is_an_error_not_a_verdict() {
    let a = approval();
    let reading = a.reply("mary@corp.test", "同意");
    let token = reading.correlation.token.as_deref().and_then(token::parse);
    let found = Correlated {
        context: a.context.clone(),
        path: "plus_address",
        token,
    };
    let facts = Facts {
        reading: &reading,
        found: Some(&found),
        sender: Some(&a.mary),
        task: None,
        keys: &a.keys,
        auth: &a.auth,
        now: NOW,
    };
    assert!(verify(&facts).is_err());
}

#[test]
fn the_first_line_decides_and_an_unknown_outcome_decides_nothing() {
    let a = approval();
    assert!(matches!(
        decide(&a.reply("mary@corp.test", "同意"), false),
        Decision::Complete { outcome, .. } if outcome == "approve"
    ));
    assert!(matches!(
        decide(&a.reply("mary@corp.test", "驳回"), false),
        Decision::Complete { outcome, .. } if outcome == "reject"
    ));
    let Decision::Refused(judgement) = decide(&a.reply("mary@corp.test", "下周再说吧"), false)
    else {
        panic!("no outcome named, nothing decided");
    };
    assert_eq!(
        judgement,
        Judgement {
            verdict: Verdict::NoDecision,
            reason: "no decision on the first line of the reply".into(),
            silent: false,
        }
    );
    let Decision::Refused(judgement) = decide(&a.reply("mary@corp.test", "同意 驳回"), false)
    else {
        panic!("two outcomes named, nothing decided");
    };
    assert_eq!(judgement.verdict, Verdict::Ambiguous);
}

#[test]
fn a_hand_over_by_mail_needs_the_definitions_leave_and_another_registered_user() {
    let a = approval();
    let delegate = a.reply("mary@corp.test", "delegate bob@corp.test");
    let Decision::Refused(judgement) = decide(&delegate, false) else {
        panic!("the process does not allow it");
    };
    assert_eq!(judgement.verdict, Verdict::NoDecision);
    assert!(
        judgement.reason.contains("replyflow:allowDelegate"),
        "{judgement:?}"
    );
    let Decision::Delegate { address, .. } = decide(&delegate, true) else {
        panic!("allowed: a hand-over");
    };
    assert_eq!(address, "bob@corp.test");
    assert_eq!(delegate_refusal(&address, Some(&a.bob), &a.context), None);
    let to_self = delegate_refusal("mary@corp.test", Some(&a.mary), &a.context);
    assert!(to_self.is_some_and(|j| j.reason.contains("your own address")));
    let stranger = delegate_refusal("eve@elsewhere.test", None, &a.context);
    assert!(stranger.is_some_and(|j| j.reason.contains("not the address of a registered user")));
}
