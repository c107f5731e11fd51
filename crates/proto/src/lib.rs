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
