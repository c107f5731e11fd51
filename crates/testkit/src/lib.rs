//! Test fixtures for integration tests against real servers: a `nats-server` with JetStream
//! per test, a fresh Postgres database per test, and a throwaway Postgres cluster for tests
//! that stop and start the server. Everything is removed when the fixture drops.

pub mod nats;
pub mod otlp;
pub mod ports;
pub mod postgres;
pub mod recorder;
pub mod smtp;
