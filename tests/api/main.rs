//! Integration tests: every test starts the real `drover` binary and talks
//! HTTP to it. Loads are bounded in requests and time and target loopback
//! only; every process started is killed by pid when its test ends.

mod admission;
mod auth;
mod billing;
mod cache;
mod cluster;
mod commerce;
mod compression;
mod config;
mod cors;
mod db;
mod files;
mod helpers;
mod hostile;
mod http2;
mod idle_cgroup;
mod job_workers;
mod jobs;
mod limits;
mod logging;
mod metrics;
mod openapi;
mod outage;
mod parsing;
mod perms;
mod proxy;
mod rabbitmq;
mod rate_limits;
mod repo;
mod reports;
mod stalls;
mod supervisor;
mod systemd;
mod tfb;
mod upgrade;
