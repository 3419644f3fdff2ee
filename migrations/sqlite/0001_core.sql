-- Core workflow schema (SQLite). Times are UTC milliseconds since the epoch.
CREATE TABLE definitions (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    bpmn_xml TEXT NOT NULL,
    deployed_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (key, version)
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    email TEXT NOT NULL,
    email_aliases TEXT NOT NULL,
    phone TEXT NOT NULL,
    manager_id TEXT NOT NULL,
    locale TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX users_by_email ON users (email);

-- Every address (email and aliases, lower-cased) belongs to one user: replies are matched by it.
CREATE TABLE user_emails (
    address TEXT PRIMARY KEY,
    user_id TEXT NOT NULL
);
CREATE INDEX user_emails_by_user ON user_emails (user_id);
CREATE INDEX users_by_manager ON users (manager_id, id);

CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    definition_key TEXT NOT NULL,
    definition_version BIGINT NOT NULL,
    business_key TEXT NOT NULL,
    variables TEXT NOT NULL,
    joins TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    started_by TEXT NOT NULL,
    rev BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX instances_by_definition ON instances (definition_key, id);
CREATE INDEX instances_by_status ON instances (status, id);
CREATE INDEX instances_by_business_key ON instances (business_key, id);
CREATE INDEX instances_by_starter ON instances (started_by, id);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES instances (id),
    -- Copied from the instance so that task lists filter without a join.
    definition_key TEXT NOT NULL,
    definition_version BIGINT NOT NULL,
    business_key TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    assignee TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT NOT NULL,
    comment TEXT NOT NULL,
    completed_by TEXT NOT NULL,
    completed_via TEXT NOT NULL,
    group_id TEXT NOT NULL,
    from_activity TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    completed_at BIGINT NOT NULL
);
CREATE INDEX tasks_by_assignee ON tasks (assignee, status, id);
CREATE INDEX tasks_by_instance ON tasks (instance_id, status, id);
CREATE INDEX tasks_by_business_key ON tasks (business_key, id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    activity_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX events_by_instance ON events (instance_id, id);

-- Idempotent retries: one row per (scope, request_id), written in the transaction of the effect.
CREATE TABLE requests (
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
