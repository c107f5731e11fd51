//! firebreak-orchestration
