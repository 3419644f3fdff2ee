//! ReminderStats: reminder effectiveness per (type, end activity, definition). The reminders are
//! written straight into the `reminders` table here, in every state, so that each count and the
//! median are checked against numbers worked out by hand, on the store and over gRPC.
use replyflow::{
    proto::pb,
    store::reminder_stats::{ReminderStatsFilter, ReminderStatsRow},
};
use tonic::Code;

use crate::helpers::{TestApp, req, spawn_app};

/// 2023-11-14T22:13:20Z: whole seconds, so the gRPC timestamps below are exact.
const T: i64 = 1_700_000_000_000;

/// One reminder row, as the reminder code would have left it.
struct Row {
    reminder_type: &'static str,
    activity: &'static str,
    definition: &'static str,
    state: &'static str,
    sent: i64,
    escalated: bool,
    created_at: i64,
    /// (first fired, finished), 0 = never.
    fired_and_finished: (i64, i64),
}

fn row(reminder_type: &'static str, activity: &'static str, state: &'static str, sent: i64) -> Row {
    Row {
        reminder_type,
        activity,
        definition: "expense",
        state,
        sent,
        escalated: false,
        created_at: T + 100_000,
        fired_and_finished: (0, 0),
    }
}

fn finished_after(reminder_type: &'static str, activity: &'static str, took_secs: i64) -> Row {
    let first = T + 200_000;
    Row {
        fired_and_finished: (first, first + took_secs * 1000),
        ..row(reminder_type, activity, "finished_after_remind", 1)
    }
}

async fn insert(app: &TestApp, rows: &[Row]) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&app.db.url)
        .await
        .expect("connect to the test database");
    for (i, r) in rows.iter().enumerate() {
        let active = matches!(r.state, "new" | "reminded" | "remind_completed");
        let (first_fired, finished) = r.fired_and_finished;
        sqlx::query::<sqlx::Any>(
            "INSERT INTO reminders (id, instance_id, definition_key, start_activity, end_activity, via_join, \
             group_id, reminder_type, count, interval_ms, channels, escalation, state, sent_count, next_fire_at, \
             escalated, created_at, first_fired_at, last_fired_at, finished_at) \
             VALUES ($1, $2, $3, 'start', $4, '', '', $5, 3, 14400000, 'inbox', 'notify-manager', $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(format!("r{i:03}"))
        .bind(format!("instance-{i}"))
        .bind(r.definition)
        .bind(r.activity)
        .bind(r.reminder_type)
        .bind(r.state)
        .bind(r.sent)
        .bind(active.then_some(r.created_at + 14_400_000))
        .bind(i64::from(r.escalated))
        .bind(r.created_at)
        .bind(first_fired)
        .bind(first_fired)
        .bind(finished)
        .execute(&mut conn)
        .await
        .expect("insert a reminder");
    }
    let _ = sqlx::Connection::close(conn).await;
}

/// Reminders of every state over two types, two activities and two definitions.
fn fixture() -> Vec<Row> {
    let urgent = "urgent";
    let manager = "manager_approval";
    vec![
        Row {
            created_at: T,
            ..row(urgent, manager, "new", 0)
        },
        Row {
            created_at: T + 1_000,
            ..row(urgent, manager, "reminded", 1)
        },
        Row {
            created_at: T + 2_000,
            ..row(urgent, manager, "finished_before_remind", 0)
        },
        Row {
            sent: 2,
            ..finished_after(urgent, manager, 60)
        },
        finished_after(urgent, manager, 30),
        Row {
            sent: 3,
            ..finished_after(urgent, manager, 120)
        },
        Row {
            escalated: true,
            ..row(urgent, manager, "remind_failed", 3)
        },
        row(urgent, manager, "remind_failed", 3),
        row(urgent, manager, "cancelled", 1),
        row(urgent, manager, "remind_completed", 3),
        finished_after(urgent, "finance_approval", 10),
        finished_after(urgent, "finance_approval", 20),
        row("gentle", manager, "new", 0),
        Row {
            definition: "leave",
            ..row(urgent, manager, "cancelled", 0)
        },
    ]
}

async fn stats(
    store: &replyflow::store::Store,
    filter: ReminderStatsFilter,
) -> Vec<ReminderStatsRow> {
    store.reminder_stats(&filter).await.expect("stats")
}

fn key(r: &ReminderStatsRow) -> (&str, &str, &str) {
    (&r.reminder_type, &r.activity_id, &r.definition_key)
}

#[tokio::test]
async fn stats_count_every_state_per_type_activity_and_definition() {
    let app = spawn_app().await;
    insert(&app, &fixture()).await;
    let store = app.store().await;
    let rows = store
        .reminder_stats(&ReminderStatsFilter::default())
        .await
        .expect("stats");
    assert_eq!(
        rows.iter().map(key).collect::<Vec<_>>(),
        [
            ("gentle", "manager_approval", "expense"),
            ("urgent", "finance_approval", "expense"),
            ("urgent", "manager_approval", "expense"),
            ("urgent", "manager_approval", "leave"),
        ],
        "ordered by type, then activity"
    );
    assert_eq!(
        rows[2],
        ReminderStatsRow {
            reminder_type: "urgent".into(),
            activity_id: "manager_approval".into(),
            definition_key: "expense".into(),
            armed: 10,
            finished_before_remind: 1,
            finished_after_remind: 3,
            failed: 2,
            escalated: 1,
            active: 3,
            cancelled: 1,
            // 0 + 1 + 0 + 2 + 1 + 3 + 3 + 3 + 1 + 3
            reminders_sent: 17,
            // 30 s, 60 s, 120 s
            median_after_first_reminder_ms: Some(60_000),
        }
    );
    assert_eq!(rows[1].finished_after_remind, 2);
    assert_eq!(
        rows[1].median_after_first_reminder_ms,
        Some(15_000),
        "an even count takes the mean of the middle two"
    );
    assert_eq!((rows[0].armed, rows[0].active), (1, 1));
    assert_eq!(
        rows[0].median_after_first_reminder_ms, None,
        "none finished after a reminder"
    );
    assert_eq!((rows[3].armed, rows[3].cancelled), (1, 1));

    // Filters combine with AND.
    let only = |f: ReminderStatsFilter| stats(&store, f);
    let urgent = only(ReminderStatsFilter {
        reminder_type: "urgent".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(urgent.len(), 3);
    let finance = only(ReminderStatsFilter {
        activity_id: "finance_approval".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        finance.iter().map(key).collect::<Vec<_>>(),
        [("urgent", "finance_approval", "expense")]
    );
    let leave = only(ReminderStatsFilter {
        definition_key: "leave".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        leave.iter().map(key).collect::<Vec<_>>(),
        [("urgent", "manager_approval", "leave")]
    );
    // Armed at or after since, before until: the second and third reminders only.
    let window = only(ReminderStatsFilter {
        since: Some(T + 1_000),
        until: Some(T + 3_000),
        ..Default::default()
    })
    .await;
    assert_eq!(window.len(), 1);
    assert_eq!(
        (
            window[0].armed,
            window[0].active,
            window[0].finished_before_remind,
            window[0].reminders_sent
        ),
        (2, 1, 1, 1)
    );
    assert!(
        only(ReminderStatsFilter {
            reminder_type: "nonexistent".into(),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    store.close().await;

    // The same numbers over gRPC, with the median as a Duration.
    let response = app
        .reminders()
        .reminder_stats(req(
            pb::ReminderStatsRequest {
                reminder_type: "urgent".into(),
                activity_id: "manager_approval".into(),
                definition_key: "expense".into(),
                since: Some(prost_types::Timestamp {
                    seconds: T / 1000,
                    nanos: 0,
                }),
                until: Some(prost_types::Timestamp {
                    seconds: T / 1000 + 86_400,
                    nanos: 0,
                }),
            },
            "admin",
        ))
        .await
        .expect("ReminderStats")
        .into_inner();
    assert_eq!(response.rows.len(), 1);
    let row = &response.rows[0];
    assert_eq!(
        (
            row.armed,
            row.finished_before_remind,
            row.finished_after_remind,
            row.failed,
            row.escalated
        ),
        (10, 1, 3, 2, 1)
    );
    assert_eq!((row.active, row.cancelled, row.reminders_sent), (3, 1, 17));
    assert_eq!(
        row.median_time_to_completion_after_first_reminder,
        Some(prost_types::Duration {
            seconds: 60,
            nanos: 0
        })
    );
    app.stop().await;
}

#[tokio::test]
async fn stats_on_an_empty_database_are_empty_and_a_backwards_period_is_refused() {
    let app = spawn_app().await;
    let empty = app
        .reminders()
        .reminder_stats(req(pb::ReminderStatsRequest::default(), "admin"))
        .await
        .expect("ReminderStats")
        .into_inner();
    assert!(empty.rows.is_empty());

    let err = app
        .reminders()
        .reminder_stats(req(
            pb::ReminderStatsRequest {
                since: Some(prost_types::Timestamp {
                    seconds: 2_000,
                    nanos: 0,
                }),
                until: Some(prost_types::Timestamp {
                    seconds: 1_000,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("until before since");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("until:"), "{}", err.message());
    app.stop().await;
}
