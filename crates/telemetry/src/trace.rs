//! W3C trace context (`traceparent`) carried from call to event to call, so one trace
//! follows an incident through every service.
//!
//! The context of the work at hand lives in a task-local: servers [`scope`] each request in
//! the context its caller sent (or a new trace), consumers scope each event in the context
//! it carries, and whatever that work emits — events, outgoing calls — carries
//! [`outgoing`]: the same trace, a new span id.

use std::fmt;
use std::future::Future;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A W3C trace context: trace id, parent span id, and the sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceContext {
    /// Reads a `traceparent` header (version 00, or a later version's first four fields).
    /// `None` when it is malformed or has an all-zero id, as the specification says to
    /// ignore those.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may add some.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        let id = uuid::Uuid::new_v4().as_u128();
        Self {
            trace_id: id.max(1),
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// The context of work caused by this one: the same trace, a new span.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

fn new_span_id() -> u64 {
    (uuid::Uuid::new_v4().as_u128() as u64).max(1)
}

/// The context of the work at hand, if it has one.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` for what the work at hand emits (an event, a call): a child of the
/// current context, or a new trace when there is none.
pub fn outgoing() -> String {
    current()
        .map_or_else(TraceContext::root, |c| c.child())
        .to_string()
}

/// Runs `work` in the context `traceparent` names; a missing or malformed one starts a new
/// trace.
pub fn scope<F: Future>(
    traceparent: Option<&str>,
    work: F,
) -> impl Future<Output = F::Output> + use<F> {
    let ctx = traceparent
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::root);
    CURRENT.scope(ctx, work)
}

/// [`scope`] for synchronous work.
pub fn sync_scope<R>(traceparent: Option<&str>, work: impl FnOnce() -> R) -> R {
    let ctx = traceparent
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::root);
    CURRENT.sync_scope(ctx, work)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_round_trips() {
        let c = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(c.to_string(), EXAMPLE);
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn work_emits_children_of_its_context() {
        let parent = TraceContext::parse(EXAMPLE).unwrap();
        let emitted = scope(Some(EXAMPLE), async { outgoing() }).await;
        let child = TraceContext::parse(&emitted).unwrap();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.to_string(), EXAMPLE, "a new span");
        // Outside any scope, a new trace.
        let lone = TraceContext::parse(&outgoing()).unwrap();
        assert_ne!(lone.trace_id(), parent.trace_id());
        // A malformed context starts a new trace instead of failing the work.
        let fresh = sync_scope(Some("garbage"), outgoing);
        assert!(TraceContext::parse(&fresh).is_some());
    }
}
