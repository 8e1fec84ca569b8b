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
        stream_connections: 2,
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
    stock_changes_are_conditional_and_summed_in_the_database,
    products_list_in_pages_with_only_the_asked_for_columns,
    idempotency_keys_claim_replay_expire_and_release,
    orders_round_trip_and_change_state_once,
    sessions_rotate_once_revoke_by_family_and_deleted_users_vanish,
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
                Ok::<_, RepoError>((ada.id, bob.id))
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
                Ok::<_, RepoError>(())
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
    assert_eq!(applied, migrate::MIGRATIONS.len(), "each migration is applied by exactly one instance");
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

// --- The resources' repositories, on the portable statement layer.

use std::time::{SystemTime, UNIX_EPOCH};

use drover::domain::money::{Currency, Money};
use drover::resources::idempotency::{self, Claim, Fingerprint, IdempotencyKey, StoredResponse};
use drover::resources::orders::{
    Order, OrderId, OrderLine, OrderQuery, OrderRepo, OrderStatus, SqlOrderRepo,
};
use drover::resources::products::repo::StockChange;
use drover::resources::products::{
    NewProduct, ProductFields, ProductId, ProductName, ProductQuery, ProductRepo, Sku, SqlProductRepo,
};

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::parse("EUR").unwrap())
}

fn new_product(sku: &str, amount: i64, stock: i64) -> NewProduct {
    NewProduct {
        sku: Sku::parse(sku).unwrap(),
        name: ProductName::parse(sku).unwrap(),
        price: eur(amount),
        stock,
    }
}

async fn stock_changes_are_conditional_and_summed_in_the_database(db: Rc<Database>) {
    let repo = SqlProductRepo::new(db.sql());
    let now = at(1_700_000_000_000);
    let p = repo.create(&new_product("A-1", 250, 5), now).await.unwrap();
    assert!(matches!(repo.create(&new_product("A-1", 1, 1), now).await, Err(RepoError::Conflict("sku"))));
    assert_eq!(repo.reserve(p.id, 3, now).await.unwrap(), StockChange::Done);
    assert_eq!(repo.reserve(p.id, 3, now).await.unwrap(), StockChange::Short);
    // on_hand may not fall below what is reserved.
    assert_eq!(repo.adjust(p.id, -3, now).await.unwrap(), StockChange::Short);
    assert_eq!(repo.adjust(p.id, -2, now).await.unwrap(), StockChange::Done);
    assert_eq!(repo.release(p.id, 1, now).await.unwrap(), StockChange::Done);
    assert_eq!(repo.ship(p.id, 2, now).await.unwrap(), StockChange::Done);
    assert_eq!(repo.ship(p.id, 1, now).await.unwrap(), StockChange::Short);
    let read = repo.find(p.id).await.unwrap().unwrap();
    assert_eq!((read.stock.on_hand, read.stock.reserved), (1, 0));
    assert_eq!(read.created_at, now, "times round-trip to the millisecond");
    assert_eq!(repo.reserve(ProductId(987_654), 1, now).await.unwrap(), StockChange::NoSuchProduct);
    repo.create(&new_product("B-1", 100, 10), now).await.unwrap();
    let usd =
        NewProduct { price: Money::new(7, Currency::parse("USD").unwrap()), ..new_product("C-1", 0, 3) };
    repo.create(&usd, now).await.unwrap();
    let lines = repo.inventory().await.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0].currency.as_str(), lines[0].products, lines[0].on_hand), ("EUR", 2, 11));
    assert_eq!(lines[0].stock_value, 250 + 10 * 100);
    assert_eq!((lines[1].currency.as_str(), lines[1].stock_value), ("USD", 21));
}

async fn products_list_in_pages_with_only_the_asked_for_columns(db: Rc<Database>) {
    let repo = SqlProductRepo::new(db.sql());
    let now = at(1_700_000_000_000);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(repo.create(&new_product(&format!("P-{n}"), 10, n), now).await.unwrap().id);
    }
    let page = |after, fields| ProductQuery { after, limit: 2, sku: None, fields };
    let first = repo.list(&page(None, ProductFields::ALL)).await.unwrap();
    assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[..2]);
    let sparse = ProductFields::parse_list("sku,stock").unwrap();
    let second = repo.list(&page(Some(ids[1]), sparse)).await.unwrap();
    assert_eq!(second[0].0, ids[2]);
    let view = &second[0].1;
    assert_eq!(view.sku.as_ref().map(Sku::as_str), Some("P-2"));
    assert_eq!(view.stock.map(|s| s.on_hand), Some(2));
    assert!(view.id.is_none() && view.name.is_none() && view.price.is_none(), "{view:?}");
    let by_sku = ProductQuery { sku: Some(Sku::parse("P-4").unwrap()), ..page(None, ProductFields::ALL) };
    let found = repo.list(&by_sku).await.unwrap();
    assert_eq!(found.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![ids[4]]);
    assert_eq!(repo.find_many(&[ids[3], ProductId(987_654), ids[0]]).await.unwrap().len(), 2);
}

async fn idempotency_keys_claim_replay_expire_and_release(db: Rc<Database>) {
    let sql = db.sql();
    let user = db.users.create(&new_user("ada@example.com", "Ada")).await.unwrap().id;
    let key = IdempotencyKey::parse("key-1").unwrap();
    let (fp, other) = (Fingerprint::of("request a"), Fingerprint::of("request b"));
    let t0 = at(1_700_000_000_000);
    let later = |secs: u64| t0 + Duration::from_secs(secs);
    let claim = |key: &IdempotencyKey, fp: &Fingerprint, when: SystemTime| {
        let (sql, key, fp) = (sql.clone(), key.clone(), fp.clone());
        async move { idempotency::claim(&*sql, user, &key, &fp, when).await.unwrap() }
    };
    let token = |claim: Claim| match claim {
        Claim::Claimed(token) => token,
        other => panic!("expected a claim, got {other:?}"),
    };
    let first = token(claim(&key, &fp, t0).await);
    assert_eq!(claim(&key, &fp, later(1)).await, Claim::InProgress);
    assert_eq!(claim(&key, &other, later(1)).await, Claim::Reused);
    // Keys compare exactly, and belong to one user.
    let upper = IdempotencyKey::parse("KEY-1").unwrap();
    token(claim(&upper, &fp, later(1)).await);
    let stored = StoredResponse { status: 201, body: "{\"id\":1}".into() };
    assert!(idempotency::complete(&*sql, user, &key, first, &stored).await.unwrap());
    assert_eq!(claim(&key, &fp, later(2)).await, Claim::Replay(stored.clone()));
    // After 24 hours the key is new again.
    let day = later(24 * 3600);
    let dead = token(claim(&key, &other, day).await);
    // A claim whose request died is taken over once stale, by one claimant,
    // and the old claim can no longer store an outcome or release the key.
    let taker = token(claim(&key, &other, day + Duration::from_secs(61)).await);
    assert_eq!(claim(&key, &other, day + Duration::from_secs(62)).await, Claim::InProgress);
    assert!(!idempotency::complete(&*sql, user, &key, dead, &stored).await.unwrap());
    idempotency::release(&*sql, user, &key, dead).await.unwrap();
    assert_eq!(claim(&key, &other, day + Duration::from_secs(62)).await, Claim::InProgress);
    // A released claim (a 5xx) can be claimed again at once.
    idempotency::release(&*sql, user, &key, taker).await.unwrap();
    token(claim(&key, &fp, day + Duration::from_secs(63)).await);
}

async fn orders_round_trip_and_change_state_once(db: Rc<Database>) {
    let user = db.users.create(&new_user("ada@example.com", "Ada")).await.unwrap().id;
    let now = at(1_700_000_000_000);
    let product = SqlProductRepo::new(db.sql()).create(&new_product("A-1", 250, 5), now).await.unwrap();
    let repo = SqlOrderRepo::new(db.sql());
    let line = OrderLine {
        product: product.id,
        sku: "A-1".into(),
        name: "A-1".into(),
        quantity: 2,
        unit_price: eur(250),
        total: eur(500),
    };
    let mut order = Order {
        id: OrderId(0),
        user,
        status: OrderStatus::Placed,
        total: eur(500),
        lines: vec![line],
        created_at: now,
        updated_at: now,
    };
    order.id = repo.insert(&order).await.unwrap();
    assert_eq!(repo.find(order.id).await.unwrap().as_ref(), Some(&order));
    let second = repo.insert(&order).await.unwrap();
    let newest_first = repo.list(&OrderQuery { user: Some(user), before: None, limit: 10 }).await.unwrap();
    assert_eq!(newest_first.iter().map(|o| o.id).collect::<Vec<_>>(), vec![second, order.id]);
    let older = repo.list(&OrderQuery { user: None, before: Some(second), limit: 10 }).await.unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].lines.len(), 1);
    assert!(repo.transition(order.id, OrderStatus::Placed, OrderStatus::Paid, now).await.unwrap());
    assert!(!repo.transition(order.id, OrderStatus::Placed, OrderStatus::Cancelled, now).await.unwrap());
    assert_eq!(repo.find(order.id).await.unwrap().unwrap().status, OrderStatus::Paid);
    assert!(repo.find(OrderId(987_654)).await.unwrap().is_none());
}

async fn sessions_rotate_once_revoke_by_family_and_deleted_users_vanish(db: Rc<Database>) {
    use drover::resources::sessions::{SessionRepo, SqlSessionRepo, Standing};
    let users = &db.users;
    let ada = users.create(&new_user("ada@example.com", "Ada")).await.unwrap();
    let repo = SqlSessionRepo::new(db.sql());
    assert_eq!(repo.standing(ada.id).await.unwrap(), Some(Standing { role: Role::User, token_version: 0 }));
    assert_eq!(repo.password_hash(ada.id).await.unwrap().as_deref(), Some("hash-of-ada@example.com"));

    // A password change raises the version; a patch without it does not.
    let patch = UserPatch { password_hash: Some("new".into()), revoke_tokens: true, ..UserPatch::default() };
    users.update(ada.id, &patch).await.unwrap().unwrap();
    let patch = UserPatch { name: Some(UserName::parse("Ada L").unwrap()), ..UserPatch::default() };
    users.update(ada.id, &patch).await.unwrap().unwrap();
    assert_eq!(repo.standing(ada.id).await.unwrap().unwrap().token_version, 1);
    let credentials = users.credentials(&UserEmail::parse("ada@example.com").unwrap()).await.unwrap();
    assert_eq!(credentials.unwrap().token_version, 1);

    // A token is used once; its family is revoked as a whole.
    let (now, later) = (at(1_000_000), at(2_000_000));
    repo.insert_refresh("h1", "fam", ada.id, 1, now, later).await.unwrap();
    repo.insert_refresh("h2", "fam", ada.id, 1, now, later).await.unwrap();
    repo.insert_refresh("other", "fam2", ada.id, 1, now, later).await.unwrap();
    assert!(repo.use_refresh("h1", now).await.unwrap());
    assert!(!repo.use_refresh("h1", now).await.unwrap(), "a token is exchanged once");
    assert!(!repo.use_refresh("h2", later).await.unwrap(), "not after it expired");
    let record = repo.find_refresh("h1").await.unwrap().unwrap();
    assert_eq!(
        (record.family.as_str(), record.user, record.used, record.revoked),
        ("fam", ada.id, true, false)
    );
    assert_eq!(repo.revoke_family("fam", now).await.unwrap(), 2);
    assert!(repo.find_refresh("h2").await.unwrap().unwrap().revoked);
    assert!(!repo.find_refresh("other").await.unwrap().unwrap().revoked, "another family is untouched");
    assert_eq!(repo.find_refresh("nope").await.unwrap(), None);

    // A deleted user is gone for every read, its email free again.
    assert!(repo.delete_user(ada.id, now).await.unwrap());
    assert!(!repo.delete_user(ada.id, now).await.unwrap(), "deleted once");
    assert_eq!(repo.standing(ada.id).await.unwrap(), None);
    assert_eq!(repo.password_hash(ada.id).await.unwrap(), None);
    assert_eq!(users.find(ada.id, UserFields::ALL).await.unwrap(), None);
    let email = UserEmail::parse("ada@example.com").unwrap();
    assert!(users.credentials(&email).await.unwrap().is_none());
    assert!(users
        .update(ada.id, &UserPatch { revoke_tokens: true, ..UserPatch::default() })
        .await
        .unwrap()
        .is_none());
    assert_eq!(repo.revoke_user(ada.id, now).await.unwrap(), 1, "the other family's token");
    users.create(&new_user("ada@example.com", "Ada again")).await.expect("the email is free again");
}
