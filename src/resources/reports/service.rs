//! Who may read reports, and what they get: rows as a stream, no HTTP.

use std::cell::Cell;
use std::rc::Rc;

use super::{OrderRows, ReportRange};
use crate::repo::{Database, Repos};
use crate::resources::products::service::admin_only;
use crate::service::{Principal, ServiceError};

/// A report service. At most `max_running` reports stream at once per
/// worker (`reports.max_running`): each holds a database connection of its
/// own for as long as its client reads (on PostgreSQL, one of the
/// transaction pool's), so more would starve orders of connections.
#[derive(Clone)]
pub struct ReportService {
    db: Rc<Database>,
    max_running: usize,
    running: Rc<Cell<usize>>,
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
        Self { db, max_running, running: Rc::new(Cell::new(0)) }
    }

    /// Every order created in `range`, oldest first (administrators only).
    /// [`ServiceError::Busy`] while `max_running` reports are streaming.
    pub fn orders(&self, by: Principal, range: ReportRange) -> Result<OrderRows, ServiceError> {
        admin_only(by)?;
        if range.from > range.to {
            return Err(crate::domain::Invalid::new("from", "must not be after to").into());
        }
        if self.running.get() >= self.max_running {
            return Err(ServiceError::Busy);
        }
        self.running.set(self.running.get() + 1);
        Ok(OrderRows::start(self.db.sql(), range, Running(self.running.clone())))
    }
}
