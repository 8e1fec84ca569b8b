//! The upgrade hand-over (SIGUSR2): an upgrading supervisor execs its
//! successor with every fd it must keep open and a spec naming them,
//! `--upgrade-fds 3=drover-slot-0,4=drover-control,...,generation=N`. The
//! same slot names label sockets kept in systemd's fd store.
//!
//! This is the spec only; adopting the fds is the supervisor's business.

use std::fmt;

/// The flag the spec is passed with.
pub const FLAG: &str = "--upgrade-fds";
/// The prefix of a slot's listening socket name: `drover-slot-0`, ...
pub const SLOT_PREFIX: &str = "drover-slot-";
/// The channel on which the successor says it is ready.
pub const HANDSHAKE: &str = "drover-handshake";
/// The control socket's listener.
pub const CONTROL: &str = "drover-control";
/// The admin listener.
pub const ADMIN: &str = "drover-admin";

/// What one passed fd is. Serialised as its name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum FdName {
    /// A listening socket of this slot.
    Slot(usize),
    Control,
    Admin,
    Handshake,
}

impl FdName {
    /// Reads a name; `None` for one this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            HANDSHAKE => Some(FdName::Handshake),
            CONTROL => Some(FdName::Control),
            ADMIN => Some(FdName::Admin),
            _ => name.strip_prefix(SLOT_PREFIX)?.parse().ok().map(FdName::Slot),
        }
    }
}

impl From<FdName> for String {
    fn from(name: FdName) -> Self {
        name.to_string()
    }
}

impl TryFrom<String> for FdName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        FdName::parse(&name).ok_or_else(|| format!("unknown fd name {name:?}"))
    }
}

impl fmt::Display for FdName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdName::Slot(slot) => write!(f, "{SLOT_PREFIX}{slot}"),
            FdName::Control => f.write_str(CONTROL),
            FdName::Admin => f.write_str(ADMIN),
            FdName::Handshake => f.write_str(HANDSHAKE),
        }
    }
}

/// The parsed `--upgrade-fds` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Each fd number with its name, in the order given; every fd once.
    pub fds: Vec<(i32, FdName)>,
    /// The generation the successor's workers start at.
    pub generation: u64,
}

impl Spec {
    /// Parses a spec. Checks its shape only (numbers, known names, no fd
    /// twice, none of stdio), not that the fds are open.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let invalid = |what: &str| format!("{FLAG}: {what}");
        let mut parsed = Spec { fds: Vec::new(), generation: 1 };
        for item in spec.split(',').filter(|s| !s.is_empty()) {
            let (key, name) = item.split_once('=').ok_or_else(|| invalid(item))?;
            if key == "generation" {
                parsed.generation = name.parse().map_err(|_| invalid(item))?;
                continue;
            }
            let fd: i32 = key.parse().map_err(|_| invalid(item))?;
            if fd < 3 || parsed.fds.iter().any(|(seen, _)| *seen == fd) {
                return Err(invalid(&format!("fd {fd} is not a unique, non-stdio fd")));
            }
            let name = FdName::parse(name).ok_or_else(|| invalid(&format!("unknown name {name:?}")))?;
            parsed.fds.push((fd, name));
        }
        Ok(parsed)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (fd, name) in &self.fds {
            write!(f, "{fd}={name},")?;
        }
        write!(f, "generation={}", self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips() {
        let spec = Spec {
            fds: vec![
                (3, FdName::Slot(0)),
                (4, FdName::Slot(1)),
                (5, FdName::Control),
                (6, FdName::Admin),
                (7, FdName::Handshake),
            ],
            generation: 4,
        };
        let text = spec.to_string();
        assert_eq!(
            text,
            "3=drover-slot-0,4=drover-slot-1,5=drover-control,6=drover-admin,7=drover-handshake,generation=4"
        );
        assert_eq!(Spec::parse(&text).unwrap(), spec);
    }

    #[test]
    fn a_bad_spec_names_what_is_wrong() {
        for (spec, expected) in [
            ("3=drover-slot-0,3=drover-control", "fd 3"),
            ("2=drover-control", "fd 2"),
            ("3=mystery", "unknown name \"mystery\""),
            ("x=drover-control", "x=drover-control"),
            ("generation=soon", "generation=soon"),
        ] {
            let error = Spec::parse(spec).unwrap_err();
            assert!(error.starts_with(FLAG) && error.contains(expected), "{spec}: {error}");
        }
        assert_eq!(Spec::parse("").unwrap().generation, 1, "generation 1 unless told");
    }
}
