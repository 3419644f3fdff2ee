-- 挂起 (SuspendProcessInstance): a waiting reminder of a suspended instance keeps what was left
-- of its wait here while next_fire_at is NULL (so the due query never sees it); resuming sets
-- next_fire_at to the resume time plus this and clears it.
ALTER TABLE reminders ADD COLUMN paused_ms BIGINT;
