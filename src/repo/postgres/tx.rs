//! Transactions on PostgreSQL: on a pooled connection, never on the shared
//! pipelined clients (a transaction's statements would interleave with
//! other requests' there).

use std::cell::Cell;
use std::rc::Rc;

use async_trait::async_trait;

use super::{PgDatabase, PgSql, PgUserRepo};
use crate::repo::sql::SqlRef;
use crate::repo::{RepoError, Repos, Transactor, Tx, UserRepo};

/// The pooled connection a transaction runs on.
pub(crate) struct PgTxConn {
    /// `Some` until dropped.
    object: Option<deadpool_postgres::Object>,
    /// COMMIT or ROLLBACK went through: the connection may go back to the
    /// pool.
    ended: Cell<bool>,
}

impl PgTxConn {
    pub(crate) fn object(&self) -> &deadpool_postgres::Object {
        self.object.as_ref().expect("a transaction's connection lives until it is dropped")
    }
}

impl Drop for PgTxConn {
    fn drop(&mut self) {
        // Ended without COMMIT or ROLLBACK (the unit of work was dropped,
        // or the connection failed): the connection must not go back to the
        // pool inside the transaction. Taken out of the pool, it closes, and
        // the server rolls back.
        if !self.ended.get() {
            if let Some(object) = self.object.take() {
                drop(deadpool_postgres::Object::take(object));
            }
        }
    }
}

/// Opens transactions on a worker's pool.
pub struct PgTransactor {
    db: Rc<PgDatabase>,
}

impl PgTransactor {
    pub fn new(db: Rc<PgDatabase>) -> Self {
        Self { db }
    }
}

#[async_trait(?Send)]
impl Transactor for PgTransactor {
    async fn begin(&self) -> Result<Box<dyn Tx>, RepoError> {
        let object = self.db.pooled().await?;
        let conn = Rc::new(PgTxConn { object: Some(object), ended: Cell::new(true) });
        self.db.timed(conn.object().batch_execute("BEGIN")).await?;
        conn.ended.set(false);
        let repos = Rc::new(PgTxRepos {
            users: PgUserRepo::in_transaction(self.db.clone(), conn.clone()),
            sql: Rc::new(PgSql::in_transaction(self.db.clone(), conn.clone())),
        });
        Ok(Box::new(PgTx { db: self.db.clone(), conn, repos }))
    }
}

struct PgTx {
    db: Rc<PgDatabase>,
    conn: Rc<PgTxConn>,
    repos: Rc<PgTxRepos>,
}

/// The repositories bound to one transaction.
struct PgTxRepos {
    users: PgUserRepo,
    sql: SqlRef,
}

impl Repos for PgTxRepos {
    fn users(&self) -> &dyn UserRepo {
        &self.users
    }

    fn sql(&self) -> SqlRef {
        self.sql.clone()
    }
}

#[async_trait(?Send)]
impl Tx for PgTx {
    fn repos(&self) -> Rc<dyn Repos> {
        self.repos.clone()
    }

    async fn commit(self: Box<Self>) -> Result<(), RepoError> {
        // A COMMIT the server refuses (a serialization failure found at
        // commit) still ends the transaction; one that never got an answer
        // leaves the connection to be discarded on drop.
        let result = self.db.timed(self.conn.object().batch_execute("COMMIT")).await;
        if !matches!(result, Err(RepoError::Unavailable(_))) {
            self.conn.ended.set(true);
        }
        result
    }

    async fn rollback(self: Box<Self>) {
        if self.db.timed(self.conn.object().batch_execute("ROLLBACK")).await.is_ok() {
            self.conn.ended.set(true);
        }
    }
}
