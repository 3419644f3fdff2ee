-- Email approval, inbound (SQLite): every received mail and what became of it.
CREATE TABLE inbound_emails (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    sender TEXT NOT NULL,
    subject TEXT NOT NULL,
    transport TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    task_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    context_id TEXT NOT NULL,
    correlation TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,
    comment TEXT NOT NULL,
    delegate_to TEXT NOT NULL,
    authentication_results TEXT NOT NULL,
    explanation TEXT NOT NULL,
    answered BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX inbound_by_task ON inbound_emails (task_id, id);
CREATE INDEX inbound_by_verdict ON inbound_emails (verdict, id);

-- A reply is applied once: its Message-ID and its content hash are claimed in the transaction
-- that records it.
CREATE TABLE inbound_seen (
    key TEXT PRIMARY KEY,
    inbound_id TEXT NOT NULL
);
