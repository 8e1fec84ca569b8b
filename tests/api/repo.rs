//! One repository test suite, run against SQLite, the real PostgreSQL and
//! the real MariaDB (a fresh database per test on the servers).

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use drover::domain::{NewUser, Role, UserEmail, UserField, UserFields, UserId, UserName, UserPatch};
use drover::repo::{migrate, Database, DbSettings, RepoError, Repos, UserRepo, TX_ATTEMPTS};

use crate::db::{MyDatabase, PgDatabase};
use crate::helpers::TempDir;

fn settings(url: String) -> DbSettings {
    DbSettings {
        url,
        pg_clients: 2,
        pg_pool_size: 2,
        pg_pipelining: true,
        sqlite_pool_size: 2,
        mysql_pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(10),
    }
}

async fn with_database<F, Fut>(url: String, test: F)
where
    F: FnOnce(Rc<Database>) -> Fut,
    Fut: Future<Output = ()>,
{
    migrate::run(&url).await.expect("migrations apply");
    // Applying twice is a no-op.
    assert!(migrate::run(&url).await.unwrap().is_empty());
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let db = Database::connect(&settings(url)).await.expect("database connects");
            db.ping().await.expect("ping");
            test(Rc::new(db)).await;
        })
        .await;
}

pub async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Rc<Database>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = TempDir::new("sqlite");
    with_database(format!("sqlite://{}", dir.path().join("t.db").display()), test).await;
}

pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Rc<Database>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = PgDatabase::create().await else { return };
    with_database(db.url.clone(), test).await;
}

pub async fn on_mysql<F, Fut>(test: F)
where
    F: FnOnce(Rc<Database>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = MyDatabase::create().await else { return };
    with_database(db.url.clone(), test).await;
}

/// Generates one test per backend for each suite function.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::on_sqlite(super::$name).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::on_postgres(super::$name).await })*
        }
        mod mysql {
            $(#[tokio::test] async fn $name() { super::on_mysql(super::$name).await })*
        }
    };
}

on_every_backend!(
    created_users_read_back_whole_and_sparse,
    duplicate_emails_conflict,
    credentials_are_found_by_normalised_email,
    updates_apply_and_conflict,
    unknown_ids_are_none,
    a_transaction_commits_all_or_nothing,
    a_transaction_reads_its_own_writes,
    contention_is_retried_a_bounded_number_of_times_and_counted,
    a_dropped_transaction_is_rolled_back_and_frees_its_connection,
);

fn new_user(email: &str, name: &str) -> NewUser {
    NewUser {
        email: UserEmail::parse(email).unwrap(),
        name: UserName::parse(name).unwrap(),
        role: Role::User,
        password_hash: format!("hash-of-{email}"),
    }
}

async fn created_users_read_back_whole_and_sparse(db: Rc<Database>) {
    let repo: Rc<dyn UserRepo> = db.users.clone();
    let user = repo.create(&new_user("ada@example.com", "Ada")).await.unwrap();
    assert_eq!(user.email.as_str(), "ada@example.com");
    assert_eq!(user.role, Role::User);
    let whole = repo.find(user.id, UserFields::ALL).await.unwrap().unwrap();
    assert_eq!(whole.id, Some(user.id));
    assert_eq!(whole.name.as_ref().map(UserName::as_str), Some("Ada"));
    let created = whole.created_at.unwrap();
    let drift = created.duration_since(user.created_at).unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_millis(1), "timestamps round-trip: {drift:?}");

    let sparse = UserFields::empty().with(UserField::Id).with(UserField::Name);
    let view = repo.find(user.id, sparse).await.unwrap().unwrap();
    assert_eq!(view.id, Some(user.id));
    assert!(view.name.is_some());
    assert!(view.email.is_none() && view.role.is_none() && view.created_at.is_none(), "{view:?}");

    let second = repo.create(&new_user("bob@example.com", "Bob")).await.unwrap();
    assert_ne!(second.id, user.id);
}

async fn duplicate_emails_conflict(db: Rc<Database>) {
    let repo: Rc<dyn UserRepo> = db.users.clone();
    repo.create(&new_user("ada@example.com", "Ada")).await.unwrap();
    match repo.create(&new_user("ADA@example.com", "Other Ada")).await {
        Err(RepoError::Conflict(field)) => assert_eq!(field, "email"),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn credentials_are_found_by_normalised_email(db: Rc<Database>) {
    let repo: Rc<dyn UserRepo> = db.users.clone();
    let mut admin = new_user("root@example.com", "Root");
    admin.role = Role::Admin;
    let user = repo.create(&admin).await.unwrap();
    let credentials =
        repo.credentials(&UserEmail::parse(" Root@Example.com ").unwrap()).await.unwrap().unwrap();
    assert_eq!(credentials.id, user.id);
    assert_eq!(credentials.role, Role::Admin);
    assert_eq!(credentials.password_hash, "hash-of-root@example.com");
    assert!(repo.credentials(&UserEmail::parse("nobody@example.com").unwrap()).await.unwrap().is_none());
}

async fn updates_apply_and_conflict(db: Rc<Database>) {
    let repo: Rc<dyn UserRepo> = db.users.clone();
    let ada = repo.create(&new_user("ada@example.com", "Ada")).await.unwrap();
    repo.create(&new_user("bob@example.com", "Bob")).await.unwrap();
    let patch = UserPatch { name: Some(UserName::parse("Ada Lovelace").unwrap()), ..UserPatch::default() };
    let updated = repo.update(ada.id, &patch).await.unwrap().unwrap();
    assert_eq!(updated.name.as_str(), "Ada Lovelace");
    assert_eq!(updated.email, ada.email, "unpatched fields are kept");
    assert!(updated.updated_at >= ada.updated_at);

    let patch = UserPatch { password_hash: Some("new-hash".into()), ..UserPatch::default() };
    repo.update(ada.id, &patch).await.unwrap().unwrap();
    let credentials = repo.credentials(&ada.email).await.unwrap().unwrap();
    assert_eq!(credentials.password_hash, "new-hash");

    let taken =
        UserPatch { email: Some(UserEmail::parse("bob@example.com").unwrap()), ..UserPatch::default() };
    assert!(matches!(repo.update(ada.id, &taken).await, Err(RepoError::Conflict("email"))));
}

async fn unknown_ids_are_none(db: Rc<Database>) {
    let repo: Rc<dyn UserRepo> = db.users.clone();
    assert!(repo.find(UserId(987_654), UserFields::ALL).await.unwrap().is_none());
    let patch = UserPatch { name: Some(UserName::parse("Nobody").unwrap()), ..UserPatch::default() };
    assert!(repo.update(UserId(987_654), &patch).await.unwrap().is_none());
}

/// Four instances migrating one fresh database at once: all succeed, each
/// migration is applied exactly once.
fn counter(db: &Database, name: &str) -> u64 {
    db.counters().into_iter().find(|(n, _)| n == name).map_or(0, |(_, v)| v)
}

async fn a_transaction_commits_all_or_nothing(db: Rc<Database>) {
    // Two users, then a failure: neither is kept.
    let failed: Result<(), RepoError> = db
        .transaction(|repos: Rc<dyn Repos>| {
            Box::pin(async move {
                repos.users().create(&new_user("ada@example.com", "Ada")).await?;
                repos.users().create(&new_user("bob@example.com", "Bob")).await?;
                Err(RepoError::Other("the unit of work failed".into()))
            })
        })
        .await;
    assert!(matches!(failed, Err(RepoError::Other(_))), "{failed:?}");
    for email in ["ada@example.com", "bob@example.com"] {
        assert!(db.users.credentials(&UserEmail::parse(email).unwrap()).await.unwrap().is_none(), "{email}");
    }
    // The same work, succeeding: both are kept.
    let ids = db
        .transaction(|repos: Rc<dyn Repos>| {
            Box::pin(async move {
                let ada = repos.users().create(&new_user("ada@example.com", "Ada")).await?;
                let bob = repos.users().create(&new_user("bob@example.com", "Bob")).await?;
                Ok((ada.id, bob.id))
            })
        })
        .await
        .unwrap();
    for id in [ids.0, ids.1] {
        assert!(db.users.find(id, UserFields::ALL).await.unwrap().is_some());
    }
    assert_eq!(counter(&db, "db_transactions_committed"), 1);
}

async fn a_transaction_reads_its_own_writes(db: Rc<Database>) {
    let renamed = db
        .transaction(|repos: Rc<dyn Repos>| {
            Box::pin(async move {
                let user = repos.users().create(&new_user("ada@example.com", "Ada")).await?;
                let seen = repos.users().find(user.id, UserFields::ALL).await?;
                assert_eq!(seen.and_then(|v| v.name).map(|n| n.as_str().to_owned()), Some("Ada".into()));
                let patch =
                    UserPatch { name: Some(UserName::parse("Ada L").unwrap()), ..UserPatch::default() };
                repos.users().update(user.id, &patch).await
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name.as_str(), "Ada L");
    // A conflict inside a transaction is the same typed error as outside.
    let conflict = db
        .transaction(|repos: Rc<dyn Repos>| {
            Box::pin(
                async move { repos.users().create(&new_user("ada@example.com", "Ada 2")).await.map(drop) },
            )
        })
        .await;
    assert!(matches!(conflict, Err(RepoError::Conflict("email"))), "{conflict:?}");
}

async fn contention_is_retried_a_bounded_number_of_times_and_counted(db: Rc<Database>) {
    // Loses once, then succeeds: run twice, committed once.
    let runs = std::cell::Cell::new(0);
    let user = db
        .transaction(|repos: Rc<dyn Repos>| {
            let runs = &runs;
            Box::pin(async move {
                runs.set(runs.get() + 1);
                let user = repos.users().create(&new_user("ada@example.com", "Ada")).await?;
                if runs.get() == 1 {
                    return Err(RepoError::Contention("lost to a concurrent transaction".into()));
                }
                Ok(user)
            })
        })
        .await
        .unwrap();
    assert_eq!(runs.get(), 2);
    assert_eq!(counter(&db, "db_transaction_retries"), 1);
    assert!(db.users.find(user.id, UserFields::ALL).await.unwrap().is_some());
    // Always losing: given up after TX_ATTEMPTS runs, as unavailable.
    let runs = std::cell::Cell::new(0);
    let outcome: Result<(), RepoError> = db
        .transaction(|_: Rc<dyn Repos>| {
            let runs = &runs;
            Box::pin(async move {
                runs.set(runs.get() + 1);
                Err(RepoError::Contention("always".into()))
            })
        })
        .await;
    assert!(matches!(outcome, Err(RepoError::Unavailable(_))), "{outcome:?}");
    assert_eq!(runs.get(), TX_ATTEMPTS);
}

async fn a_dropped_transaction_is_rolled_back_and_frees_its_connection(db: Rc<Database>) {
    // A unit of work abandoned halfway, as when its request is cancelled.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(200),
        db.transaction(|repos: Rc<dyn Repos>| {
            Box::pin(async move {
                repos.users().create(&new_user("ada@example.com", "Ada")).await?;
                std::future::pending::<()>().await;
                Ok(())
            })
        }),
    )
    .await;
    assert!(abandoned.is_err());
    // Its write is gone, and its locks with it: the same insert succeeds
    // (on SQLite it would wait for the write lock and time out otherwise).
    let user = db
        .transaction(|repos: Rc<dyn Repos>| {
            Box::pin(async move { repos.users().create(&new_user("ada@example.com", "Ada")).await })
        })
        .await
        .unwrap();
    assert_eq!(user.email.as_str(), "ada@example.com");
}

async fn migrate_concurrently(url: String) {
    let (a, b, c, d) =
        tokio::join!(migrate::run(&url), migrate::run(&url), migrate::run(&url), migrate::run(&url));
    let applied: usize = [a, b, c, d].into_iter().map(|r| r.expect("every instance succeeds").len()).sum();
    assert_eq!(applied, 1, "the users migration is applied by exactly one instance");
    let status = migrate::status(&url).await.unwrap();
    assert!(status.iter().all(|s| s.applied_at.is_some()), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_do_not_race_on_sqlite() {
    let dir = TempDir::new("migrate");
    migrate_concurrently(format!("sqlite://{}", dir.path().join("m.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_do_not_race_on_postgres() {
    let Some(db) = PgDatabase::create().await else { return };
    migrate_concurrently(db.url.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_do_not_race_on_mariadb() {
    let Some(db) = MyDatabase::create().await else { return };
    migrate_concurrently(db.url.clone()).await;
}
