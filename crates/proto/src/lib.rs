//! Generated Rust bindings of the `firebreak.v1` protobuf package, plus small conversions.

#![allow(unreachable_pub, clippy::all)]

/// Everything generated from `proto/firebreak/v1`.
pub mod v1 {
    tonic::include_proto!("firebreak.v1");
}

/// The encoded file descriptor set of `firebreak.v1`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/firebreak_descriptor.bin"));

pub use prost::Message;
pub use prost_types::Timestamp;

/// Microseconds since the epoch (how storage keeps time) as a protobuf timestamp.
pub fn timestamp(micros: i64) -> Timestamp {
    Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// A protobuf timestamp as microseconds since the epoch.
pub fn micros(t: &Timestamp) -> i64 {
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000
}

/// The few error kinds callers must be able to tell apart, with their gRPC and HTTP codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The gRPC status with `message`.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        let code = match self {
            Self::InvalidArgument => tonic::Code::InvalidArgument,
            Self::NotFound => tonic::Code::NotFound,
            Self::AlreadyExists => tonic::Code::AlreadyExists,
            Self::FailedPrecondition => tonic::Code::FailedPrecondition,
            Self::PermissionDenied => tonic::Code::PermissionDenied,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::ResourceExhausted => tonic::Code::ResourceExhausted,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal => tonic::Code::Internal,
        };
        tonic::Status::new(code, message)
    }

    /// The HTTP status code.
    pub fn http(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::FailedPrecondition => 409,
            Self::PermissionDenied => 403,
            Self::Unauthenticated => 401,
            Self::ResourceExhausted => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
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
    use super::*;

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
