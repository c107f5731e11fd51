//! Firebreak's storage layer: one store trait per service, and their SQLite and Postgres adapters.
//!
//! Every service owns its own database (in embedded mode, its own SQLite file); no service
//! reads another's tables. Every write that emits events takes them in the same transaction
//! (the transactional outbox), and a relay publishes them afterwards.
//!
//! Only this crate speaks SQL.

mod directory;
mod error;
pub mod health;
mod migration;
pub mod postgres;
mod records;
pub mod sqlite;

use async_trait::async_trait;

pub use error::{Error, Result};
pub use records::*;

use firebreak_domain::{Micros, RunState};

/// Events written with a state change, waiting for the relay to publish them.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` unpublished events, oldest first.
    async fn pending(&self, limit: u32) -> Result<Vec<OutboxRecord>>;
    /// Marks events as published; they are deleted after a day.
    async fn mark_published(&self, seqs: &[i64]) -> Result<()>;
    /// Checks that the database answers (for health).
    async fn ping(&self) -> Result<()>;
}

/// An outbox read in place: the embedded bus serves a stream's events to its consumers
/// straight from the producing service's database, instead of a relay copying them into a
/// log of its own. Each stream has one producer, so a stream is one outbox.
#[async_trait]
pub trait OutboxLog: Outbox {
    /// Committed events of `stream` after sequence number `after`, oldest first.
    async fn since(&self, stream: &str, after: i64, limit: u32) -> Result<Vec<OutboxRecord>>;
    /// The highest sequence number committed (0 when none): a watcher reading [`Self::since`]
    /// from it sees only what commits afterwards.
    async fn head(&self) -> Result<i64>;
    /// Where a consumer moving from the bus's log to reading in place starts: the events up
    /// to it went to the log through a relay (before this outbox was read in place), the
    /// ones after it never will.
    async fn start(&self) -> Result<i64>;
    /// Deletes the events of `stream` up to `seq` (every consumer is past them) that are more
    /// than a day old.
    async fn sweep(&self, stream: &str, upto: i64) -> Result<()>;
    /// How many events of `stream` come after sequence number `after` (a consumer's
    /// backlog), counting at most `cap`: the count walks the rows after `after` only, and
    /// the cap bounds that walk in a storm.
    async fn count_since(&self, stream: &str, after: i64, cap: u64) -> Result<u64>;
}

/// Intake's store: the raw and normalized alerts.
#[async_trait]
pub trait IntakeStore: Outbox + SilenceStore {
    /// Stores an alert and its `alerts` event in one transaction.
    async fn insert_alert(&self, alert: &AlertRecord, event: &OutboxEvent) -> Result<()>;
    /// Starts a write transaction, for a batch of signals that commits (or not) as one.
    async fn begin(&self) -> Result<Box<dyn IntakeTx>>;
    /// Integrations created at run time, by name.
    async fn integrations(&self) -> Result<Vec<IntegrationRecord>>;
    /// Adds an integration; `Conflict` when its name or key (hash) is taken.
    async fn create_integration(&self, integration: &IntegrationRecord) -> Result<()>;
    /// Replaces an integration's sealed signing secret `from` with `to` (the same secret
    /// sealed under another encryption key); false, and nothing changed, when the
    /// integration is gone or no longer holds `from` (another replica resealed it first).
    async fn reseal_integration(&self, name: &str, from: &str, to: &str) -> Result<bool>;
    /// Deletes an integration; false when there was none of that name.
    async fn delete_integration(&self, name: &str) -> Result<bool>;
    /// One alert by id.
    async fn alert(&self, id: &str) -> Result<Option<AlertRecord>>;
    /// How many alerts are stored.
    async fn count_alerts(&self) -> Result<i64>;
    /// The triggers silenced at or after `since`, counted per (integration, service,
    /// category, severity), in that order: at most [`MAX_SILENCED_GROUPS`] of them.
    async fn silenced_tally(
        &self,
        since: Micros,
    ) -> Result<Vec<firebreak_domain::report::SilencedCount>>;
}

/// The most (integration, service, category, severity) combinations of silenced alerts a
/// report reads.
pub const MAX_SILENCED_GROUPS: u32 = 10_000;

/// (integration, alert key, alert id, state).
pub type AlertKeyRow = (String, String, String, String);

/// One write transaction of intake.
#[async_trait]
pub trait IntakeTx: Send {
    /// What these (integration, alert key) pairs name now: rows of (integration, key,
    /// alert id, state), state being firing, acknowledged or resolved; absent pairs have none.
    async fn alert_keys(&mut self, pairs: &[(String, String)]) -> Result<Vec<AlertKeyRow>>;
    /// Points (integration, alert key) pairs at alerts in a state.
    async fn set_alert_keys(&mut self, rows: &[AlertKeyRow]) -> Result<()>;
    /// Inserts alerts and their events with a few statements, however many there are.
    async fn insert_alerts(
        &mut self,
        alerts: Vec<AlertRecord>,
        events: Vec<OutboxEvent>,
    ) -> Result<()>;
    /// The response stored for an idempotency key, if the call was made before.
    async fn idempotent(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Stores the response of a call with an idempotency key.
    async fn remember(&mut self, key: &str, response: &[u8]) -> Result<()>;
    /// Records which of the alerts inserted in this transaction a silence kept from opening
    /// anything.
    async fn insert_silenced(&mut self, silenced: Vec<SilencedRecord>) -> Result<()>;
    async fn enqueue(&mut self, event: &OutboxEvent) -> Result<()>;
    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Triage's store: incidents, their alerts and their timeline.
#[async_trait]
pub trait TriageStore: Outbox {
    /// Starts a write transaction.
    async fn begin(&self) -> Result<Box<dyn TriageTx>>;
    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>>;
    /// Newest first, optionally of one state.
    async fn incidents(&self, state: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>> {
        self.incidents_page(state, None, limit, usize::MAX).await
    }
    /// A page of incidents, newest first, optionally of one state, starting after `after`:
    /// at most `limit`, and no more once those read hold `max_bytes` (their
    /// [`IncidentRecord::wire_size`]; the one crossing the bound is included, so a page is
    /// never empty while incidents remain).
    async fn incidents_page(
        &self,
        state: Option<&str>,
        after: Option<&IncidentCursor>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<IncidentRecord>>;
    /// The timeline of an incident, oldest first.
    async fn timeline(&self, incident_id: &str) -> Result<Vec<TimelineRecord>> {
        self.timeline_page(incident_id, 0, u32::MAX, usize::MAX)
            .await
    }
    /// A page of an incident's timeline, oldest first, of the entries after sequence number
    /// `after_seq`: at most `limit`, and no more once those read hold `max_bytes` (kind,
    /// actor and data as stored; the one crossing the bound is included).
    async fn timeline_page(
        &self,
        incident_id: &str,
        after_seq: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<TimelineRecord>>;
    /// A change event by id.
    async fn change(&self, id: &str) -> Result<Option<ChangeRecord>>;
    /// What a report needs of the incidents opened at or after `since`, oldest first (then
    /// by id): at most `limit`. The first `resolved` entry and the first entry of a person
    /// (actor starting with [`firebreak_domain::report::PERSON_ACTOR_PREFIX`]) are read from
    /// each timeline.
    async fn report_facts(
        &self,
        since: Micros,
        limit: u32,
    ) -> Result<Vec<firebreak_domain::report::IncidentFacts>>;
    /// The alerts attached to an incident, in the order they were attached (then by alert
    /// id): those after `after` (keyset paging), at most `limit`.
    async fn incident_alerts(
        &self,
        incident_id: &str,
        after: Option<&AlertCursor>,
        limit: u32,
    ) -> Result<Vec<IncidentAlertRecord>>;
    /// Follow-ups as `query` says, by incident id then number (at most `query.limit`).
    async fn follow_ups(&self, query: &FollowUpQuery) -> Result<Vec<FollowUpRecord>>;
    /// How many incidents are active (open, acknowledged, mitigated), per (severity, state)
    /// that has any: counted through the index of states, so it reads the active incidents'
    /// entries and never the resolved and closed ones (for `/metrics`).
    async fn count_active(&self) -> Result<Vec<(u32, firebreak_domain::IncidentState, u64)>>;
}

/// A triage write transaction: nothing is visible until `apply` commits it, and dropping it
/// unapplied leaves the store as it was.
///
/// Triage reads a [`TriageSnapshot`], decides in pure code, and hands the resulting
/// [`TriageChangeset`] to `apply`, which writes it and commits. The store holds no rules and
/// caches nothing between the two.
#[async_trait]
pub trait TriageTx: Send {
    /// Reads what a batch of decisions depends on. On Postgres the active incidents of the
    /// keys are locked in key order, then the incidents asked by id in id order, so
    /// replicas deciding on overlapping batches take their locks in one order; they stay
    /// locked until the transaction ends. May be called more than once.
    async fn snapshot(&mut self, request: &SnapshotRequest) -> Result<TriageSnapshot>;
    /// Writes `changes` (updates, then inserts, attachments, cleared alerts, change events,
    /// timeline entries, events) and commits; returns the entries as numbered, in the
    /// changeset's order and numbered in it. [`Error::Conflict`] when the store was not as
    /// the snapshot said (a processed mark, an attachment, a change event or an active
    /// dedup key taken, an alert cleared or never attached); nothing is written.
    async fn apply(self: Box<Self>, changes: TriageChangeset) -> Result<Vec<TimelineRecord>>;
}

/// Orchestration's store: runs and their journal.
#[async_trait]
pub trait OrchestrationStore: Outbox {
    /// Creates a run unless one of this runbook exists for the incident; returns whether it did.
    async fn create_run(&self, run: &RunRecord, event: &OutboxEvent) -> Result<bool> {
        Ok(self.create_runs(&[(run.clone(), event.clone())]).await? == 1)
    }
    /// Creates runs (each unless one of its runbook exists for its incident) with their
    /// events, in one transaction; returns how many it created.
    async fn create_runs(&self, runs: &[(RunRecord, OutboxEvent)]) -> Result<u32>;
    async fn run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// Newest first, optionally of one incident and in one state.
    async fn runs(
        &self,
        incident_id: Option<&str>,
        state: Option<RunState>,
        limit: u32,
    ) -> Result<Vec<RunRecord>> {
        let query = RunQuery {
            incident_id,
            state,
            ..RunQuery::default()
        };
        self.runs_page(&query, limit, usize::MAX).await
    }
    /// A page of runs matching `query` (in id order, newest first unless
    /// `query.oldest_first`), starting after `query.after`: at most `limit`, and no more once
    /// those read hold `max_bytes` (their [`RunRecord::wire_size`]; the one crossing the
    /// bound is included, so a page is never empty while runs remain). Rows past the bound
    /// are never read.
    async fn runs_page(
        &self,
        query: &RunQuery<'_>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<RunRecord>>;
    /// Runs with work to do at `now`: pending or running (to (re)start, also after a
    /// restart), sleeping runs whose time has come, approvals that timed out. A replica
    /// executes one only once it holds its lease (`lease_run`).
    async fn due_runs(&self, now: Micros) -> Result<Vec<RunRecord>>;
    /// Takes the lease on a run for `owner` until `until`: true when `owner` holds it
    /// now (it was free, its holder's lease ran out before `now`, or `owner` held it already)
    /// and the run is in a state an executor starts from (pending, running or sleeping). A
    /// finished run, or one waiting for a person, is never leased: a replica acting on a stale
    /// list of due runs cannot execute (and finish) a run again. Replicas execute only the
    /// runs they hold, so a run is executed by one process at a time and taken over when its
    /// holder dies.
    async fn lease_run(&self, id: &str, owner: &str, until: Micros, now: Micros) -> Result<bool>;
    /// Extends `owner`'s lease on a run to `until`, whatever the run's state; false when
    /// `owner` no longer holds it. Never takes a lease it does not hold.
    async fn renew_run(&self, id: &str, owner: &str, until: Micros) -> Result<bool>;
    /// Gives up `owner`'s lease on a run (it finished, or waits for time or a person).
    async fn release_run(&self, id: &str, owner: &str) -> Result<()>;
    /// Counts an execution of a run `owner` holds the lease of, before it starts: the count
    /// of executions begun since the run last stopped cleanly (a transition or finish to any
    /// state but running resets it). Returns the new count, or `None` when `owner` does not
    /// hold the run or it is not in a state an executor starts from. A count that keeps
    /// growing means executions of the run keep dying with their process.
    async fn begin_attempt(&self, id: &str, owner: &str) -> Result<Option<u32>>;
    /// Moves a run from state `from` to what `run` holds (state, phase, plan, wake_at, error,
    /// finished_at), with an optional journal entry and events, in one transaction. False
    /// (and nothing written) when the run was no longer in `from`, or is finished: someone
    /// else moved it.
    async fn transition(
        &self,
        run: &RunRecord,
        from: RunState,
        journal: Option<&JournalRecord>,
        events: &[OutboxEvent],
    ) -> Result<bool>;
    /// Moves a run from state `from` to `state`, with an optional error, and writes its
    /// events, in one transaction. False (and nothing written) when the run was no longer in
    /// `from`, or is finished: a run finishes once, with one event.
    async fn set_run_state(
        &self,
        id: &str,
        from: RunState,
        state: RunState,
        error: Option<&str>,
        events: &[OutboxEvent],
    ) -> Result<bool>;
    /// The run's journal, in sequence order.
    async fn journal(&self, run_id: &str) -> Result<Vec<JournalRecord>> {
        self.journal_page(run_id, 0, u32::MAX, usize::MAX).await
    }
    /// A page of the run's journal, in sequence order, of the entries after `after_seq`: at
    /// most `limit`, and no more once those read hold `max_bytes` (their
    /// [`JournalRecord::wire_size`]; the one crossing the bound is included). Rows past the
    /// bound are never read.
    async fn journal_page(
        &self,
        run_id: &str,
        after_seq: u32,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<JournalRecord>>;
    /// The journal entry the run waits at (status `waiting`), if any: the newest one.
    async fn waiting_step(&self, run_id: &str) -> Result<Option<JournalRecord>>;
    /// Writes (or replaces, for a step that was waiting) a journal entry and its events.
    async fn put_journal(&self, entry: &JournalRecord, events: &[OutboxEvent]) -> Result<()>;
    /// Appends lines to the run's log.
    async fn append_log(&self, run_id: &str, lines: &[String]) -> Result<()>;
    async fn log(&self, run_id: &str) -> Result<Vec<String>>;
    /// How many runs are in `state`, counted through the index of states (for `/metrics`:
    /// waiting for approval, sleeping).
    async fn count_runs(&self, state: RunState) -> Result<u64>;
}

/// Notification's store: deliveries.
#[async_trait]
pub trait NotificationStore: Outbox {
    /// Inserts deliveries unless they exist (same event and channel); returns those inserted.
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<u32>;
    /// Claims up to `limit` pending deliveries due at or before `now` that no one else
    /// holds, until `lease_until`: replicas do not attempt the same delivery at once,
    /// and a claim of a process that died runs out so another takes it.
    async fn claim_due_deliveries(
        &self,
        now: Micros,
        lease_until: Micros,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Records an attempt's outcome with its event, and lets the claim go.
    async fn update_delivery(
        &self,
        delivery: &DeliveryRecord,
        event: Option<&OutboxEvent>,
    ) -> Result<()>;
    /// Newest first, optionally of one incident.
    async fn deliveries(
        &self,
        incident_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        self.deliveries_page(incident_id, None, None, limit, usize::MAX)
            .await
    }
    /// A page of deliveries, newest first, optionally of one incident and in one state,
    /// starting after `after`: at most `limit`, and no more once those read hold `max_bytes`
    /// (their [`DeliveryRecord::wire_size`]; the one crossing the bound is included). Rows
    /// past the bound are never read.
    async fn deliveries_page(
        &self,
        incident_id: Option<&str>,
        status: Option<firebreak_domain::DeliveryState>,
        after: Option<&DeliveryCursor>,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Moves the delivery `delivery.id` from state `from` to what `delivery` holds (state,
    /// error, delivered time) with its event, in one transaction; `false`, changing nothing,
    /// when it is not in state `from` (a provider's report seen before, or raced by another).
    async fn transition_delivery(
        &self,
        delivery: &DeliveryRecord,
        from: firebreak_domain::DeliveryState,
        event: Option<&OutboxEvent>,
    ) -> Result<bool>;
    /// The delivery in state `status` whose provider id is `provider_id` (the oldest, should
    /// a provider reuse an id, as Slack's `chat.update` does).
    async fn delivery_by_provider_id(
        &self,
        provider_id: &str,
        status: firebreak_domain::DeliveryState,
    ) -> Result<Option<DeliveryRecord>>;
    /// The provider id of the first delivery (by when it was sent) of `incident_id` on
    /// `channel` whose kind starts with `kind_prefix` that was sent or delivered and has
    /// one: what a later change to the same place updates or threads under.
    async fn first_provider_id(
        &self,
        incident_id: &str,
        channel: &str,
        kind_prefix: &str,
    ) -> Result<Option<String>>;
    /// When deliveries to `destination` were handed to the provider at or after `since`:
    /// the newest `limit` of them, oldest first (what throttles count).
    async fn sent_to(&self, destination: &str, since: Micros, limit: u32) -> Result<Vec<Micros>>;
    /// Cancels the pending deliveries of later escalation steps (2 and on) of an incident,
    /// and every pending step and page of the paging engine (kinds `escalation.step` and
    /// `escalation.page`); returns how many.
    async fn cancel_escalations(&self, incident_id: &str) -> Result<u32>;
    /// Marks the pages of an incident not marked yet as acknowledged at `at` by `by` (its
    /// acknowledgement, or its resolve or close when nobody acknowledged); returns how many.
    async fn mark_acknowledged(&self, incident_id: &str, at: Micros, by: &str) -> Result<u32>;
    /// Keeps a response and its event (the command triage applies) in one transaction,
    /// unless a response with its id is kept already; returns whether it was new.
    async fn record_response(&self, response: &ResponseRecord, event: &OutboxEvent)
    -> Result<bool>;
    /// The code (1-99) that names `incident_id` in text messages to `address`: the one it
    /// has, else the lowest free one, else the one assigned longest ago, taken over. Replies
    /// such as `4a` name the incident by it.
    async fn reply_code(&self, address: &str, incident_id: &str, now: Micros) -> Result<u32>;
    /// The incident reply code `code` names for `address`, if any.
    async fn reply_incident(&self, address: &str, code: u32) -> Result<Option<String>>;
    /// Subscribes a person or channel to an incident's status updates; returns whether the
    /// subscription is new (subscribing twice keeps the first).
    async fn subscribe(&self, subscription: &SubscriptionRecord) -> Result<bool>;
    /// Ends a subscription; returns whether there was one.
    async fn unsubscribe(&self, incident_id: &str, subscriber: &str) -> Result<bool>;
    /// An incident's subscriptions, oldest first.
    async fn subscriptions(&self, incident_id: &str) -> Result<Vec<SubscriptionRecord>>;
    /// A page of an incident's subscriptions, oldest first (then by subscriber): those after
    /// `after` (the last one's creation time and subscriber), at most `limit`.
    async fn subscriptions_page(
        &self,
        incident_id: &str,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>>;
}

/// The reply codes an address is given: one or two digits to type.
pub const MAX_REPLY_CODE: u32 = 99;

/// The code to give among `taken` (code, incident, assigned at) for `incident_id`: the one it
/// has (`true`: nothing to store), else the lowest free code, else the code assigned longest
/// ago. The one rule both stores apply.
pub fn choose_reply_code(taken: &[(u32, String, i64)], incident_id: &str) -> (u32, bool) {
    if let Some((code, _, _)) = taken.iter().find(|(_, i, _)| i == incident_id) {
        return (*code, true);
    }
    if let Some(free) = (1..=MAX_REPLY_CODE).find(|c| !taken.iter().any(|(t, _, _)| t == c)) {
        return (free, false);
    }
    let oldest = taken
        .iter()
        .min_by_key(|(code, _, at)| (*at, *code))
        .map_or(1, |(code, _, _)| *code);
    (oldest, false)
}

/// Silences (intake's database), Alertmanager's: kept by id, replaced when one with its id is
/// put again (an edit), expired by moving their end.
#[async_trait]
pub trait SilenceStore: Send + Sync {
    /// Creates or replaces a silence.
    async fn put_silence(&self, silence: &firebreak_domain::silence::Silence) -> Result<()>;
    /// Every silence, newest start first.
    async fn silences(&self) -> Result<Vec<firebreak_domain::silence::Silence>>;
    async fn silence(&self, id: &str) -> Result<Option<firebreak_domain::silence::Silence>>;
    /// How many silences are kept (what bounds creating more).
    async fn count_silences(&self) -> Result<u64>;
    /// How many alerts each silence silenced, by silence id (silences that silenced none
    /// are absent).
    async fn silenced_counts(&self) -> Result<std::collections::HashMap<String, u64>>;
    /// How many alerts `silence` silenced.
    async fn count_silenced(&self, silence: &str) -> Result<u64>;
    /// The alerts `silence` silenced, newest first, at most `limit`.
    async fn silenced_alerts(&self, silence: &str, limit: u32) -> Result<Vec<AlertRecord>>;
    /// The alerts firing now (or acknowledged), as their senders' keys say: those whose
    /// (integration, alert key) names them and is not resolved. By alert id, after `after`
    /// (empty: from the first), at most `limit`. Alerts sent without a key have no state of
    /// their own here and are not among them.
    async fn firing_alerts(&self, after: &str, limit: u32) -> Result<Vec<AlertRecord>>;
}

/// On-call schedules kept at run time (notification's database). Every change takes the
/// next schedule version in the same transaction, so replicas see one by comparing it.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Every schedule with its overrides, by name, and the version they stand at.
    async fn schedules(&self) -> Result<(i64, Vec<ScheduleRecord>)>;
    /// The version schedules stand at (cheap: one row).
    async fn schedules_version(&self) -> Result<i64>;
    /// Creates or replaces a schedule (its overrides stay).
    async fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<()>;
    /// Deletes a schedule and its overrides; whether it existed.
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
    /// Adds an override to an existing schedule (`NotFound` without it).
    async fn add_override(&self, o: &OverrideRecord) -> Result<()>;
    /// Removes an override of `schedule`; whether it existed.
    async fn remove_override(&self, schedule: &str, id: &str) -> Result<bool>;
    /// The maintenance windows made at run time, by name. They change the version
    /// [`ScheduleStore::schedules_version`] reads, as schedules do: one cheap read tells a
    /// replica whether anything of the on-call configuration moved.
    async fn maintenance_windows(&self) -> Result<Vec<MaintenanceRecord>>;
    /// Creates or replaces a maintenance window.
    async fn put_maintenance_window(&self, window: &MaintenanceRecord) -> Result<()>;
    /// Deletes a maintenance window; whether it existed.
    async fn delete_maintenance_window(&self, name: &str) -> Result<bool>;
}

/// The directory of people and the API tokens that act for them (notification's database).
/// Every change to a token, including the revocations a user's deletion causes, takes the
/// next `version`, in commit order, so [`DirectoryStore::tokens_since`] never skips one.
#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Adds a user; `Conflict` when the name is taken.
    async fn insert_user(&self, user: &UserRecord) -> Result<()>;
    /// Every user, by name.
    async fn users(&self) -> Result<Vec<UserRecord>>;
    /// A page of users by name: those named after `after`, at most `limit`.
    async fn users_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>>;
    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Replaces a user's display name, email, time zone, declared flag, contact methods and
    /// rules (not its kind or creation time); returns whether the user exists.
    async fn update_user(&self, user: &UserRecord) -> Result<bool>;
    /// Replaces a team's display name and declared flag; returns whether the team exists.
    async fn update_team(&self, team: &TeamRecord) -> Result<bool>;
    /// Deletes a user, their team memberships, and revokes their tokens (at `now`); returns
    /// whether the user existed.
    async fn delete_user(&self, name: &str, now: Micros) -> Result<bool>;
    /// Adds a team (its `members` are ignored); `Conflict` when the name is taken.
    async fn insert_team(&self, team: &TeamRecord) -> Result<()>;
    /// Every team with its members, by name.
    async fn teams(&self) -> Result<Vec<TeamRecord>>;
    /// A page of teams with their members, by name: those named after `after`, at most
    /// `limit`.
    async fn teams_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<TeamRecord>>;
    /// Deletes a team and its memberships; returns whether it existed.
    async fn delete_team(&self, name: &str) -> Result<bool>;
    /// Makes `user` a member of `team` or not; returns whether anything changed. Both must
    /// exist: `NotFound` names the missing one.
    async fn set_member(&self, team: &str, user: &str, member: bool) -> Result<bool>;
    /// Stores a new token (its `version` is assigned); returns it as stored. The subject
    /// must exist (`NotFound` otherwise).
    async fn insert_token(&self, token: &TokenRecord) -> Result<TokenRecord>;
    /// Every token, newest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// A page of tokens, newest first (then by id, descending): those after `after` (the last
    /// one's creation time and id), at most `limit`.
    async fn tokens_page(
        &self,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<TokenRecord>>;
    /// Revokes a token at `now` (once: a second revoke changes nothing); returns it as
    /// stored, or `None` when there is no such token.
    async fn revoke_token(&self, id: &str, now: Micros) -> Result<Option<TokenRecord>>;
    /// Tokens changed after `version` (created or revoked), by version.
    async fn tokens_since(&self, version: i64) -> Result<Vec<TokenRecord>>;
    /// Makes `holders` ((role, person) pairs) the incident's roles: pairs not held yet are
    /// added, held ones not among them are marked removed, each change at a new version.
    /// Returns whether anything changed.
    async fn set_incident_roles(
        &self,
        incident_id: &str,
        holders: &[(String, String)],
    ) -> Result<bool>;
    /// Incident roles changed after `version` (added or removed), by version.
    async fn incident_roles_since(&self, version: i64) -> Result<Vec<IncidentRoleRecord>>;
    /// Records when tokens were last used (a later time only).
    async fn mark_used(&self, uses: &[(String, Micros)]) -> Result<()>;
    /// Appends entries to the audit log, each with its `audit` event, in one transaction;
    /// an entry whose id is stored already is skipped with its event. Returns how many it
    /// appended. The log has no update: entries only arrive and, past the retention, go.
    async fn append_audit(&self, entries: &[(AuditRecord, OutboxEvent)]) -> Result<u64>;
    /// Audit entries matching `filter`, newest first (by time, then id), after `after`: at
    /// most `limit`.
    async fn audit(
        &self,
        filter: &AuditFilter,
        after: Option<&AuditCursor>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>>;
    /// Deletes the audit entries older than `before`; returns how many.
    async fn delete_audit_before(&self, before: Micros) -> Result<u64>;
}

/// The embedded bus's durable log: streams, consumer cursors and parked messages.
#[async_trait]
pub trait BusLog: Send + Sync {
    /// Appends a message unless one with the same id exists; returns whether it did.
    async fn append(&self, stream: &str, msg: &BusMessage) -> Result<bool>;
    /// Appends (stream, message) pairs in order in one transaction, each unless its id
    /// exists; returns how many it appended.
    async fn append_batch(&self, batch: &[(String, BusMessage)]) -> Result<u64>;
    /// Messages of `stream` after the consumer's cursor, oldest first.
    async fn fetch(
        &self,
        consumer: &str,
        stream: &str,
        limit: u32,
    ) -> Result<Vec<(i64, BusMessage)>>;
    /// Moves the consumer's cursor past `seq`.
    async fn ack(&self, consumer: &str, stream: &str, seq: i64) -> Result<()>;
    /// Parks a message a consumer gave up on, and moves past it.
    async fn park(&self, consumer: &str, stream: &str, seq: i64, error: &str) -> Result<()>;
    /// Parked messages, for operators.
    async fn parked(&self) -> Result<Vec<ParkedRecord>>;
    /// Where the consumer is in `stream` read in place (an [`OutboxLog`]'s sequence numbers):
    /// `None` until it has moved there from this log.
    async fn outbox_cursor(&self, consumer: &str, stream: &str) -> Result<Option<i64>>;
    /// Moves the consumer's cursor in `stream` read in place to `seq` (never backwards).
    async fn move_outbox_cursor(&self, consumer: &str, stream: &str, seq: i64) -> Result<()>;
    /// The lowest cursor of the consumers of `stream` read in place.
    async fn min_outbox_cursor(&self, stream: &str) -> Result<Option<i64>>;
    /// Parks a copy of an event of `stream` read in place (the outbox sweeps its own), and
    /// moves the consumer past it.
    async fn park_event(
        &self,
        consumer: &str,
        stream: &str,
        seq: i64,
        msg: &BusMessage,
        error: &str,
    ) -> Result<()>;
    /// How many messages of `stream` in this log come after the consumer's cursor, counting
    /// at most `cap` (see [`OutboxLog::count_since`]).
    async fn count_unacked(&self, consumer: &str, stream: &str, cap: u64) -> Result<u64>;
    /// How many messages of `stream` the consumer parked (from this log and from an outbox
    /// read in place), by the parked tables' keys.
    async fn count_parked(&self, consumer: &str, stream: &str) -> Result<u64>;
}
