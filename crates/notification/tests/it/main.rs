//! Notification's integration tests: channels against real and local provider servers.

mod chat;
mod config;
mod email;
mod sms;
mod support;
mod webhook;
