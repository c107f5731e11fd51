//! Fresh Postgres databases per test, and throwaway Postgres clusters.
