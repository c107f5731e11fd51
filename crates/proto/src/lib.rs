//! Generated Rust bindings of the `firebreak.v1` protobuf package, plus small conversions.

#![allow(unreachable_pub, clippy::all)]

/// Everything generated from `proto/firebreak/v1`.
pub mod v1 {
    tonic::include_proto!("firebreak.v1");

    /// Gives an event-kind enum its names: `ALL` (without `Unspecified`), `name` (used in the
    /// event's name field and subject) and `from_name`.
    macro_rules! named_kinds {
        ($kind:ident { $($variant:ident => $name:literal,)+ }) => {
            impl $kind {
                /// Every kind, in declaration order (without `Unspecified`).
                pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

                /// The kind's name: in the event's name field and its subject.
                pub fn name(self) -> &'static str {
                    match self {
                        Self::Unspecified => "unspecified",
                        $(Self::$variant => $name,)+
                    }
                }

                /// The kind a name stands for; `Unspecified` for a name no kind has.
                pub fn from_name(name: &str) -> Self {
                    Self::ALL
                        .iter()
                        .copied()
                        .find(|c| c.name() == name)
                        .unwrap_or(Self::Unspecified)
                }

                /// The kind `typed` holds, or (when it is unspecified or unknown, from a
                /// producer that predates the typed field) the kind `name` stands for.
                fn read(typed: i32, name: &str) -> Self {
                    match Self::try_from(typed) {
                        Ok(Self::Unspecified) | Err(_) => Self::from_name(name),
                        Ok(kind) => kind,
                    }
                }
            }
        };
    }

    // The subject (`incidents.<name>`), notification kinds (`incident.<name>`) and channel
    // filters use these names.
    named_kinds!(IncidentChange {
        Opened => "opened",
        AlertAttached => "alert_attached",
        SeverityChanged => "severity_changed",
        Acknowledged => "acknowledged",
        Resolved => "resolved",
        Closed => "closed",
        Escalated => "escalated",
        CategoryChanged => "category_changed",
        RolesChanged => "roles_changed",
        Mitigated => "mitigated",
        Reopened => "reopened",
        Merged => "merged",
        PriorityChanged => "priority_changed",
        ReviewChanged => "review_changed",
        StatusUpdated => "status_updated",
    });

    // The subject (`runbooks.<name>`) and the timeline entry (`runbook_<name>`) use these.
    named_kinds!(RunChange {
        Started => "started",
        Action => "action",
        WaitingApproval => "waiting_approval",
        Approved => "approved",
        Rejected => "rejected",
        Succeeded => "succeeded",
        Failed => "failed",
        Sleeping => "sleeping",
        PlanReady => "plan_ready",
    });

    impl RunChange {
        /// The change announcing that a run finished in `state`; `None` for a state that is
        /// not an end.
        pub fn finished(state: firebreak_domain::RunState) -> Option<Self> {
            use firebreak_domain::RunState as S;
            match state {
                S::Succeeded => Some(Self::Succeeded),
                S::Failed => Some(Self::Failed),
                S::Rejected => Some(Self::Rejected),
                S::Pending | S::Running | S::Sleeping | S::WaitingApproval => None,
            }
        }
    }

    impl RunChanged {
        /// The change this event announces: its typed kind, or (from a producer that predates
        /// the kind) the change its name stands for.
        pub fn change_kind(&self) -> RunChange {
            RunChange::read(self.kind, &self.change)
        }
    }

    impl IncidentChanged {
        /// An event announcing `change`, with both the typed kind and its name set.
        pub fn new(change: IncidentChange, incident: Incident, actor: String) -> Self {
            Self {
                change: change.name().to_owned(),
                incident: Some(incident),
                actor,
                kind: change as i32,
                status_update: None,
            }
        }

        /// The change this event announces: its typed kind, or (from a producer that predates
        /// the kind) the change its name stands for.
        pub fn change_kind(&self) -> IncidentChange {
            IncidentChange::read(self.kind, &self.change)
        }
    }
}

pub mod access;
pub mod silence;
mod states;
pub use states::WireState;

/// The encoded file descriptor set of `firebreak.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/firebreak_descriptor.bin"));

pub use prost::Message;
pub use prost_types::Duration as WireDuration;
pub use prost_types::Timestamp;

/// A severity or priority on the wire (`v1::Severity`, `v1::Priority`, whose values are the
/// levels) as the level the domain validates: 0 for unspecified; a negative value becomes one
/// no level has, so `Severity::new` refuses it, naming the field.
pub fn level(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// A level (1-5, or 0 for none) as its `v1::Severity` / `v1::Priority` value.
pub fn wire_level(level: u32) -> i32 {
    i32::try_from(level).unwrap_or(i32::MAX)
}

/// A time as records hold it, as a protobuf timestamp.
pub fn timestamp(at: firebreak_domain::Micros) -> Timestamp {
    let micros = at.unix_micros();
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A span of time as a protobuf duration (whole nanoseconds; saturates past its range).
pub fn duration(d: std::time::Duration) -> WireDuration {
    WireDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

/// A protobuf timestamp as records hold a time (finer than a microsecond dropped).
pub fn micros(t: &Timestamp) -> firebreak_domain::Micros {
    firebreak_domain::Micros::from_unix_micros(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

pub use firebreak_domain::{ErrorCode, ServiceError};

/// The gRPC code of an [`ErrorCode`] (the mapping itself is [`ErrorCode::codes`]).
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    tonic::Code::from_i32(code.grpc_code())
}

/// The gRPC status answering a caller with `e`: its code and its caller message. Every server
/// answers its errors through this. The server's own faults are logged here, where they are
/// handled, with their whole chain of sources; the caller hears only general words.
pub fn status<E: ServiceError + ?Sized>(e: &E) -> tonic::Status {
    let code = e.error_code();
    if code.is_server_fault() {
        let mut chain = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(code = ?code, error = %chain, "request failed");
    }
    tonic::Status::new(grpc_code(code), e.caller_message())
}

/// `From<$error> for tonic::Status`, through [`status`]: how a server's error type becomes
/// the status its callers hear.
#[macro_export]
macro_rules! impl_into_status {
    ($error:ty) => {
        impl From<$error> for ::tonic::Status {
            fn from(e: $error) -> Self {
                $crate::status(&e)
            }
        }
    };
}

/// Encodes an event envelope for the bus.
pub fn encode_event(event: &v1::Event) -> Vec<u8> {
    prost::Message::encode_to_vec(event)
}

/// Decodes an event envelope from the bus.
pub fn decode_event(bytes: &[u8]) -> Result<v1::Event, prost::DecodeError> {
    <v1::Event as prost::Message>::decode(bytes)
}

/// The envelope's `traceparent` field alone (`Event` field 3): the payload is skipped, not
/// decoded, so the bus can read it on every publish and delivery cheaply.
#[derive(Clone, PartialEq, prost::Message)]
struct EventTrace {
    #[prost(string, tag = "3")]
    traceparent: String,
}

/// The W3C traceparent an encoded event carries; empty when it has none or does not decode.
pub fn event_traceparent(bytes: &[u8]) -> String {
    <EventTrace as prost::Message>::decode(bytes)
        .map(|e| e.traceparent)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::v1::{IncidentChange, IncidentChanged};

    #[test]
    fn an_incident_change_reads_back_typed_and_by_name_from_older_producers() {
        for &c in IncidentChange::ALL {
            let e = IncidentChanged::new(c, Default::default(), "triage".into());
            assert_eq!((e.change_kind(), e.change.as_str()), (c, c.name()));
            assert_eq!(IncidentChange::from_name(c.name()), c);
        }
        // From a producer that predates `kind`: the name decides.
        let old = IncidentChanged {
            change: "resolved".into(),
            ..Default::default()
        };
        assert_eq!(old.change_kind(), IncidentChange::Resolved);
        // The kind wins over the name; an unknown name is unspecified, never a default change.
        let both = IncidentChanged {
            change: "opened".into(),
            kind: IncidentChange::Closed as i32,
            ..Default::default()
        };
        assert_eq!(both.change_kind(), IncidentChange::Closed);
        let odd = IncidentChanged {
            change: "renamed".into(),
            kind: 99,
            ..Default::default()
        };
        assert_eq!(odd.change_kind(), IncidentChange::Unspecified);
    }

    use super::*;

    #[test]
    fn a_time_round_trips_through_a_protobuf_timestamp() {
        use firebreak_domain::Micros;
        let t = timestamp(Micros::from_unix_micros(1_700_000_000_123_456));
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_000));
        let before = timestamp(Micros::from_unix_micros(-1));
        assert_eq!((before.seconds, before.nanos), (-1, 999_999_000));
        for m in [0, 1, -1, 1_700_000_000_123_456, -1_700_000_000_123_456] {
            let m = Micros::from_unix_micros(m);
            assert_eq!(micros(&timestamp(m)), m);
        }
    }

    /// The table callers rely on: each code, its gRPC code and its HTTP status.
    #[test]
    fn each_error_code_maps_to_one_grpc_code_and_one_http_status() {
        use tonic::Code;
        let table = [
            (ErrorCode::InvalidArgument, Code::InvalidArgument, 400),
            (ErrorCode::NotFound, Code::NotFound, 404),
            (ErrorCode::AlreadyExists, Code::AlreadyExists, 409),
            (ErrorCode::FailedPrecondition, Code::FailedPrecondition, 409),
            (ErrorCode::PermissionDenied, Code::PermissionDenied, 403),
            (ErrorCode::Unauthenticated, Code::Unauthenticated, 401),
            (ErrorCode::ResourceExhausted, Code::ResourceExhausted, 429),
            (ErrorCode::Unavailable, Code::Unavailable, 503),
            (ErrorCode::Internal, Code::Internal, 500),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, grpc, http) in table {
            assert_eq!(grpc_code(code), grpc, "{code:?}");
            assert_eq!(code.http_status(), http, "{code:?}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Refused;

    #[derive(Debug, thiserror::Error)]
    #[error("database: relation \"runs\" does not exist")]
    struct Sql(#[source] Refused);

    impl ServiceError for Sql {
        fn error_code(&self) -> ErrorCode {
            ErrorCode::Internal
        }
    }

    #[test]
    fn a_server_fault_reaches_the_caller_without_its_text() {
        let s = status(&Sql(Refused));
        assert_eq!(s.code(), tonic::Code::Internal);
        assert!(!s.message().contains("relation"), "{}", s.message());
        assert!(!s.message().contains("refused"), "{}", s.message());
    }

    #[test]
    fn a_caller_error_reaches_the_caller_as_written() {
        let e = firebreak_domain::Error::Transition {
            action: "acknowledge",
            state: "closed",
        };
        let s = status(&e);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        assert_eq!(s.message(), "cannot acknowledge an incident that is closed");
    }

    /// `AlertInput.severity` as a client built before it was an enum sends it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct OldAlertInput {
        #[prost(string, tag = "1")]
        title: String,
        #[prost(uint32, tag = "3")]
        severity: u32,
    }

    #[test]
    fn a_severity_sent_as_a_number_reads_as_its_enum_and_back() {
        for n in 1..=5u32 {
            let old = OldAlertInput {
                title: "t".into(),
                severity: n,
            };
            let new = v1::AlertInput::decode(old.encode_to_vec().as_slice()).unwrap();
            assert_eq!(new.severity, wire_level(n));
            assert_eq!(level(new.severity), n);
            assert_eq!(new.severity().as_str_name(), format!("SEVERITY_SEV{n}"));
            let back = OldAlertInput::decode(new.encode_to_vec().as_slice()).unwrap();
            assert_eq!(back.severity, n);
        }
        // A number no severity has stays that number, for the domain to refuse by name; it
        // is never read as a default.
        let odd = OldAlertInput {
            title: "t".into(),
            severity: 9,
        };
        let new = v1::AlertInput::decode(odd.encode_to_vec().as_slice()).unwrap();
        assert_eq!(level(new.severity), 9);
        assert!(firebreak_domain::Severity::new(level(new.severity)).is_err());
        assert_eq!(level(-1), u32::MAX);
    }

    #[test]
    fn the_traceparent_is_read_without_the_payload() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let event = v1::Event {
            id: "e1".into(),
            traceparent: tp.into(),
            payload: Some(v1::event::Payload::AlertAcknowledged(
                v1::AlertAcknowledged {
                    alert_id: "a1".into(),
                    integration: "grpc".into(),
                },
            )),
            ..Default::default()
        };
        assert_eq!(event_traceparent(&encode_event(&event)), tp);
        assert_eq!(event_traceparent(b"not protobuf"), "");
    }
}
