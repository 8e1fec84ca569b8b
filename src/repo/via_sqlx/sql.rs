//! The portable statement layer ([`crate::repo::sql`]) on the sqlx
//! backends: statements on the pool, or on the connection of a transaction;
//! new ids from the driver's result (`last_insert_rowid`,
//! `LAST_INSERT_ID`).

use std::rc::Rc;

use async_trait::async_trait;
use sqlx::{Database, Executor, IntoArguments};

use super::tx::{Exec, TxConn};
use super::{Dialect, SqlxPool};
use crate::repo::sql::{Row, Sql, Value};
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

    async fn stream(
        &self,
        sql: &str,
        params: &[Value],
        _batch: usize,
        rows: &tokio::sync::mpsc::Sender<Row>,
    ) -> Result<(), RepoError> {
        use futures_util::TryStreamExt;
        // A connection of its own, even inside a transaction.
        let db = self.exec.db();
        let mut conn = db.timed(db.pool().acquire()).await?;
        let mut fetched = bound::<DB>(sql, params).fetch(&mut *conn);
        loop {
            let Some(row) = db.timed(fetched.try_next()).await? else { return Ok(()) };
            if rows.send(DB::row(row)).await.is_err() {
                // The reader is gone: the driver drops the rest.
                return Ok(());
            }
        }
    }

    async fn insert(&self, sql: &str, params: &[Value]) -> Result<i64, RepoError> {
        let mut conn = self.exec.conn().await?;
        let result = self.exec.db().timed(bound::<DB>(sql, params).execute(&mut *conn)).await?;
        Ok(DB::inserted_id(&result))
    }
}
