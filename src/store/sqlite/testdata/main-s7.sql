PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    runner TEXT NOT NULL,
    status TEXT NOT NULL,
    channel TEXT NOT NULL,
    run_at INTEGER,
    lease_expires INTEGER,
    idem_key TEXT UNIQUE,
    queued_at INTEGER NOT NULL,
    finished_at INTEGER,
    body TEXT NOT NULL
);
INSERT INTO jobs VALUES('01a2310f-5b28-72b5-ad7b-facbca1c56fb','bench.noop','service-0','SUCCESS','01a2310f-5b28-72b5-ad7b-facbca1c56fb',NULL,1796119449688761,NULL,1796119419688280,1796119419689003,'{"args":{"n":1},"attempt":1,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"01a2310f-5b28-72b5-ad7b-facbca1c56fb","created_at":1796119419688280,"finished_at":1796119419689003,"handle":{"data":null,"id":"01a2310f-5b28-72b5-ad7b-facbca1c56fb","kind":"service"},"id":"01a2310f-5b28-72b5-ad7b-facbca1c56fb","lease":{"expires_at":1796119449688761,"token":1,"worker":"local-29183-5ce5e8ec"},"max_attempts":1,"progress":1.0,"queued_at":1796119419688280,"runner":"service-0","runs":[{"attempt":1,"claimed_at":1796119419688761,"ended_at":1796119419689003,"outcome":"SUCCESS","started_at":1796119419688997,"token":1,"worker":"local-29183-5ce5e8ec"}],"started_at":1796119419688997,"status":"SUCCESS","type":"bench.noop","updated_at":1796119419689003,"version":3}');
INSERT INTO jobs VALUES('01a2310f-5b2e-7678-8b2d-99d93f6c7031','bench.noop','service-0','SUCCESS','01a2310f-5b2e-7678-8b2d-99d93f6c7031',NULL,1796119449694548,'key-1',1796119419694344,1796119419694698,'{"args":{"n":2},"attempt":1,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"01a2310f-5b2e-7678-8b2d-99d93f6c7031","created_at":1796119419694344,"finished_at":1796119419694698,"handle":{"data":null,"id":"01a2310f-5b2e-7678-8b2d-99d93f6c7031","kind":"service"},"id":"01a2310f-5b2e-7678-8b2d-99d93f6c7031","idempotency_key":"key-1","lease":{"expires_at":1796119449694548,"token":2,"worker":"local-29183-5ce5e8ec"},"max_attempts":1,"progress":1.0,"queued_at":1796119419694344,"runner":"service-0","runs":[{"attempt":1,"claimed_at":1796119419694548,"ended_at":1796119419694698,"outcome":"SUCCESS","started_at":1796119419694693,"token":2,"worker":"local-29183-5ce5e8ec"}],"started_at":1796119419694693,"status":"SUCCESS","submit_hash":"deabd86619f80ee673e60422bf1ec4e50e0c98db8937af649b6927f2265399d8","type":"bench.noop","updated_at":1796119419694698,"version":3}');
INSERT INTO jobs VALUES('01a2310f-5b33-76d3-872f-be9506f48819','bench.noop','service-0','SUCCESS','orders',NULL,1796119449700158,NULL,1796119419699891,1796119419701387,'{"args":{},"attempt":1,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"orders","created_at":1796119419699891,"emits":["done.sig"],"finished_at":1796119419701387,"handle":{"data":null,"id":"01a2310f-5b33-76d3-872f-be9506f48819","kind":"service"},"id":"01a2310f-5b33-76d3-872f-be9506f48819","lease":{"expires_at":1796119449700158,"token":3,"worker":"local-29183-5ce5e8ec"},"max_attempts":1,"progress":1.0,"queued_at":1796119419699891,"runner":"service-0","runs":[{"attempt":1,"claimed_at":1796119419700158,"ended_at":1796119419701387,"outcome":"SUCCESS","started_at":1796119419701275,"token":3,"worker":"local-29183-5ce5e8ec"}],"started_at":1796119419701275,"status":"SUCCESS","type":"bench.noop","updated_at":1796119419701387,"version":3}');
INSERT INTO jobs VALUES('01a2310f-5b3d-7211-95c6-d326363dd2bf','sh.ok','local-1','SUCCESS','01a2310f-5b3d-7211-95c6-d326363dd2bf',NULL,1796119449713111,NULL,1796119419709251,1796119419718336,'{"args":{},"attempt":1,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"01a2310f-5b3d-7211-95c6-d326363dd2bf","created_at":1796119419709251,"exit_code":0,"finished_at":1796119419718336,"handle":{"data":{"boot_id":"493c21c6-5b05-4ff8-be07-7f38546eb27b/pid:[4026531836]","pid":29202,"start_time":100149,"workdir":null},"id":"29202","kind":"local"},"id":"01a2310f-5b3d-7211-95c6-d326363dd2bf","lease":{"expires_at":1796119449713111,"token":4,"worker":"local-29183-5ce5e8ec"},"max_attempts":1,"progress":1.0,"queued_at":1796119419709251,"runner":"local-1","runs":[{"attempt":1,"claimed_at":1796119419713111,"ended_at":1796119419718336,"outcome":"SUCCESS","started_at":1796119419717221,"token":4,"worker":"local-29183-5ce5e8ec"}],"started_at":1796119419717221,"status":"SUCCESS","type":"sh.ok","updated_at":1796119419718336,"version":3}');
INSERT INTO jobs VALUES('01a2310f-5b43-74b8-83ae-098942300541','sh.fail','local-2','ERROR','01a2310f-5b43-74b8-83ae-098942300541',NULL,1796119449715311,NULL,1796119419715058,1796119419717950,'{"args":{},"attempt":1,"backoff":{"initial_ms":5,"jitter":false,"max_ms":10,"multiplier":1.5},"channel_id":"01a2310f-5b43-74b8-83ae-098942300541","created_at":1796119419715058,"error":"process exited with code 3","exit_code":3,"finished_at":1796119419717950,"handle":{"data":{"boot_id":"493c21c6-5b05-4ff8-be07-7f38546eb27b/pid:[4026531836]","pid":29203,"start_time":100149,"workdir":null},"id":"29203","kind":"local"},"id":"01a2310f-5b43-74b8-83ae-098942300541","lease":{"expires_at":1796119449715311,"token":5,"worker":"local-29183-5ce5e8ec"},"max_attempts":1,"progress":0.0,"queued_at":1796119419715058,"runner":"local-2","runs":[{"attempt":1,"claimed_at":1796119419715311,"ended_at":1796119419717950,"outcome":"ERROR","started_at":1796119419717400,"token":5,"worker":"local-29183-5ce5e8ec"}],"started_at":1796119419717400,"status":"ERROR","timeout_ms":30000,"type":"sh.fail","updated_at":1796119419717950,"version":3}');
INSERT INTO jobs VALUES('01a2310f-6f2b-750e-ba36-e72d1856271d','bench.noop','service-0','QUEUED','orders',NULL,NULL,NULL,1796119424811877,NULL,'{"args":{"q":true},"attempt":0,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"orders","created_at":1796119424811877,"id":"01a2310f-6f2b-750e-ba36-e72d1856271d","max_attempts":1,"progress":0.0,"queued_at":1796119424811877,"runner":"service-0","runs":[],"status":"QUEUED","type":"bench.noop","updated_at":1796119424811877,"version":0}');
INSERT INTO jobs VALUES('01a2310f-6f34-74bd-ad3a-f01ddfbbe57e','bench.noop','service-0','SCHEDULED','01a2310f-6f34-74bd-ad3a-f01ddfbbe57e',4070908800000000,NULL,'key-2',1796119424820459,NULL,'{"args":{},"attempt":0,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"01a2310f-6f34-74bd-ad3a-f01ddfbbe57e","created_at":1796119424820459,"id":"01a2310f-6f34-74bd-ad3a-f01ddfbbe57e","idempotency_key":"key-2","max_attempts":1,"progress":0.0,"queued_at":1796119424820459,"run_at":4070908800000000,"runner":"service-0","runs":[],"status":"SCHEDULED","submit_hash":"06e7bf48862b638d253c3918cf1bb4723818c6cc5e4dcf8d8e23cd6d70c6617a","type":"bench.noop","updated_at":1796119424820459,"version":0}');
INSERT INTO jobs VALUES('01a2310f-6f3d-74a3-a0cd-43079c73b5b9','bench.noop','service-0','WAITING','01a2310f-6f3d-74a3-a0cd-43079c73b5b9',NULL,NULL,NULL,1796119424829435,NULL,'{"args":{},"attempt":0,"backoff":{"initial_ms":1000,"jitter":true,"max_ms":300000,"multiplier":2.0},"channel_id":"01a2310f-6f3d-74a3-a0cd-43079c73b5b9","created_at":1796119424829435,"id":"01a2310f-6f3d-74a3-a0cd-43079c73b5b9","max_attempts":1,"progress":0.0,"queued_at":1796119424829435,"runner":"service-0","runs":[],"status":"WAITING","type":"bench.noop","updated_at":1796119424829435,"version":0,"wait":{"deadline":null,"items":[{"key":"never.sig","needed":1,"seen":0,"signal_ids":[],"since":null}],"on_deadline":"run","released_at":null,"released_by":null}}');
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO events VALUES(1,'01a2310f-5b28-72b5-ad7b-facbca1c56fb','{"s":"QUEUED","a":0,"t":"2026-12-01T10:03:39.688280Z"}');
INSERT INTO events VALUES(2,'01a2310f-5b28-72b5-ad7b-facbca1c56fb','{"s":"STARTING","a":1,"t":"2026-12-01T10:03:39.688761Z"}');
INSERT INTO events VALUES(3,'01a2310f-5b28-72b5-ad7b-facbca1c56fb','{"s":"RUNNING","a":1,"t":"2026-12-01T10:03:39.688997Z"}');
INSERT INTO events VALUES(4,'01a2310f-5b28-72b5-ad7b-facbca1c56fb','{"s":"SUCCESS","g":1.0,"a":1,"t":"2026-12-01T10:03:39.689003Z"}');
INSERT INTO events VALUES(5,'01a2310f-5b2e-7678-8b2d-99d93f6c7031','{"s":"QUEUED","a":0,"t":"2026-12-01T10:03:39.694344Z"}');
INSERT INTO events VALUES(6,'01a2310f-5b2e-7678-8b2d-99d93f6c7031','{"s":"STARTING","a":1,"t":"2026-12-01T10:03:39.694548Z"}');
INSERT INTO events VALUES(7,'01a2310f-5b2e-7678-8b2d-99d93f6c7031','{"s":"RUNNING","a":1,"t":"2026-12-01T10:03:39.694693Z"}');
INSERT INTO events VALUES(8,'01a2310f-5b2e-7678-8b2d-99d93f6c7031','{"s":"SUCCESS","g":1.0,"a":1,"t":"2026-12-01T10:03:39.694698Z"}');
INSERT INTO events VALUES(9,'orders','{"j":"01a2310f-5b33-76d3-872f-be9506f48819","s":"QUEUED","a":0,"t":"2026-12-01T10:03:39.699891Z"}');
INSERT INTO events VALUES(10,'orders','{"j":"01a2310f-5b33-76d3-872f-be9506f48819","s":"STARTING","a":1,"t":"2026-12-01T10:03:39.700158Z"}');
INSERT INTO events VALUES(11,'orders','{"j":"01a2310f-5b33-76d3-872f-be9506f48819","s":"RUNNING","a":1,"t":"2026-12-01T10:03:39.701275Z"}');
INSERT INTO events VALUES(12,'orders','{"j":"01a2310f-5b33-76d3-872f-be9506f48819","s":"SUCCESS","g":1.0,"a":1,"t":"2026-12-01T10:03:39.701387Z"}');
INSERT INTO events VALUES(13,'01a2310f-5b3d-7211-95c6-d326363dd2bf','{"s":"QUEUED","a":0,"t":"2026-12-01T10:03:39.709251Z"}');
INSERT INTO events VALUES(14,'01a2310f-5b3d-7211-95c6-d326363dd2bf','{"s":"STARTING","a":1,"t":"2026-12-01T10:03:39.713111Z"}');
INSERT INTO events VALUES(15,'01a2310f-5b43-74b8-83ae-098942300541','{"s":"QUEUED","a":0,"t":"2026-12-01T10:03:39.715058Z"}');
INSERT INTO events VALUES(16,'01a2310f-5b43-74b8-83ae-098942300541','{"s":"STARTING","a":1,"t":"2026-12-01T10:03:39.715311Z"}');
INSERT INTO events VALUES(17,'01a2310f-5b3d-7211-95c6-d326363dd2bf','{"s":"RUNNING","a":1,"t":"2026-12-01T10:03:39.717221Z"}');
INSERT INTO events VALUES(18,'01a2310f-5b43-74b8-83ae-098942300541','{"s":"RUNNING","a":1,"t":"2026-12-01T10:03:39.717400Z"}');
INSERT INTO events VALUES(19,'01a2310f-5b43-74b8-83ae-098942300541','{"s":"ERROR","e":[{"error_type":"JOB_ERROR","level":"error","message":"process exited with code 3"}],"a":1,"t":"2026-12-01T10:03:39.717950Z"}');
INSERT INTO events VALUES(20,'01a2310f-5b3d-7211-95c6-d326363dd2bf','{"s":"SUCCESS","g":1.0,"a":1,"t":"2026-12-01T10:03:39.718336Z"}');
INSERT INTO events VALUES(21,'orders','{"j":"01a2310f-6f2b-750e-ba36-e72d1856271d","s":"QUEUED","a":0,"t":"2026-12-01T10:03:44.811877Z"}');
INSERT INTO events VALUES(22,'01a2310f-6f34-74bd-ad3a-f01ddfbbe57e','{"s":"SCHEDULED","a":0,"t":"2026-12-01T10:03:44.820459Z"}');
INSERT INTO events VALUES(23,'01a2310f-6f3d-74a3-a0cd-43079c73b5b9','{"s":"WAITING","a":0,"t":"2026-12-01T10:03:44.829435Z"}');
CREATE TABLE logs (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    ts INTEGER NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
INSERT INTO logs VALUES('01a2310f-5b3d-7211-95c6-d326363dd2bf',1,'stdout',1796119419718155,'out');
INSERT INTO logs VALUES('01a2310f-5b3d-7211-95c6-d326363dd2bf',2,'stderr',1796119419718165,'err');
INSERT INTO logs VALUES('01a2310f-5b43-74b8-83ae-098942300541',1,'stderr',1796119419717680,'failing');
CREATE TABLE trims (
    channel TEXT PRIMARY KEY,   -- '' is the global stream
    upto INTEGER NOT NULL       -- the highest event id removed
);
CREATE TABLE file_refs (
    hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (hash, job_id)
) WITHOUT ROWID;
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta VALUES('token',5);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    wake_at INTEGER,
    body TEXT NOT NULL
);
CREATE TABLE signals (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    sid TEXT,
    payload TEXT,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
INSERT INTO signals VALUES('done.sig',1,1796119419701387,'job:01a2310f-5b33-76d3-872f-be9506f48819','{"job_id":"01a2310f-5b33-76d3-872f-be9506f48819"}');
CREATE TABLE signal_seqs (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
INSERT INTO signal_seqs VALUES('done.sig',1);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    due_at INTEGER,             -- pending: next attempt, or the end of the current claim's hold
    claim INTEGER,              -- the current claim's token
    attempts INTEGER NOT NULL DEFAULT 0,
    log TEXT NOT NULL DEFAULT '[]',
    done_at INTEGER
);
CREATE TABLE wait_keys (
    key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, job_id)
) WITHOUT ROWID;
INSERT INTO wait_keys VALUES('never.sig','01a2310f-6f3d-74a3-a0cd-43079c73b5b9');
CREATE TABLE wait_deadlines (
    job_id TEXT PRIMARY KEY,
    deadline INTEGER NOT NULL
) WITHOUT ROWID;
DELETE FROM sqlite_sequence;
CREATE INDEX jobs_queue ON jobs(runner, queued_at, id) WHERE status = 'QUEUED';
CREATE INDEX jobs_due ON jobs(run_at) WHERE status = 'SCHEDULED';
CREATE INDEX jobs_lease ON jobs(lease_expires) WHERE status IN ('STARTING', 'RUNNING');
CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_status ON jobs(status, id);
CREATE INDEX events_channel ON events(channel, id);
CREATE INDEX schedules_wake ON schedules(wake_at) WHERE wake_at IS NOT NULL;
CREATE UNIQUE INDEX signals_sid ON signals(key, sid) WHERE sid IS NOT NULL;
CREATE INDEX signals_at ON signals(key, at);
CREATE INDEX signals_age ON signals(at);
CREATE INDEX jobs_type_status ON jobs(type, status);
CREATE INDEX jobs_queued_type ON jobs(type, queued_at) WHERE status = 'QUEUED';
CREATE INDEX jobs_shared_channel ON jobs(channel, id) WHERE channel <> id;
CREATE INDEX deliveries_due ON deliveries(due_at) WHERE due_at IS NOT NULL;
CREATE INDEX deliveries_job ON deliveries(job_id, id);
CREATE INDEX deliveries_done ON deliveries(done_at) WHERE done_at IS NOT NULL;
CREATE INDEX wait_keys_job ON wait_keys(job_id);
CREATE INDEX wait_deadlines_at ON wait_deadlines(deadline);
COMMIT;
