-- Reminders and escalation (催办, DESIGN §6).

-- Server-wide reminder types (UpsertReminderType). A definition's own declaration of the same id
-- wins for that definition.
CREATE TABLE reminder_types (
    id TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    interval_ms BIGINT NOT NULL,
    -- Channel names in fallback order, comma-separated: inbox, email, sms.
    channels TEXT NOT NULL,
    escalation TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A reminder is an edge start_activity → end_activity of one instance. Count, interval, channels
-- and escalation are copied from the type when armed, so changing a type does not change armed
-- reminders. next_fire_at is NULL once it no longer fires; the scheduler reads only the due ones
-- through reminders_due.
CREATE TABLE reminders (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    definition_key TEXT NOT NULL,
    start_activity TEXT NOT NULL,
    end_activity TEXT NOT NULL,
    -- The parallel join this edge passes through while the join still waits, else ''.
    via_join TEXT NOT NULL,
    group_id TEXT NOT NULL,
    reminder_type TEXT NOT NULL,
    count BIGINT NOT NULL,
    interval_ms BIGINT NOT NULL,
    channels TEXT NOT NULL,
    escalation TEXT NOT NULL,
    state TEXT NOT NULL,
    sent_count BIGINT NOT NULL,
    next_fire_at BIGINT,
    escalated BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    first_fired_at BIGINT NOT NULL,
    last_fired_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL
);
CREATE INDEX reminders_due ON reminders (next_fire_at) WHERE next_fire_at IS NOT NULL;
CREATE INDEX reminders_by_instance ON reminders (instance_id, end_activity);
CREATE INDEX reminders_by_created ON reminders (created_at, id);

-- In-system messages (系统短消息). read_at = 0 while unread.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    task_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    read_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_by_user ON messages (user_id, created_at, id);
CREATE INDEX messages_unread ON messages (user_id, read_at);

-- Manual reminders (RemindNow), for the per-task rate limit and the audit.
CREATE TABLE manual_reminders (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    channels TEXT NOT NULL,
    message TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX manual_reminders_by_task ON manual_reminders (task_id, sent_at);

-- A reminder sent by mail or SMS remembers what to do if that channel fails for good: JSON with
-- the reminder, recipient and the channels left. A failed row with a fallback gets a row in
-- outbox_fallbacks in the same transaction that marks it failed; the reminder scheduler takes it
-- from there.
ALTER TABLE outbox ADD COLUMN fallback TEXT NOT NULL DEFAULT '';
CREATE TABLE outbox_fallbacks (
    outbox_id TEXT PRIMARY KEY,
    error TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The polite-answer rate limit counts a sender's recent answers; without this it read the whole
-- outbox (mail bodies included) for every reply.
CREATE INDEX outbox_by_recipient ON outbox (recipient, kind, created_at);
