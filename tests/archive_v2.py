"""The archive tables as versions 1 and 2 made them (one event a row in
``archive_events``, counted by triggers), to build the databases an upgrade
finds. Version 1's replays have no owner and lease."""

from __future__ import annotations

STORE_VERSIONS = """
CREATE TABLE IF NOT EXISTS store_versions (
    store   TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    applied REAL NOT NULL
);
"""

V2_TABLES = """
CREATE TABLE IF NOT EXISTS archives (
    name           TEXT PRIMARY KEY,
    bus            TEXT NOT NULL,
    pattern        TEXT,
    retention_days INTEGER NOT NULL,
    durability     TEXT NOT NULL,
    description    TEXT NOT NULL,
    state          TEXT NOT NULL,
    created        REAL NOT NULL,
    event_count    INTEGER NOT NULL DEFAULT 0,
    size_bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS archive_events (
    seq     INTEGER PRIMARY KEY,
    archive TEXT NOT NULL,
    time    REAL NOT NULL,
    body    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_events_time ON archive_events (archive, time);
CREATE TABLE IF NOT EXISTS replays (
    name          TEXT PRIMARY KEY,
    archive       TEXT NOT NULL,
    bus           TEXT NOT NULL,
    rules         TEXT,
    start_time    REAL NOT NULL,
    end_time      REAL NOT NULL,
    speed         REAL,
    description   TEXT NOT NULL,
    state         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    total         INTEGER NOT NULL,
    replayed      INTEGER NOT NULL,
    cursor_time   REAL NOT NULL,
    cursor_seq    INTEGER NOT NULL,
    last_replayed REAL,
    started       REAL,
    ended         REAL,
    owner         TEXT,
    lease         REAL
);
"""

V1_TABLES = V2_TABLES.replace(
    "    ended         REAL,\n    owner         TEXT,\n    lease         REAL\n",
    "    ended         REAL\n",
)

#: The counting triggers, per engine: what a process of version 2 (until
#: the SQLite insert trigger went) makes on every file it opens.
V2_TRIGGERS = {
    "sqlite": """
CREATE TRIGGER IF NOT EXISTS archive_events_added AFTER INSERT ON archive_events BEGIN
    UPDATE archives SET event_count = event_count + 1, size_bytes = size_bytes + length(NEW.body)
    WHERE name = NEW.archive;
END;
CREATE TRIGGER IF NOT EXISTS archive_events_removed AFTER DELETE ON archive_events BEGIN
    UPDATE archives SET event_count = event_count - 1, size_bytes = size_bytes - length(OLD.body)
    WHERE name = OLD.archive;
END;
""",
    "postgresql": """
CREATE OR REPLACE FUNCTION archive_events_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM 1 FROM archives WHERE name IN (SELECT archive FROM changed)
            ORDER BY name FOR NO KEY UPDATE;
        UPDATE archives SET event_count = archives.event_count + moved.events,
            size_bytes = archives.size_bytes + moved.bytes
        FROM (SELECT archive, count(*) AS events, sum(length(body)) AS bytes
              FROM changed GROUP BY archive) AS moved
        WHERE archives.name = moved.archive;
    ELSE
        PERFORM 1 FROM archives WHERE name IN (SELECT archive FROM gone)
            ORDER BY name FOR NO KEY UPDATE;
        UPDATE archives SET event_count = archives.event_count - moved.events,
            size_bytes = archives.size_bytes - moved.bytes
        FROM (SELECT archive, count(*) AS events, sum(length(body)) AS bytes
              FROM gone GROUP BY archive) AS moved
        WHERE archives.name = moved.archive;
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER archive_events_added AFTER INSERT ON archive_events
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION archive_events_counted();
CREATE OR REPLACE TRIGGER archive_events_removed AFTER DELETE ON archive_events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION archive_events_counted();
""",
}
