//! Deserialisers for the value forms the configuration accepts: durations as
//! strings ("500ms", "10s"), addresses as one string, a comma-separated
//! string or a list, and paths where "" means none.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserializer, Error};
use serde::Deserialize;

pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        D::Error::custom(format!("{text:?} is not a duration such as \"500ms\" or \"10s\" ({e})"))
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

pub fn addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(items) => items,
    };
    items
        .iter()
        .map(|item| {
            item.trim().parse().map_err(|_| {
                D::Error::custom(format!(
                    "{item:?} is not an address such as \"127.0.0.1:8080\" or \"[::1]:8080\""
                ))
            })
        })
        .collect()
}

/// Addresses or CIDR blocks (`10.0.0.0/8`, `::1`); an address alone is a
/// block of one.
pub fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(text) if text.trim().is_empty() => Vec::new(),
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(items) => items,
    };
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    D::Error::custom(format!(
                        "{item:?} is not an address or network such as \"10.0.0.0/8\" or \"::1\""
                    ))
                })
        })
        .collect()
}

pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(d)?;
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

pub fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        D::Error::custom(format!("{text:?} is not an address such as \"127.0.0.1:9090\" (or \"\" for none)"))
    })
}
