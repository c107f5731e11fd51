//! firebreak-storage
