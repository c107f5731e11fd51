//! The Rhai sandbox: a raw engine with limits, the action modules, and replay against a journal.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use firebreak_domain::{Clock, Micros, SystemClock};
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module, Position, Scope};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::Runbook;
use crate::manifest::Retry;

/// Every action a script can call, as `module.function`.
pub const ACTIONS: &[&str] = &[
    "http.get",
    "http.post",
    "http.request",
    "k8s.scale",
    "k8s.rollout_restart",
    "k8s.cordon",
    "k8s.uncordon",
    "k8s.delete_pod",
    "k8s.isolate",
    "exec.run",
    "incident.note",
    "incident.set_severity",
    "incident.set_category",
    "incident.assign",
    "incident.escalate",
    "incident.resolve",
    "notify.send",
    "approval.request",
    "sleep.for",
];

/// True for actions that act on the world outside Firebreak; they are simulated unless live
/// execution is on. Incident operations and notifications through configured channels are
/// Firebreak's own and always run.
pub fn is_side_effecting(action: &str) -> bool {
    ["http.", "k8s.", "exec."]
        .iter()
        .any(|m| action.starts_with(m))
}

/// How a secret appears to scripts, in the journal, the log and the timeline. The host puts
/// the value in its place only in the requests it sends.
pub fn secret_placeholder(name: &str) -> String {
    format!("{{{{secret:{name}}}}}")
}

/// Longest durable sleep, in seconds.
pub const MAX_SLEEP_SECONDS: i64 = 7 * 24 * 3600;

/// Stack of the thread each execution runs on. Rhai clones, drops, compares, prints and
/// size-checks nested values recursively, so the stack a script needs grows with the depth
/// of its values. The size limits bound that depth (each level is an array element or a
/// map entry, so at most `max_array_size + max_map_size` levels); the worst of those
/// operations measured 7 KB a level in a debug build (comparing maps), 140 MB at 20,000
/// levels. The stack is reserved, not committed: a script touches only what it uses.
pub const SCRIPT_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Levels of nesting a value may have where it crosses the sandbox's edge: the incident and
/// parameters going in, action arguments going out (to the journal), results coming back.
/// It keeps every journal entry readable by `serde_json`, whose parser stops at 128.
pub const MAX_VALUE_DEPTH: usize = 64;

/// Bytes of an action's arguments as JSON: what one journal entry may hold of them.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;

/// Bytes a note from a runbook may hold, as notes from people.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

/// Bytes a script allocates that count as one operation. Rhai counts a copy of a value as
/// one operation whatever its size, so a loop copying a large value spent seconds of CPU
/// within the operation limit; allocation follows what a copy costs. What the host allocates
/// performing a step is not charged. The shipped runbooks allocate at most 250 bytes an
/// operation (measured with their host's work), so they are charged at most twice their
/// operations; a copy of a 10,000-element array costs 625.
pub const BYTES_PER_OPERATION: u64 = 256;

/// The sandbox's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rhai operations per execution (a loop iteration, a call, an expression step).
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    /// Elements of an array, nested ones included; at most 10,000 (see
    /// [`SCRIPT_STACK_BYTES`]).
    pub max_array_size: usize,
    /// Entries of a map, nested ones included; at most 10,000, as arrays.
    pub max_map_size: usize,
    pub max_functions: usize,
    pub max_variables: usize,
    /// Lines of `print`/`debug` output kept per run.
    pub max_log_lines: usize,
    /// Bytes an execution may hold allocated on its thread. Enforced when jemalloc is the
    /// global allocator (the `firebreak` binary's); Rhai's own size limits do not cover
    /// values grown by index assignment (`m[k] = v`), this does.
    pub max_memory_bytes: u64,
    /// Bytes of a script's source.
    pub max_script_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_functions: 64,
            max_variables: 256,
            max_log_lines: 1_000,
            max_memory_bytes: 64 * 1024 * 1024,
            max_script_bytes: 64 * 1024,
        }
    }
}

/// A journal entry as the engine needs it for replay.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub seq: u32,
    pub action: String,
    pub digest: String,
    /// done, simulated, failed, waiting (an approval) or sleeping (`{"until": micros}`).
    pub status: String,
    pub result: Value,
}

/// A new action call for the host to perform (or simulate) and journal.
#[derive(Debug, Clone)]
pub struct Step {
    pub seq: u32,
    pub action: String,
    pub args: Value,
    pub digest: String,
    /// Stable per (run, step): the same on every retry and replay, so targets can dedupe.
    pub idempotency_key: String,
    /// How often the host tries the action when it fails.
    pub retry: Retry,
}

/// What the host made of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Performed or simulated, journaled; the script gets this result.
    Done(Value),
    /// Journaled as waiting (an approval); the run stops until a person decides.
    Waiting,
    /// Journaled as sleeping; the run stops and resumes at `until`.
    Sleeping { until: Micros },
}

/// Why the host did not give a step a result.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// The action failed, and the failure is journaled: the script gets a catchable error
    /// with its text.
    Failed(crate::ActionError),
    /// The host could not journal the step (its store is away). The execution stops where it
    /// is, uncatchable, and the run is not finished: a later execution replays the journal
    /// and goes on from the step.
    Interrupted(String),
}

impl From<crate::ActionError> for StepError {
    fn from(e: crate::ActionError) -> Self {
        Self::Failed(e)
    }
}

impl From<String> for StepError {
    fn from(message: String) -> Self {
        Self::Failed(message.into())
    }
}

impl From<&str> for StepError {
    fn from(message: &str) -> Self {
        Self::Failed(message.into())
    }
}

/// Performs actions for the engine. Called on the blocking thread that runs the script.
pub trait Host: Send + Sync {
    /// Performs or simulates `step`, journaling it durably before returning.
    fn perform(&self, step: &Step) -> Result<StepOutcome, StepError>;
    /// A line the script printed.
    fn log(&self, line: &str);
    /// Now, by the clock the host journals sleeps against: a journaled sleep is over once
    /// this passes its `until`. The system clock unless the host has one injected
    /// (orchestration's does).
    fn now(&self) -> Micros {
        SystemClock.now()
    }
}

/// One execution of a runbook's script.
pub struct Execution {
    pub runbook: Runbook,
    pub run_id: String,
    pub incident: Value,
    pub params: Value,
    /// What earlier executions of this run journaled, in order.
    pub journal: Vec<Recorded>,
    pub host: Arc<dyn Host>,
    pub limits: Limits,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        steps: u32,
    },
    /// The script failed (its own error, a limit, the deadline, a denied capability).
    Failed(String),
    /// Waiting at step `seq` for a person's decision.
    Waiting {
        seq: u32,
    },
    /// Sleeping at step `seq` until `until`.
    Sleeping {
        seq: u32,
        until: Micros,
    },
    /// Stopped at step `seq` because the host could not journal it; the run is not over.
    Interrupted {
        seq: u32,
        reason: String,
    },
}

enum Stop {
    Waiting(u32),
    Sleeping(u32, Micros),
    Interrupted(u32, String),
    Fatal(String),
}

struct Ctx {
    host: Arc<dyn Host>,
    journal: Vec<Recorded>,
    next: AtomicU32,
    runbook: Runbook,
    run_id: String,
    stop: Mutex<Option<Stop>>,
    log_lines: AtomicUsize,
    max_log_lines: usize,
    /// Pages (`incident.escalate`) and notifications (`notify.send`) so far, replayed steps
    /// included, so a replay counts as the first execution did.
    pages: AtomicU32,
    notifications: AtomicU32,
    /// Bytes the host allocated on this thread performing steps (an HTTP response read and
    /// parsed): not the script's copies, so not charged as operations.
    host_allocated: AtomicU64,
}

/// The allocation counters of the current thread, when jemalloc is the global allocator
/// (else they read 0, and neither the memory limit nor the charge for copies applies).
struct Meter {
    mibs: Option<(
        tikv_jemalloc_ctl::thread::allocatedp_mib,
        tikv_jemalloc_ctl::thread::deallocatedp_mib,
    )>,
    base: (u64, u64),
}

impl Meter {
    fn start() -> Self {
        use tikv_jemalloc_ctl::thread::{allocatedp, deallocatedp};
        let mut meter = Self {
            mibs: allocatedp::mib().ok().zip(deallocatedp::mib().ok()),
            base: (0, 0),
        };
        meter.base = meter.counters();
        meter
    }

    /// Bytes the current thread allocated in all (0 without jemalloc).
    fn allocated() -> u64 {
        tikv_jemalloc_ctl::thread::allocatedp::read().map_or(0, |a| a.get())
    }

    /// Bytes the thread allocated and freed in all.
    fn counters(&self) -> (u64, u64) {
        match &self.mibs {
            Some((a, d)) => match (a.read(), d.read()) {
                (Ok(a), Ok(d)) => (a.get(), d.get()),
                _ => (0, 0),
            },
            None => (0, 0),
        }
    }

    /// Bytes allocated since the start, and bytes held now beyond what was held then.
    fn read(&self) -> (u64, i64) {
        let (a, d) = self.counters();
        let allocated = a.wrapping_sub(self.base.0);
        let freed = d.wrapping_sub(self.base.1);
        (allocated, (allocated as i64).wrapping_sub(freed as i64))
    }
}

/// The digest that ties a journal entry to the call that made it.
pub fn digest(action: &str, args: &Value) -> String {
    digest_text(action, &args.to_string())
}

fn digest_text(action: &str, args: &str) -> String {
    let mut h = Sha256::new();
    h.update(action.as_bytes());
    h.update([0]);
    h.update(args.as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Array and map sizes as the engine applies them: at most 10,000 (0, unlimited to Rhai,
/// included), because they bound how deeply values nest and [`SCRIPT_STACK_BYTES`] is sized
/// for the depth those two allow.
fn nesting_bound(size: usize) -> usize {
    const MAX: usize = 10_000;
    if size == 0 { MAX } else { size.min(MAX) }
}

/// A raw engine with only the packages scripts need and every limit set: no `eval`, no
/// `import`, no blocking sleep, no filesystem or network but the declared actions.
pub(crate) fn engine(limits: &Limits) -> Engine {
    use rhai::packages::{
        ArithmeticPackage, BasicArrayPackage, BasicIteratorPackage, BasicMapPackage,
        BasicStringPackage, LogicPackage, MoreStringPackage, Package,
    };
    let mut e = Engine::new_raw();
    ArithmeticPackage::new().register_into_engine(&mut e);
    LogicPackage::new().register_into_engine(&mut e);
    BasicStringPackage::new().register_into_engine(&mut e);
    MoreStringPackage::new().register_into_engine(&mut e);
    BasicArrayPackage::new().register_into_engine(&mut e);
    BasicMapPackage::new().register_into_engine(&mut e);
    BasicIteratorPackage::new().register_into_engine(&mut e);
    e.set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth / 2)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(nesting_bound(limits.max_array_size))
        .set_max_map_size(nesting_bound(limits.max_map_size))
        .set_max_functions(limits.max_functions)
        .set_max_variables(limits.max_variables)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval").disable_symbol("import");
    // Closures share the variables they capture, and a value held in a closure escapes the
    // size checks that bound how deeply values nest (see SCRIPT_STACK_BYTES).
    e.set_allow_anonymous_fn(false);
    // Rhai checks the variables in scope when a script runs; the parser, which looks every
    // name up among the variables declared before it, slowed down quadratically instead
    // (200,000 `let`s: minutes). The same limit at compile time refuses such a script at
    // load, where it is cheap.
    // A refusal is a `ForbiddenVariable` error at the declaration; the catalog words it.
    // Rhai marks `on_def_var` deprecated only to say it is volatile; a change would show
    // here as a compile error, and the load tests cover what it does.
    let max_variables = limits.max_variables;
    #[allow(deprecated)]
    e.on_def_var(move |is_runtime, _, ctx| Ok(is_runtime || ctx.scope().len() < max_variables));
    crate::builtins::register(&mut e);
    e
}

/// Runs the script's `run(incident, params)` to its end, a wait, or a failure. Blocking: call
/// it off the async runtime (the orchestration service uses `spawn_blocking`). The script
/// runs on a thread with a stack of [`SCRIPT_STACK_BYTES`], whatever the caller's: each
/// calling thread has one such worker, kept while the caller lives (the orchestrator's
/// blocking pool reuses its threads), because a new thread per run, with its stack mapped
/// and unmapped and its allocator caches, took the `runbook_steps` benchmark's 400
/// concurrent runs from about 300 to 230 runs/s.
pub fn execute(x: Execution) -> Outcome {
    let (done, outcome) = mpsc::channel();
    // The worker runs the script in the caller's span, so each step's span is its child.
    let mut job = Some((x, done, tracing::Span::current()));
    WORKER.with(|worker| {
        let mut worker = worker.borrow_mut();
        for _ in 0..2 {
            let Some(j) = job.take() else { break };
            let jobs = match worker.as_ref() {
                Some(jobs) => jobs,
                None => match spawn_worker() {
                    Ok(jobs) => worker.insert(jobs),
                    Err(e) => {
                        let (_, done, _) = j;
                        let _ = done.send(Outcome::Failed(format!(
                            "cannot start a thread for the script: {e}"
                        )));
                        return;
                    }
                },
            };
            // A worker that is gone (it cannot be, short of an abort) is replaced once.
            if let Err(mpsc::SendError(j)) = jobs.send(j) {
                job = Some(j);
                *worker = None;
            }
        }
    });
    outcome
        .recv()
        .unwrap_or_else(|_| Outcome::Failed("the script's thread ended before the script".into()))
}

type Job = (Execution, mpsc::Sender<Outcome>, tracing::Span);

thread_local! {
    /// The worker of the calling thread; dropping it (the caller ends) ends the worker.
    static WORKER: RefCell<Option<mpsc::Sender<Job>>> = const { RefCell::new(None) };
}

/// A thread with a stack of [`SCRIPT_STACK_BYTES`] that runs executions one at a time.
fn spawn_worker() -> std::io::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("runbook-script".into())
        .stack_size(SCRIPT_STACK_BYTES)
        .spawn(move || {
            for (x, done, span) in queue {
                let outcome = span
                    .in_scope(|| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute_here(x)))
                    })
                    .unwrap_or_else(|panic| {
                        let why = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Outcome::Failed(format!("the script engine failed: {why}"))
                    });
                let _ = done.send(outcome);
            }
        })?;
    Ok(jobs)
}

fn execute_here(x: Execution) -> Outcome {
    let timeout = x.runbook.manifest.timeout_seconds;
    let deadline = Instant::now() + Duration::from_secs(u64::from(timeout));
    let input = |what: &str, v: &Value| {
        if json_deeper_than(v, MAX_VALUE_DEPTH) {
            return Err(format!(
                "the {what} nested deeper than {MAX_VALUE_DEPTH} levels"
            ));
        }
        rhai::serde::to_dynamic(v)
            .map_err(|e| format!("the {what} not a value for the script: {e}"))
    };
    let (incident, params) = match (
        input("incident is", &x.incident),
        input("parameters are", &x.params),
    ) {
        (Ok(incident), Ok(params)) => (incident, params),
        (Err(e), _) | (_, Err(e)) => return Outcome::Failed(e),
    };
    let ctx = Arc::new(Ctx {
        host: x.host,
        journal: x.journal,
        next: AtomicU32::new(0),
        runbook: x.runbook.clone(),
        run_id: x.run_id,
        stop: Mutex::new(None),
        log_lines: AtomicUsize::new(0),
        max_log_lines: x.limits.max_log_lines,
        pages: AtomicU32::new(0),
        notifications: AtomicU32::new(0),
        host_allocated: AtomicU64::new(0),
    });
    let mut engine = engine(&x.limits);
    register_actions(&mut engine, &ctx);
    let print_ctx = ctx.clone();
    engine.on_print(move |s| print_ctx.log(s));
    let debug_ctx = ctx.clone();
    engine.on_debug(move |s, _, pos| debug_ctx.log(&format!("{pos}: {s}")));
    let meter = Meter::start();
    let max_memory = i64::try_from(x.limits.max_memory_bytes).unwrap_or(i64::MAX);
    let max_operations = x.limits.max_operations;
    let progress_ctx = ctx.clone();
    engine.on_progress(move |ops| {
        // Checked at every operation, so a script that only computes stops at its deadline.
        if Instant::now() > deadline {
            return Some(Dynamic::from("deadline"));
        }
        if ops % 16 != 0 {
            return None;
        }
        let (allocated, held) = meter.read();
        let copied = allocated.saturating_sub(progress_ctx.host_allocated.load(Ordering::Relaxed));
        if max_operations > 0 && ops.saturating_add(copied / BYTES_PER_OPERATION) > max_operations {
            return Some(Dynamic::from("operations"));
        }
        (held > max_memory).then(|| Dynamic::from("memory"))
    });

    let result =
        engine.call_fn::<Dynamic>(&mut Scope::new(), &x.runbook.ast, "run", (incident, params));
    let stop = ctx.stop.lock().map(|mut s| s.take()).unwrap_or(None);
    let steps = ctx.next.load(Ordering::SeqCst);
    match (result, stop) {
        (_, Some(Stop::Waiting(seq))) => Outcome::Waiting { seq },
        (_, Some(Stop::Sleeping(seq, until))) => Outcome::Sleeping { seq, until },
        (_, Some(Stop::Interrupted(seq, reason))) => Outcome::Interrupted { seq, reason },
        (_, Some(Stop::Fatal(msg))) => Outcome::Failed(msg),
        (Ok(_), None) => match ctx.journal.iter().find(|r| r.seq > steps) {
            // The script ended before steps it took the last time: it was changed.
            Some(rec) => Outcome::Failed(format!(
                "non-determinism at step {}: the journal recorded {} but the script ended",
                rec.seq, rec.action
            )),
            None => Outcome::Succeeded { steps },
        },
        (Err(e), None) => Outcome::Failed(describe(&e, timeout)),
    }
}

fn describe(e: &EvalAltResult, timeout: u32) -> String {
    let at = |pos: &Position| {
        if pos.is_none() {
            String::new()
        } else {
            format!(" at {pos}")
        }
    };
    match e {
        EvalAltResult::ErrorTerminated(why, _) if why.to_string() == "memory" => {
            "memory limit exceeded: the script held too much memory".to_owned()
        }
        EvalAltResult::ErrorTerminated(why, pos) if why.to_string() == "operations" => format!(
            "operation limit exceeded{}: the script ran too many operations (copies of large values count by their size)",
            at(pos)
        ),
        EvalAltResult::ErrorTerminated(..) => {
            format!("deadline exceeded: the script ran longer than {timeout}s")
        }
        EvalAltResult::ErrorTooManyOperations(pos) => {
            format!(
                "operation limit exceeded{}: the script ran too many operations",
                at(pos)
            )
        }
        EvalAltResult::ErrorStackOverflow(pos) => {
            format!("call depth limit exceeded{}", at(pos))
        }
        EvalAltResult::ErrorDataTooLarge(what, pos) => {
            format!("size limit exceeded{}: {what}", at(pos))
        }
        other => format!("script error: {other}"),
    }
}

impl Ctx {
    fn log(&self, line: &str) {
        let n = self.log_lines.fetch_add(1, Ordering::SeqCst);
        if n < self.max_log_lines {
            let line: String = line.chars().take(1_000).collect();
            self.host.log(&line);
        } else if n == self.max_log_lines {
            self.host
                .log("(log truncated: the run printed too many lines)");
        }
    }

    /// Stops the run for good: the script cannot catch this.
    fn halt(&self, stop: Stop) -> Box<EvalAltResult> {
        if let Ok(mut s) = self.stop.lock() {
            s.get_or_insert(stop);
        }
        EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into()
    }

    /// Calls an action, asking for approval first when the manifest says so.
    fn call(&self, action: &str, args: Value) -> Result<Dynamic, Box<EvalAltResult>> {
        if self.runbook.manifest.needs_approval(action) {
            let prompt = format!("allow {action} {args}?");
            // The manifest asked for this approval, so it needs no capability of its own.
            let answer = self.step(
                "approval.request",
                json!({ "prompt": prompt, "action": action }),
                false,
            )?;
            if !approved(&answer)? {
                return Err(EvalAltResult::ErrorRuntime(
                    format!("approval rejected: {action} was not allowed").into(),
                    Position::NONE,
                )
                .into());
            }
        }
        self.step(action, args, true)
    }

    /// One journaled step: replayed from the journal when it is there, else performed.
    fn step(
        &self,
        action: &str,
        args: Value,
        check_capability: bool,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        self.within_caps(action, seq)?;
        let text = args.to_string();
        if text.len() > MAX_ARGS_BYTES {
            return Err(format!(
                "the arguments of {action} are {} bytes of JSON, more than {MAX_ARGS_BYTES}",
                text.len()
            )
            .into());
        }
        let digest = digest_text(action, &text);
        drop(text);
        if let Some(rec) = self.journal.iter().find(|r| r.seq == seq) {
            if rec.action != action || rec.digest != digest {
                return Err(self.halt(Stop::Fatal(format!(
                    "non-determinism at step {seq}: the journal recorded {} but the script now calls {action} {}",
                    rec.action,
                    if rec.action == action { "with other arguments" } else { "" },
                ).trim_end().to_owned())));
            }
            return match rec.status.as_str() {
                "waiting" => Err(self.halt(Stop::Waiting(seq))),
                "sleeping" => match rec
                    .result
                    .get("until")
                    .and_then(Value::as_i64)
                    .map(Micros::from_unix_micros)
                {
                    Some(until) if until > self.host.now() => {
                        Err(self.halt(Stop::Sleeping(seq, until)))
                    }
                    _ => Ok(Dynamic::UNIT),
                },
                "failed" => Err(failed(&rec.result)),
                _ => result_to_dynamic(action, seq, &rec.result),
            };
        }
        if check_capability && !self.runbook.manifest.allows(action) {
            return Err(self.halt(Stop::Fatal(format!(
                "capability denied at step {seq}: runbook {} does not declare {action}",
                self.runbook.manifest.name
            ))));
        }
        let step = Step {
            seq,
            action: action.to_owned(),
            args,
            digest,
            idempotency_key: format!("{}:{seq}", self.run_id),
            retry: self.runbook.manifest.retry(action),
        };
        let before = Meter::allocated();
        let performed = self.host.perform(&step);
        self.host_allocated
            .fetch_add(Meter::allocated().wrapping_sub(before), Ordering::Relaxed);
        match performed {
            Ok(StepOutcome::Done(v)) => result_to_dynamic(action, seq, &v),
            Ok(StepOutcome::Waiting) => Err(self.halt(Stop::Waiting(seq))),
            Ok(StepOutcome::Sleeping { until }) => Err(self.halt(Stop::Sleeping(seq, until))),
            Err(StepError::Failed(e)) => Err(failed(&json!({ "error": e.message }))),
            Err(StepError::Interrupted(why)) => Err(self.halt(Stop::Interrupted(seq, why))),
        }
    }
}

impl Ctx {
    /// Ends the run when a step goes past the manifest's caps on steps, pages and
    /// notifications. Replayed steps count too, so a replay stops where the first execution
    /// did; the script cannot catch this.
    fn within_caps(&self, action: &str, seq: u32) -> Result<(), Box<EvalAltResult>> {
        let caps = &self.runbook.manifest.limits;
        let name = &self.runbook.manifest.name;
        if seq > caps.max_steps {
            return Err(self.halt(Stop::Fatal(format!(
                "step limit exceeded at step {seq}: runbook {name} may take at most {} steps a run (limits.max_steps)",
                caps.max_steps
            ))));
        }
        let (counter, cap, what, field) = match action {
            "incident.escalate" => (&self.pages, caps.max_pages, "page", "limits.max_pages"),
            "notify.send" => (
                &self.notifications,
                caps.max_notifications,
                "send",
                "limits.max_notifications",
            ),
            _ => return Ok(()),
        };
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        if n > cap {
            return Err(self.halt(Stop::Fatal(format!(
                "{} limit exceeded at step {seq}: runbook {name} may {what} at most {cap} times a run ({field})",
                if what == "page" { "page" } else { "notification" }
            ))));
        }
        Ok(())
    }
}

fn failed(result: &Value) -> Box<EvalAltResult> {
    let msg = result
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("action failed")
        .to_owned();
    EvalAltResult::ErrorRuntime(msg.into(), Position::NONE).into()
}

/// Reads an approval step's result: `{approved: bool, by, comment}`.
fn approved(answer: &Dynamic) -> Result<bool, Box<EvalAltResult>> {
    Ok(to_json(answer)?
        .get("approved")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

/// An action's result as the script sees it.
fn result_to_dynamic(action: &str, seq: u32, v: &Value) -> Result<Dynamic, Box<EvalAltResult>> {
    if json_deeper_than(v, MAX_VALUE_DEPTH) {
        return Err(format!(
            "the result of {action} at step {seq} is nested deeper than {MAX_VALUE_DEPTH} levels"
        )
        .into());
    }
    rhai::serde::to_dynamic(v)
}

/// A script value as JSON; refused when nested deeper than [`MAX_VALUE_DEPTH`], before any
/// conversion that would recurse through it.
fn to_json(d: &Dynamic) -> Result<Value, Box<EvalAltResult>> {
    if deeper_than(d, MAX_VALUE_DEPTH) {
        return Err(format!(
            "a value nested deeper than {MAX_VALUE_DEPTH} levels cannot leave the script"
        )
        .into());
    }
    rhai::serde::from_dynamic(d)
}

/// True when `d` nests arrays and maps more than `levels` deep. The recursion stops at
/// `levels`, whatever the value's depth.
pub(crate) fn deeper_than(d: &Dynamic, levels: usize) -> bool {
    if d.is_array() {
        levels == 0
            || d.as_array_ref()
                .is_ok_and(|a| a.iter().any(|v| deeper_than(v, levels - 1)))
    } else if d.is_map() {
        levels == 0
            || d.as_map_ref()
                .is_ok_and(|m| m.values().any(|v| deeper_than(v, levels - 1)))
    } else {
        false
    }
}

/// True when `v` nests arrays and objects more than `levels` deep, as [`deeper_than`].
fn json_deeper_than(v: &Value, levels: usize) -> bool {
    match v {
        Value::Array(a) => levels == 0 || a.iter().any(|v| json_deeper_than(v, levels - 1)),
        Value::Object(m) => levels == 0 || m.values().any(|v| json_deeper_than(v, levels - 1)),
        _ => false,
    }
}

fn register_actions(engine: &mut Engine, ctx: &Arc<Ctx>) {
    register_http(engine, ctx);
    register_k8s(engine, ctx);
    register_incident(engine, ctx);

    let mut exec = Module::new();
    let c = ctx.clone();
    exec.set_native_fn("run", move |command: ImmutableString, args: rhai::Array| {
        let args = to_json(&Dynamic::from_array(args))?;
        if !args
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
        {
            return Err("exec::run(command, args): args must be an array of strings".into());
        }
        c.call(
            "exec.run",
            json!({ "command": command.as_str(), "args": args }),
        )
    });
    engine.register_static_module("exec", exec.into());

    let mut notify = Module::new();
    let c = ctx.clone();
    notify.set_native_fn(
        "send",
        move |channel: ImmutableString, message: ImmutableString| {
            c.call(
                "notify.send",
                json!({ "channel": channel.as_str(), "message": message.as_str() }),
            )
        },
    );
    engine.register_static_module("notify", notify.into());

    let mut approval = Module::new();
    let c = ctx.clone();
    approval.set_native_fn("request", move |prompt: ImmutableString| {
        let answer = c.call("approval.request", json!({ "prompt": prompt.as_str() }))?;
        // The host records {approved: bool, by, comment}; the script sees the boolean.
        approved(&answer)
    });
    engine.register_static_module("approval", approval.into());

    // Durable sleep: the run stops and the executor resumes it when the time has come, so a
    // sleep survives restarts and holds no thread.
    let c = ctx.clone();
    engine.register_fn("sleep", move |seconds: rhai::INT| {
        if !(0..=MAX_SLEEP_SECONDS).contains(&seconds) {
            return Err(
                format!("sleep({seconds}): seconds must be 0 to {MAX_SLEEP_SECONDS}").into(),
            );
        }
        c.call("sleep.for", json!({ "seconds": seconds }))
            .map(|_| ())
    });

    // Secrets: the script holds a placeholder; only requests the host sends carry the value.
    let c = ctx.clone();
    engine.register_fn(
        "secret",
        move |name: ImmutableString| -> Result<ImmutableString, Box<EvalAltResult>> {
            if !c
                .runbook
                .manifest
                .secrets
                .iter()
                .any(|s| s.name == name.as_str())
            {
                return Err(c.halt(Stop::Fatal(format!(
                    "secret denied: runbook {} does not declare the secret {name:?}",
                    c.runbook.manifest.name
                ))));
            }
            Ok(secret_placeholder(&name).into())
        },
    );
}

fn register_http(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let mut http = Module::new();
    let c = ctx.clone();
    http.set_native_fn("get", move |url: ImmutableString| {
        c.call("http.get", json!({ "method": "GET", "url": url.as_str() }))
    });
    let c = ctx.clone();
    http.set_native_fn("post", move |url: ImmutableString, body: Dynamic| {
        c.call(
            "http.post",
            json!({ "method": "POST", "url": url.as_str(), "body": to_json(&body)? }),
        )
    });
    let c = ctx.clone();
    http.set_native_fn("request", move |req: Map| {
        let req = to_json(&Dynamic::from_map(req))?;
        let has = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !has("method") || !has("url") {
            return Err("http::request needs a map with method and url".into());
        }
        let known = ["method", "url", "headers", "body", "timeout_ms"];
        if let Some(k) = req
            .as_object()
            .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
        {
            return Err(format!(
                "http::request: unknown key {k:?}; known: {}",
                known.join(", ")
            )
            .into());
        }
        c.call("http.request", req)
    });
    engine.register_static_module("http", http.into());
}

fn register_k8s(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let mut k8s = Module::new();
    let c = ctx.clone();
    k8s.set_native_fn(
        "scale",
        move |namespace: ImmutableString, target: ImmutableString, replicas: rhai::INT| {
            if !(0..=10_000).contains(&replicas) {
                return Err(format!("k8s::scale: replicas must be 0 to 10000, not {replicas}").into());
            }
            let (kind, name) = workload(&target)?;
            c.call(
                "k8s.scale",
                json!({ "namespace": namespace.as_str(), "kind": kind, "name": name, "replicas": replicas }),
            )
        },
    );
    let c = ctx.clone();
    k8s.set_native_fn(
        "rollout_restart",
        move |namespace: ImmutableString, target: ImmutableString| {
            let (kind, name) = workload(&target)?;
            c.call(
                "k8s.rollout_restart",
                json!({ "namespace": namespace.as_str(), "kind": kind, "name": name }),
            )
        },
    );
    let c = ctx.clone();
    k8s.set_native_fn("cordon", move |node: ImmutableString| {
        c.call("k8s.cordon", json!({ "node": node.as_str() }))
    });
    let c = ctx.clone();
    k8s.set_native_fn("uncordon", move |node: ImmutableString| {
        c.call("k8s.uncordon", json!({ "node": node.as_str() }))
    });
    let c = ctx.clone();
    k8s.set_native_fn(
        "delete_pod",
        move |namespace: ImmutableString, pod: ImmutableString| {
            c.call(
                "k8s.delete_pod",
                json!({ "namespace": namespace.as_str(), "pod": pod.as_str() }),
            )
        },
    );
    let c = ctx.clone();
    k8s.set_native_fn(
        "isolate",
        move |namespace: ImmutableString, selector: Map| {
            let selector = to_json(&Dynamic::from_map(selector))?;
            let valid = selector
                .as_object()
                .is_some_and(|m| !m.is_empty() && m.values().all(Value::is_string));
            if !valid {
                return Err("k8s::isolate(namespace, selector): selector must be a non-empty map of label to string".into());
            }
            c.call(
                "k8s.isolate",
                json!({ "namespace": namespace.as_str(), "selector": selector }),
            )
        },
    );
    engine.register_static_module("k8s", k8s.into());
}

/// Splits `deployment/web` into its kind and name.
fn workload(target: &str) -> Result<(&'static str, &str), Box<EvalAltResult>> {
    let (kind, name) = target.split_once('/').unwrap_or(("", target));
    let kind = match kind {
        "deployment" | "deploy" => "deployment",
        "statefulset" | "sts" => "statefulset",
        _ => {
            return Err(format!(
                "k8s: target {target:?} must be deployment/NAME or statefulset/NAME"
            )
            .into());
        }
    };
    if name.is_empty() {
        return Err(format!("k8s: target {target:?} has no name").into());
    }
    Ok((kind, name))
}

fn register_incident(engine: &mut Engine, ctx: &Arc<Ctx>) {
    let mut incident = Module::new();
    let c = ctx.clone();
    incident.set_native_fn("note", move |text: ImmutableString| {
        if text.is_empty() || text.len() > MAX_NOTE_BYTES {
            return Err(format!(
                "incident::note: the text is {} bytes; a note holds 1 to {MAX_NOTE_BYTES} bytes",
                text.len()
            )
            .into());
        }
        c.call("incident.note", json!({ "text": text.as_str() }))
    });
    let c = ctx.clone();
    incident.set_native_fn("set_severity", move |level: rhai::INT| {
        if !(1..=5).contains(&level) {
            return Err(format!("incident::set_severity({level}): severity must be 1 to 5").into());
        }
        c.call("incident.set_severity", json!({ "severity": level }))
    });
    let c = ctx.clone();
    incident.set_native_fn("set_category", move |category: ImmutableString| {
        if category.trim().is_empty() {
            return Err("incident::set_category: the category must not be empty".into());
        }
        c.call(
            "incident.set_category",
            json!({ "category": category.as_str() }),
        )
    });
    let c = ctx.clone();
    incident.set_native_fn(
        "assign",
        move |role: ImmutableString, person: ImmutableString| {
            // Names by the directory's rule, which triage holds them to: refused here,
            // before a step is taken, as a severity out of range is.
            for (field, name) in [("role", &role), ("person", &person)] {
                if let Err(e) = firebreak_domain::access::parse_name(field, name) {
                    return Err(format!("incident::assign(role, person): {e}").into());
                }
            }
            c.call(
                "incident.assign",
                json!({ "role": role.as_str(), "person": person.as_str() }),
            )
        },
    );
    let c = ctx.clone();
    incident.set_native_fn("escalate", move |reason: ImmutableString| {
        c.call("incident.escalate", json!({ "reason": reason.as_str() }))
    });
    let c = ctx.clone();
    incident.set_native_fn("resolve", move |summary: ImmutableString| {
        c.call("incident.resolve", json!({ "summary": summary.as_str() }))
    });
    engine.register_static_module("incident", incident.into());
}
