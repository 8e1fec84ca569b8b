//! Who may read reports, and what they get: a report's pieces as they are
//! written, in the format the caller's [`RowWriter`] writes; no HTTP.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use drover_worker::idle::IdleLoop;

use super::{ReportPieces, ReportRange, RowWriter};
use crate::repo::{Database, Repos};
use crate::resources::products::service::admin_only;
use crate::service::{Principal, ServiceError};

/// A report service. At most `max_running` reports stream at once per
/// worker (`reports.max_running`): each holds one of the connections kept
/// for streamed reads for as long as its client reads. Reports are read and
/// written on the worker's idle loop, started with the first one.
#[derive(Clone)]
pub struct ReportService {
    db: Rc<Database>,
    max_running: usize,
    running: Rc<Cell<usize>>,
    /// The idle loop, once a report has started it.
    idle: Rc<RefCell<Option<IdleLoop>>>,
}

/// A report's place among those running; given back when dropped.
pub struct Running(Rc<Cell<usize>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl ReportService {
    pub fn new(db: Rc<Database>, max_running: usize) -> Self {
        Self { db, max_running, running: Rc::new(Cell::new(0)), idle: Rc::default() }
    }

    /// Every order created in `range`, oldest first (administrators only),
    /// written by `writer`. [`ServiceError::Busy`] while `max_running`
    /// reports are streaming, or when the idle loop cannot be started.
    pub fn orders(
        &self,
        by: Principal,
        range: ReportRange,
        writer: impl RowWriter,
    ) -> Result<ReportPieces, ServiceError> {
        admin_only(by)?;
        if range.from > range.to {
            return Err(crate::domain::Invalid::new("from", "must not be after to").into());
        }
        if self.running.get() >= self.max_running {
            return Err(ServiceError::Busy);
        }
        self.running.set(self.running.get() + 1);
        let running = Running(self.running.clone());
        let idle = self.idle()?;
        ReportPieces::start(&idle, self.db.sql().streamer(), range, writer, running).map_err(|error| {
            // Its thread died outside any job: the next report starts another.
            tracing::error!(%error, "the reports' idle loop is gone");
            self.idle.borrow_mut().take();
            ServiceError::Busy
        })
    }

    /// The idle loop, started on first use.
    fn idle(&self) -> Result<IdleLoop, ServiceError> {
        let mut slot = self.idle.borrow_mut();
        if let Some(idle) = slot.as_ref() {
            return Ok(idle.clone());
        }
        let idle = IdleLoop::start("drover-reports").map_err(|error| {
            tracing::warn!(%error, "cannot start the reports' idle loop");
            ServiceError::Busy
        })?;
        *slot = Some(idle.clone());
        Ok(idle)
    }
}
