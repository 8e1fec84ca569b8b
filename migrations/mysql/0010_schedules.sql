-- Scheduled tasks ([jobs.schedule]). One row per task: the last tick done,
-- and the lease of the process running it, so that each tick runs once
-- across every job process and host sharing the database. Times are Unix
-- milliseconds. Every statement can run again: MariaDB cannot roll back DDL.
CREATE TABLE IF NOT EXISTS job_schedules (
    task         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    done_tick    BIGINT      NOT NULL DEFAULT 0,
    claim        VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NULL,
    claimed_tick BIGINT      NOT NULL DEFAULT 0,
    lease_until  BIGINT      NOT NULL DEFAULT 0
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Every run of a task, for `drover jobs runs`.
CREATE TABLE IF NOT EXISTS job_runs (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    task        VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    tick        BIGINT       NOT NULL,
    started_at  BIGINT       NOT NULL,
    finished_at BIGINT       NOT NULL,
    outcome     VARCHAR(16)  NOT NULL,
    detail      VARCHAR(500) NOT NULL,
    runner      VARCHAR(100) NOT NULL,
    KEY job_runs_task (task, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
