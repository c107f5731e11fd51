//! Generated Rust bindings of the `firebreak.v1` protobuf package (and of the internal
//! `firebreak.internal.v1`), plus small conversions: the domain's types to and from the wire's
//! enums, and the paging every List shares.

#![allow(unreachable_pub, clippy::all)]

/// Everything generated from `proto/firebreak/v1`.
pub mod v1 {
    tonic::include_proto!("firebreak.v1");

    /// Gives a wire enum its names: `ALL` (without `Unspecified`), `name` (what subjects,
    /// stored rows, the CLI's tables and JSON show) and `from_name`. An exhaustive match: a
    /// value added to the proto without a name here does not compile.
    macro_rules! named_kinds {
        ($kind:ident { $($variant:ident => $name:literal,)+ }) => {
            impl $kind {
                /// Every value, in declaration order (without `Unspecified`).
                pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

                /// The value's name.
                pub fn name(self) -> &'static str {
                    match self {
                        Self::Unspecified => "unspecified",
                        $(Self::$variant => $name,)+
                    }
                }

                /// The value a name stands for; `Unspecified` for a name no value has.
                pub fn from_name(name: &str) -> Self {
                    Self::ALL
                        .iter()
                        .copied()
                        .find(|c| c.name() == name)
                        .unwrap_or(Self::Unspecified)
                }

                /// The name of a wire value as a reader shows it: `unknown` for one this
                /// build lacks (from a newer producer), `unspecified` for none.
                pub fn shown(value: i32) -> &'static str {
                    Self::try_from(value).map_or("unknown", Self::name)
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

    // Stored in notification's deliveries table by these names, and shown by them.
    named_kinds!(DeliveryKind {
        IncidentOpened => "incident.opened",
        IncidentAlertAttached => "incident.alert_attached",
        IncidentSeverityChanged => "incident.severity_changed",
        IncidentAcknowledged => "incident.acknowledged",
        IncidentResolved => "incident.resolved",
        IncidentClosed => "incident.closed",
        IncidentEscalated => "incident.escalated",
        IncidentCategoryChanged => "incident.category_changed",
        IncidentRolesChanged => "incident.roles_changed",
        IncidentMitigated => "incident.mitigated",
        IncidentReopened => "incident.reopened",
        IncidentMerged => "incident.merged",
        IncidentPriorityChanged => "incident.priority_changed",
        IncidentReviewChanged => "incident.review_changed",
        IncidentStatusUpdated => "incident.status_updated",
        IncidentStatusReminder => "incident.status_reminder",
        RunbookMessage => "runbook.message",
        EscalationPage => "escalation.page",
        EscalationStep => "escalation.step",
        StatusReminder => "status.reminder",
    });

    // As runbook manifests write them.
    named_kinds!(RunbookMode {
        Auto => "auto",
        PlanApprove => "plan-approve",
    });

    // As runbook manifests write them (`approval.on_timeout`).
    named_kinds!(ApprovalTimeoutAction {
        Reject => "reject",
        Approve => "approve",
    });

    named_kinds!(DryRunOutcome {
        Succeeded => "succeeded",
        Failed => "failed",
        Waiting => "waiting",
        Sleeping => "sleeping",
    });

    // As the configuration writes them (`integrations[].kind`).
    named_kinds!(IntegrationKind {
        Alertmanager => "alertmanager",
        Pagerduty => "pagerduty",
        Grpc => "grpc",
    });

    // The prefixes of `person:NAME` and `channel:NAME`, as the CLI and the store write them.
    named_kinds!(SubscriberKind {
        Person => "person",
        Channel => "channel",
    });

    // As `firebreak report --by` writes them.
    named_kinds!(ReportGrouping {
        Category => "category",
        Severity => "severity",
        Service => "service",
        Integration => "integration",
    });

    impl RunChanged {
        /// The change this event announces (unspecified for none or one this build lacks).
        pub fn change_kind(&self) -> RunChange {
            RunChange::try_from(self.kind).unwrap_or(RunChange::Unspecified)
        }
    }

    impl IncidentChanged {
        /// An event announcing `change`.
        pub fn new(change: IncidentChange, incident: Incident, actor: String) -> Self {
            Self {
                incident: Some(incident),
                actor,
                kind: change as i32,
                status_update: None,
            }
        }

        /// The change this event announces (unspecified for none or one this build lacks).
        pub fn change_kind(&self) -> IncidentChange {
            IncidentChange::try_from(self.kind).unwrap_or(IncidentChange::Unspecified)
        }
    }

    impl DeliveryKind {
        /// The message kind announcing an incident's `change`.
        pub fn of_change(change: IncidentChange) -> Self {
            Self::from_name(&format!("incident.{}", change.name()))
        }
    }
}

/// Internal contracts between Firebreak's own services (`firebreak.internal.v1`): served
/// only to service credentials, not listed by reflection.
pub mod internal {
    /// Everything generated from `proto/firebreak/internal/v1`.
    pub mod v1 {
        tonic::include_proto!("firebreak.internal.v1");
    }
}

pub mod access;
pub mod page;
pub mod silence;
mod states;
pub use states::{WireState, enum_field, grouping, wire_grouping};

/// The encoded file descriptor set of the public `firebreak.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/firebreak_descriptor.bin"));

/// The encoded file descriptor set of every contract, the internal ones too (for the method
/// table's completeness test; never served).
pub const INTERNAL_FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/firebreak_internal_descriptor.bin"
));

/// The public gRPC services, by the process kind that serves them: what reflection lists.
pub const PUBLIC_SERVICES: &[(&str, &[&str])] = &[
    (
        "intake",
        &[
            "firebreak.v1.IntakeService",
            "firebreak.v1.IntegrationService",
            "firebreak.v1.SilenceService",
        ],
    ),
    ("triage", &["firebreak.v1.IncidentService"]),
    ("orchestration", &["firebreak.v1.RunbookService"]),
    (
        "notification",
        &[
            "firebreak.v1.NotificationService",
            "firebreak.v1.AccessService",
            "firebreak.v1.AuditService",
        ],
    ),
];

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
    fn an_incident_change_reads_back_typed_never_as_a_default() {
        for &c in IncidentChange::ALL {
            let e = IncidentChanged::new(c, Default::default(), "triage".into());
            assert_eq!(e.change_kind(), c);
            assert_eq!(IncidentChange::from_name(c.name()), c);
        }
        let odd = IncidentChanged {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(odd.change_kind(), IncidentChange::Unspecified);
        assert_eq!(
            IncidentChange::from_name("renamed"),
            IncidentChange::Unspecified
        );
    }

    /// Each named enum's names are unique and its wire names say the same (the dotted or
    /// dashed name, upper-cased, with the enum's prefix), so a name and a value never drift.
    #[test]
    fn every_named_enum_names_each_value_once_as_its_wire_name_does() {
        use super::v1::*;
        fn check<E: Copy + std::fmt::Debug + PartialEq>(
            all: &[E],
            name: fn(E) -> &'static str,
            wire: fn(E) -> &'static str,
            prefix: &str,
        ) {
            let mut seen = std::collections::HashSet::new();
            for &v in all {
                assert!(seen.insert(name(v)), "{v:?} named twice");
                let want = format!(
                    "{prefix}{}",
                    name(v).replace(['.', '-'], "_").to_uppercase()
                );
                assert_eq!(wire(v), want, "{v:?}");
            }
        }
        check(
            DeliveryKind::ALL,
            DeliveryKind::name,
            |v: DeliveryKind| v.as_str_name(),
            "DELIVERY_KIND_",
        );
        check(
            RunbookMode::ALL,
            RunbookMode::name,
            |v: RunbookMode| v.as_str_name(),
            "RUNBOOK_MODE_",
        );
        check(
            ApprovalTimeoutAction::ALL,
            ApprovalTimeoutAction::name,
            |v: ApprovalTimeoutAction| v.as_str_name(),
            "APPROVAL_TIMEOUT_ACTION_",
        );
        check(
            DryRunOutcome::ALL,
            DryRunOutcome::name,
            |v: DryRunOutcome| v.as_str_name(),
            "DRY_RUN_OUTCOME_",
        );
        check(
            IntegrationKind::ALL,
            IntegrationKind::name,
            |v: IntegrationKind| v.as_str_name(),
            "INTEGRATION_KIND_",
        );
        check(
            SubscriberKind::ALL,
            SubscriberKind::name,
            |v: SubscriberKind| v.as_str_name(),
            "SUBSCRIBER_KIND_",
        );
        check(
            ReportGrouping::ALL,
            ReportGrouping::name,
            |v: ReportGrouping| v.as_str_name(),
            "REPORT_GROUPING_",
        );
        check(
            IncidentChange::ALL,
            IncidentChange::name,
            |v: IncidentChange| v.as_str_name(),
            "INCIDENT_CHANGE_",
        );
        check(
            RunChange::ALL,
            RunChange::name,
            |v: RunChange| v.as_str_name(),
            "RUN_CHANGE_",
        );
        // Every change of an incident has its message kind.
        for &c in IncidentChange::ALL {
            assert_ne!(
                DeliveryKind::of_change(c),
                DeliveryKind::Unspecified,
                "{c:?}"
            );
        }
        assert_eq!(DeliveryKind::shown(99), "unknown");
        assert_eq!(DeliveryKind::shown(18), "escalation.page");
    }

    #[test]
    fn the_public_descriptor_set_holds_no_internal_contract_and_the_full_one_does() {
        let public = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let full = prost_types::FileDescriptorSet::decode(INTERNAL_FILE_DESCRIPTOR_SET).unwrap();
        let services = |set: &prost_types::FileDescriptorSet| -> Vec<String> {
            set.file
                .iter()
                .flat_map(|f| {
                    f.service
                        .iter()
                        .map(move |s| format!("{}.{}", f.package(), s.name()))
                })
                .collect()
        };
        let public = services(&public);
        assert!(
            public.iter().all(|s| s.starts_with("firebreak.v1.")),
            "{public:?}"
        );
        assert!(!public.iter().any(|s| s.contains("Ingest")), "{public:?}");
        let full = services(&full);
        for internal in [
            "firebreak.internal.v1.TriageIngestService",
            "firebreak.internal.v1.CredentialService",
        ] {
            assert!(full.iter().any(|s| s == internal), "{internal} missing");
            assert!(
                !public.iter().any(|s| s == internal),
                "{internal} is public"
            );
        }
        // Every public service is served by exactly one kind of process.
        let mut served: Vec<&str> = PUBLIC_SERVICES
            .iter()
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        served.sort_unstable();
        let mut listed: Vec<&str> = public.iter().map(String::as_str).collect();
        listed.sort_unstable();
        assert_eq!(served, listed);
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
