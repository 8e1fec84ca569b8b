-- Scheduled tasks ([jobs.schedule]). One row per task: the last tick done,
-- and the lease of the process running it, so that each tick runs once
-- across every job process and host sharing the database. Times are Unix
-- milliseconds.
CREATE TABLE job_schedules (
    task         VARCHAR(64) PRIMARY KEY,
    done_tick    BIGINT      NOT NULL DEFAULT 0,
    claim        VARCHAR(32),
    claimed_tick BIGINT      NOT NULL DEFAULT 0,
    lease_until  BIGINT      NOT NULL DEFAULT 0
);

-- Every run of a task, for `drover jobs runs`.
CREATE TABLE job_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task        VARCHAR(64)  NOT NULL,
    tick        BIGINT       NOT NULL,
    started_at  BIGINT       NOT NULL,
    finished_at BIGINT       NOT NULL,
    outcome     VARCHAR(16)  NOT NULL,
    detail      VARCHAR(500) NOT NULL,
    runner      VARCHAR(100) NOT NULL
);
CREATE INDEX job_runs_task ON job_runs (task, id);
