//! The Rhai sandbox: a raw engine with limits, the action modules, and replay against a journal.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module, Position, Scope};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::Runbook;

/// Every action a script can call, as `module.function`.
pub const ACTIONS: &[&str] = &[
    "http.get",
    "http.post",
    "http.request",
    "incident.note",
    "incident.set_severity",
    "incident.resolve",
    "notify.send",
    "approval.request",
];

/// True for actions that act on the world outside Firebreak; they are simulated unless live
/// execution is on. Incident operations and notifications through configured channels are
/// Firebreak's own and always run.
pub fn is_side_effecting(action: &str) -> bool {
    action.starts_with("http.")
}

/// The sandbox's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rhai operations per execution (a loop iteration, a call, an expression step).
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_functions: usize,
    pub max_variables: usize,
    /// Lines of `print`/`debug` output kept per run.
    pub max_log_lines: usize,
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
        }
    }
}

/// A journal entry as the engine needs it for replay.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub seq: u32,
    pub action: String,
    pub digest: String,
    /// done, simulated, failed or waiting.
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
}

/// What the host made of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Performed or simulated, journaled; the script gets this result.
    Done(Value),
    /// Journaled as waiting (an approval); the run stops until a person decides.
    Waiting,
}

/// Performs actions for the engine. Called on the blocking thread that runs the script.
pub trait Host: Send + Sync {
    /// Performs or simulates `step`, journaling it durably before returning. An `Err` is
    /// journaled as a failed step and raised in the script as a catchable error.
    fn perform(&self, step: &Step) -> Result<StepOutcome, String>;
    /// A line the script printed.
    fn log(&self, line: &str);
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
}

enum Stop {
    Waiting(u32),
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
}

/// The digest that ties a journal entry to the call that made it.
pub fn digest(action: &str, args: &Value) -> String {
    let mut h = Sha256::new();
    h.update(action.as_bytes());
    h.update([0]);
    h.update(args.to_string().as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A raw engine with only the packages scripts need and every limit set: no `eval`, no
/// `import`, no `sleep`, no filesystem or network but the declared actions.
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
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_functions(limits.max_functions)
        .set_max_variables(limits.max_variables)
        .set_max_modules(0)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    e.disable_symbol("eval").disable_symbol("import");
    e
}

/// Runs the script's `run(incident, params)` to its end, a wait, or a failure. Blocking: call
/// it off the async runtime (the orchestration service uses `spawn_blocking`).
pub fn execute(x: Execution) -> Outcome {
    let deadline =
        Instant::now() + Duration::from_secs(u64::from(x.runbook.manifest.timeout_seconds));
    let ctx = Arc::new(Ctx {
        host: x.host,
        journal: x.journal,
        next: AtomicU32::new(0),
        runbook: x.runbook.clone(),
        run_id: x.run_id,
        stop: Mutex::new(None),
        log_lines: AtomicUsize::new(0),
        max_log_lines: x.limits.max_log_lines,
    });
    let mut engine = engine(&x.limits);
    register_actions(&mut engine, &ctx);
    let print_ctx = ctx.clone();
    engine.on_print(move |s| print_ctx.log(s));
    let debug_ctx = ctx.clone();
    engine.on_debug(move |s, _, pos| debug_ctx.log(&format!("{pos}: {s}")));
    engine.on_progress(move |_| (Instant::now() > deadline).then(|| Dynamic::from("deadline")));

    let incident = rhai::serde::to_dynamic(&x.incident).unwrap_or(Dynamic::UNIT);
    let params = rhai::serde::to_dynamic(&x.params).unwrap_or(Dynamic::UNIT);
    let result =
        engine.call_fn::<Dynamic>(&mut Scope::new(), &x.runbook.ast, "run", (incident, params));
    let stop = ctx.stop.lock().map(|mut s| s.take()).unwrap_or(None);
    match (result, stop) {
        (_, Some(Stop::Waiting(seq))) => Outcome::Waiting { seq },
        (_, Some(Stop::Fatal(msg))) => Outcome::Failed(msg),
        (Ok(_), None) => Outcome::Succeeded {
            steps: ctx.next.load(Ordering::SeqCst),
        },
        (Err(e), None) => Outcome::Failed(describe(&e, x.runbook.manifest.timeout_seconds)),
    }
}

fn describe(e: &EvalAltResult, timeout: u32) -> String {
    match e {
        EvalAltResult::ErrorTerminated(..) => {
            format!("deadline exceeded: the script ran longer than {timeout}s")
        }
        EvalAltResult::ErrorTooManyOperations(pos) => {
            format!("operation limit exceeded at {pos}: the script ran too many operations")
        }
        EvalAltResult::ErrorStackOverflow(pos) => {
            format!("call depth limit exceeded at {pos}")
        }
        EvalAltResult::ErrorDataTooLarge(what, pos) => {
            format!("size limit exceeded at {pos}: {what}")
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

    fn call(&self, action: &str, args: Value) -> Result<Dynamic, Box<EvalAltResult>> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let digest = digest(action, &args);
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
                "failed" => Err(failed(&rec.result)),
                _ => to_dynamic(&rec.result),
            };
        }
        if !self.runbook.manifest.allows(action) {
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
        };
        match self.host.perform(&step) {
            Ok(StepOutcome::Done(v)) => to_dynamic(&v),
            Ok(StepOutcome::Waiting) => Err(self.halt(Stop::Waiting(seq))),
            Err(msg) => Err(failed(&json!({ "error": msg }))),
        }
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

fn to_dynamic(v: &Value) -> Result<Dynamic, Box<EvalAltResult>> {
    rhai::serde::to_dynamic(v)
}

fn to_json(d: &Dynamic) -> Result<Value, Box<EvalAltResult>> {
    rhai::serde::from_dynamic(d)
}

fn register_actions(engine: &mut Engine, ctx: &Arc<Ctx>) {
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
        c.call("http.request", req)
    });
    engine.register_static_module("http", http.into());

    let mut incident = Module::new();
    let c = ctx.clone();
    incident.set_native_fn("note", move |text: ImmutableString| {
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
    incident.set_native_fn("resolve", move |summary: ImmutableString| {
        c.call("incident.resolve", json!({ "summary": summary.as_str() }))
    });
    engine.register_static_module("incident", incident.into());

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
        let approved = to_json(&answer)?
            .get("approved")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(approved)
    });
    engine.register_static_module("approval", approval.into());
}
