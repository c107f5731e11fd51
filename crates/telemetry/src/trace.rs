//! Trace context carried from call to event to call, so one trace follows an incident through
//! every service: W3C `traceparent` read and written by OpenTelemetry's propagator, over the
//! tracing spans the OpenTelemetry layer turns into OTel spans.
//!
//! Servers and consumers open a span whose parent is the context their caller sent
//! ([`follow`]); whatever the work inside emits — events, outgoing calls, stored runs and
//! deliveries — carries [`outgoing`]: the current span's context. Work resumed later (a run
//! after a restart or an approval) opens a span under the stored context and links to it
//! ([`link`]).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and metadata key) the context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// The OTel context a `traceparent` names; an empty context (a new trace for the span that
/// takes it) when it is missing or malformed, as the specification says to ignore those.
pub fn extract(traceparent: Option<&str>) -> opentelemetry::Context {
    let Some(value) = traceparent.filter(|v| well_formed(v)) else {
        return opentelemetry::Context::new();
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The field widths the specification fixes (the propagator alone takes a short trace id):
/// version, 32-digit trace id, 16-digit span id, flags, in lowercase hex.
fn well_formed(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().splitn(5, '-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    value.len() <= 512
        && parts.len() >= 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// The `traceparent` of `cx`'s span, or "" when it has no valid one.
fn inject(cx: &opentelemetry::Context) -> String {
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// Makes `span` a child of the context `traceparent` names (the caller's, the event's, the
/// stored run's); without a valid one, `span` begins a new trace. Returns `span`.
pub fn follow(span: tracing::Span, traceparent: Option<&str>) -> tracing::Span {
    let parent = extract(traceparent);
    if parent.span().span_context().is_valid() {
        // Fails only when the span was disabled or already started: nothing to follow then.
        let _ = span.set_parent(parent);
    }
    span
}

/// Links `span` to the context `traceparent` names (the origin of resumed work).
pub fn link(span: &tracing::Span, traceparent: &str) {
    let cx = extract(Some(traceparent));
    let origin = cx.span().span_context().clone();
    if origin.is_valid() {
        span.add_link(origin);
    }
}

/// The `traceparent` for what the work at hand emits (an event, a call, a stored run): the
/// current span's context, or "" outside any traced span.
pub fn outgoing() -> String {
    inject(&tracing::Span::current().context())
}

/// The `traceparent` of `span`.
pub fn of(span: &tracing::Span) -> String {
    inject(&span.context())
}

/// The current span's trace id (32 hex digits), if it is in a trace.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id (32 hex digits) a `traceparent` names, if it is valid.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let cx = extract(Some(traceparent));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_is_read() {
        assert_eq!(
            trace_id_of(EXAMPLE).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(inject(&extract(Some(EXAMPLE))), EXAMPLE);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        let long = format!("{EXAMPLE}{}", "0".repeat(600));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "not a header at all",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            long.as_str(),
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
            assert_eq!(inject(&extract(Some(bad))), "", "{bad}");
        }
    }

    #[test]
    fn work_emits_children_of_its_context_and_nothing_outside_one() {
        crate::ensure_trace_context();
        let span = follow(tracing::info_span!("test.work"), Some(EXAMPLE));
        let emitted = span.in_scope(outgoing);
        assert_eq!(
            trace_id_of(&emitted).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_ne!(emitted, EXAMPLE, "a span of its own");
        assert_eq!(of(&span), emitted);
        assert_eq!(outgoing(), "", "nothing outside a span");
        // A malformed context starts a new trace instead of failing the work.
        let fresh = follow(tracing::info_span!("test.fresh"), Some("garbage"));
        let id = fresh.in_scope(current_trace_id).expect("a new trace");
        assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id.len(), 32);
    }
}
