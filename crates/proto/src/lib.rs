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
