//! A job process: the worker runtime's [`Background`] loop around the
//! consumer, so the supervisor runs it like an HTTP worker (ready,
//! heartbeats with per-queue counters, drain on a rolling restart), and
//! `drover jobs work` runs the same thing by hand.
//!
//! It builds the same [`Services`] as an HTTP worker, on the worker's
//! broadcast: a cache entry a job changes (stock returned by
//! `orders.expire`) is dropped by every HTTP worker of the host, as when a
//! request changes it.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use drover_worker::{Background, Counters, WorkerContext};
use tokio::sync::{watch, Notify};

use super::consumer::{self, Settings, Stats};
use super::schedule::{Schedules, TaskSettings};
use super::transport::{self, Transport};
use crate::app::{Services, StartError};
use crate::config::Config;
use crate::repo::postgres::listen::listen;
use crate::repo::Backend;
use crate::resources::events;

pub struct JobProcess {
    services: Services,
    /// Woken when events are committed (PostgreSQL), else never.
    outbox: Rc<Notify>,
    transport: Rc<dyn Transport>,
    settings: Settings,
    schedules: Schedules,
    tasks: TaskSettings,
    stats: Stats,
}

impl JobProcess {
    /// Connects to the database (and the cache) as a worker does.
    pub async fn build(
        config: &Config,
        schedules: Schedules,
        context: WorkerContext,
    ) -> Result<Self, StartError> {
        let services = Services::build(config, context.blocking, context.broadcast).await?;
        let transport = transport::open(&config.jobs.transport(), services.db.clone());
        let outbox = Rc::new(Notify::new());
        if services.db.backend == Backend::Postgres {
            let listen = listen(config.database_url(), events::OUTBOX_CHANNEL, outbox.clone());
            tokio::task::spawn_local(listen);
        }
        tracing::info!(transport = transport.name(), "job transport");
        Ok(Self {
            services,
            outbox,
            transport,
            settings: config.jobs.settings(),
            schedules,
            tasks: config.task_settings(),
            stats: Stats::default(),
        })
    }
}

impl Background for JobProcess {
    fn run(self: Rc<Self>, stop: watch::Receiver<bool>) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            tracing::info!("the job process is consuming");
            let cx = consumer::Context {
                services: &self.services,
                transport: &*self.transport,
                settings: self.settings,
                schedules: &self.schedules,
                tasks: self.tasks,
                stats: &self.stats,
                outbox: &self.outbox,
            };
            consumer::run(cx, stop).await;
            let (handled, retried, dead) = self.stats.totals();
            tracing::info!(
                published = self.stats.published.get(),
                handled,
                retried,
                dead,
                "the job process stopped"
            );
        })
    }

    fn counters(&self) -> Counters {
        let (handled, retried, dead) = self.stats.totals();
        Counters {
            requests: handled,
            in_flight: self.stats.in_hand.get(),
            failures: retried + dead,
            queues: self.stats.queues(),
            app: self.services.counters(),
            app_gauges: self.services.gauges(),
            ..Counters::default()
        }
    }
}
