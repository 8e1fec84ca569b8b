//! drover: a high-performance HTTP API server. This crate is the
//! application: command line, configuration, logging and the HTTP layer. The
//! process model lives in `drover-supervisor` and `drover-worker`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod private_files;
pub mod repo;
pub mod resources;
pub mod service;
pub mod telemetry;
