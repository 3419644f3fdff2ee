//! In-system messages (系统短消息) over gRPC: ListMessages (newest first, paged, unread badge),
//! MarkMessagesRead (exactly once, all or nothing), WatchMessages (unread replay, live, lag,
//! shutdown) and who may see whose. Messages are posted as notices through the server's own
//! use case, the way reminders post theirs: stored, committed, then published.
use std::time::Duration;

use replyflow::{
    model::{Message, MessageKind},
    proto::pb,
    workflow::messages::Notice,
};
use tonic::{Code, Request, Streaming};

use crate::helpers::{TestApp, req, spawn_app, spawn_app_with};

const PATIENCE: Duration = Duration::from_secs(10);

async fn notify(app: &TestApp, user: &str, title: &str) -> Message {
    app.server_workflow
        .post_notice(Notice {
            user_id: user.into(),
            title: title.into(),
            body: format!("body of {title}"),
            ..Default::default()
        })
        .await
        .expect("post a notice")
}

async fn list(
    app: &TestApp,
    caller: &str,
    message: pb::ListMessagesRequest,
) -> Result<pb::ListMessagesResponse, tonic::Status> {
    app.reminders()
        .list_messages(req(message, caller))
        .await
        .map(|r| r.into_inner())
}

async fn mark(
    app: &TestApp,
    caller: &str,
    message: pb::MarkMessagesReadRequest,
) -> Result<pb::MarkMessagesReadResponse, tonic::Status> {
    app.reminders()
        .mark_messages_read(req(message, caller))
        .await
        .map(|r| r.into_inner())
}

fn mark_ids(ids: &[&str]) -> pb::MarkMessagesReadRequest {
    pb::MarkMessagesReadRequest {
        message_ids: ids.iter().map(|id| id.to_string()).collect(),
        ..Default::default()
    }
}

/// Every message of `user` as `caller` sees them, following the page tokens.
async fn all_pages(app: &TestApp, caller: &str, user: &str, unread_only: bool) -> Vec<pb::Message> {
    let mut messages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            app,
            caller,
            pb::ListMessagesRequest {
                user_id: user.into(),
                unread_only,
                page_size: 2,
                page_token: token,
            },
        )
        .await
        .expect("list messages");
        assert!(page.messages.len() <= 2, "a page holds at most page_size");
        messages.extend(page.messages);
        if page.next_page_token.is_empty() {
            return messages;
        }
        token = page.next_page_token;
    }
}

fn ids(messages: &[pb::Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.clone()).collect()
}

/// What ListMessages must return: newest first by created_at, then id.
fn newest_first(posted: &[Message]) -> Vec<String> {
    let mut sorted = posted.to_vec();
    sorted.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    sorted.into_iter().map(|m| m.id).collect()
}

async fn next_message(stream: &mut Streaming<pb::Message>) -> pb::Message {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("no message within 10 s")
        .expect("the stream failed")
        .expect("the stream ended")
}

async fn watch(
    app: &TestApp,
    caller: &str,
    user: &str,
    include_unread: bool,
) -> Result<Streaming<pb::Message>, tonic::Status> {
    let message = pb::WatchMessagesRequest {
        user_id: user.into(),
        include_unread,
    };
    app.reminders()
        .watch_messages(req(message, caller))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn mary_lists_her_messages_newest_first_page_by_page_with_an_unread_badge() {
    let app = spawn_app().await;
    let mut posted = Vec::new();
    for i in 0..5 {
        posted.push(notify(&app, "mary", &format!("notice {i}")).await);
    }
    notify(&app, "fred", "for fred only").await;

    let first = list(&app, "mary", pb::ListMessagesRequest::default())
        .await
        .expect("list");
    assert_eq!(first.unread_count, 5);
    assert!(first.next_page_token.is_empty(), "5 fit the default page");
    assert_eq!(ids(&first.messages), newest_first(&posted));
    let newest = &first.messages[0];
    let expected = posted.iter().find(|m| m.id == newest.id).expect("posted");
    assert_eq!(newest.user_id, "mary");
    assert_eq!(newest.title, expected.title);
    assert_eq!(newest.body, expected.body);
    assert_eq!(newest.kind, pb::MessageKind::Notice as i32);
    assert!(!newest.read);
    assert!(newest.read_at.is_none());
    assert!(newest.sender.is_empty(), "a system notice has no sender");
    assert_eq!(
        newest
            .created_at
            .as_ref()
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
        Some(expected.created_at)
    );

    // Pages of two, in the same order, with the badge on every page.
    assert_eq!(
        ids(&all_pages(&app, "mary", "", false).await),
        newest_first(&posted)
    );

    // Reading two leaves three unread, listed alone with unread_only, still newest first.
    let read = [posted[1].id.as_str(), posted[3].id.as_str()];
    mark(&app, "mary", mark_ids(&read)).await.expect("mark");
    let unread: Vec<Message> = posted
        .iter()
        .filter(|m| !read.contains(&m.id.as_str()))
        .cloned()
        .collect();
    let unread_listed = all_pages(&app, "mary", "mary", true).await;
    assert_eq!(ids(&unread_listed), newest_first(&unread));
    let everything = list(&app, "mary", pb::ListMessagesRequest::default())
        .await
        .expect("list");
    assert_eq!(everything.unread_count, 3);
    let marked: Vec<&pb::Message> = everything.messages.iter().filter(|m| m.read).collect();
    assert_eq!(marked.len(), 2);
    assert!(marked.iter().all(|m| m.read_at.is_some()));
    app.stop().await;
}

#[tokio::test]
async fn the_order_is_by_created_at_then_id_even_when_ids_disagree() {
    let app = spawn_app().await;
    // Ids chosen against the times: id order alone would list them a, b, c, d.
    let at = 1_700_000_000_000;
    let stored = [
        ("a-late", at + 2_000),
        ("b-early", at),
        ("c-tie", at + 1_000),
        ("d-tie", at + 1_000),
    ];
    let store = app.store().await;
    let mut tx = store.begin().await.expect("begin");
    for (id, created_at) in stored {
        tx.insert_message(&Message {
            id: id.into(),
            user_id: "mary".into(),
            kind: MessageKind::Reminder,
            title: format!("title {id}"),
            body: String::new(),
            task_id: "task-1".into(),
            instance_id: "instance-1".into(),
            sender: String::new(),
            read_at: None,
            created_at,
        })
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");
    store.close().await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &app,
            "mary",
            pb::ListMessagesRequest {
                page_size: 1,
                page_token: token,
                ..Default::default()
            },
        )
        .await
        .expect("list");
        assert_eq!(page.unread_count, 4);
        seen.extend(ids(&page.messages));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["a-late", "d-tie", "c-tie", "b-early"]);
    let first = list(&app, "mary", pb::ListMessagesRequest::default())
        .await
        .expect("list");
    let newest = &first.messages[0];
    assert_eq!(newest.kind, pb::MessageKind::Reminder as i32);
    assert_eq!(
        (newest.task_id.as_str(), newest.process_instance_id.as_str()),
        ("task-1", "instance-1")
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_paging_is_refused_naming_the_field() {
    let app = spawn_app().await;
    for i in 0..3 {
        notify(&app, "mary", &format!("n{i}")).await;
    }
    let page = list(
        &app,
        "mary",
        pb::ListMessagesRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .expect("first page");
    assert!(!page.next_page_token.is_empty());

    let cases = [
        (
            "a token of another filter",
            pb::ListMessagesRequest {
                unread_only: true,
                page_size: 1,
                page_token: page.next_page_token.clone(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "garbage",
            pb::ListMessagesRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "a negative page size",
            pb::ListMessagesRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
    ];
    for (what, message, field) in cases {
        let err = list(&app, "mary", message).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{what}: {}",
            err.message()
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn marking_read_is_idempotent_and_all_or_nothing() {
    let app = spawn_app().await;
    let a = notify(&app, "mary", "a").await;
    let b = notify(&app, "mary", "b").await;
    let c = notify(&app, "mary", "c").await;
    let freds = notify(&app, "fred", "fred's").await;

    let done = mark(&app, "mary", mark_ids(&[&a.id, &b.id, &a.id]))
        .await
        .expect("mark a and b");
    assert_eq!((done.marked, done.unread_count), (2, 1));
    let again = mark(&app, "mary", mark_ids(&[&a.id, &b.id]))
        .await
        .expect("mark again");
    assert_eq!(
        (again.marked, again.unread_count),
        (0, 1),
        "nothing changes"
    );

    // Someone else's message or an unknown id: NOT_FOUND naming it, and c stays unread.
    for foreign in [freds.id.as_str(), "no-such-message"] {
        let err = mark(&app, "mary", mark_ids(&[&c.id, foreign]))
            .await
            .expect_err("not hers");
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        assert!(err.message().contains(foreign), "{}", err.message());
        let badge = list(&app, "mary", pb::ListMessagesRequest::default())
            .await
            .expect("list");
        assert_eq!(badge.unread_count, 1, "nothing was marked");
    }
    let fred = list(&app, "fred", pb::ListMessagesRequest::default())
        .await
        .expect("fred lists");
    assert_eq!(fred.unread_count, 1, "fred's message is untouched");

    // Exactly one of message_ids and all.
    for (what, message) in [
        ("neither", pb::MarkMessagesReadRequest::default()),
        (
            "both",
            pb::MarkMessagesReadRequest {
                message_ids: vec![c.id.clone()],
                all: true,
                ..Default::default()
            },
        ),
        ("an empty id", mark_ids(&[""])),
    ] {
        let err = mark(&app, "mary", message).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with("message_ids"),
            "{what}: {}",
            err.message()
        );
    }

    let all = pb::MarkMessagesReadRequest {
        all: true,
        ..Default::default()
    };
    let done = mark(&app, "mary", all.clone()).await.expect("mark all");
    assert_eq!((done.marked, done.unread_count), (1, 0));
    let done = mark(&app, "mary", all).await.expect("mark all again");
    assert_eq!((done.marked, done.unread_count), (0, 0));
    let fred = list(&app, "fred", pb::ListMessagesRequest::default())
        .await
        .expect("fred lists");
    assert_eq!(
        fred.unread_count, 1,
        "all means all of mary's, not everyone's"
    );
    app.stop().await;
}

#[tokio::test]
async fn only_admins_read_or_mark_other_peoples_messages() {
    let app = spawn_app_with(|s| s.security.admins = "admin, boss, auditor".into()).await;
    let marys = notify(&app, "mary", "for mary").await;

    let err = list(
        &app,
        "fred",
        pb::ListMessagesRequest {
            user_id: "mary".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("fred may not read mary's messages");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = mark(
        &app,
        "fred",
        pb::MarkMessagesReadRequest {
            user_id: "mary".into(),
            all: true,
            ..Default::default()
        },
    )
    .await
    .expect_err("fred may not mark mary's messages");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = watch(&app, "fred", "mary", true)
        .await
        .expect_err("fred may not watch mary's messages");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Naming yourself is the same as naming nobody.
    let own = list(
        &app,
        "mary",
        pb::ListMessagesRequest {
            user_id: "mary".into(),
            ..Default::default()
        },
    )
    .await
    .expect("mary names herself");
    assert_eq!(ids(&own.messages), std::slice::from_ref(&marys.id));

    let seen = list(
        &app,
        "auditor",
        pb::ListMessagesRequest {
            user_id: "mary".into(),
            ..Default::default()
        },
    )
    .await
    .expect("an admin reads mary's messages");
    assert_eq!(ids(&seen.messages), std::slice::from_ref(&marys.id));
    let done = mark(
        &app,
        "boss",
        pb::MarkMessagesReadRequest {
            user_id: "mary".into(),
            message_ids: vec![marys.id.clone()],
            ..Default::default()
        },
    )
    .await
    .expect("an admin marks mary's message");
    assert_eq!((done.marked, done.unread_count), (1, 0));

    let err = app
        .reminders()
        .list_messages(Request::new(pb::ListMessagesRequest::default()))
        .await
        .expect_err("no identity");
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test]
async fn watching_replays_unread_oldest_first_then_streams_new_ones_of_that_user_only() {
    let app = spawn_app().await;
    let old = notify(&app, "mary", "old, read").await;
    let first = notify(&app, "mary", "first unread").await;
    let second = notify(&app, "mary", "second unread").await;
    mark(&app, "mary", mark_ids(&[&old.id]))
        .await
        .expect("mark");

    let mut stream = watch(&app, "mary", "", true).await.expect("watch");
    assert_eq!(next_message(&mut stream).await.id, first.id);
    assert_eq!(next_message(&mut stream).await.id, second.id);

    notify(&app, "fred", "not for mary").await;
    let live = notify(&app, "mary", "live").await;
    let got = next_message(&mut stream).await;
    assert_eq!(got.id, live.id, "fred's message is not on mary's stream");
    assert_eq!(got.title, "live");
    assert_eq!(got.user_id, "mary");
    assert!(!got.read);

    // Without include_unread only new messages come.
    let mut fresh = watch(&app, "mary", "mary", false).await.expect("watch");
    let newer = notify(&app, "mary", "newer").await;
    assert_eq!(next_message(&mut fresh).await.id, newer.id);
    assert_eq!(next_message(&mut stream).await.id, newer.id);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_watches_someone_elses_messages() {
    let app = spawn_app_with(|s| s.security.admins = "admin, boss".into()).await;
    let mut stream = watch(&app, "boss", "mary", false).await.expect("watch");
    notify(&app, "boss", "for the boss himself").await;
    let marys = notify(&app, "mary", "for mary").await;
    assert_eq!(next_message(&mut stream).await.id, marys.id);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_falls_behind_is_told_so_with_aborted() {
    let app = spawn_app().await;
    let mut stream = watch(&app, "mary", "", false).await.expect("watch");
    // More than the server's broadcast buffer (4096) at once, while the client reads nothing.
    let flood = (0..5000)
        .map(|i| Notice {
            user_id: "mary".into(),
            title: format!("flood {i}"),
            ..Default::default()
        })
        .collect();
    app.server_workflow
        .post_notices(flood)
        .await
        .expect("post the flood");
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends within 10 s");
    let status = ended.expect("the stream ends with a status, not silently");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(
        status.message().contains("list messages"),
        "{}",
        status.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn server_shutdown_ends_the_stream_with_unavailable() {
    let app = spawn_app().await;
    let mut stream = watch(&app, "mary", "", false).await.expect("watch");
    let reader = tokio::spawn(async move {
        tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("the stream ends within 10 s")
    });
    app.stop().await;
    let status = reader
        .await
        .expect("reader task")
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
