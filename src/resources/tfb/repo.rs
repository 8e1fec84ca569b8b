//! The benchmark tables, stored: one implementation for every backend on
//! the portable statement layer. The schema is the benchmark's own
//! (`world(id, randomnumber)`, `fortune(id, message)`), created by
//! [`SqlBenchRepo::setup`], not by the product's migrations.

use async_trait::async_trait;

use crate::params;
use crate::repo::sql::{Row, SqlRef, Value};
use crate::repo::{Backend, RepoError};

/// Rows of the world table.
pub const WORLD_ROWS: i32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    pub id: i32,
    pub random_number: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fortune {
    pub id: i32,
    pub message: String,
}

/// The 12 fortunes every implementation serves (the benchmark's data,
/// markup and all: the template must escape it).
pub const FORTUNES: [&str; 12] = [
    "fortune: No such file or directory",
    "A computer scientist is someone who fixes things that aren't broken.",
    "After enough decimal places, nobody gives a damn.",
    "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    "A computer program does what you tell it to do, not what you want it to do.",
    "Emacs is a nice operating system, but I prefer UNIX. — Tom Christaensen",
    "Any program that runs right is obsolete.",
    "A list is only as strong as its weakest link. — Donald Knuth",
    "Feature: A bug with seniority.",
    "Computers make very fast, very accurate mistakes.",
    "<script>alert(\"This should not be displayed in a browser alert box.\");</script>",
    "フレームワークのベンチマーク",
];

#[async_trait(?Send)]
pub trait BenchRepo {
    /// Whether both tables exist and are filled.
    async fn tables_ready(&self) -> Result<bool, RepoError>;
    async fn world(&self, id: i32) -> Result<Option<World>, RepoError>;
    async fn all_worlds(&self) -> Result<Vec<World>, RepoError>;
    /// Writes each row's `random_number`, in one statement (ids distinct).
    async fn update(&self, worlds: &[World]) -> Result<(), RepoError>;
    async fn fortunes(&self) -> Result<Vec<Fortune>, RepoError>;
    /// Creates the tables if missing and fills them unless complete.
    async fn setup(&self) -> Result<(), RepoError>;
}

pub struct SqlBenchRepo {
    sql: SqlRef,
}

impl SqlBenchRepo {
    pub fn new(sql: SqlRef) -> Self {
        Self { sql }
    }
}

fn small(row: &Row, index: usize) -> Result<i32, RepoError> {
    i32::try_from(row.int(index)?).map_err(|e| RepoError::Other(e.into()))
}

fn world(row: &Row) -> Result<World, RepoError> {
    Ok(World { id: small(row, 0)?, random_number: small(row, 1)? })
}

#[async_trait(?Send)]
impl BenchRepo for SqlBenchRepo {
    async fn tables_ready(&self) -> Result<bool, RepoError> {
        let worlds = self.sql.query_one("SELECT COUNT(*) FROM world", &[]).await?.int(0)?;
        let fortunes = self.sql.query_one("SELECT COUNT(*) FROM fortune", &[]).await?.int(0)?;
        Ok(worlds == i64::from(WORLD_ROWS) && fortunes == FORTUNES.len() as i64)
    }

    async fn world(&self, id: i32) -> Result<Option<World>, RepoError> {
        let row = self
            .sql
            .query_opt("SELECT id, randomnumber FROM world WHERE id = ?", params![i64::from(id)])
            .await?;
        row.as_ref().map(world).transpose()
    }

    async fn all_worlds(&self) -> Result<Vec<World>, RepoError> {
        let rows = self.sql.query("SELECT id, randomnumber FROM world", &[]).await?;
        rows.iter().map(world).collect()
    }

    async fn update(&self, worlds: &[World]) -> Result<(), RepoError> {
        if worlds.is_empty() {
            return Ok(());
        }
        let mut params = Vec::with_capacity(worlds.len() * 3);
        let sql = if self.sql.backend() == Backend::Postgres {
            // A join on a VALUES list: one pass over the rows (the first
            // pair typed, the rest follow it).
            let mut sql = String::from("UPDATE world SET randomnumber = v.r FROM (VALUES ");
            for (i, w) in worlds.iter().enumerate() {
                sql.push_str(if i == 0 { "(CAST(? AS INTEGER), CAST(? AS INTEGER))" } else { ", (?, ?)" });
                params.push(Value::Int(i64::from(w.id)));
                params.push(Value::Int(i64::from(w.random_number)));
            }
            sql.push_str(") AS v (id, r) WHERE world.id = v.id");
            sql
        } else {
            // `CASE id WHEN … THEN …`: one statement on SQLite and MariaDB.
            let cast =
                if self.sql.backend() == Backend::MySql { "CAST(? AS SIGNED)" } else { "CAST(? AS INTEGER)" };
            let mut sql = String::from("UPDATE world SET randomnumber = CASE id");
            for w in worlds {
                sql.push_str(" WHEN ? THEN ");
                sql.push_str(cast);
                params.push(Value::Int(i64::from(w.id)));
                params.push(Value::Int(i64::from(w.random_number)));
            }
            sql.push_str(" ELSE randomnumber END WHERE id IN (");
            for (i, w) in worlds.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                params.push(Value::Int(i64::from(w.id)));
            }
            sql.push(')');
            sql
        };
        self.sql.execute(&sql, &params).await.map(drop)
    }

    async fn fortunes(&self) -> Result<Vec<Fortune>, RepoError> {
        let rows = self.sql.query("SELECT id, message FROM fortune", &[]).await?;
        rows.iter().map(|row| Ok(Fortune { id: small(row, 0)?, message: row.text(1)? })).collect()
    }

    async fn setup(&self) -> Result<(), RepoError> {
        let charset = if self.sql.backend() == Backend::MySql { " DEFAULT CHARSET = utf8mb4" } else { "" };
        self.sql
            .execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS world (id INTEGER NOT NULL PRIMARY KEY, \
                     randomnumber INTEGER NOT NULL DEFAULT 0){charset}"
                ),
                &[],
            )
            .await?;
        self.sql
            .execute(
                &format!(
                    "CREATE TABLE IF NOT EXISTS fortune (id INTEGER NOT NULL PRIMARY KEY, \
                     message VARCHAR(2048) NOT NULL){charset}"
                ),
                &[],
            )
            .await?;
        if self.tables_ready().await? {
            return Ok(());
        }
        self.sql.execute("DELETE FROM world", &[]).await?;
        self.sql.execute("DELETE FROM fortune", &[]).await?;
        // Random numbers from the worker's generator's algorithm, seeded
        // from the clock: setup needs no more.
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % WORLD_ROWS as u64) as i64 + 1
        };
        // 500 rows a statement: within every backend's parameter limit.
        for chunk in (1..=i64::from(WORLD_ROWS)).collect::<Vec<_>>().chunks(500) {
            let marks = vec!["(?, ?)"; chunk.len()].join(", ");
            let params: Vec<Value> =
                chunk.iter().flat_map(|id| [Value::Int(*id), Value::Int(next())]).collect();
            self.sql
                .execute(&format!("INSERT INTO world (id, randomnumber) VALUES {marks}"), &params)
                .await?;
        }
        let marks = vec!["(?, ?)"; FORTUNES.len()].join(", ");
        let params: Vec<Value> = FORTUNES
            .iter()
            .zip(1i64..)
            .flat_map(|(message, id)| [Value::Int(id), Value::from(*message)])
            .collect();
        self.sql.execute(&format!("INSERT INTO fortune (id, message) VALUES {marks}"), &params).await?;
        Ok(())
    }
}
