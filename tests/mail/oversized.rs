//! Mail over the inbound size cap (MAX_INBOUND_BYTES) is judged by its header alone: a
//! `too_large` row in the inbound log with its sender, subject and Message-ID, an answer telling
//! the sender the limit, and the message moved to the processed folder like any other — read
//! from the real Dovecot over IMAPS (`BODY.PEEK[HEADER]`), and from a Maildir file.
use replyflow::{
    model::{InboundEmail, Verdict},
    store::{PageRequest, inbound::InboundFilter},
    workers::inbound::{InboundSource, InboundWorker},
    workflow::inbound::MAX_INBOUND_BYTES,
};

use crate::{
    helpers::{
        TestApp, approvals_inbox, eventually, mail_env, postfix_shared, spawn_mail_app, unique,
    },
    imap::{connect_imaps, count_header},
    inbound::{DEADLINE, PROCESSED, imap_worker},
};

/// A reply with a scanned attachment that takes it over the cap by 1 MiB.
fn huge_reply(from: &str, to: &str, message_id: &str) -> Vec<u8> {
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    let lines = (MAX_INBOUND_BYTES + 1024 * 1024) / line.len();
    let mut raw = format!(
        "From: Mary <{from}>\r\nTo: {to}\r\nSubject: Re: approval with the scanned receipts\r\n\
         Message-ID: {message_id}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0800\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n同意\r\n--B\r\n\
         Content-Type: application/pdf; name=\"receipts.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    raw.reserve(lines * line.len() + 16);
    for _ in 0..lines {
        raw.extend_from_slice(line.as_bytes());
    }
    raw.extend_from_slice(b"--B--\r\n");
    assert!(raw.len() > MAX_INBOUND_BYTES);
    raw
}

async fn add_mary(app: &TestApp) {
    app.add_user_with("mary", &mail_env().address("mary"), "en")
        .await;
}

async fn logged(app: &TestApp, message_id: &str) -> Vec<InboundEmail> {
    let store = app.store().await;
    let log = store
        .list_inbound(
            &InboundFilter {
                message_id: message_id.trim_matches(['<', '>']).into(),
                ..Default::default()
            },
            &PageRequest::new(10, "").expect("page"),
        )
        .await
        .expect("list_inbound");
    store.close().await;
    log.items
}

fn assert_too_large(row: &InboundEmail, size: usize, transport: &str) {
    let env = mail_env();
    assert_eq!(row.verdict, Verdict::TooLarge, "{row:?}");
    assert_eq!(row.transport, transport);
    assert_eq!(row.sender, env.address("mary"));
    assert_eq!(row.subject, "Re: approval with the scanned receipts");
    assert_eq!(row.size_bytes, size as i64);
    assert!(
        row.reason.contains("10 MiB"),
        "the limit is named: {}",
        row.reason
    );
    assert!(row.answered, "the sender is told");
}

#[tokio::test]
async fn an_imap_message_over_the_cap_is_logged_from_its_header_answered_and_moved() {
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let app = spawn_mail_app().await;
    add_mary(&app).await;
    let id = format!("<{}@{}>", unique("huge"), env.domain);
    let raw = huge_reply(&env.address("mary"), &env.address("approvals"), &id);
    // Postfix refuses mail this large (message_size_limit): put it straight into the mailbox.
    let mut session = connect_imaps("approvals").await;
    session
        .append("INBOX", None, None, &raw)
        .await
        .expect("APPEND the large message");
    let _ = session.logout().await;

    let worker = imap_worker(&app);
    eventually(DEADLINE, async || {
        worker.run_once().await.expect("a pass");
        match logged(&app, &id).await.len() {
            0 => Err("the large message was not read"),
            _ => Ok(()),
        }
    })
    .await;
    let log = logged(&app, &id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_too_large(&log[0], raw.len(), "imap");
    let bare = id.trim_matches(['<', '>']);
    assert_eq!(
        count_header("approvals", PROCESSED, "Message-ID", bare).await,
        1
    );
    assert_eq!(
        count_header("approvals", "INBOX", "Message-ID", bare).await,
        0
    );
    // A second pass reads nothing again.
    worker.run_once().await.expect("a pass");
    assert_eq!(logged(&app, &id).await.len(), 1);

    // The answer reaches mary's mailbox, threaded under her message.
    eventually(DEADLINE, async || {
        match count_header("mary", "INBOX", "In-Reply-To", bare).await {
            0 => Err("no answer reached mary"),
            _ => Ok(()),
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_maildir_file_over_the_cap_is_logged_from_its_header_and_moved() {
    let _postfix = postfix_shared().await;
    let env = mail_env();
    let app = spawn_mail_app().await;
    add_mary(&app).await;
    let id = format!("<{}@{}>", unique("huge"), env.domain);
    let raw = huge_reply(&env.address("mary"), &env.address("approvals"), &id);
    let dir = tempfile::tempdir().expect("temp dir");
    let maildir = dir.path().join("inbox");
    let worker = InboundWorker::new(
        app.server_workflow.clone(),
        InboundSource::from_url(&format!("maildir:{}", maildir.display())).expect("maildir URL"),
        PROCESSED.into(),
        None,
    );
    assert_eq!(worker.run_once().await.expect("creates the Maildir"), 0);
    std::fs::write(maildir.join("new").join("1.huge.localhost"), &raw).expect("write");
    assert_eq!(worker.run_once().await.expect("a pass"), 1);
    let log = logged(&app, &id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_too_large(&log[0], raw.len(), "maildir");
    assert!(
        maildir
            .join(format!(".{PROCESSED}"))
            .join("cur")
            .join("1.huge.localhost:2,S")
            .is_file()
    );
    assert_eq!(
        std::fs::read_dir(maildir.join("new"))
            .expect("new/")
            .count(),
        0
    );
    app.stop().await;
}
