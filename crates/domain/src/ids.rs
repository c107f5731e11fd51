//! Typed identifiers: UUIDv7, so that ids sort by creation time.

use std::fmt;

use crate::error::{Result, invalid};

/// A fresh time-ordered id.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

macro_rules! id_type {
    ($name:ident, $field:literal) => {
        #[doc = concat!("The id of one ", $field, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(new_id())
            }

            /// Parses an id sent by a caller.
            pub fn parse(s: &str) -> Result<Self> {
                uuid::Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|_| invalid($field, format!("{s:?} is not a valid id")))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(IncidentId, "incident_id");
id_type!(AlertId, "alert_id");
id_type!(RunId, "run_id");
id_type!(EventId, "event_id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = IncidentId::new();
        assert_eq!(IncidentId::parse(&id.to_string()).unwrap(), id);
        let err = IncidentId::parse("nope").unwrap_err();
        assert!(err.to_string().contains("incident_id"), "{err}");
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = RunId::new();
        let b = RunId::new();
        assert!(a < b);
    }
}
