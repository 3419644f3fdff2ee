-- Trust (issue 9): reply-token keys without configured secrets, the addresses an approval was
-- issued to, and received mail that keeps failing.

-- A configured secret is never stored: its row keeps a fingerprint (HMAC of a fixed label keyed by
-- the secret) that maps it to its key id wherever it stands in security.token_secrets. Only a
-- generated secret (nothing configured) is kept in `secret`. Rows written before this migration
-- with source 'config' are scrubbed at the next start (secret emptied, fingerprint set).
ALTER TABLE token_keys ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX token_keys_by_fingerprint ON token_keys (fingerprint) WHERE fingerprint <> '';

-- The approver's aliases when the context was issued (JSON array, lower case): a reply decides
-- only from approver_email or one of these, never from an alias added later.
ALTER TABLE approval_contexts ADD COLUMN approver_aliases TEXT NOT NULL DEFAULT '[]';
CREATE INDEX approval_contexts_by_approver ON approval_contexts (approver, status);

-- Received mail whose ingestion failed (an error, not a verdict), by content hash: after a few
-- attempts it is recorded as quarantined instead of being tried forever.
CREATE TABLE inbound_failures (
    sha256 TEXT PRIMARY KEY,
    attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);

-- The global answer budget (mail.answers_per_hour) counts the answers of the last hour.
CREATE INDEX outbox_by_kind ON outbox (kind, created_at);
