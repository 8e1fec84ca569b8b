//! `UserRepo` on PostgreSQL.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::SystemTime;

use async_trait::async_trait;
use tokio_postgres::{Client, Row, Statement};

use super::tx::PgTxConn;
use super::{ClientRef, PgDatabase, Query};
use crate::domain::{
    Credentials, NewUser, Role, User, UserEmail, UserField, UserFields, UserId, UserName, UserPatch, UserView,
};
use crate::repo::rows::{self, UserRow};
use crate::repo::{RepoError, UserRepo};

const COLUMNS: &str = "id, email, name, role, created_at, updated_at";

fn sql(query: Query) -> String {
    match query {
        Query::Find(mask) => {
            let columns: Vec<&str> = UserFields::from_mask(mask).iter().map(UserField::name).collect();
            format!("SELECT {} FROM users WHERE id = $1 AND deleted_at IS NULL", columns.join(", "))
        }
        Query::Create => format!(
            "INSERT INTO users (email, name, role, password_hash) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        ),
        Query::Credentials => {
            "SELECT id, role, password_hash, token_version FROM users WHERE email = $1 AND deleted_at IS NULL"
                .into()
        }
        // One statement for every patch: NULL leaves a column as it is.
        Query::Update => format!(
            "UPDATE users SET email = COALESCE($2, email), name = COALESCE($3, name), \
             password_hash = COALESCE($4, password_hash), role = COALESCE($5, role), \
             token_version = token_version + $6, updated_at = now() \
             WHERE id = $1 AND deleted_at IS NULL RETURNING {COLUMNS}"
        ),
    }
}

/// Prepares the statements every request path uses, on a fresh client.
pub(super) async fn prepare(
    client: &Client,
    cache: &RefCell<HashMap<Query, Statement>>,
) -> Result<(), tokio_postgres::Error> {
    for query in [Query::Find(UserFields::ALL.mask()), Query::Create, Query::Credentials, Query::Update] {
        let statement = client.prepare(&sql(query)).await?;
        cache.borrow_mut().insert(query, statement);
    }
    Ok(())
}

/// Users in PostgreSQL: on the shared clients, or in one transaction.
pub struct PgUserRepo {
    db: Rc<PgDatabase>,
    /// Set for the repository of a transaction: its statements run on the
    /// transaction's pooled connection.
    tx: Option<Rc<PgTxConn>>,
}

impl PgUserRepo {
    pub fn new(db: Rc<PgDatabase>) -> Self {
        Self { db, tx: None }
    }

    pub(super) fn in_transaction(db: Rc<PgDatabase>, tx: Rc<PgTxConn>) -> Self {
        Self { db, tx: Some(tx) }
    }

    async fn client(&self) -> Result<ClientRef, RepoError> {
        self.db.client_in(self.tx.as_ref()).await
    }
}

#[async_trait(?Send)]
impl UserRepo for PgUserRepo {
    async fn create(&self, user: &NewUser) -> Result<User, RepoError> {
        let client = self.client().await?;
        let statement = self.db.statement(&client, Query::Create, || sql(Query::Create)).await?;
        let row = self
            .db
            .timed(client.query_one(
                &statement,
                &[&user.email.as_str(), &user.name.as_str(), &user.role.as_str(), &user.password_hash],
            ))
            .await?;
        rows::user(&row)
    }

    async fn find(&self, id: UserId, fields: UserFields) -> Result<Option<UserView>, RepoError> {
        let query = Query::Find(fields.mask());
        let client = self.client().await?;
        let statement = self.db.statement(&client, query, || sql(query)).await?;
        let row = self.db.timed(client.query_opt(&statement, &[&id.0])).await?;
        row.map(|row| rows::view(&row, fields)).transpose()
    }

    async fn credentials(&self, email: &UserEmail) -> Result<Option<Credentials>, RepoError> {
        let client = self.client().await?;
        let statement = self.db.statement(&client, Query::Credentials, || sql(Query::Credentials)).await?;
        let row = self.db.timed(client.query_opt(&statement, &[&email.as_str()])).await?;
        row.map(|row| rows::credentials(&row)).transpose()
    }

    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>, RepoError> {
        let client = self.client().await?;
        let statement = self.db.statement(&client, Query::Update, || sql(Query::Update)).await?;
        let email = patch.email.as_ref().map(UserEmail::as_str);
        let name = patch.name.as_ref().map(UserName::as_str);
        let role = patch.role.map(Role::as_str);
        let revoke = i64::from(patch.revoke_tokens);
        let row = self
            .db
            .timed(
                client.query_opt(&statement, &[&id.0, &email, &name, &patch.password_hash, &role, &revoke]),
            )
            .await?;
        row.map(|row| rows::user(&row)).transpose()
    }
}

fn column(error: tokio_postgres::Error) -> RepoError {
    RepoError::Other(format!("unexpected column type: {error}").into())
}

impl UserRow for Row {
    fn int(&self, column_name: &str) -> Result<i64, RepoError> {
        self.try_get(column_name).map_err(column)
    }
    fn text(&self, column_name: &str) -> Result<&str, RepoError> {
        self.try_get(column_name).map_err(column)
    }
    fn time(&self, column_name: &str) -> Result<SystemTime, RepoError> {
        self.try_get(column_name).map_err(column)
    }
}
