-- The audit archive in PostgreSQL: the same tables as SQLite's audit.db
-- (server/src/archive/0001..0003). Events, the sent log and grants are
-- sealed; NHS numbers, event, document and grant ids appear only as keyed
-- hashes.
CREATE TABLE events (
    id_ref         BYTEA PRIMARY KEY,
    device         BYTEA NOT NULL,
    seq            BIGINT NOT NULL,
    patient_ref    BYTEA,
    flag           TEXT,
    received_at_ms BIGINT NOT NULL,
    sealed         BYTEA NOT NULL
);
CREATE INDEX events_by_patient ON events (patient_ref);
CREATE INDEX events_by_device ON events (device, seq);

CREATE TABLE chains (
    device         BYTEA PRIMARY KEY,
    last_seq       BIGINT NOT NULL,
    last_hash      TEXT NOT NULL,
    queued         BIGINT NOT NULL,
    oldest_ms      BIGINT,
    reported_at_ms BIGINT NOT NULL
);

CREATE TABLE alerts (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_ref      BYTEA NOT NULL REFERENCES events (id_ref),
    organisation   TEXT NOT NULL,
    alert_type     SMALLINT NOT NULL,
    reason         SMALLINT NOT NULL,
    raised_at_ms   BIGINT NOT NULL,
    status         TEXT NOT NULL,
    closed_by      TEXT,
    closed_at_ms   BIGINT,
    UNIQUE (event_ref, alert_type, reason)
);
CREATE INDEX alerts_by_organisation ON alerts (organisation, status);

CREATE TABLE sent (
    device         BYTEA NOT NULL,
    doc_ref        BYTEA NOT NULL,
    patient_ref    BYTEA NOT NULL,
    first_sent_ms  BIGINT NOT NULL,
    last_sent_ms   BIGINT NOT NULL,
    sealed         BYTEA NOT NULL,
    PRIMARY KEY (device, doc_ref)
);
CREATE INDEX sent_by_patient ON sent (patient_ref);

CREATE TABLE grants (
    device         BYTEA NOT NULL,
    grant_ref      BYTEA NOT NULL,
    issued_at_ms   BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    retired_at_ms  BIGINT,
    sealed         BYTEA NOT NULL,
    PRIMARY KEY (device, grant_ref)
);
CREATE INDEX grants_by_time ON grants (device, issued_at_ms);
