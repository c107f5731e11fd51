//! firebreak-bus
