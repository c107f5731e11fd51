//! firebreak-intake
