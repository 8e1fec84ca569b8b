//! The catalog's rules: who may change it, stock adjustments recorded in
//! the ledger in the same transaction as the change, and the inventory
//! summary, cached and dropped on every stock change.

use std::rc::Rc;

use serde::{Deserialize, Serialize};

use super::repo::{Movement, StockChange};
use super::{
    InventoryLine, NewProduct, Product, ProductId, ProductPatch, ProductQuery, ProductRepo, ProductView,
    SqlProductRepo, StockAdjustment,
};
use crate::cache::{Cache, Cached};
use crate::domain::time::Clock;
use crate::domain::{Invalid, Role};
use crate::repo::{Database, Repos};
use crate::service::{Principal, ServiceError};

/// The products of one store.
#[derive(Clone)]
pub struct ProductService {
    db: Rc<Database>,
    cache: Cache,
    clock: Rc<dyn Clock>,
}

/// A page of products and the cursor of the next one, if there is one.
pub struct ProductPage {
    pub items: Vec<ProductView>,
    pub next: Option<ProductId>,
}

/// Refuses anyone but an administrator.
pub fn admin_only(principal: Principal) -> Result<(), ServiceError> {
    if principal.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden)
    }
}

/// The repository over the pool, or over a transaction's connection.
pub fn repo(repos: &dyn Repos) -> SqlProductRepo {
    SqlProductRepo::new(repos.sql())
}

impl ProductService {
    pub fn new(db: Rc<Database>, cache: Cache, clock: Rc<dyn Clock>) -> Self {
        Self { db, cache, clock }
    }

    pub async fn create(&self, by: Principal, product: NewProduct) -> Result<Product, ServiceError> {
        admin_only(by)?;
        let created = repo(&*self.db).create(&product, self.clock.now()).await;
        self.stock_changed().await;
        Ok(created?)
    }

    pub async fn update(
        &self,
        by: Principal,
        id: ProductId,
        patch: ProductPatch,
    ) -> Result<Product, ServiceError> {
        admin_only(by)?;
        if patch.sku.is_none() && patch.name.is_none() && patch.price.is_none() {
            return Err(Invalid::new("body", "change at least one of sku, name, price").into());
        }
        let updated = repo(&*self.db).update(id, &patch, self.clock.now()).await;
        // A price change changes the stock's value.
        self.stock_changed().await;
        updated?.ok_or(ServiceError::NotFound)
    }

    pub async fn get(&self, id: ProductId) -> Result<Product, ServiceError> {
        repo(&*self.db).find(id).await?.ok_or(ServiceError::NotFound)
    }

    /// A page of products in id order.
    pub async fn list(&self, query: ProductQuery) -> Result<ProductPage, ServiceError> {
        // One more than asked for tells whether there is a next page.
        let limit = query.limit;
        let mut rows = repo(&*self.db).list(&ProductQuery { limit: limit + 1, ..query }).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next = if more { rows.last().map(|(id, _)| *id) } else { None };
        Ok(ProductPage { items: rows.into_iter().map(|(_, view)| view).collect(), next })
    }

    /// Adds or removes stock by hand, recorded in the ledger; refused when
    /// it would leave fewer units than placed orders hold.
    pub async fn adjust(
        &self,
        by: Principal,
        id: ProductId,
        adjustment: StockAdjustment,
    ) -> Result<Product, ServiceError> {
        admin_only(by)?;
        let now = self.clock.now();
        let adjustment = &adjustment;
        let result = self
            .db
            .transaction(|repos| {
                Box::pin(async move {
                    let products = repo(&*repos);
                    match products.adjust(id, adjustment.delta, now).await? {
                        StockChange::Done => {}
                        StockChange::Short => return Err(ServiceError::StockReserved),
                        StockChange::NoSuchProduct => return Err(ServiceError::NotFound),
                    }
                    let movement = Movement {
                        product: id,
                        delta: adjustment.delta,
                        reason: adjustment.reason.clone(),
                        user_id: Some(by.user.0),
                        order_id: None,
                    };
                    products.record_movement(&movement, now).await?;
                    products.find(id).await?.ok_or(ServiceError::NotFound)
                })
            })
            .await;
        self.stock_changed().await;
        result
    }

    /// Per currency: products, units on hand, reserved and available, and
    /// the stock's value; from the cache when it has them.
    pub async fn inventory(&self, by: Principal) -> Result<Vec<InventoryLine>, ServiceError> {
        admin_only(by)?;
        let summary = self
            .cache
            .get_or_load(SUMMARY_ID, || async {
                let lines = repo(&*self.db).inventory().await?;
                Ok::<_, ServiceError>(Some(InventorySummary(lines)))
            })
            .await?;
        let mut lines = summary.map(|s| s.0).unwrap_or_default();
        // The sales counters change in job processes, which cannot reach
        // the HTTP workers' local caches: they are read fresh, not cached
        // with the stock (an admin-only route; one more small query).
        let sales = repo(&*self.db).units_ordered().await?;
        for line in &mut lines {
            line.units_ordered =
                sales.iter().find(|(c, _)| *c == line.currency).map_or(0, |(_, units)| *units);
        }
        Ok(lines)
    }

    /// Counts the lines of a placed order (event `event_id`) in the
    /// products' sales counters, once however often the event comes.
    pub async fn count_sales(&self, event_id: &str, lines: &[(ProductId, i64)]) -> Result<(), ServiceError> {
        let now = crate::repo::sql::from_millis(crate::repo::sql::millis(self.clock.now()));
        self.db
            .transaction(|repos| {
                Box::pin(async move {
                    if !crate::resources::events::handled_once(&*repos.sql(), SALES_HANDLER, event_id, now)
                        .await?
                    {
                        return Ok(false);
                    }
                    let products = repo(&*repos);
                    for (product, units) in lines {
                        products.count_sale(*product, *units).await?;
                    }
                    Ok::<_, ServiceError>(true)
                })
            })
            .await
            .map(drop)
    }

    /// Drops the cached inventory summary, everywhere: after every change
    /// of stock or price (orders call it too).
    pub async fn stock_changed(&self) {
        self.cache.invalidate::<InventorySummary>(SUMMARY_ID).await;
    }
}

/// The one inventory summary's cache id.
const SUMMARY_ID: &str = "all";

/// The handler name the sales counters' events are recorded under.
pub const SALES_HANDLER: &str = "sales";

/// The inventory summary as the cache holds it.
struct InventorySummary(Vec<InventoryLine>);

#[derive(Serialize, Deserialize)]
struct StoredLine {
    currency: String,
    products: i64,
    on_hand: i64,
    reserved: i64,
    stock_value: i64,
}

impl Cached for InventorySummary {
    const KIND: &'static str = "inventory:v1";

    fn encode(&self) -> Vec<u8> {
        let stored: Vec<StoredLine> = self
            .0
            .iter()
            .map(|l| StoredLine {
                currency: l.currency.clone(),
                products: l.products,
                on_hand: l.on_hand,
                reserved: l.reserved,
                stock_value: l.stock_value,
            })
            .collect();
        postcard::to_allocvec(&stored).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let stored: Vec<StoredLine> = postcard::from_bytes(bytes).ok()?;
        Some(InventorySummary(
            stored
                .into_iter()
                .map(|s| InventoryLine {
                    currency: s.currency,
                    products: s.products,
                    on_hand: s.on_hand,
                    reserved: s.reserved,
                    stock_value: s.stock_value,
                    units_ordered: 0,
                })
                .collect(),
        ))
    }
}
