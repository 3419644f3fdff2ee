//! UpsertReminderType: server-wide reminder types are stored and returned complete (source,
//! updated_at, both interval forms); every bad field is refused naming it, and a refused call
//! changes nothing.
use replyflow::{model::Channel as ModelChannel, proto::pb};
use tonic::{Code, Request};

use crate::helpers::{TestApp, req, spawn_app};

fn urgent() -> pb::ReminderType {
    pb::ReminderType {
        id: "urgent".into(),
        count: 3,
        interval: "PT4H".into(),
        channels: vec![pb::Channel::Inbox as i32, pb::Channel::Email as i32],
        escalation: "notify-manager".into(),
        ..Default::default()
    }
}

async fn upsert(
    app: &TestApp,
    reminder_type: pb::ReminderType,
) -> Result<pb::ReminderType, tonic::Status> {
    app.reminders()
        .upsert_reminder_type(req(
            pb::UpsertReminderTypeRequest {
                reminder_type: Some(reminder_type),
            },
            "admin",
        ))
        .await
        .map(|r| r.into_inner())
}

async fn stored(app: &TestApp, id: &str) -> Option<replyflow::model::ReminderType> {
    let store = app.store().await;
    let found = store.reminder_type(id).await.expect("read reminder type");
    store.close().await;
    found
}

#[tokio::test]
async fn a_reminder_type_is_stored_and_returned_complete() {
    let app = spawn_app().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let saved = upsert(&app, urgent()).await.expect("upsert");
    assert_eq!(saved.id, "urgent");
    assert_eq!(saved.count, 3);
    assert_eq!(saved.interval, "PT4H");
    assert_eq!(
        saved.interval_duration,
        Some(prost_types::Duration {
            seconds: 14_400,
            nanos: 0
        })
    );
    assert_eq!(
        saved.channels,
        [pb::Channel::Inbox as i32, pb::Channel::Email as i32]
    );
    assert_eq!(saved.escalation, "notify-manager");
    assert_eq!(saved.source, "server");
    let updated = saved.updated_at.expect("updated_at is filled");
    assert!(u64::try_from(updated.seconds).expect("positive") >= before);

    let row = stored(&app, "urgent").await.expect("stored");
    assert_eq!(row.count, 3);
    assert_eq!(row.interval_ms, 14_400_000);
    assert_eq!(row.channels, [ModelChannel::Inbox, ModelChannel::Email]);
    assert_eq!(row.escalation.as_text(), "notify-manager");

    // Upserting the same id replaces it; an empty escalation means none; duplicate channels
    // collapse in fallback order.
    let replaced = upsert(
        &app,
        pb::ReminderType {
            count: 1,
            interval: "P1D".into(),
            channels: vec![
                pb::Channel::Sms as i32,
                pb::Channel::Inbox as i32,
                pb::Channel::Sms as i32,
            ],
            escalation: String::new(),
            ..urgent()
        },
    )
    .await
    .expect("replace");
    assert_eq!(replaced.escalation, "none");
    assert_eq!(
        replaced.channels,
        [pb::Channel::Sms as i32, pb::Channel::Inbox as i32]
    );
    let row = stored(&app, "urgent").await.expect("stored");
    assert_eq!((row.count, row.interval_ms), (1, 86_400_000));
    assert_eq!(row.channels, [ModelChannel::Sms, ModelChannel::Inbox]);
    assert_eq!(row.escalation.as_text(), "none");
    app.stop().await;
}

#[tokio::test]
async fn the_interval_may_come_as_a_duration_and_must_agree_when_both_are_given() {
    let app = spawn_app().await;
    let two_hours = Some(prost_types::Duration {
        seconds: 7_200,
        nanos: 0,
    });
    let saved = upsert(
        &app,
        pb::ReminderType {
            interval: String::new(),
            interval_duration: two_hours,
            ..urgent()
        },
    )
    .await
    .expect("duration only");
    assert_eq!(saved.interval, "PT2H");
    let saved = upsert(
        &app,
        pb::ReminderType {
            id: "both".into(),
            interval: "PT120M".into(),
            interval_duration: two_hours,
            ..urgent()
        },
    )
    .await
    .expect("both, equal");
    assert_eq!(saved.interval, "PT2H", "shown in its canonical form");
    let one_second = upsert(
        &app,
        pb::ReminderType {
            id: "quick".into(),
            interval: "PT1S".into(),
            ..urgent()
        },
    )
    .await
    .expect("one second is valid");
    assert_eq!(one_second.interval_duration.map(|d| d.seconds), Some(1));
    app.stop().await;
}

#[tokio::test]
async fn every_bad_field_is_refused_by_name_and_nothing_changes() {
    let app = spawn_app().await;
    upsert(&app, urgent()).await.expect("the good one");
    let duration = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
    let cases: Vec<(&str, pb::ReminderType, &str)> = vec![
        (
            "empty id",
            pb::ReminderType {
                id: String::new(),
                ..urgent()
            },
            "reminder_type.id",
        ),
        (
            "bad characters",
            pb::ReminderType {
                id: "ur gent".into(),
                ..urgent()
            },
            "reminder_type.id",
        ),
        (
            "long id",
            pb::ReminderType {
                id: "u".repeat(65),
                ..urgent()
            },
            "reminder_type.id",
        ),
        (
            "count 0",
            pb::ReminderType {
                count: 0,
                ..urgent()
            },
            "reminder_type.count",
        ),
        (
            "count 101",
            pb::ReminderType {
                count: 101,
                ..urgent()
            },
            "reminder_type.count",
        ),
        (
            "negative count",
            pb::ReminderType {
                count: -3,
                ..urgent()
            },
            "reminder_type.count",
        ),
        (
            "no interval",
            pb::ReminderType {
                interval: String::new(),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "not ISO 8601",
            pb::ReminderType {
                interval: "4 hours".into(),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "zero interval",
            pb::ReminderType {
                interval: "PT0S".into(),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "months",
            pb::ReminderType {
                interval: "P1M".into(),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "years",
            pb::ReminderType {
                interval: "P1Y".into(),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "disagreeing duration",
            pb::ReminderType {
                interval_duration: duration(60, 0),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "sub-second duration",
            pb::ReminderType {
                interval: String::new(),
                interval_duration: duration(0, 500_000_000),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "negative duration",
            pb::ReminderType {
                interval: String::new(),
                interval_duration: duration(-60, 0),
                ..urgent()
            },
            "reminder_type.interval",
        ),
        (
            "no channels",
            pb::ReminderType {
                channels: vec![],
                ..urgent()
            },
            "reminder_type.channels",
        ),
        (
            "unspecified channel",
            pb::ReminderType {
                channels: vec![pb::Channel::Inbox as i32, pb::Channel::Unspecified as i32],
                ..urgent()
            },
            "reminder_type.channels",
        ),
        (
            "unknown channel",
            pb::ReminderType {
                channels: vec![42],
                ..urgent()
            },
            "reminder_type.channels",
        ),
        (
            "unknown policy",
            pb::ReminderType {
                escalation: "escalate".into(),
                ..urgent()
            },
            "reminder_type.escalation",
        ),
        (
            "notify nobody",
            pb::ReminderType {
                escalation: "notify:".into(),
                ..urgent()
            },
            "reminder_type.escalation",
        ),
        (
            "complete nothing",
            pb::ReminderType {
                escalation: "complete:".into(),
                ..urgent()
            },
            "reminder_type.escalation",
        ),
        (
            "notify an unknown user",
            pb::ReminderType {
                escalation: "notify:ghost".into(),
                ..urgent()
            },
            "reminder_type.escalation",
        ),
    ];
    for (what, reminder_type, field) in cases {
        let err = upsert(&app, reminder_type).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{what}: {}",
            err.message()
        );
    }
    let err = app
        .reminders()
        .upsert_reminder_type(req(
            pb::UpsertReminderTypeRequest {
                reminder_type: None,
            },
            "admin",
        ))
        .await
        .expect_err("no type at all");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("reminder_type:"),
        "{}",
        err.message()
    );

    // The stored type is the good one, untouched by every refused call.
    let row = stored(&app, "urgent").await.expect("stored");
    assert_eq!(
        (
            row.count,
            row.interval_ms,
            row.escalation.as_text().as_str()
        ),
        (3, 14_400_000, "notify-manager")
    );
    assert_eq!(row.channels, [ModelChannel::Inbox, ModelChannel::Email]);
    assert!(stored(&app, "ur gent").await.is_none());
    app.stop().await;
}

#[tokio::test]
async fn notify_names_a_user_of_the_directory() {
    let app = spawn_app().await;
    let boss = pb::ReminderType {
        id: "to-the-ceo".into(),
        escalation: "notify:ceo".into(),
        ..urgent()
    };
    let err = upsert(&app, boss.clone()).await.expect_err("no ceo yet");
    assert!(err.message().contains("ceo"), "{}", err.message());
    assert!(stored(&app, "to-the-ceo").await.is_none());
    app.add_user("ceo", "").await;
    let saved = upsert(&app, boss).await.expect("the ceo exists now");
    assert_eq!(saved.escalation, "notify:ceo");
    let auto = upsert(
        &app,
        pb::ReminderType {
            id: "auto-approve".into(),
            escalation: "complete:approve".into(),
            ..urgent()
        },
    )
    .await
    .expect("complete with an outcome");
    assert_eq!(auto.escalation, "complete:approve");

    let err = app
        .reminders()
        .upsert_reminder_type(Request::new(pb::UpsertReminderTypeRequest {
            reminder_type: Some(urgent()),
        }))
        .await
        .expect_err("no identity");
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await;
}
