//! A `nats-server -js` per test, on a free port, with its own store directory.
