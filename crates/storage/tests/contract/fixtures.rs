//! Stores of either adapter on a fresh database, and records to put in them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use firebreak_domain::Micros;
use firebreak_domain::access::{Grant, Role, Scope, SubjectKind};
use firebreak_storage::postgres::{
    PgIntakeStore, PgNotificationStore, PgOrchestrationStore, PgTriageStore,
};
use firebreak_storage::sqlite::{
    SqliteIntakeStore, SqliteNotificationStore, SqliteOrchestrationStore, SqliteTriageStore,
};
use firebreak_storage::{
    AlertLink, AlertRecord, DeliveryRecord, DirectoryStore, IncidentRecord, IncidentUpdate,
    IntakeStore, JournalRecord, NewIncident, NewTimelineEntry, NotificationStore,
    OrchestrationStore, OutboxEvent, RunRecord, SnapshotRequest, TeamRecord, TimelineRecord,
    TokenRecord, TriageChangeset, TriageSnapshot, TriageStore, UserRecord,
};
use firebreak_testkit::postgres::TestDatabase;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adapter {
    Sqlite,
    Postgres,
}

/// Where a fixture's database lives; it is removed when this drops.
pub(crate) enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(TestDatabase),
}

impl Backend {
    pub(crate) async fn new(adapter: Adapter) -> Backend {
        match adapter {
            Adapter::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("store.db");
                Backend::Sqlite { _dir: dir, path }
            }
            Adapter::Postgres => Backend::Postgres(TestDatabase::create().await),
        }
    }

    /// Runs a statement past the store, as an operator with a SQL shell would.
    pub(crate) async fn exec_raw(&self, sql: &'static str) -> Result<u64, String> {
        match self {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                let done = conn.execute(sql, []).map_err(|e| e.to_string())?;
                Ok(done as u64)
            }
            Backend::Postgres(db) => {
                let mut conn = sqlx::PgConnection::connect(&db.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let done = sqlx::query(sql).execute(&mut conn).await;
                let _ = conn.close().await;
                Ok(done.map_err(|e| e.to_string())?.rows_affected())
            }
        }
    }
}

/// A store and the database it lives in.
pub(crate) struct Fixture<S: ?Sized> {
    pub(crate) store: Arc<S>,
    pub(crate) backend: Backend,
}

pub(crate) async fn intake(adapter: Adapter) -> Fixture<dyn IntakeStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn IntakeStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteIntakeStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgIntakeStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

/// Opens (again) the intake store of a backend: the silences' alerts live beside them.
pub(crate) async fn intake_store(backend: &Backend) -> Arc<dyn IntakeStore> {
    match backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteIntakeStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgIntakeStore::connect(&db.url).await.unwrap()),
    }
}

/// Silences, in intake's database.
pub(crate) async fn silences(adapter: Adapter) -> Fixture<dyn firebreak_storage::SilenceStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn firebreak_storage::SilenceStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteIntakeStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgIntakeStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

pub(crate) async fn triage(adapter: Adapter) -> Fixture<dyn TriageStore> {
    let backend = Backend::new(adapter).await;
    let store = triage_store(&backend).await;
    Fixture { store, backend }
}

/// Opens (again) the triage store of a backend.
pub(crate) async fn triage_store(backend: &Backend) -> Arc<dyn TriageStore> {
    match backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteTriageStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgTriageStore::connect(&db.url).await.unwrap()),
    }
}

pub(crate) async fn orchestration(adapter: Adapter) -> Fixture<dyn OrchestrationStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn OrchestrationStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteOrchestrationStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgOrchestrationStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

pub(crate) async fn notification(adapter: Adapter) -> Fixture<dyn NotificationStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn NotificationStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteNotificationStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgNotificationStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

/// Run-time schedules, in notification's database.
pub(crate) async fn schedules(adapter: Adapter) -> Fixture<dyn firebreak_storage::ScheduleStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn firebreak_storage::ScheduleStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteNotificationStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgNotificationStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

/// The directory, in notification's database.
pub(crate) async fn directory(adapter: Adapter) -> Fixture<dyn DirectoryStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn DirectoryStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteNotificationStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgNotificationStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

/// The directory with its outbox, where audit entries and their events go together.
pub(crate) trait AuditStore: DirectoryStore + firebreak_storage::Outbox {}
impl<T: DirectoryStore + firebreak_storage::Outbox> AuditStore for T {}

/// The audit log, in notification's database.
pub(crate) async fn audit(adapter: Adapter) -> Fixture<dyn AuditStore> {
    let backend = Backend::new(adapter).await;
    let store: Arc<dyn AuditStore> = match &backend {
        Backend::Sqlite { path, .. } => {
            Arc::new(SqliteNotificationStore::open(path, false).await.unwrap())
        }
        Backend::Postgres(db) => Arc::new(PgNotificationStore::connect(&db.url).await.unwrap()),
    };
    Fixture { store, backend }
}

pub(crate) fn event(id: &str) -> OutboxEvent {
    OutboxEvent {
        id: id.into(),
        stream: "test".into(),
        subject: format!("test.{id}"),
        payload: id.as_bytes().to_vec(),
    }
}

/// The time `n` microseconds after the epoch: the made-up instants the checks use.
pub(crate) const fn micros(n: i64) -> Micros {
    Micros::from_unix_micros(n)
}

/// Whether `owner` holds the lease on run `id` until `until` after asking at `now` (both
/// microseconds since the epoch).
pub(crate) async fn lease(
    store: &dyn OrchestrationStore,
    id: &str,
    owner: &str,
    until: i64,
    now: i64,
) -> bool {
    store
        .lease_run(id, owner, micros(until), micros(now))
        .await
        .unwrap()
}

pub(crate) fn alert(id: &str) -> AlertRecord {
    AlertRecord {
        id: id.into(),
        received_at: micros(1_700_000_000_000_000),
        source: "prometheus".into(),
        title: format!("alert {id}"),
        description: "it's \"quoted\", unicode ✓".into(),
        severity: 2,
        category: "infrastructure".into(),
        labels: BTreeMap::from([
            ("host".into(), "db-1".into()),
            ("env".into(), "prod".into()),
        ]),
        dedup_key: format!("key-{id}"),
        annotations: BTreeMap::from([("runbook".into(), "https://example.com/r".into())]),
        integration: "am".into(),
        alert_key: format!("fp-{id}"),
        silenced_by: String::new(),
    }
}

pub(crate) fn incident(id: &str, key: &str, state: &str) -> IncidentRecord {
    IncidentRecord {
        state: state.parse().unwrap(),
        ..IncidentRecord::from(NewIncident {
            id: id.into(),
            title: "t".into(),
            description: String::new(),
            category: "uncategorized".into(),
            severity: 3,
            priority: 3,
            urgency: "medium".parse().unwrap(),
            dedup_key: key.into(),
            labels: BTreeMap::from([("service".into(), "api".into())]),
            source: "test".into(),
            integration: "am-payments".into(),
            opened_at: micros(1),
        })
    }
}

pub(crate) fn entry(incident_id: &str, kind: &str, data: serde_json::Value) -> NewTimelineEntry {
    NewTimelineEntry {
        incident_id: incident_id.into(),
        kind: kind.into(),
        at: micros(5),
        actor: "test".into(),
        data,
    }
}

pub(crate) fn run(id: &str, runbook: &str, incident_id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        runbook: runbook.into(),
        incident_id: incident_id.into(),
        state: "pending".parse().unwrap(),
        live: true,
        error: String::new(),
        input: serde_json::json!({ "incident": incident_id, "n": [1, 2.5, null] }),
        started_at: micros(10),
        finished_at: None,
        phase: "apply".parse().unwrap(),
        plan: serde_json::Value::Null,
        wake_at: None,
        // Stored and read back as it is (the runs contract compares whole records).
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    }
}

pub(crate) fn journal(run_id: &str, seq: u32, status: &str) -> JournalRecord {
    JournalRecord {
        run_id: run_id.into(),
        seq,
        action: "http.get".into(),
        args: serde_json::json!({ "url": "https://example.com" }),
        args_digest: "d1".into(),
        status: status.parse().unwrap(),
        result: serde_json::Value::Null,
        idempotency_key: format!("{run_id}-{seq}"),
        attempts: 1,
        at: micros(20),
    }
}

pub(crate) fn delivery(
    id: &str,
    event_id: &str,
    channel: &str,
    next_attempt_at: i64,
) -> DeliveryRecord {
    DeliveryRecord {
        id: id.into(),
        event_id: event_id.into(),
        channel: channel.into(),
        incident_id: "inc-1".into(),
        kind: "opened".into(),
        payload: serde_json::json!({ "text": "db-1 is down" }),
        status: "pending".parse().unwrap(),
        attempts: 0,
        last_error: String::new(),
        created_at: micros(next_attempt_at),
        next_attempt_at: micros(next_attempt_at),
        delivered_at: None,
        escalation_step: 0,
        provider_id: None,
        destination: String::new(),
        sent_at: None,
        acknowledged_at: None,
        acknowledged_by: String::new(),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    }
}

/// The ids of the events waiting in an outbox, oldest first.
pub(crate) async fn pending_ids(store: &dyn firebreak_storage::Outbox) -> Vec<String> {
    store
        .pending(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.id)
        .collect()
}

/// Applies a changeset in a transaction of its own, as one decided without a snapshot.
pub(crate) async fn apply(
    store: &dyn TriageStore,
    changes: TriageChangeset,
) -> firebreak_storage::Result<Vec<TimelineRecord>> {
    store.begin().await?.apply(changes).await
}

/// A snapshot read in a transaction of its own, which then ends unapplied.
pub(crate) async fn snapshot(store: &dyn TriageStore, request: SnapshotRequest) -> TriageSnapshot {
    let mut tx = store.begin().await.unwrap();
    tx.snapshot(&request).await.unwrap()
}

/// An attachment of an unresolved alert.
pub(crate) fn link(alert_id: &str, incident_id: &str, opened: bool) -> AlertLink {
    AlertLink {
        alert_id: alert_id.into(),
        incident_id: incident_id.into(),
        opened,
        resolved: false,
        grouped_by: String::new(),
    }
}

/// An incident as an update leaves it, its state changed or not.
pub(crate) fn update(record: &IncidentRecord, state_changed: bool) -> IncidentUpdate {
    IncidentUpdate {
        record: record.clone(),
        state_changed,
    }
}

/// A person of the directory, created at 1.
pub(crate) fn user(name: &str) -> UserRecord {
    UserRecord {
        name: name.into(),
        display_name: format!("{name} (\"display\") ✓"),
        email: format!("{name}@example.com"),
        time_zone: "Europe/Berlin".into(),
        kind: SubjectKind::User,
        declared: false,
        created_at: micros(1),
        contact_methods: vec![firebreak_domain::people::ContactMethod {
            name: "work".into(),
            kind: firebreak_domain::people::ContactKind::Email,
            address: format!("{name}@example.com"),
        }],
        notification_rules: Vec::new(),
    }
}

/// A team without members, created at 2.
pub(crate) fn team(name: &str) -> TeamRecord {
    TeamRecord {
        name: name.into(),
        display_name: format!("Team {name}"),
        declared: false,
        created_at: micros(2),
        members: Vec::new(),
    }
}

/// A live token of `subject` created at `created_at`, with a grant on a team and one
/// everywhere; its version is the store's to assign.
pub(crate) fn token(id: &str, subject: &str, created_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        subject: subject.into(),
        grants: vec![
            Grant {
                role: Role::Responder,
                scope: Scope::Team("payments".into()),
            },
            Grant {
                role: Role::Viewer,
                scope: Scope::All,
            },
        ],
        description: format!("token {id}"),
        created_by: "user:admin".into(),
        created_at: micros(created_at),
        expires_at: Some(micros(created_at + 1_000_000)),
        revoked_at: None,
        last_used_at: None,
        version: 0,
    }
}
