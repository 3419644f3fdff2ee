//! `replyflow bench-reminders`: one scheduler tick over a large armed set. Arms `--armed`
//! reminders of which `--due` are due (each chasing an open task of its own instance), then runs
//! one tick (batches of `--batch` until nothing is due) to the inbox channel and reports the tick's
//! duration, reminders fired per second, and how late the first and the last batch committed.
//! The point: the cost follows the due count, not the armed count.
use std::{sync::Arc, time::Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::{
    app::Application,
    clock::ManualClock,
    config::{Secret, Settings},
    workers::reminders::ReminderScheduler,
    workflow::Actor,
};

#[derive(Debug, Clone, Args)]
pub(super) struct BenchRemindersArgs {
    /// Reminders armed in all.
    #[arg(long, default_value_t = 1_000_000)]
    armed: u64,
    /// Of those, due now (each with an instance and an open task).
    #[arg(long, default_value_t = 10_000)]
    due: u64,
    /// Reminders fired per transaction.
    #[arg(long, default_value_t = 500)]
    batch: u32,
    /// `sqlite://FILE` or an EMPTY PostgreSQL database `postgres://...` (default: a new SQLite
    /// file in the temp directory, removed afterwards).
    #[arg(long)]
    database: Option<String>,
}

const T0: i64 = 1_800_000_000_000;

const DEFINITION: &str = r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
     xmlns:replyflow="https://replyflow.dev/schema/1">
  <process id="bench_reminders" isExecutable="true">
    <extensionElements><replyflow:reminderType id="t" count="3" interval="PT1H" channels="inbox"/></extensionElements>
    <startEvent id="s"/><userTask id="a" name="审批" replyflow:assignee="u0" replyflow:reminderType="t"/><endEvent id="e"/>
    <sequenceFlow id="f1" sourceRef="s" targetRef="a"/><sequenceFlow id="f2" sourceRef="a" targetRef="e"/>
  </process></definitions>"#;

pub(super) async fn run(args: BenchRemindersArgs) -> anyhow::Result<()> {
    if args.due > args.armed {
        bail!("--due must not exceed --armed");
    }
    let dir = std::env::temp_dir().join(format!(
        "replyflow-bench-reminders-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = measure(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &BenchRemindersArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Secret::new(url);
    settings.mail.outbound = Secret::new(format!("file:{}", dir.join("outbox").display()));
    settings.mail.inbound = Secret::new("none");
    let clock = Arc::new(ManualClock::new(T0));
    let app = Application::build(&settings, clock.clone()).await?;
    let workflow = app.workflow();
    workflow
        .deploy(&Actor::new("bench"), DEFINITION.as_bytes())
        .await
        .context("deploying the bench definition")?;
    let store = workflow.store().clone();
    let pool = store.pool();

    let started = Instant::now();
    let numbers = |n: u64| {
        format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) ")
    };
    let statements = [
        format!(
            "{}INSERT INTO users (id, display_name, email, email_aliases, phone, manager_id, locale, updated_at) \
             SELECT 'u' || (i - 1), 'User ' || i, '', '[]', '', '', 'zh-CN', 0 FROM n",
            numbers(100)
        ),
        format!(
            "{}INSERT INTO instances (id, definition_key, definition_version, business_key, variables, joins, \
             status, error, started_by, rev, created_at, updated_at) \
             SELECT 'i' || i, 'bench_reminders', 1, 'BK-' || i, '{{}}', '{{}}', 'running', '', 'bench', 0, 0, 0 FROM n",
            numbers(args.due)
        ),
        format!(
            "{}INSERT INTO tasks (id, instance_id, definition_key, definition_version, business_key, activity_id, \
             name, assignee, status, outcome, comment, completed_by, completed_via, group_id, from_activity, \
             created_at, completed_at) \
             SELECT 't' || i, 'i' || i, 'bench_reminders', 1, 'BK-' || i, 'a', '审批', 'u' || (i % 100), 'open', \
             '', '', '', '', '', 's', 0, 0 FROM n",
            numbers(args.due)
        ),
        format!(
            "{}INSERT INTO reminders (id, instance_id, definition_key, start_activity, end_activity, via_join, \
             group_id, reminder_type, count, interval_ms, channels, escalation, state, sent_count, next_fire_at, \
             escalated, created_at, first_fired_at, last_fired_at, finished_at) \
             SELECT 'r' || i, CASE WHEN i <= {due} THEN 'i' || i ELSE 'armed-' || i END, 'bench_reminders', 's', 'a', \
             '', '', 't', 3, 3600000, 'inbox', 'none', 'new', 0, \
             CASE WHEN i <= {due} THEN {T0} - 1000 + (i % 1000) ELSE {T0} + 3600000 + i END, 0, 0, 0, 0, 0 FROM n",
            numbers(args.armed),
            due = args.due
        ),
        "ANALYZE".to_string(),
    ];
    for sql in statements {
        sqlx::query::<sqlx::Any>(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .context("arming the bench reminders")?;
    }
    println!(
        "armed {} reminders ({} due) on {:?} in {:.1} s",
        args.armed,
        args.due,
        store.backend(),
        started.elapsed().as_secs_f64()
    );

    let scheduler = ReminderScheduler::new(workflow.clone(), "* * * * * *", args.batch)?;
    let started = Instant::now();
    let report = scheduler.run_once().await?;
    let took = started.elapsed();
    let fired_per_s = report.reminded as f64 / took.as_secs_f64().max(1e-9);
    let messages: i64 = sqlx::query_scalar::<sqlx::Any, i64>("SELECT COUNT(*) FROM messages")
        .fetch_one(pool)
        .await?;
    let still_due: i64 = sqlx::query_scalar::<sqlx::Any, i64>(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM reminders WHERE next_fire_at <= {T0}"
    )))
    .fetch_one(pool)
    .await?;
    println!(
        "one tick: fired {} reminders ({} inbox messages) in {:.3} s = {:.0} fired/s; batch {}; \
         still due after the tick: {}",
        report.reminded,
        messages,
        took.as_secs_f64(),
        fired_per_s,
        args.batch,
        still_due
    );
    println!(
        "latest a due reminder waited: tick start (≤ 1 s after due with the every-second cron) + {:.3} s",
        took.as_secs_f64()
    );
    store.close().await;
    Ok(())
}
