//! The rules of orders: all lines reserved in one transaction or none,
//! totals computed here from the prices at order time, the lifecycle and
//! its stock effects, and who may see and change what.

use std::rc::Rc;

use super::{Order, OrderId, OrderItem, OrderLine, OrderQuery, OrderRepo, OrderStatus, SqlOrderRepo};
use super::{MAX_ITEMS, MAX_QUANTITY};
use crate::domain::money::Money;
use crate::domain::time::Clock;
use crate::domain::{Invalid, Role, UserId};
use crate::repo::sql;
use crate::repo::{Database, Repos};
use crate::resources::events::{self, Event, EventLine};
use crate::resources::idempotency::{self, ClaimToken, IdempotencyKey, StoredResponse};
use crate::resources::products::repo::{Movement, StockChange};
use crate::resources::products::service::{admin_only, repo as products};
use crate::resources::products::{ProductId, ProductRepo, ProductService};
use crate::service::{Principal, ServiceError};

fn orders(repos: &dyn Repos) -> SqlOrderRepo {
    SqlOrderRepo::new(repos.sql())
}

/// How to store the answer to an idempotent request, inside the
/// transaction that places the order: the key, and how the caller renders
/// the placed order (the service knows no HTTP).
pub struct Receipt<'a> {
    pub key: &'a IdempotencyKey,
    /// The claim the request holds on the key.
    pub token: ClaimToken,
    pub render: &'a dyn Fn(&Order) -> StoredResponse,
}

#[derive(Clone)]
pub struct OrderService {
    db: Rc<Database>,
    products: ProductService,
    clock: Rc<dyn Clock>,
}

/// Checks what a customer asked for: 1 to [`MAX_ITEMS`] lines, each
/// product once, 1 to [`MAX_QUANTITY`] units each.
pub fn check_items(items: &[OrderItem]) -> Result<(), Invalid> {
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(Invalid::new("items", format!("must have 1 to {MAX_ITEMS} lines")));
    }
    for (i, item) in items.iter().enumerate() {
        if item.product.0 <= 0 {
            return Err(Invalid::new("items", format!("line {i}: product_id must be a positive integer")));
        }
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(Invalid::new("items", format!("line {i}: quantity must be 1 to {MAX_QUANTITY}")));
        }
        if items[..i].iter().any(|earlier| earlier.product == item.product) {
            return Err(Invalid::new(
                "items",
                format!("line {i}: product {} is on an earlier line; order it once", item.product.0),
            ));
        }
    }
    Ok(())
}

impl OrderService {
    pub fn new(db: Rc<Database>, products: ProductService, clock: Rc<dyn Clock>) -> Self {
        Self { db, products, clock }
    }

    /// Places an order for `by`: reserves every line's units, or none
    /// ([`ServiceError::OutOfStock`] names every product short of stock).
    /// With a receipt, the answer is stored under its key in the same
    /// transaction.
    pub async fn place(
        &self,
        by: Principal,
        items: &[OrderItem],
        receipt: Option<Receipt<'_>>,
    ) -> Result<Order, ServiceError> {
        check_items(items)?;
        // Rows are locked in product order, so two orders for the same
        // products cannot deadlock.
        let mut items = items.to_vec();
        items.sort_by_key(|item| item.product);
        let (items, receipt) = (&items, &receipt);
        let now = sql::from_millis(sql::millis(self.clock.now()));
        let placed = self
            .db
            .transaction(|repos| {
                Box::pin(async move {
                    let products_repo = products(&*repos);
                    let ids: Vec<ProductId> = items.iter().map(|item| item.product).collect();
                    let found = products_repo.find_many(&ids).await?;
                    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|p| p.id == **id)) {
                        return Err(
                            Invalid::new("items", format!("product {} does not exist", missing.0)).into()
                        );
                    }
                    let currency = found[0].price.currency;
                    if let Some(other) = found.iter().find(|p| p.price.currency != currency) {
                        return Err(ServiceError::MixedCurrencies(format!(
                            "product {} is priced in {} and product {} in {}",
                            found[0].id.0, currency, other.id.0, other.price.currency
                        )));
                    }
                    let mut short = Vec::new();
                    for item in items {
                        match products_repo.reserve(item.product, item.quantity, now).await? {
                            StockChange::Done => {}
                            StockChange::Short | StockChange::NoSuchProduct => short.push(item.product.0),
                        }
                    }
                    if !short.is_empty() {
                        // Rolls back the reservations made before.
                        return Err(ServiceError::OutOfStock(short));
                    }
                    let too_large = || Invalid::new("items", "the order's total is too large");
                    let lines: Vec<OrderLine> = items
                        .iter()
                        .zip(&found)
                        .map(|(item, product)| {
                            Ok(OrderLine {
                                product: product.id,
                                sku: product.sku.as_str().to_owned(),
                                name: product.name.as_str().to_owned(),
                                quantity: item.quantity,
                                unit_price: product.price,
                                total: product.price.times(item.quantity).map_err(|_| too_large())?,
                            })
                        })
                        .collect::<Result<_, ServiceError>>()?;
                    let total =
                        Money::sum(currency, lines.iter().map(|l| l.total)).map_err(|_| too_large())?;
                    let mut order = Order {
                        id: OrderId(0),
                        user: by.user,
                        status: OrderStatus::Placed,
                        total,
                        lines,
                        created_at: now,
                        updated_at: now,
                    };
                    order.id = orders(&*repos).insert(&order).await?;
                    let placed = Event::OrderPlaced {
                        order_id: order.id.0,
                        user_id: order.user.0,
                        total_amount: order.total.amount,
                        currency: order.total.currency.code().to_owned(),
                        lines: order
                            .lines
                            .iter()
                            .map(|l| EventLine { product_id: l.product.0, quantity: l.quantity })
                            .collect(),
                    };
                    events::record(&*repos.sql(), &placed, now).await?;
                    if let Some(receipt) = receipt {
                        let response = (receipt.render)(&order);
                        let sql = repos.sql();
                        if !idempotency::complete(&*sql, by.user, receipt.key, receipt.token, &response)
                            .await?
                        {
                            // The claim was taken over by a retry (this
                            // request looked dead): that one places the
                            // order, this one rolls back.
                            return Err(ServiceError::RequestInProgress);
                        }
                    }
                    Ok(order)
                })
            })
            .await;
        if placed.is_ok() {
            self.products.stock_changed().await;
        }
        placed
    }

    /// An order, as `viewer` may see it: their own, or any for an admin.
    /// Others' are not found, so ids cannot be probed.
    pub async fn get(&self, viewer: Principal, id: OrderId) -> Result<Order, ServiceError> {
        let order = orders(&*self.db).find(id).await?.ok_or(ServiceError::NotFound)?;
        visible(viewer, &order)?;
        Ok(order)
    }

    /// A page of orders, newest first: the viewer's own, or for an admin
    /// everyone's (or one user's).
    pub async fn list(
        &self,
        viewer: Principal,
        user: Option<UserId>,
        before: Option<OrderId>,
        limit: i64,
    ) -> Result<(Vec<Order>, Option<OrderId>), ServiceError> {
        let user = if viewer.role == Role::Admin { user } else { Some(viewer.user) };
        let query = OrderQuery { user, before, limit: limit + 1 };
        let mut page = orders(&*self.db).list(&query).await?;
        let more = page.len() as i64 > limit;
        page.truncate(usize::try_from(limit).unwrap_or(0));
        let next = if more { page.last().map(|o| o.id) } else { None };
        Ok((page, next))
    }

    /// `placed → paid` (admin).
    pub async fn pay(&self, by: Principal, id: OrderId) -> Result<Order, ServiceError> {
        admin_only(by)?;
        self.change(by, id, OrderStatus::Paid).await
    }

    /// `paid → shipped` (admin): the reserved units leave the warehouse.
    pub async fn ship(&self, by: Principal, id: OrderId) -> Result<Order, ServiceError> {
        admin_only(by)?;
        self.change(by, id, OrderStatus::Shipped).await
    }

    /// `placed → cancelled` (the customer, or an admin): the reserved
    /// units are available again.
    pub async fn cancel(&self, by: Principal, id: OrderId) -> Result<Order, ServiceError> {
        self.change(by, id, OrderStatus::Cancelled).await
    }

    async fn change(&self, by: Principal, id: OrderId, to: OrderStatus) -> Result<Order, ServiceError> {
        let now = sql::from_millis(sql::millis(self.clock.now()));
        let changed = self
            .db
            .transaction(|repos| {
                Box::pin(async move {
                    let orders_repo = orders(&*repos);
                    let mut order = orders_repo.find(id).await?.ok_or(ServiceError::NotFound)?;
                    visible(by, &order)?;
                    let from = order.status;
                    if !from.can_become(to) || !orders_repo.transition(id, from, to, now).await? {
                        // Re-read: a concurrent change may have moved it.
                        let current = orders_repo.find(id).await?.map_or(from, |o| o.status);
                        return Err(ServiceError::InvalidTransition {
                            from: current.as_str(),
                            to: to.as_str(),
                        });
                    }
                    let products_repo = products(&*repos);
                    for line in &order.lines {
                        let done = match to {
                            OrderStatus::Cancelled => {
                                products_repo.release(line.product, line.quantity, now).await?
                            }
                            OrderStatus::Shipped => {
                                let movement = Movement {
                                    product: line.product,
                                    delta: -line.quantity,
                                    reason: format!("order {} shipped", id.0),
                                    user_id: Some(by.user.0),
                                    order_id: Some(id.0),
                                };
                                // The row lock first: the ledger row's foreign
                                // key check would take a shared lock on the
                                // product, and two shipments upgrading it
                                // would deadlock (InnoDB).
                                let shipped = products_repo.ship(line.product, line.quantity, now).await?;
                                products_repo.record_movement(&movement, now).await?;
                                shipped
                            }
                            OrderStatus::Placed | OrderStatus::Paid => StockChange::Done,
                        };
                        if done != StockChange::Done {
                            return Err(ServiceError::Internal(
                                format!(
                                    "order {} line for product {} holds no reservation",
                                    id.0, line.product.0
                                )
                                .into(),
                            ));
                        }
                    }
                    let event = match to {
                        OrderStatus::Cancelled => {
                            Some(Event::OrderCancelled { order_id: id.0, user_id: order.user.0 })
                        }
                        OrderStatus::Shipped => {
                            Some(Event::OrderShipped { order_id: id.0, user_id: order.user.0 })
                        }
                        OrderStatus::Placed | OrderStatus::Paid => None,
                    };
                    if let Some(event) = event {
                        events::record(&*repos.sql(), &event, now).await?;
                    }
                    order.status = to;
                    order.updated_at = now;
                    Ok(order)
                })
            })
            .await;
        if changed.is_ok() && matches!(to, OrderStatus::Cancelled | OrderStatus::Shipped) {
            self.products.stock_changed().await;
        }
        changed
    }
}

/// Owners and admins see an order; to anyone else it does not exist.
fn visible(viewer: Principal, order: &Order) -> Result<(), ServiceError> {
    if order.user == viewer.user || viewer.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(product: i64, quantity: i64) -> OrderItem {
        OrderItem { product: ProductId(product), quantity }
    }

    #[test]
    fn items_are_checked_before_any_storage() {
        assert!(check_items(&[item(1, 1), item(2, 5)]).is_ok());
        assert!(check_items(&[]).is_err());
        assert!(check_items(&[item(1, 0)]).is_err());
        assert!(check_items(&[item(0, 1)]).is_err());
        assert!(check_items(&[item(1, MAX_QUANTITY + 1)]).is_err());
        assert!(check_items(&[item(1, 1), item(1, 2)]).is_err());
    }

    #[test]
    fn the_lifecycle_allows_only_its_transitions() {
        use OrderStatus::*;
        for (from, to, ok) in [
            (Placed, Paid, true),
            (Paid, Shipped, true),
            (Placed, Cancelled, true),
            (Placed, Shipped, false),
            (Paid, Cancelled, false),
            (Shipped, Cancelled, false),
            (Cancelled, Paid, false),
            (Shipped, Paid, false),
        ] {
            assert_eq!(from.can_become(to), ok, "{from:?} -> {to:?}");
        }
    }
}
