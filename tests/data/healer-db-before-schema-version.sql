-- A healer.db written by the release before schema_version (main at 4111744, 2026-11-30):
-- the store's and the alert outbox's tables, a deploy with three cycles (one failing, its
-- incident open), a repair, a meta value and an alert delivered to telegram, pending for slack.
-- Made with that release's Store and Outbox, dumped by sqlite3's iterdump().
BEGIN TRANSACTION;
CREATE TABLE acks (            -- a person acknowledged an incident (the latest ack)
    incident_id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,                       -- person's name, or telegram:ID / slack:ID
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    finished_at TEXT,
    deploy_id INTEGER,
    incident_id INTEGER,
    kind TEXT NOT NULL,                  -- repair | rollback | baseline.reset | pause | resume | tag | hold
    name TEXT NOT NULL,                  -- the playbook, the target, ...
    who TEXT NOT NULL,                   -- loop | person
    reason TEXT NOT NULL,
    outcome TEXT NOT NULL,               -- started | ok | failed | skipped | error
    detail TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT ''
);
INSERT INTO "actions" VALUES(1,'2026-11-30T12:01:00.000000+00:00','2026-11-30T12:01:00.000000+00:00',1,NULL,'repair','restart','loop','api failing','ok','','');
CREATE TABLE alert_deliveries (
    alert_id INTEGER NOT NULL REFERENCES alert_outbox(id) ON DELETE CASCADE,
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at TEXT NOT NULL,
    delivered_at TEXT,
    last_error TEXT,
    PRIMARY KEY (alert_id, channel)
);
INSERT INTO "alert_deliveries" VALUES(1,'slack','pending',0,'2026-11-30T12:00:00.000000Z',NULL,NULL);
INSERT INTO "alert_deliveries" VALUES(1,'telegram','delivered',1,'2026-11-30T12:00:00.000000Z','2026-11-30T12:00:00.000000Z',NULL);
CREATE TABLE alert_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id INTEGER REFERENCES alert_outbox(id) ON DELETE SET NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    incident_id INTEGER,
    title TEXT NOT NULL,
    muted INTEGER NOT NULL DEFAULT 0,
    flap_group TEXT  -- an opening's or a flapping notice's group (pipeline.flap_group)
);
CREATE TABLE alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    event TEXT NOT NULL,
    severity TEXT NOT NULL,
    incident_id INTEGER,
    title TEXT NOT NULL,
    payload_json TEXT NOT NULL
);
INSERT INTO "alert_outbox" VALUES(1,'2026-11-30T12:00:00.000000Z','repair.started','warning',1,'restarting api','{"items": [{"event": "repair.started", "severity": "warning", "title": "restarting api", "detail": "", "incident_id": 1, "bypass_dedup": false}], "app": "shop-api", "created_at": "2026-11-30T12:00:00+00:00", "commit": null, "phase": null, "since": null, "next_step": null, "cause": null, "observe": false, "note": null}');
CREATE TABLE bad_commits (
    commit_sha TEXT PRIMARY KEY,
    marked_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE chat_presses (    -- alert buttons that did their work: a second press says so
    data TEXT PRIMARY KEY,                   -- the button's callback data (names verb, incident, message)
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL                       -- what it did, as the message was edited to say
);
CREATE TABLE check_hours (
    hour TEXT NOT NULL,                  -- YYYY-MM-DDTHH (UTC) of the cycles
    name TEXT NOT NULL,                  -- the check
    passed INTEGER NOT NULL,
    total INTEGER NOT NULL,
    first INTEGER NOT NULL,
    PRIMARY KEY (hour, name)
) WITHOUT ROWID
;
INSERT INTO "check_hours" VALUES('2026-11-30T12','api',2,3,1000000);
CREATE TABLE cycles (
    id INTEGER PRIMARY KEY,
    deploy_id INTEGER NOT NULL REFERENCES deploys(id),
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    who TEXT NOT NULL,
    summary TEXT NOT NULL,
    results TEXT NOT NULL,               -- JSON list of CheckResult
    cause TEXT,                          -- a failing loop cycle's likely cause: deploy, dependency redis, ...
    next_step TEXT,                      -- what healer did or will do next, skipped remedies included
    woken TEXT                           -- why a cycle ran before it was due: "app pid 1234 exited"
);
INSERT INTO "cycles" VALUES(1,1,'2026-11-30T12:00:00.000000+00:00',1,'loop','healthy (1 check)','[{"name": "api", "type": "http", "ok": true, "latency_ms": null, "values": {"status": 200.0}, "error": null, "symptoms": []}]',NULL,'watching',NULL);
INSERT INTO "cycles" VALUES(2,1,'2026-11-30T12:01:00.000000+00:00',0,'loop','failing: api: failed','[{"name": "api", "type": "http", "ok": false, "latency_ms": null, "values": {"status": 500.0}, "error": null, "symptoms": []}]','deploy','watching',NULL);
INSERT INTO "cycles" VALUES(3,1,'2026-11-30T12:02:00.000000+00:00',1,'loop','healthy (1 check)','[{"name": "api", "type": "http", "ok": true, "latency_ms": null, "values": {"status": 200.0}, "error": null, "symptoms": []}]',NULL,'watching',NULL);
CREATE TABLE deploys (
    id INTEGER PRIMARY KEY,
    commit_sha TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    baseline TEXT,                       -- JSON of Baseline, NULL until the first healthy cycle
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    consecutive_passes INTEGER NOT NULL DEFAULT 0,
    emergency_streak INTEGER NOT NULL DEFAULT 0,
    open_incident INTEGER,
    last_cycle_at TEXT,
    last_ok INTEGER,
    via_rollback INTEGER NOT NULL DEFAULT 0,
    held TEXT,
    stable_tag TEXT,
    phase_index INTEGER,
    healthy_at TEXT                      -- its first healthy loop cycle (attribution: was it ever healthy?)
);
INSERT INTO "deploys" VALUES(1,'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','2026-11-30T12:00:00.000000+00:00',NULL,0,0,0,1,'2026-11-30T12:02:00.000000+00:00',1,0,NULL,NULL,NULL,'2026-11-30T12:00:00.000000+00:00');
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    deploy_id INTEGER NOT NULL REFERENCES deploys(id),
    opened_at TEXT NOT NULL,
    resolved_at TEXT,
    cause TEXT NOT NULL
);
INSERT INTO "incidents" VALUES(1,1,'2026-11-30T12:01:00.000000+00:00',NULL,'api failing');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','1');
INSERT INTO "meta" VALUES('pid','123');
CREATE TABLE pauses (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    until TEXT NOT NULL,
    reason TEXT NOT NULL,
    who TEXT NOT NULL,
    ended_at TEXT,
    announced_end INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX cycles_at_ok ON cycles(at, ok);
CREATE INDEX cycles_deploy ON cycles(deploy_id, id);
CREATE INDEX actions_at ON actions(at);
CREATE INDEX alert_deliveries_todo ON alert_deliveries (channel, state, alert_id);
CREATE INDEX alert_items_at ON alert_items (at);
CREATE INDEX alert_items_incident ON alert_items (incident_id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('alert_outbox',1);
COMMIT;
