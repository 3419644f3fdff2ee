-- Email approval, outbound (PostgreSQL).

-- HMAC keys for reply tokens. The token carries the key id, so rotating the secret adds a key and
-- old tokens stay valid until they expire.
CREATE TABLE token_keys (
    kid BIGINT PRIMARY KEY,
    secret TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- 审批上下文: what a reply to an approval mail may do, and until when.
CREATE TABLE approval_contexts (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    approver TEXT NOT NULL,
    approver_email TEXT NOT NULL,
    kid BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    valid_until BIGINT NOT NULL,
    status TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject_tag TEXT NOT NULL,
    last_mail_at BIGINT NOT NULL,
    revoke_reason TEXT NOT NULL,
    used_at BIGINT NOT NULL
);
CREATE INDEX approval_contexts_by_task ON approval_contexts (task_id, id);
CREATE INDEX approval_contexts_by_message_id ON approval_contexts (message_id);
CREATE INDEX approval_contexts_by_tag ON approval_contexts (subject_tag);

-- Mail (and later SMS) to deliver. A row is written in the transaction that decided to send it
-- and leaves only when delivered or permanently failed.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    context_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_by_context ON outbox (context_id, created_at);
