//! The business resources, one folder each: its domain types (`mod.rs`),
//! its repository (`repo.rs`: a trait, and one implementation for every
//! backend on the portable statement layer, [`crate::repo::sql`]), its
//! service (`service.rs`: the rules, no HTTP types, callable from the CLI
//! and jobs) and its routes (`http.rs`). Adding one is a folder here plus
//! a line each in the router, the services and the migration list.

pub mod events;
pub mod files;
pub mod idempotency;
pub mod invoices;
pub mod notifications;
pub mod orders;
pub mod plans;
pub mod products;
pub mod reports;
pub mod sessions;
pub mod subscriptions;
pub mod tfb;

/// Keyset pagination: at most this many items per page.
pub const MAX_PAGE: i64 = 100;
/// And this many when `?limit=` is absent.
pub const DEFAULT_PAGE: i64 = 20;

/// An opaque page cursor: the last id of the page, so the next page starts
/// after it (`WHERE id > ?`), however many rows were added or removed
/// meanwhile. Encoded so that clients do not build them.
pub fn cursor(last_id: i64) -> String {
    format!("c{:x}", last_id ^ CURSOR_MASK)
}

/// The id a cursor from [`cursor`] carries; `None` if it is not one.
pub fn parse_cursor(cursor: &str) -> Option<i64> {
    let hex = cursor.strip_prefix('c')?;
    let id = i64::from_str_radix(hex, 16).ok()? ^ CURSOR_MASK;
    (id > 0).then_some(id)
}

const CURSOR_MASK: i64 = 0x5a5a_5a5a;

#[cfg(test)]
mod tests {
    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        for id in [1, 42, 1 << 40] {
            assert_eq!(super::parse_cursor(&super::cursor(id)), Some(id));
        }
        for bad in ["", "c", "42", "czz", "c-1"] {
            assert_eq!(super::parse_cursor(bad), None, "{bad}");
        }
    }
}
