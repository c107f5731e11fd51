//! Live actions: deadlines, bounded responses, secrets and notification channels.
