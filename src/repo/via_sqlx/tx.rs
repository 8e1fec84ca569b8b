//! Transactions on the sqlx backends, and where a repository's statements
//! run: on the pool, or on the connection of the transaction it is part of.

use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, IntoArguments, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::{Dialect, SqlxPool, SqlxSql, SqlxUserRepo};
use crate::repo::rows::UserRow;
use crate::repo::sql::{Sql, SqlRef};
use crate::repo::{RepoError, Repos, Transactor, Tx, UserRepo};

/// The transaction a repository is part of. Its statements run one at a
/// time (they share one connection), hence the lock; `None` once it ended.
pub(crate) struct TxConn<DB: Database> {
    pub(super) db: SqlxPool<DB>,
    tx: Mutex<Option<Transaction<'static, DB>>>,
}

impl<DB: Database> Drop for TxConn<DB> {
    fn drop(&mut self) {
        // Ended without commit or rollback: the unit of work was dropped
        // (its request was cancelled). sqlx would only queue the rollback
        // until the connection is next used, keeping its locks until then
        // (SQLite's write lock!), so roll back now, off this task.
        if let Some(tx) = self.tx.get_mut().take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = tx.rollback().await;
                });
            }
        }
    }
}

/// Where a repository's statements run.
pub(crate) enum Exec<DB: Database> {
    Pool(SqlxPool<DB>),
    Tx(Rc<TxConn<DB>>),
}

/// A connection to run statements on, held for as long as they need it.
pub(crate) enum Held<'a, DB: Database> {
    Pooled(PoolConnection<DB>),
    Tx(MutexGuard<'a, Option<Transaction<'static, DB>>>),
}

impl<DB: Database> Deref for Held<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        match self {
            Held::Pooled(conn) => conn,
            // `conn()` only hands out a guard over a live transaction.
            Held::Tx(guard) => guard.as_ref().expect("a live transaction"),
        }
    }
}

impl<DB: Database> DerefMut for Held<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Held::Pooled(conn) => conn,
            Held::Tx(guard) => guard.as_mut().expect("a live transaction"),
        }
    }
}

impl<DB: Database> Exec<DB> {
    pub(crate) fn db(&self) -> &SqlxPool<DB> {
        match self {
            Exec::Pool(db) => db,
            Exec::Tx(conn) => &conn.db,
        }
    }

    /// A connection: one from the pool, or the transaction's.
    pub(crate) async fn conn(&self) -> Result<Held<'_, DB>, RepoError> {
        match self {
            Exec::Pool(db) => Ok(Held::Pooled(db.timed(db.pool().acquire()).await?)),
            Exec::Tx(conn) => {
                let guard = conn.tx.lock().await;
                if guard.is_none() {
                    return Err(RepoError::Other("the transaction has already ended".into()));
                }
                Ok(Held::Tx(guard))
            }
        }
    }

    /// Whether statements already run inside a transaction.
    pub(crate) fn in_transaction(&self) -> bool {
        matches!(self, Exec::Tx(_))
    }
}

/// One transaction on a sqlx backend.
struct SqlxTx<DB: Database> {
    conn: Rc<TxConn<DB>>,
    repos: Rc<SqlxTxRepos<DB>>,
}

/// The repositories bound to one transaction.
struct SqlxTxRepos<DB: Database> {
    users: SqlxUserRepo<DB>,
    sql: SqlRef,
}

impl<DB> Repos for SqlxTxRepos<DB>
where
    DB: Dialect,
    SqlxUserRepo<DB>: UserRepo,
{
    fn users(&self) -> &dyn UserRepo {
        &self.users
    }

    fn sql(&self) -> SqlRef {
        self.sql.clone()
    }
}

#[async_trait(?Send)]
impl<DB> Tx for SqlxTx<DB>
where
    DB: Dialect,
    SqlxUserRepo<DB>: UserRepo + 'static,
{
    fn repos(&self) -> Rc<dyn Repos> {
        self.repos.clone()
    }

    async fn commit(self: Box<Self>) -> Result<(), RepoError> {
        let tx = self.conn.tx.lock().await.take();
        match tx {
            Some(tx) => self.conn.db.timed(tx.commit()).await,
            None => Err(RepoError::Other("the transaction has already ended".into())),
        }
    }

    async fn rollback(self: Box<Self>) {
        let tx = self.conn.tx.lock().await.take();
        if let Some(tx) = tx {
            let _ = self.conn.db.timed(tx.rollback()).await;
        }
    }
}

#[async_trait(?Send)]
impl<DB> Transactor for SqlxPool<DB>
where
    DB: Dialect,
    DB::Row: UserRow,
    SqlxUserRepo<DB>: UserRepo,
    SqlxSql<DB>: Sql + 'static,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    async fn begin(&self) -> Result<Box<dyn Tx>, RepoError> {
        let tx = self.timed(self.pool().begin_with(DB::BEGIN)).await?;
        let conn = Rc::new(TxConn { db: self.clone(), tx: Mutex::new(Some(tx)) });
        let repos = Rc::new(SqlxTxRepos {
            users: SqlxUserRepo::in_transaction(conn.clone()),
            sql: Rc::new(SqlxSql::in_transaction(conn.clone())),
        });
        Ok(Box::new(SqlxTx { conn, repos }))
    }
}
