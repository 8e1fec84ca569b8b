//! The TechEmpower Framework Benchmarks database tests (round 23 rules),
//! for load testers: `/bench/db`, `/bench/queries`, `/bench/fortunes`,
//! `/bench/updates` and `/bench/cached-queries`. Their tables (`world`,
//! 10,000 rows; `fortune`, the 12 standard messages) are not part of the
//! product's schema: `drover bench setup` creates and fills them, and until
//! then the routes answer 503 naming that command.

pub mod http;
pub mod repo;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_util::future::try_join_all;

use crate::repo::{Database, RepoError, Repos};

pub use repo::{BenchRepo, Fortune, World, WORLD_ROWS};

/// Most rows one `queries`/`updates`/`cached-queries` request may ask for.
pub const MAX_QUERIES: usize = 500;

/// What the routes can end with besides success.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The tables are not there: `drover bench setup` has not run.
    #[error("the benchmark tables are missing; run `drover bench setup`")]
    NotSetUp,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// The benchmark's data access, per worker: readiness of the tables (asked
/// of the database until they exist, then never again), a random number
/// generator, and the in-process cache of the world table.
#[derive(Clone)]
pub struct BenchService {
    db: Rc<Database>,
    ready: Rc<Cell<bool>>,
    rng: Rc<Cell<u64>>,
    cache: Rc<RefCell<Option<Rc<Vec<World>>>>>,
}

impl BenchService {
    pub fn new(db: Rc<Database>) -> Self {
        let mut seed = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Self {
            db,
            ready: Rc::new(Cell::new(false)),
            rng: Rc::new(Cell::new(u64::from_le_bytes(seed) | 1)),
            cache: Rc::new(RefCell::new(None)),
        }
    }

    fn repo(&self) -> repo::SqlBenchRepo {
        repo::SqlBenchRepo::new(self.db.sql())
    }

    /// A random world id (1 to 10,000): xorshift64*, seeded per worker from
    /// the OS. Statistical quality is all the benchmark needs.
    pub fn random_id(&self) -> i32 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r % WORLD_ROWS as u64) as i32 + 1
    }

    async fn check_ready(&self) -> Result<(), BenchError> {
        if self.ready.get() {
            return Ok(());
        }
        match self.repo().tables_ready().await {
            Ok(true) => {
                self.ready.set(true);
                Ok(())
            }
            Ok(false) => Err(BenchError::NotSetUp),
            Err(RepoError::Unavailable(why)) => Err(RepoError::Unavailable(why).into()),
            // A missing table is an error of its own on each backend.
            Err(_) => Err(BenchError::NotSetUp),
        }
    }

    pub async fn world(&self) -> Result<World, BenchError> {
        self.check_ready().await?;
        let id = self.random_id();
        self.repo().world(id).await?.ok_or(BenchError::NotSetUp)
    }

    /// `count` random rows, queried concurrently: on PostgreSQL they
    /// pipeline on the worker's shared connections.
    pub async fn worlds(&self, count: usize) -> Result<Vec<World>, BenchError> {
        self.check_ready().await?;
        let repo = self.repo();
        let ids: Vec<i32> = (0..count).map(|_| self.random_id()).collect();
        let rows = try_join_all(ids.iter().map(|id| repo.world(*id))).await?;
        rows.into_iter().map(|row| row.ok_or(BenchError::NotSetUp)).collect()
    }

    /// `count` random rows with new random numbers, written back in one
    /// statement.
    pub async fn update(&self, count: usize) -> Result<Vec<World>, BenchError> {
        let mut worlds = self.worlds(count).await?;
        for world in &mut worlds {
            world.random_number = self.random_id();
        }
        // One row per id: a repeated id would make the statement ambiguous.
        let mut distinct = worlds.clone();
        distinct.sort_by_key(|w| w.id);
        distinct.dedup_by_key(|w| w.id);
        // The last value drawn for a repeated id is the one written.
        for world in &mut distinct {
            if let Some(last) = worlds.iter().rev().find(|w| w.id == world.id) {
                world.random_number = last.random_number;
            }
        }
        self.repo().update(&distinct).await?;
        // Answer with what was written.
        for world in &mut worlds {
            if let Some(written) = distinct.iter().find(|w| w.id == world.id) {
                world.random_number = written.random_number;
            }
        }
        Ok(worlds)
    }

    pub async fn fortunes(&self) -> Result<Vec<Fortune>, BenchError> {
        self.check_ready().await?;
        Ok(self.repo().fortunes().await?)
    }

    /// `count` random rows from this worker's copy of the world table if
    /// it is loaded: the common case, answered without a future.
    pub fn cached_now(&self, count: usize) -> Option<Vec<World>> {
        let cache = self.cache.borrow();
        let table = cache.as_ref()?;
        (0..count).map(|_| table.get(usize::try_from(self.random_id() - 1).unwrap_or(0)).copied()).collect()
    }

    /// `count` random rows from this worker's copy of the world table,
    /// loaded whole on first use.
    pub async fn cached(&self, count: usize) -> Result<Vec<World>, BenchError> {
        let table = self.cache.borrow().clone();
        let table = match table {
            Some(table) => table,
            None => {
                self.check_ready().await?;
                let mut rows = self.repo().all_worlds().await?;
                rows.sort_by_key(|w| w.id);
                let table = Rc::new(rows);
                *self.cache.borrow_mut() = Some(table.clone());
                table
            }
        };
        (0..count)
            .map(|_| {
                let id = self.random_id();
                table.get(usize::try_from(id - 1).unwrap_or(0)).copied().ok_or(BenchError::NotSetUp)
            })
            .collect()
    }
}

/// `?queries=`/`?count=` as the rules say: 1 to 500; missing, not a
/// number, or below 1 is 1; above 500 is 500.
pub fn clamp_count(raw: Option<&str>) -> usize {
    match raw.and_then(|v| v.trim().parse::<i64>().ok()) {
        Some(n) if n > MAX_QUERIES as i64 => MAX_QUERIES,
        Some(n) if n >= 1 => n as usize,
        _ => 1,
    }
}

/// Creates and fills the benchmark tables (`drover bench setup`): kept if
/// they are already complete, refilled if not.
pub async fn setup(db: &Database) -> Result<(), RepoError> {
    db.transaction(|repos| Box::pin(async move { repo::SqlBenchRepo::new(repos.sql()).setup().await })).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_clamped_as_the_rules_say() {
        for (raw, n) in [
            (None, 1),
            (Some(""), 1),
            (Some("foo"), 1),
            (Some("0"), 1),
            (Some("-5"), 1),
            (Some("20"), 20),
            (Some("501"), 500),
        ] {
            assert_eq!(clamp_count(raw), n, "{raw:?}");
        }
    }
}
