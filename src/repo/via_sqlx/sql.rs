//! The portable statement layer ([`crate::repo::sql`]) on the sqlx
//! backends: statements on the pool, or on the connection of a transaction;
//! new ids from the driver's result (`last_insert_rowid`,
//! `LAST_INSERT_ID`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Database, Executor, IntoArguments};

use super::tx::{Exec, TxConn};
use super::{timed, Dialect, SqlxPool, StreamPool};
use crate::repo::sql::{Row, Sql, Streamer, StreamerRef, Value};
use crate::repo::{Backend, RepoError};

/// Statements on a sqlx backend, on its pool or in one transaction.
pub struct SqlxSql<DB: Database> {
    exec: Exec<DB>,
}

impl<DB: Database> SqlxSql<DB> {
    pub fn new(db: SqlxPool<DB>) -> Self {
        Self { exec: Exec::Pool(db) }
    }

    pub(crate) fn in_transaction(conn: Rc<TxConn<DB>>) -> Self {
        Self { exec: Exec::Tx(conn) }
    }
}

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

fn bound<'q, DB>(sql: &'q str, params: &'q [Value]) -> Query<'q, DB>
where
    DB: Database,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    params.iter().fold(sqlx::query::<DB>(sql), |query, param| match param {
        Value::Int(value) => query.bind(*value),
        Value::Text(value) => query.bind(value.as_str()),
        Value::Null => query.bind(None::<i64>),
    })
}

#[async_trait(?Send)]
impl<DB> Sql for SqlxSql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    fn backend(&self) -> Backend {
        DB::BACKEND
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, RepoError> {
        let mut conn = self.exec.conn().await?;
        let rows = self.exec.db().timed(bound::<DB>(sql, params).fetch_all(&mut *conn)).await?;
        Ok(rows.into_iter().map(DB::row).collect())
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, RepoError> {
        let mut conn = self.exec.conn().await?;
        let result = self.exec.db().timed(bound::<DB>(sql, params).execute(&mut *conn)).await?;
        Ok(DB::rows_affected(&result))
    }

    fn streamer(&self) -> StreamerRef {
        let db = self.exec.db();
        Arc::new(SqlxStreamer::<DB> { pool: db.streams().clone(), query_timeout: db.query_timeout() })
    }

    async fn insert(&self, sql: &str, params: &[Value]) -> Result<i64, RepoError> {
        let mut conn = self.exec.conn().await?;
        let result = self.exec.db().timed(bound::<DB>(sql, params).execute(&mut *conn)).await?;
        Ok(DB::inserted_id(&result))
    }
}

/// Streaming reads on a sqlx backend, on the connections kept for them.
struct SqlxStreamer<DB: Database> {
    pool: Arc<StreamPool<DB>>,
    query_timeout: Duration,
}

#[async_trait(?Send)]
impl<DB> Streamer for SqlxStreamer<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    async fn stream(
        &self,
        sql: &str,
        params: &[Value],
        _batch: usize,
        rows: &tokio::sync::mpsc::Sender<Row>,
    ) -> Result<(), RepoError> {
        use futures_util::TryStreamExt;
        let limit = self.query_timeout;
        let mut conn = timed(limit, self.pool.get().acquire()).await?;
        let mut fetched = bound::<DB>(sql, params).fetch(&mut *conn);
        let outcome = loop {
            match timed(limit, fetched.try_next()).await {
                Ok(Some(row)) => {
                    if rows.send(DB::row(row)).await.is_err() {
                        // The reader is gone.
                        break Ok(false);
                    }
                }
                Ok(None) => break Ok(true),
                Err(error) => break Err(error),
            }
        };
        drop(fetched);
        if !matches!(outcome, Ok(true)) {
            // Cut short: closed rather than given back, which would first
            // read the rest of the rows (MariaDB), and ends the query on
            // the server.
            drop(conn.detach());
        }
        outcome.map(drop)
    }
}
