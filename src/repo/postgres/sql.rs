//! The portable statement layer ([`crate::repo::sql`]) on PostgreSQL:
//! single statements on the shared, pipelined clients, a transaction's on
//! its pooled connection; `?` numbered as `$n`; statements prepared once per
//! connection; new ids through `RETURNING id`.

use std::error::Error;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Statement;

use super::tx::PgTxConn;
use super::{checkout, timed, ClientRef, PgDatabase};
use crate::repo::sql::{numbered_placeholders, Row, Sql, Streamer, StreamerRef, Value};
use crate::repo::{Backend, RepoError};

/// Statements on PostgreSQL, on the shared clients or in one transaction.
pub struct PgSql {
    db: Rc<PgDatabase>,
    tx: Option<Rc<PgTxConn>>,
}

impl PgSql {
    pub fn new(db: Rc<PgDatabase>) -> Self {
        Self { db, tx: None }
    }

    pub(super) fn in_transaction(db: Rc<PgDatabase>, tx: Rc<PgTxConn>) -> Self {
        Self { db, tx: Some(tx) }
    }

    /// A client and `sql`'s statement prepared on it.
    async fn prepared(&self, sql: &str) -> Result<(ClientRef, Statement), RepoError> {
        let client = self.db.client_in(self.tx.as_ref()).await?;
        let statement = self.db.statement_for(&client, &numbered_placeholders(sql)).await?;
        Ok((client, statement))
    }

    async fn rows(&self, sql: &str, params: &[Value]) -> Result<Vec<tokio_postgres::Row>, RepoError> {
        let (client, statement) = self.prepared(sql).await?;
        self.db.timed(client.query(&statement, &bind(params))).await
    }
}

fn bind(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

#[async_trait(?Send)]
impl Sql for PgSql {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, RepoError> {
        Ok(self.rows(sql, params).await?.into_iter().map(Row::Postgres).collect())
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, RepoError> {
        let (client, statement) = self.prepared(sql).await?;
        self.db.timed(client.execute(&statement, &bind(params))).await
    }

    fn streamer(&self) -> StreamerRef {
        Arc::new(PgStreamer { pool: self.db.stream_pool().clone(), query_timeout: self.db.query_timeout() })
    }

    async fn insert(&self, sql: &str, params: &[Value]) -> Result<i64, RepoError> {
        let rows = self.rows(&format!("{sql} RETURNING id"), params).await?;
        let row =
            rows.into_iter().next().ok_or_else(|| RepoError::Other("an insert returned no id".into()))?;
        Row::Postgres(row).int(0)
    }
}

/// Streaming reads on PostgreSQL, on the connections kept for them.
struct PgStreamer {
    pool: deadpool_postgres::Pool,
    query_timeout: Duration,
}

#[async_trait(?Send)]
impl Streamer for PgStreamer {
    async fn stream(
        &self,
        sql: &str,
        params: &[Value],
        batch: usize,
        rows: &tokio::sync::mpsc::Sender<Row>,
    ) -> Result<(), RepoError> {
        let limit = self.query_timeout;
        let mut client = checkout(&self.pool, limit).await?;
        // A portal lives in a transaction.
        let tx = timed(limit, client.transaction()).await?;
        let statement = timed(limit, tx.prepare(&numbered_placeholders(sql))).await?;
        let portal = timed(limit, tx.bind(&statement, &bind(params))).await?;
        let batch_size = i32::try_from(batch.max(1)).unwrap_or(i32::MAX);
        loop {
            let fetched = timed(limit, tx.query_portal(&portal, batch_size)).await?;
            let last = fetched.len() < batch.max(1);
            for row in fetched {
                if rows.send(Row::Postgres(row)).await.is_err() {
                    // The reader is gone: dropping the transaction rolls it
                    // back and closes the portal, which ends the query on
                    // the server; the rest is never read.
                    return Ok(());
                }
            }
            if last {
                return Ok(());
            }
        }
    }
}

/// A parameter in the binary format of the type the server inferred for
/// it. Integers fit the column's width or are refused; nothing is
/// converted between text and numbers.
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT8 => value.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                _ => Err(format!("an integer parameter where the server expects {ty}").into()),
            },
            Value::Text(value) if <&str as ToSql>::accepts(ty) => value.as_str().to_sql(ty, out),
            Value::Text(_) => Err(format!("a text parameter where the server expects {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql`: a `Value` carries its own type.
        true
    }

    to_sql_checked!();
}
