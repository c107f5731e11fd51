//! firebreak-telemetry
