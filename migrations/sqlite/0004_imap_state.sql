-- Email approval, inbound over IMAP: per watched mailbox, the UIDVALIDITY seen and the last UID
-- processed, so a restarted worker resumes where it stopped (a changed UIDVALIDITY starts over;
-- ingestion is idempotent, so re-reading is safe).
CREATE TABLE imap_state (
    mailbox TEXT PRIMARY KEY,
    uid_validity BIGINT NOT NULL,
    last_uid BIGINT NOT NULL
);
