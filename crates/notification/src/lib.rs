//! firebreak-notification
