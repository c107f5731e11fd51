//! The label sets of Firebreak's metric families and the pure decisions that fill them.
//!
//! Every label has a bounded set of values: a fixed word, a name from the configuration (a
//! runbook, a category) or from code (an action, a gRPC method that exists). Nothing a caller
//! sends becomes a label as sent: an unknown gRPC method is `other`, an HTTP request is
//! labelled by the route it matched (never its path, which may hold an integration key), a
//! method outside the standard ones is `other`.

use prometheus_client::encoding::EncodeLabelSet;

/// The value of a label that stands for anything not worth a series of its own.
pub const OTHER: &str = "other";

/// A label set of one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// The running build, as `firebreak_build_info` labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildInfo {
    pub(crate) version: String,
}

/// A label set naming one dependency of a service (its database, the bus).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Dependency {
    pub dependency: String,
}

/// A label set of an incident's severity (`1`…`5`) and category: both bounded, by the scale
/// and by the configured taxonomy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IncidentLabels {
    pub severity: String,
    pub category: String,
}

/// How a signal came in to intake.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        }
    }
}

/// What intake answered a call or webhook carrying signals.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AckOutcome {
    /// Stored (2xx, OK): the signals are durable.
    Accepted,
    /// Refused for what the caller sent or who it is (4xx, INVALID_ARGUMENT,
    /// UNAUTHENTICATED, …): a retry of the same call cannot succeed.
    Rejected,
    /// Told to come back later (429, RESOURCE_EXHAUSTED): overload or a rate limit.
    Throttled,
    /// The server's fault (5xx, UNAVAILABLE, INTERNAL, …): nothing stored, a retry may work.
    Failed,
}

impl AckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Throttled => "throttled",
            Self::Failed => "failed",
        }
    }

    /// The outcome of a gRPC answer with status `code` (its number).
    pub fn of_grpc(code: i32) -> Self {
        match code {
            0 => Self::Accepted,
            8 => Self::Throttled,
            // CANCELLED (the caller gave up), INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
            // PERMISSION_DENIED, FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED.
            1 | 3 | 5 | 6 | 7 | 9 | 11 | 16 => Self::Rejected,
            _ => Self::Failed,
        }
    }

    /// The outcome of an HTTP answer with `status`.
    pub fn of_http(status: u16) -> Self {
        match status {
            200..=399 => Self::Accepted,
            429 => Self::Throttled,
            400..=499 => Self::Rejected,
            _ => Self::Failed,
        }
    }
}

/// `firebreak_intake_ack_seconds`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AckLabels {
    pub transport: &'static str,
    pub outcome: &'static str,
}

/// `firebreak_alert_to_incident_seconds`'s labels: whether the alert opened an incident or
/// joined one (its dedup key's or its group's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertToIncidentLabels {
    pub outcome: &'static str,
}

/// `firebreak_runbook_step_duration_seconds`'s labels: the action (one of the runbook
/// engine's, else `other`) and how the step ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub action: &'static str,
    pub outcome: &'static str,
}

/// `firebreak_runbook_run_duration_seconds`'s labels: the runbook (a name from the catalog)
/// and the state the run finished in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub runbook: String,
    pub outcome: String,
}

/// `firebreak_delivery_latency_seconds`'s labels: the kind of channel (`slack`, `email`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub kind: String,
}

/// The gRPC server's request labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub service: String,
    pub method: String,
    pub code: &'static str,
}

/// The HTTP server's request labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    pub route: String,
    pub status: &'static str,
}

/// The name of gRPC status `code` (`OK`, `NOT_FOUND`, …), as the gRPC specification spells
/// it; `UNKNOWN` for a number it does not define.
pub fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|c| NAMES.get(c))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// The gRPC labels of a request to `path` answered with `code`. `known` says whether the
/// server has the method (the caller names it, so it is trusted only then); a method the
/// server does not have, or answered UNIMPLEMENTED, is `other`/`other`, so no caller can make
/// series by inventing method names.
pub fn grpc_labels(path: &str, known: bool, code: i32) -> GrpcLabels {
    let named = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, method)| {
            known
                && code != 12
                && !service.is_empty()
                && !method.is_empty()
                && !method.contains('/')
        });
    let (service, method) = named.unwrap_or((OTHER, OTHER));
    GrpcLabels {
        service: service.to_owned(),
        method: method.to_owned(),
        code: grpc_code_name(code),
    }
}

/// An HTTP method as a label: the standard ones as they are, anything else `other`.
pub fn http_method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(OTHER)
}

/// The class of an HTTP status (`2xx`, `4xx`, …).
pub fn http_status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => OTHER,
    }
}

/// The HTTP labels of a request: its method, the route it matched (the pattern, e.g.
/// `/v1/webhooks/alertmanager/{key}`; `other` when none did) and its status class.
pub fn http_labels(method: &str, route: Option<&str>, status: u16) -> HttpLabels {
    HttpLabels {
        method: http_method_label(method),
        route: route.unwrap_or(OTHER).to_owned(),
        status: http_status_class(status),
    }
}

/// `action` as a label: itself when it is one of `known` (the runbook engine's actions),
/// else `other`.
pub fn bounded<'a>(action: &str, known: &[&'a str]) -> &'a str {
    known
        .iter()
        .find(|k| **k == action)
        .copied()
        .unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_outcomes_follow_the_status_a_caller_sees() {
        assert_eq!(AckOutcome::of_grpc(0), AckOutcome::Accepted);
        assert_eq!(AckOutcome::of_grpc(8), AckOutcome::Throttled);
        for code in [1, 3, 5, 6, 7, 9, 11, 16] {
            assert_eq!(AckOutcome::of_grpc(code), AckOutcome::Rejected, "{code}");
        }
        for code in [2, 4, 10, 12, 13, 14, 15, 17, -1] {
            assert_eq!(AckOutcome::of_grpc(code), AckOutcome::Failed, "{code}");
        }
        assert_eq!(AckOutcome::of_http(200), AckOutcome::Accepted);
        assert_eq!(AckOutcome::of_http(202), AckOutcome::Accepted);
        assert_eq!(AckOutcome::of_http(429), AckOutcome::Throttled);
        assert_eq!(AckOutcome::of_http(400), AckOutcome::Rejected);
        assert_eq!(AckOutcome::of_http(401), AckOutcome::Rejected);
        assert_eq!(AckOutcome::of_http(413), AckOutcome::Rejected);
        assert_eq!(AckOutcome::of_http(503), AckOutcome::Failed);
        assert_eq!(AckOutcome::of_http(500), AckOutcome::Failed);
        assert_eq!(AckOutcome::of_http(0), AckOutcome::Failed);
    }

    #[test]
    fn grpc_labels_name_only_methods_the_server_has() {
        let l = grpc_labels("/firebreak.v1.IntakeService/RaiseIncident", true, 0);
        assert_eq!(
            (l.service.as_str(), l.method.as_str(), l.code),
            ("firebreak.v1.IntakeService", "RaiseIncident", "OK")
        );
        let l = grpc_labels("/firebreak.v1.IncidentService/GetIncident", true, 5);
        assert_eq!(l.code, "NOT_FOUND");
        // Invented names, unknown or answered UNIMPLEMENTED, make no series of their own.
        for (path, known, code) in [
            ("/firebreak.v1.IntakeService/Made_Up_1", false, 7),
            ("/grpc.health.v1.Health/Nope", true, 12),
            ("/x", true, 0),
            ("no-slash", true, 0),
            ("/a/b/c", true, 0),
            ("//", true, 0),
        ] {
            let l = grpc_labels(path, known, code);
            assert_eq!(
                (l.service.as_str(), l.method.as_str()),
                (OTHER, OTHER),
                "{path}"
            );
        }
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(17), "UNKNOWN");
        assert_eq!(grpc_code_name(-3), "UNKNOWN");
    }

    #[test]
    fn http_labels_hold_the_route_never_the_path() {
        let l = http_labels("POST", Some("/v1/webhooks/alertmanager/{key}"), 202);
        assert_eq!(
            (l.method, l.route.as_str(), l.status),
            ("POST", "/v1/webhooks/alertmanager/{key}", "2xx")
        );
        let l = http_labels("BREW", None, 404);
        assert_eq!(
            (l.method, l.route.as_str(), l.status),
            (OTHER, OTHER, "4xx")
        );
        assert_eq!(http_status_class(101), "1xx");
        assert_eq!(http_status_class(308), "3xx");
        assert_eq!(http_status_class(503), "5xx");
        assert_eq!(http_status_class(600), OTHER);
        assert_eq!(http_method_label("get"), OTHER);
    }

    #[test]
    fn actions_outside_the_known_ones_are_other() {
        let known = ["http.get", "sleep.for"];
        assert_eq!(bounded("http.get", &known), "http.get");
        assert_eq!(bounded("http.get2", &known), OTHER);
        assert_eq!(bounded("", &known), OTHER);
    }
}
