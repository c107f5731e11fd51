//! The configuration reference: every key, section by section, with its type, default,
//! environment variable and meaning. docs/configuration.md's key tables are generated from
//! it (`FIREBREAK_WRITE_DOCS=1 cargo test -p firebreak --lib the_configuration_doc`), and
//! tests hold it to the schema: a walk of serde's own answers ([`super::walk`]) must find
//! exactly these sections and keys, in the structs' order, and each default written as YAML
//! must be the default in force.
//!
//! A new configuration key goes into its section here, then the doc is regenerated.

use std::fmt::Write as _;

use super::secret_files::{Form, SECRET_KEYS};

/// One section: a map of fixed keys somewhere in the configuration.
pub(crate) struct Section {
    /// Where it is, as [`super::walk::show`] writes a location: `` (the top), `nats`,
    /// `channels[]`, `channels[kind=slack]`, `schedules[].layers[].rotation`; `<kind>`
    /// stands for any key (`throttles.<kind>[]`).
    pub(crate) at: &'static str,
    /// What the section is for (markdown).
    pub(crate) about: &'static str,
    /// A whole configuration holding one instance of the section, where an empty one at its
    /// place would not load (required keys around or in it): the defaults test adds each
    /// key's default to it.
    pub(crate) example: Option<&'static str>,
    pub(crate) keys: &'static [Key],
}

/// One key.
pub(crate) struct Key {
    pub(crate) name: &'static str,
    /// What it takes, in words: `integer`, `string`, `path`, `list of maps`, ….
    pub(crate) ty: &'static str,
    pub(crate) default: Default,
    /// What it does (markdown, one paragraph).
    pub(crate) doc: &'static str,
}

/// A key's default.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Default {
    /// The default as YAML; a test sets the key to it and sees nothing change.
    Yaml(&'static str),
    /// No value: the feature is off or the value is taken from elsewhere, as `doc` says.
    Unset,
    /// The key must be given.
    Required,
    /// A default too large or too dependent to write as a value, in words.
    Text(&'static str),
}

use self::Default::{Required, Text, Unset, Yaml};

const fn k(name: &'static str, ty: &'static str, default: Default, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        default,
        doc,
    }
}

const fn s(at: &'static str, about: &'static str, keys: &'static [Key]) -> Section {
    Section {
        at,
        about,
        example: None,
        keys,
    }
}

const fn ex(
    at: &'static str,
    about: &'static str,
    example: &'static str,
    keys: &'static [Key],
) -> Section {
    Section {
        at,
        about,
        example: Some(example),
        keys,
    }
}

/// The conditions of a route and of a subscription rule.
const MATCH: &[Key] = &[
    k(
        "categories",
        "list of strings",
        Yaml("[]"),
        "One of these categories.",
    ),
    k(
        "max_severity",
        "integer 0–5",
        Yaml("0"),
        "At least this severe: 1 is SEV1; 0 matches any severity.",
    ),
    k(
        "sources",
        "list of strings",
        Yaml("[]"),
        "One of these sources (the monitoring tool or service that raised it).",
    ),
    k(
        "labels",
        "map of strings",
        Yaml("{}"),
        "Each of these labels, with exactly this value.",
    ),
    k(
        "integrations",
        "list of strings",
        Yaml("[]"),
        "One of these integrations (the one its first alert came through).",
    ),
];

/// A throttle's windows.
const LIMIT: &[Key] = &[
    k(
        "count",
        "integer 1–1000",
        Required,
        "Pages the window allows to one destination.",
    ),
    k(
        "per_seconds",
        "integer 1–86400",
        Required,
        "The window's length in seconds.",
    ),
];

/// Every section, top first, in the order of `Config`'s fields.
pub(crate) const SECTIONS: &[Section] = &[
    s(
        "",
        "The keys of the configuration file's top level. Sections (maps and lists of maps) have \
         tables of their own below.",
        &[
            k(
                "data_dir",
                "path",
                Yaml("./firebreak-data"),
                "Where embedded mode keeps its SQLite databases, its secrets key and the admin token of its first start.",
            ),
            k(
                "grpc_addr",
                "address (host:port)",
                Yaml("127.0.0.1:7400"),
                "The gRPC listen address (all services in embedded mode; the one service with `firebreak serve`).",
            ),
            k(
                "http_addr",
                "address (host:port)",
                Yaml("127.0.0.1:7401"),
                "The HTTP listen address: `/livez`, `/readyz`, `/healthz`, `/metrics`, the webhook intake and the answer links of pages.",
            ),
            k(
                "runbooks_dir",
                "path",
                Unset,
                "A runbook directory. Without one the runbooks shipped in the binary run; with one its runbooks replace them (see `runbooks_builtin`).",
            ),
            k(
                "runbooks_builtin",
                "bool",
                Text("true without `runbooks_dir`, false with one"),
                "Keep the built-in runbooks beside `runbooks_dir`'s, which then replace built-ins of the same name and add the rest.",
            ),
            k(
                "live",
                "bool",
                Yaml("false"),
                "Let runbooks' side-effecting actions act for real; off, they are dry runs that record what they would have done.",
            ),
            k(
                "log_json",
                "bool",
                Yaml("false"),
                "Log lines as JSON instead of text, each with `trace_id`, `span_id` and `service`.",
            ),
            k(
                "otel",
                "map",
                Yaml("{}"),
                "OpenTelemetry export of traces (below); the standard `OTEL_*` variables fill what is unset (docs/observability.md).",
            ),
            k(
                "durable_fsync",
                "bool",
                Yaml("false"),
                "fsync every SQLite commit (survives power loss, not only process crashes).",
            ),
            k(
                "taxonomy",
                "map (section `taxonomy`)",
                Text(
                    "the ten categories of the incident process (`crates/domain/src/default_taxonomy.yaml`)",
                ),
                "The categories and the rules that map signals to them; replaces the default as a whole.",
            ),
            k(
                "channels",
                "list of maps (section `channels[]`)",
                Yaml("[]"),
                "Notification channels besides `log`, which always exists (docs/channels.md).",
            ),
            k(
                "integrations",
                "list of maps (section `integrations[]`)",
                Yaml("[]"),
                "Integrations monitoring tools authenticate with (Alertmanager, PagerDuty, gRPC); more can be made at run time with `firebreak integration create`.",
            ),
            k(
                "intake_max_in_flight",
                "integer",
                Yaml("512"),
                "Calls intake stores at once; more are answered 429 / `RESOURCE_EXHAUSTED` at once.",
            ),
            k(
                "intake_anonymous_rate_limit_per_second",
                "integer",
                Yaml("10000"),
                "Alerts per second keyless gRPC callers may raise together (a burst of one second's worth); 0: no limit. Integrations have their own `rate_limit_per_second`.",
            ),
            k(
                "intake_max_alerts_per_call",
                "integer",
                Yaml("1000"),
                "Alerts one call (a gRPC batch, an Alertmanager group) may hold; larger calls are refused (400 / 413).",
            ),
            k(
                "escalation_policies",
                "list of maps (section `escalation_policies[]`)",
                Yaml("[]"),
                "Escalation policies routes and runbooks (`notify::send(\"POLICY\", ..)`) page with: steps, each later one only while the incident is unacknowledged (docs/oncall.md).",
            ),
            k(
                "schedules",
                "list of maps (section `schedules[]`)",
                Yaml("[]"),
                "On-call schedules: layers of rotations, restrictions and overrides (docs/schedules.md).",
            ),
            k(
                "routes",
                "list of maps (section `routes[]`)",
                Yaml("[]"),
                "Which escalation policy pages when an incident opens: the first route that matches.",
            ),
            k(
                "subscriptions",
                "list of maps (section `subscriptions[]`)",
                Yaml("[]"),
                "Who receives the status updates of which incidents, besides each incident's own subscribers (docs/status-updates.md).",
            ),
            k(
                "status_updates",
                "map (section `status_updates`)",
                Text("see the section"),
                "Reminders to post status updates.",
            ),
            k(
                "responses",
                "map (section `responses`)",
                Unset,
                "Where people answer pages from: the public URL links in pages start with, and the key that signs them (docs/oncall.md).",
            ),
            k(
                "maintenance",
                "list of maps (section `maintenance[]`)",
                Yaml("[]"),
                "Maintenance windows: recurring local hours during which incidents of some services, integrations or labels are recorded but page nobody (docs/maintenance.md).",
            ),
            k(
                "throttles",
                "map (section `throttles`)",
                Text("GoAlert's limits, see the section"),
                "How many pages one destination (a number, an address) may receive in a window, per contact kind.",
            ),
            k(
                "reopen",
                "map (section `reopen`)",
                Text("see the section"),
                "How long resolved incidents can reopen, by hand and by a repeat alert (docs/lifecycle.md).",
            ),
            k(
                "commander",
                "map (section `commander`)",
                Text("see the section"),
                "Which incidents need an incident commander, and the schedule that provides one.",
            ),
            k(
                "grouping",
                "map (section `grouping`)",
                Text("no rules: nothing is grouped"),
                "Time-window grouping of related alerts into one incident, Alertmanager-style (docs/grouping.md).",
            ),
            k(
                "review",
                "map (section `review`)",
                Text("see the section"),
                "The post-incident review's template (docs/review.md).",
            ),
            k(
                "users",
                "list of maps (section `users[]`)",
                Yaml("[]"),
                "People and service accounts declared here (GitOps): written into the directory at start-up, not deletable or changeable at run time.",
            ),
            k(
                "teams",
                "list of maps (section `teams[]`)",
                Yaml("[]"),
                "Teams declared here, with members (directory users).",
            ),
            k(
                "runbook_params",
                "map of maps",
                Yaml("{}"),
                "Parameter overrides per runbook: `runbook_params: {NAME: {PARAM: VALUE}}`, checked against the runbooks' declared parameters at start.",
            ),
            k(
                "approvers",
                "map of lists of strings",
                Yaml("{}"),
                "Who may approve runbook steps, per role: `approvers: {incident-commander: [alice]}`.",
            ),
            k(
                "exec",
                "map (section `exec`)",
                Text("see the section"),
                "Commands runbooks may run through `exec::run`, with limits.",
            ),
            k(
                "kubernetes",
                "map (section `kubernetes`)",
                Text("in-cluster configuration or `KUBECONFIG`"),
                "The cluster the `k8s::` actions act on.",
            ),
            k(
                "secrets_dir",
                "path",
                Unset,
                "A directory with one file per secret (a mounted Kubernetes Secret): what runbooks' secrets and channels' `{secret: NAME}` name; secrets are also read from `FIREBREAK_SECRET_<NAME>`.",
            ),
            k(
                "shutdown_grace_seconds",
                "integer",
                Yaml("10"),
                "Seconds to finish in-flight work after a shutdown signal.",
            ),
            k(
                "database_url",
                "secret (text)",
                Unset,
                "Distributed mode (`firebreak serve`): the service's Postgres database, `postgres://user:password@host:5432/firebreak_{service}`; `{service}` is replaced by the service's name, so one file serves all four. Needed by `serve`.",
            ),
            k(
                "nats",
                "map (section `nats`)",
                Unset,
                "Distributed mode: the NATS JetStream server the services' events travel through. Needed by `serve`.",
            ),
            k(
                "peers",
                "map (section `peers`)",
                Text("none"),
                "Distributed mode: where the services this one calls listen.",
            ),
            k(
                "run_lease_seconds",
                "integer",
                Yaml("30"),
                "Distributed mode: seconds a replica's lease on a run lasts unrenewed, so how soon another replica takes over the runs of one that died.",
            ),
            k(
                "database_max_connections",
                "integer",
                Yaml("10"),
                "Distributed mode: connections each process keeps to its database at most.",
            ),
            k(
                "connections",
                "map (section `connections`)",
                Text("see the section"),
                "Limits on the connections both servers (gRPC and HTTP) accept.",
            ),
            k(
                "auth",
                "map (section `auth`)",
                Text("see the section"),
                "Authentication: the service credential, the break-glass admin token, and how often credentials sync (docs/security.md).",
            ),
            k(
                "tls",
                "map (section `tls`)",
                Text("none: plain text"),
                "TLS for both servers and for the connections to peers (docs/security.md).",
            ),
            k(
                "secrets_encryption",
                "map (section `secrets_encryption`)",
                Text("see the section"),
                "The key the secrets Firebreak stores are encrypted with (run-time integrations' signing secrets).",
            ),
        ],
    ),
    ex(
        "taxonomy",
        "The categories signals are sorted into and the rules that sort them. Giving `taxonomy` \
         replaces the default ten categories as a whole; `uncategorized` must be among them.",
        "taxonomy: {categories: []}\n",
        &[
            k(
                "category_label",
                "string",
                Yaml("category"),
                "A label whose value, when it names a known category, sets the category outright.",
            ),
            k(
                "urgency_label",
                "string",
                Yaml("urgency"),
                "A label whose value (`high`, `medium`, `low`) sets the urgency.",
            ),
            k(
                "severity_label",
                "string",
                Yaml("severity"),
                "A label whose value, mapped through `severity_values`, sets the severity.",
            ),
            k(
                "severity_values",
                "map of integers 1–5",
                Yaml("{}"),
                "Label values (lowercase) to severity levels.",
            ),
            k(
                "categories",
                "list of maps (section `taxonomy.categories[]`)",
                Required,
                "The categories, tried in order; the first whose rule matches wins.",
            ),
        ],
    ),
    ex(
        "taxonomy.categories[]",
        "One category and what selects it.",
        "taxonomy: {categories: [{name: x}]}\n",
        &[
            k(
                "name",
                "string",
                Required,
                "Lowercase letters, digits and `-`: `denial-of-service`.",
            ),
            k(
                "description",
                "string",
                Yaml("''"),
                "What the category means, for people.",
            ),
            k(
                "severity",
                "integer 1–5",
                Yaml("3"),
                "The severity when the signal states none.",
            ),
            k(
                "urgency",
                "`high`, `medium` or `low`",
                Yaml("medium"),
                "The urgency when the signal states none.",
            ),
            k(
                "labels",
                "map of lists of strings",
                Yaml("{}"),
                "Label matchers: the rule matches when any listed label has any listed value.",
            ),
            k(
                "keywords",
                "list of strings",
                Yaml("[]"),
                "Words or phrases matched against the title's words, case-insensitively.",
            ),
        ],
    ),
    ex(
        "channels[]",
        "The keys every channel has; each kind adds its own (the sections below). A field \
         holding a secret takes `{secret: NAME}` (a file in `secrets_dir`, or \
         `FIREBREAK_SECRET_<NAME>`) or names a file with its `_file` variant; docs/channels.md \
         describes each kind.",
        "channels: [{name: x, kind: log}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "The name routes, escalation steps and runbooks (`notify::send(\"NAME\", ..)`) use; at most 64 characters; not `log`.",
            ),
            k(
                "kind",
                "`log`, `webhook`, `email`, `slack`, `slack_webhook`, `mattermost`, `mattermost_webhook`, `teams`, `twilio` or `sms_gateway`",
                Required,
                "What the channel delivers through.",
            ),
            k(
                "events",
                "list of strings",
                Yaml("[]"),
                "The incident changes it receives (`opened`, `acknowledged`, `resolved`, `severity_changed`, …); empty: all but `alert_attached` and `review_changed`.",
            ),
            k(
                "max_severity",
                "integer 0–5",
                Yaml("0"),
                "Only incidents at least this severe (1 is SEV1); 0: all.",
            ),
            k(
                "templates",
                "map (section `channels[].templates`)",
                Unset,
                "Templates overriding the built-in ones, for every event or one kind of event (docs/channels.md, \"Templates\").",
            ),
        ],
    ),
    ex(
        "channels[].templates",
        "A channel's own templates (minijinja), over the built-in ones.",
        "channels: [{name: x, kind: log, templates: {}}]\n",
        &[
            k(
                "subject",
                "template",
                Unset,
                "An email's subject, a Teams card's title.",
            ),
            k(
                "text",
                "template",
                Unset,
                "The message: an email's body, a Slack, Mattermost or Teams text, an SMS.",
            ),
            k(
                "speech",
                "template",
                Unset,
                "What a Twilio voice call says.",
            ),
            k(
                "by_event",
                "map of maps (section `channels[].templates.by_event.<kind>`)",
                Yaml("{}"),
                "Overrides for one kind of event (`resolved: {text: ...}`), over the ones above.",
            ),
        ],
    ),
    s(
        "channels[].templates.by_event.<kind>",
        "One event kind's templates.",
        &[
            k(
                "subject",
                "template",
                Unset,
                "The subject or title for this event kind.",
            ),
            k(
                "text",
                "template",
                Unset,
                "The message for this event kind.",
            ),
            k(
                "speech",
                "template",
                Unset,
                "What a voice call says for this event kind.",
            ),
        ],
    ),
    s(
        "channels[kind=log]",
        "A structured log line on the server; nothing to configure.",
        &[],
    ),
    ex(
        "channels[kind=webhook]",
        "An HTTP POST of the JSON payload with an `Idempotency-Key`, signed when it has a \
         signing secret.",
        "channels: [{name: x, kind: webhook, url: 'https://hooks.example.com/x'}]\n",
        &[
            k(
                "url",
                "URL, or `{secret: NAME}`",
                Required,
                "Where it POSTs: `http://` or `https://`; a secret when the URL holds a token.",
            ),
            k(
                "signing_secret",
                "`{secret: NAME}`",
                Unset,
                "Signs every request: `X-Firebreak-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.",
            ),
        ],
    ),
    ex(
        "channels[kind=email]",
        "Email over SMTP: STARTTLS, implicit TLS, or plain to a loopback relay.",
        "channels: [{name: x, kind: email, host: smtp.example.com, from: fb@example.com}]\n",
        &[
            k(
                "host",
                "string",
                Required,
                "The SMTP server's host name (also the name its certificate must carry).",
            ),
            k(
                "port",
                "integer",
                Text("587 with `starttls`, 465 with `tls`, 25 with `none`"),
                "The SMTP port.",
            ),
            k(
                "tls",
                "`starttls`, `tls` or `none`",
                Yaml("starttls"),
                "STARTTLS (which the server must offer), TLS from the first byte, or none (loopback hosts only).",
            ),
            k(
                "username",
                "string",
                Unset,
                "Authenticates as this user, with `password`.",
            ),
            k("password", "`{secret: NAME}`", Unset, "The SMTP password."),
            k(
                "from",
                "string",
                Required,
                "The sender: `firebreak@example.com` or `Firebreak <firebreak@example.com>`.",
            ),
            k(
                "to",
                "list of strings",
                Yaml("[]"),
                "Where broadcasts go; without any, the channel reaches people only.",
            ),
            k(
                "ca_file",
                "path",
                Unset,
                "PEM certificates to trust besides the system's roots (a private CA).",
            ),
            k(
                "hello_name",
                "string",
                Text("`localhost`"),
                "The name this client greets with (EHLO).",
            ),
            k(
                "timeout_seconds",
                "integer",
                Yaml("10"),
                "Seconds a connection or a command may take.",
            ),
        ],
    ),
    ex(
        "channels[kind=slack]",
        "Slack's Web API with a bot token (`chat.postMessage`, `chat.update`, direct messages).",
        "channels: [{name: x, kind: slack, token: {secret: t}}]\n",
        &[
            k(
                "token",
                "`{secret: NAME}`",
                Required,
                "The bot token (`xoxb-…`), with the `chat:write` scope.",
            ),
            k(
                "channel",
                "string",
                Unset,
                "Where broadcasts go: a channel id (`C024BE91L`) or name; without it the channel reaches people only.",
            ),
            k(
                "api_url",
                "URL",
                Yaml("https://slack.com/api"),
                "The Web API's base URL (tests point it at a local server).",
            ),
            k(
                "signing_secret",
                "`{secret: NAME}`",
                Unset,
                "The Slack app's signing secret: messages then carry Acknowledge and Resolve buttons, and `/v1/slack/interactions` takes the app's callbacks.",
            ),
        ],
    ),
    s(
        "channels[kind=slack_webhook]",
        "A Slack incoming webhook.",
        &[k(
            "url",
            "URL, or `{secret: NAME}`",
            Required,
            "`https://hooks.slack.com/services/…`; it lets anyone post, so a secret is best.",
        )],
    ),
    s(
        "channels[kind=mattermost]",
        "Mattermost's REST API with a bot's token: posts, direct messages, post updates.",
        &[
            k(
                "url",
                "URL",
                Required,
                "The server: `https://mattermost.example.com`.",
            ),
            k(
                "token",
                "`{secret: NAME}`",
                Required,
                "The bot's access token.",
            ),
            k(
                "channel_id",
                "string",
                Unset,
                "Where broadcasts go (26 characters); without it the channel reaches people only.",
            ),
            k(
                "bot_user_id",
                "string",
                Text("asked of the server (`/users/me`) once"),
                "The bot's own user id, for direct messages.",
            ),
        ],
    ),
    s(
        "channels[kind=mattermost_webhook]",
        "A Mattermost incoming webhook.",
        &[k(
            "url",
            "URL, or `{secret: NAME}`",
            Required,
            "The incoming webhook's URL; it lets anyone post, so a secret is best.",
        )],
    ),
    s(
        "channels[kind=teams]",
        "A Microsoft Teams Workflows webhook, posting an Adaptive Card.",
        &[k(
            "url",
            "URL, or `{secret: NAME}`",
            Required,
            "The workflow's URL; it carries its signature (`sig=…`), so a secret is best.",
        )],
    ),
    ex(
        "channels[kind=twilio]",
        "Twilio: SMS (`Messages.json`) and voice calls (`Calls.json`).",
        "channels: [{name: x, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: t}, from: '+15550000000'}]\n",
        &[
            k(
                "account_sid",
                "string",
                Required,
                "`AC` and 32 hexadecimal digits.",
            ),
            k(
                "auth_token",
                "`{secret: NAME}`",
                Required,
                "The account's auth token (also checks the signatures of Twilio's callbacks).",
            ),
            k(
                "from",
                "string",
                Required,
                "The Twilio number messages and calls come from, in E.164 form.",
            ),
            k(
                "to",
                "string",
                Unset,
                "Where broadcasts go, in E.164 form; without it the channel reaches people only.",
            ),
            k(
                "broadcast_as",
                "`sms` or `voice`",
                Yaml("sms"),
                "Whether broadcasts text or call.",
            ),
            k(
                "api_url",
                "URL",
                Yaml("https://api.twilio.com"),
                "The REST API's base URL (tests point it at a local server).",
            ),
            k(
                "status_callback",
                "URL",
                Unset,
                "Where Twilio reports what became of each message and call; without it texts and calls stay `sent`.",
            ),
        ],
    ),
    ex(
        "channels[kind=sms_gateway]",
        "Any HTTP SMS gateway, its request written as templates.",
        "channels: [{name: x, kind: sms_gateway, url: 'https://sms.example.com/send'}]\n",
        &[
            k(
                "url",
                "URL template",
                Required,
                "`https://sms.example.com/send?to={{ to|urlencode }}`.",
            ),
            k(
                "method",
                "`POST`, `PUT` or `GET`",
                Yaml("POST"),
                "The request's method.",
            ),
            k(
                "headers",
                "map of templates",
                Yaml("{}"),
                "`{Authorization: \"Bearer {{ secrets.token }}\"}`.",
            ),
            k(
                "body",
                "template",
                Unset,
                "With a JSON content type, values are written as JSON: `{\"to\": {{ to }}, \"text\": {{ text }}}`.",
            ),
            k(
                "content_type",
                "string",
                Text("`application/json`"),
                "The body's content type.",
            ),
            k(
                "secrets",
                "map of `{secret: NAME}`",
                Yaml("{}"),
                "Secrets the templates may use, by alias: `{token: {secret: sms-gateway-token}}`; `ALIAS_file: PATH` reads one from a file.",
            ),
            k(
                "to",
                "string",
                Unset,
                "Where broadcasts go, in E.164 form; without it the channel reaches people only.",
            ),
            k(
                "id_pointer",
                "string",
                Unset,
                "A JSON pointer to the message's id in the gateway's answer (`/messages/0/id`).",
            ),
        ],
    ),
    ex(
        "integrations[]",
        "One integration declared in the configuration (docs/security.md, \"Integrations\").",
        "integrations: [{name: am, kind: alertmanager, key: 0123456789abcdef}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "The integration's name, on alerts and in routes.",
            ),
            k(
                "kind",
                "`alertmanager`, `pagerduty` or `grpc`",
                Required,
                "Which API it speaks: Alertmanager (and Grafana) webhooks, the PagerDuty Events API, or gRPC.",
            ),
            k(
                "key",
                "secret (text)",
                Required,
                "The routing key (PagerDuty), path key or bearer token (Alertmanager, gRPC): 16 to 128 printable characters.",
            ),
            k(
                "signing_secret",
                "secret (text)",
                Unset,
                "When set, every webhook call must be signed with it: `X-Firebreak-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` (16 to 256 bytes).",
            ),
            k(
                "severity_label",
                "string",
                Yaml("severity"),
                "The label (Alertmanager) holding the severity.",
            ),
            k(
                "severity_map",
                "map of integers 1–5",
                Yaml("{}"),
                "Severity names to levels, over the defaults (critical 1, error 2, warning 3, info 4).",
            ),
            k(
                "category",
                "string",
                Yaml("''"),
                "A category for its alerts; empty lets the rules decide.",
            ),
            k(
                "auto_resolve",
                "bool",
                Yaml("true"),
                "Resolve an incident when all its alerts are resolved.",
            ),
            k(
                "rate_limit_per_second",
                "integer",
                Yaml("0"),
                "Alerts per second it may send (bursts up to one second's worth); 0: no limit.",
            ),
        ],
    ),
    ex(
        "escalation_policies[]",
        "One escalation policy (docs/oncall.md).",
        "escalation_policies: [{name: p, steps: []}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "The name routes and runbooks page it by.",
            ),
            k(
                "steps",
                "list of maps (section `escalation_policies[].steps[]`)",
                Required,
                "In order; the first step's `after_seconds` must be 0.",
            ),
            k(
                "repeat",
                "integer 0–9",
                Yaml("0"),
                "How many times the steps run again when nobody acknowledges.",
            ),
            k(
                "repeat_after_seconds",
                "integer",
                Yaml("300"),
                "Seconds after the last step before a repeat begins (at least 60).",
            ),
            k(
                "fallback",
                "target (`{user: NAME}`, `{schedule: NAME}`, `{team: NAME}`, `{team_round_robin: NAME}` or `{channel: NAME}`)",
                Unset,
                "Paged once, at once, when no step of the whole policy reaches anybody.",
            ),
        ],
    ),
    ex(
        "escalation_policies[].steps[]",
        "One step of a policy.",
        "escalation_policies: [{name: p, steps: [{}]}]\n",
        &[
            k(
                "after_seconds",
                "integer",
                Yaml("0"),
                "Seconds after the first step (0 for the first; each later one at least 60 after the one before). A step runs only if nobody acknowledged by then.",
            ),
            k(
                "channels",
                "list of strings",
                Yaml("[]"),
                "Channels paged at this step (the same as `targets: [{channel: NAME}]`).",
            ),
            k(
                "targets",
                "list of targets",
                Yaml("[]"),
                "`{user: NAME}`, `{schedule: NAME}` (whoever is on call), `{team: NAME}` (every member), `{team_round_robin: NAME}` (one member, in turn), `{channel: NAME}`.",
            ),
        ],
    ),
    ex(
        "schedules[]",
        "One on-call schedule (docs/schedules.md).",
        "schedules: [{name: s, time_zone: UTC, combine: exclusive, layers: []}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.",
            ),
            k(
                "time_zone",
                "IANA time zone",
                Required,
                "The time zone of layers that name none (`Europe/Berlin`).",
            ),
            k(
                "combine",
                "`exclusive` or `additive`",
                Required,
                "How layers combine: the highest layer with someone on call decides alone (PagerDuty), or everyone on call in any layer is (Opsgenie).",
            ),
            k(
                "layers",
                "list of maps (section `schedules[].layers[]`)",
                Required,
                "The layers, lowest first.",
            ),
            k(
                "overrides",
                "list of maps (section `schedules[].overrides[]`)",
                Yaml("[]"),
                "Time-bounded changes on top of the layers.",
            ),
        ],
    ),
    ex(
        "schedules[].layers[]",
        "One layer: a rotation of members, optionally restricted to windows of the week.",
        "schedules: [{name: s, time_zone: UTC, combine: exclusive, layers: [{name: l, members: [a], rotation: {every: 1d, hand_off: '09:00', start: 2026-01-05}}]}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "The layer's name; consecutive layers of one name are versions of one roster, each starting at its `effective_from`.",
            ),
            k(
                "members",
                "list of strings (or `null`)",
                Required,
                "The users who take turns, in order; `null` is an empty slot.",
            ),
            k(
                "rotation",
                "map (section `schedules[].layers[].rotation`)",
                Required,
                "When turns hand off and how long they last.",
            ),
            k(
                "restrictions",
                "list of maps (section `schedules[].layers[].restrictions[]`)",
                Yaml("[]"),
                "The windows of the week the layer is on call in; none: always.",
            ),
            k(
                "effective_from",
                "local date-time",
                Unset,
                "From when (in the layer's zone) this layer counts.",
            ),
        ],
    ),
    s(
        "schedules[].layers[].rotation",
        "How a layer's turns go.",
        &[
            k(
                "every",
                "turn length (`12h`, `1d`, `2w`)",
                Required,
                "The length of one turn.",
            ),
            k(
                "hand_off",
                "`HH:MM`",
                Required,
                "The local wall-clock time turns hand off at.",
            ),
            k(
                "time_zone",
                "IANA time zone",
                Text("the schedule's"),
                "The layer's own time zone (hand-offs, restrictions, `effective_from`).",
            ),
            k(
                "start",
                "date (`2026-01-05`)",
                Required,
                "The day of the first hand-off, which starts the first member's turn.",
            ),
        ],
    ),
    s(
        "schedules[].layers[].restrictions[]",
        "A window of the week a layer is on call in.",
        &[
            k(
                "days",
                "list of weekdays (`mon`…`sun`)",
                Text("every day"),
                "For a daily window, the days it starts on.",
            ),
            k(
                "from",
                "`HH:MM` or `ddd HH:MM`",
                Required,
                "Where the window starts (`ddd HH:MM` for a weekly window).",
            ),
            k(
                "to",
                "`HH:MM` or `ddd HH:MM`",
                Required,
                "Where it ends (`24:00` for the end of the day).",
            ),
        ],
    ),
    s(
        "schedules[].overrides[]",
        "A time-bounded change on top of the layers.",
        &[
            k(
                "from",
                "RFC 3339 time with offset",
                Required,
                "The instant the override starts.",
            ),
            k(
                "to",
                "RFC 3339 time with offset",
                Required,
                "The instant it ends, exclusive.",
            ),
            k(
                "replace",
                "string",
                Unset,
                "The user taken off call while it lasts (with `with`).",
            ),
            k(
                "with",
                "string",
                Unset,
                "The user on call in `replace`'s place.",
            ),
            k(
                "add",
                "string",
                Unset,
                "A user on call in addition to everyone else (alone, without `replace`).",
            ),
        ],
    ),
    ex(
        "routes[]",
        "One route: the first whose conditions hold picks the policy that pages a new incident.",
        "routes: [{policy: p}]\n",
        &[
            k(
                "match",
                "map (section `routes[].match`)",
                Text("none: every incident"),
                "Every condition given must hold.",
            ),
            k(
                "policy",
                "string",
                Required,
                "The escalation policy that pages.",
            ),
        ],
    ),
    ex(
        "routes[].match",
        "A route's conditions; every one given must hold.",
        "routes: [{policy: p, match: {}}]\n",
        MATCH,
    ),
    ex(
        "subscriptions[]",
        "One rule of who receives status updates (docs/status-updates.md).",
        "subscriptions: [{}]\n",
        &[
            k(
                "match",
                "map (section `subscriptions[].match`)",
                Text("none: every incident"),
                "Every condition given must hold (as a route's `match`).",
            ),
            k(
                "services",
                "list of strings",
                Yaml("[]"),
                "One of these services (the incident's `service` label, else its source).",
            ),
            k(
                "people",
                "list of strings",
                Yaml("[]"),
                "Users of the directory who receive the updates.",
            ),
            k(
                "channels",
                "list of strings",
                Yaml("[]"),
                "Configured channels that receive them.",
            ),
        ],
    ),
    ex(
        "subscriptions[].match",
        "A subscription rule's conditions, as a route's.",
        "subscriptions: [{match: {}}]\n",
        MATCH,
    ),
    s(
        "status_updates",
        "Reminders to post status updates.",
        &[k(
            "reminders",
            "list of maps (section `status_updates.reminders[]`)",
            Yaml(
                "[{max_severity: 1, after_seconds: 1800}, {max_severity: 2, after_seconds: 3600}]",
            ),
            "The commander of an active incident of SEV1 up to `max_severity` that has had no update for `after_seconds` is reminded; the shortest period that holds counts. `[]`: nobody is reminded.",
        )],
    ),
    s(
        "status_updates.reminders[]",
        "One reminder rule.",
        &[
            k(
                "max_severity",
                "integer 1–5",
                Required,
                "1 (SEV1 only) to 5 (every severity).",
            ),
            k(
                "after_seconds",
                "integer",
                Required,
                "1 second to 7 days without an update.",
            ),
        ],
    ),
    ex(
        "responses",
        "Where people answer pages from (docs/oncall.md, \"Acknowledging from a page\").",
        "responses: {public_url: 'https://firebreak.example.com'}\n",
        &[
            k(
                "public_url",
                "URL",
                Required,
                "The base URL of the HTTP listener as people and providers reach it: links in pages start with it, and Twilio signs the URL it calls.",
            ),
            k(
                "signing_key",
                "`{secret: NAME}`",
                Unset,
                "The key that signs links (at least 32 bytes); without it pages carry no links.",
            ),
            k(
                "link_ttl_seconds",
                "integer",
                Yaml("86400"),
                "How long a link acts after its page was sent.",
            ),
        ],
    ),
    ex(
        "maintenance[]",
        "One maintenance window (docs/maintenance.md).",
        "maintenance: [{name: w, time_zone: UTC, start: '2026-01-01T01:00', duration: 1h}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "Names the window on the timeline and in `firebreak maintenance list`.",
            ),
            k(
                "time_zone",
                "IANA time zone",
                Required,
                "The time zone its local times are in.",
            ),
            k(
                "start",
                "local date-time",
                Required,
                "The first occurrence's start (`2026-03-01T01:00`): the DTSTART.",
            ),
            k(
                "duration",
                "duration (`3h`, `90m`, `1d12h`, `1w`)",
                Required,
                "How long each occurrence lasts, in local time.",
            ),
            k(
                "rrule",
                "RRULE",
                Yaml("''"),
                "When it starts again (`FREQ=WEEKLY;BYDAY=SA,SU`); empty: once.",
            ),
            k(
                "services",
                "list of strings",
                Yaml("[]"),
                "Incidents of these services (their `service` label, else their source).",
            ),
            k(
                "integrations",
                "list of strings",
                Yaml("[]"),
                "Incidents whose first alert came through one of these integrations.",
            ),
            k(
                "matchers",
                "list of matchers",
                Yaml("[]"),
                "Incidents whose labels every matcher accepts: `env=\"prod\"`, `job=~\"web.*\"`.",
            ),
            k("comment", "string", Yaml("''"), "Why the window exists."),
        ],
    ),
    s(
        "throttles",
        "Pages one destination may receive, per contact kind: lists of windows, every one of \
         which must allow a page. A kind left out keeps its default; `[]` turns its throttle off.",
        &[
            k(
                "email",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml("[{count: 1, per_seconds: 60}]"),
                "Emails to one address.",
            ),
            k(
                "sms",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml(
                    "[{count: 1, per_seconds: 60}, {count: 5, per_seconds: 900}, {count: 11, per_seconds: 3600}, {count: 21, per_seconds: 10800}]",
                ),
                "Texts to one number.",
            ),
            k(
                "voice",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml(
                    "[{count: 1, per_seconds: 60}, {count: 3, per_seconds: 900}, {count: 7, per_seconds: 3600}, {count: 15, per_seconds: 10800}]",
                ),
                "Calls to one number.",
            ),
            k(
                "slack",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml("[]"),
                "Direct messages to one Slack member.",
            ),
            k(
                "mattermost",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml("[]"),
                "Direct messages to one Mattermost user.",
            ),
            k(
                "teams",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml("[]"),
                "Posts to one Teams workflow.",
            ),
            k(
                "webhook",
                "list of maps (section `throttles.<kind>[]`)",
                Yaml("[]"),
                "Calls of one person's webhook.",
            ),
        ],
    ),
    s("throttles.<kind>[]", "One window of a throttle.", LIMIT),
    s(
        "reopen",
        "How long resolved incidents can reopen (docs/lifecycle.md).",
        &[
            k(
                "window_seconds",
                "integer ≤ 2592000",
                Yaml("3600"),
                "A resolved incident can be reopened by hand for this long.",
            ),
            k(
                "repeat_alerts_seconds",
                "integer ≤ 2592000",
                Yaml("0"),
                "A repeat alert within this long of the resolve reopens the incident; 0: it opens a new one.",
            ),
            k(
                "integrations",
                "map of integers",
                Yaml("{}"),
                "A repeat alert's window per integration (by name), over `repeat_alerts_seconds`.",
            ),
        ],
    ),
    s(
        "commander",
        "Who commands incidents.",
        &[
            k(
                "required_through_severity",
                "integer 0–5",
                Yaml("2"),
                "Incidents of this severity or worse need a commander and are flagged `needs_commander` while nobody holds the role; 0: none.",
            ),
            k(
                "schedule",
                "string",
                Unset,
                "A schedule whose on-call person becomes commander of an incident that needs one and has none.",
            ),
        ],
    ),
    s(
        "grouping",
        "Time-window grouping of alerts into incidents (docs/grouping.md).",
        &[k(
            "rules",
            "list of maps (section `grouping.rules[]`)",
            Yaml("[]"),
            "In order; the first rule that applies to an alert groups it.",
        )],
    ),
    ex(
        "grouping.rules[]",
        "One grouping rule.",
        "grouping: {rules: [{name: r, group_by: [service], window: 5m}]}\n",
        &[
            k(
                "name",
                "string",
                Required,
                "Names the rule in the group key and on the timeline (`[a-z0-9_-]`, 1 to 64).",
            ),
            k(
                "integration",
                "string",
                Unset,
                "Only alerts that came through this integration.",
            ),
            k(
                "matchers",
                "list of matchers",
                Yaml("[]"),
                "Only alerts whose labels every matcher accepts (amtool's syntax); none: every alert.",
            ),
            k(
                "group_by",
                "list of strings",
                Required,
                "The labels whose values make the group (`[service]`): 1 to 16.",
            ),
            k(
                "window",
                "duration (`30s`, `5m`, `2h`)",
                Required,
                "How long after a group's incident opens its related alerts join it: 1 second to 24 hours.",
            ),
        ],
    ),
    s(
        "review",
        "The post-incident review (docs/review.md).",
        &[k(
            "template",
            "list of maps (section `review.template[]`)",
            Text("Root cause, What went well, What went wrong"),
            "The sections people write after the facts, in order: 1 to 20. A section headed `Root cause` shows the recorded root cause.",
        )],
    ),
    ex(
        "review.template[]",
        "One section of the review.",
        "review: {template: [{heading: A}]}\n",
        &[
            k(
                "heading",
                "string",
                Required,
                "A one-line heading of at most 128 bytes, distinct (case aside).",
            ),
            k(
                "prompt",
                "string",
                Yaml("''"),
                "What the section asks for (at most 1 KiB).",
            ),
        ],
    ),
    ex(
        "users[]",
        "A person or service account declared in the configuration.",
        "users: [{name: amy}]\n",
        &[
            k(
                "name",
                "string",
                Required,
                "The user's name: what schedules, teams, tokens and audit entries name.",
            ),
            k(
                "display_name",
                "string",
                Yaml("''"),
                "A name for people (at most 254 bytes).",
            ),
            k(
                "email",
                "string",
                Yaml("''"),
                "An email address (at most 254 bytes).",
            ),
            k(
                "time_zone",
                "IANA time zone",
                Yaml("''"),
                "The person's time zone, for display.",
            ),
            k(
                "service_account",
                "bool",
                Yaml("false"),
                "A non-person account (a monitoring tool, a CI job) instead of a person.",
            ),
            k(
                "contact_methods",
                "list of maps (section `users[].contact_methods[]`)",
                Yaml("[]"),
                "How the person is reached (at most 10).",
            ),
            k(
                "notification_rules",
                "list of maps (section `users[].notification_rules[]`)",
                Yaml("[]"),
                "When each contact method is used once paging begins; none: at once through the first method.",
            ),
        ],
    ),
    s(
        "users[].contact_methods[]",
        "One way to reach a person.",
        &[
            k(
                "name",
                "string",
                Required,
                "Names it for the rules (`work`).",
            ),
            k(
                "kind",
                "`email`, `sms`, `voice`, `slack`, `mattermost`, `teams` or `webhook`",
                Required,
                "Where it reaches the person.",
            ),
            k(
                "address",
                "string",
                Required,
                "An email address, an E.164 number, a Slack member id, a Mattermost user id, or an HTTPS URL (Teams workflow, webhook).",
            ),
        ],
    ),
    ex(
        "users[].notification_rules[]",
        "After this long of paging, use this contact method.",
        "users: [{name: amy, notification_rules: [{method: work}]}]\n",
        &[
            k(
                "after_minutes",
                "integer ≤ 1440",
                Yaml("0"),
                "Minutes after paging begins.",
            ),
            k("method", "string", Required, "A contact method's name."),
        ],
    ),
    ex(
        "teams[]",
        "A team declared in the configuration.",
        "teams: [{name: payments}]\n",
        &[
            k("name", "string", Required, "The team's name."),
            k("display_name", "string", Yaml("''"), "A name for people."),
            k(
                "members",
                "list of strings",
                Yaml("[]"),
                "Users of the directory (declared here or made at run time).",
            ),
        ],
    ),
    s(
        "exec",
        "Commands runbooks may run with `exec::run`.",
        &[
            k(
                "allow",
                "list of strings",
                Yaml("[]"),
                "Commands (exact paths or names) runbooks may run; empty allows none.",
            ),
            k(
                "timeout_seconds",
                "integer",
                Yaml("30"),
                "A command still running after this is killed and the step fails.",
            ),
            k(
                "max_output_bytes",
                "integer",
                Yaml("65536"),
                "Bytes of stdout and of stderr kept; the rest is discarded.",
            ),
        ],
    ),
    s(
        "kubernetes",
        "The cluster the `k8s::` actions act on.",
        &[k(
            "url",
            "URL",
            Text("in-cluster configuration or `KUBECONFIG`"),
            "The API server.",
        )],
    ),
    ex(
        "nats",
        "Distributed mode: the NATS JetStream connection. At most one kind of credentials: \
         `user` and `password`, `token`, `nkey_seed`, or `credentials_file`.",
        "nats: {url: 'nats://127.0.0.1:4222'}\n",
        &[
            k(
                "url",
                "URL",
                Required,
                "`nats://host:4222`, or `tls://host:4222` to require TLS; the server tells the client of the other servers of its cluster.",
            ),
            k(
                "ack_wait_seconds",
                "integer",
                Yaml("30"),
                "Seconds before a message handed to a replica that did not acknowledge it goes to another (a replica that died).",
            ),
            k("user", "string", Unset, "The user, with `password`."),
            k("password", "secret (text)", Unset, "The user's password."),
            k(
                "token",
                "secret (text)",
                Unset,
                "A token (the server's `authorization { token: … }`).",
            ),
            k(
                "nkey_seed",
                "secret (text)",
                Unset,
                "A user NKey's seed (`SU…`, 58 characters; `nk -gen user`): the server knows the user by its public key (`authorization { users = [{nkey: U…}] }`) and the seed signs its challenge.",
            ),
            k(
                "credentials_file",
                "path",
                Unset,
                "A `.creds` file (a user JWT and its NKey seed) of an operator-mode server (`nsc generate creds`).",
            ),
            k(
                "require_tls",
                "bool",
                Yaml("false"),
                "Refuse a connection without TLS (also implied by a `tls://` URL).",
            ),
            k(
                "ca_file",
                "path",
                Text("the system's roots"),
                "PEM CA certificates the server's certificate is checked against.",
            ),
            k(
                "client_cert_file",
                "path",
                Unset,
                "A client certificate (PEM) for a server that verifies clients (`tls { verify: true }`), with `client_key_file`.",
            ),
            k("client_key_file", "path", Unset, "Its private key (PEM)."),
        ],
    ),
    s(
        "peers",
        "The gRPC addresses of the services (`http://host:port`, `https://` with `tls`): in a \
         server's configuration the ones it calls; for the CLI (`--client-config`), where each \
         is. A list of addresses, or one string with commas; each host name is resolved again \
         as replicas come and go.",
        &[
            k(
                "intake",
                "address or list of addresses",
                Unset,
                "Intake's gRPC address.",
            ),
            k(
                "triage",
                "address or list of addresses",
                Unset,
                "Triage's (intake calls it).",
            ),
            k("orchestration", "address", Unset, "Orchestration's."),
            k(
                "notification",
                "address",
                Unset,
                "Notification's (triage calls it).",
            ),
        ],
    ),
    s(
        "connections",
        "Limits on the connections each server accepts, so a flood of connections or streams \
         cannot take the process's memory or file descriptors.",
        &[
            k(
                "grpc_max_connections",
                "integer",
                Yaml("4096"),
                "gRPC connections open at once; at the cap the oldest idle one is closed for a new one, or the new one waits.",
            ),
            k(
                "http_max_connections",
                "integer",
                Yaml("512"),
                "HTTP connections open at once (health, metrics, webhooks), a cap of its own.",
            ),
            k(
                "max_concurrent_streams",
                "integer",
                Yaml("200"),
                "Calls one HTTP/2 connection may have open at once.",
            ),
            k(
                "header_timeout_seconds",
                "integer",
                Yaml("10"),
                "Seconds a new connection has to send its first complete request.",
            ),
            k(
                "idle_timeout_seconds",
                "integer",
                Yaml("300"),
                "Seconds a connection with no call in flight stays open.",
            ),
            k(
                "request_timeout_seconds",
                "integer",
                Yaml("60"),
                "Seconds a request may take until its answer starts; 0: no limit.",
            ),
            k(
                "keepalive_interval_seconds",
                "integer",
                Yaml("60"),
                "Seconds between HTTP/2 keep-alive pings and TCP keep-alive probes on a quiet connection; 0: none.",
            ),
            k(
                "keepalive_timeout_seconds",
                "integer",
                Yaml("20"),
                "Seconds a keep-alive ping may go unanswered before the connection is closed.",
            ),
        ],
    ),
    s(
        "auth",
        "How calls are authenticated (docs/security.md).",
        &[
            k(
                "service_token",
                "secret (Firebreak token)",
                Text("embedded mode: one made at each start"),
                "The credential Firebreak's services call each other with (`firebreak token generate`); distributed mode needs the same one in every service.",
            ),
            k(
                "admin_token",
                "secret (Firebreak token)",
                Unset,
                "A break-glass admin credential every service verifies from its configuration alone: how a distributed deployment's first tokens are made.",
            ),
            k(
                "sync_interval_ms",
                "integer",
                Yaml("1000"),
                "Milliseconds between syncs of each process's credential copy: the longest a revoked token keeps working on another replica.",
            ),
            k(
                "failures_per_minute",
                "integer",
                Yaml("10"),
                "Failed authentications from one address in a minute after which each further failure is answered late; 0: never.",
            ),
            k(
                "failure_delay_ms",
                "integer",
                Yaml("1000"),
                "How late, in milliseconds, such failures are answered.",
            ),
            k(
                "audit_retention_days",
                "integer",
                Yaml("365"),
                "Days the audit log keeps an entry; 0: for ever.",
            ),
        ],
    ),
    s(
        "tls",
        "TLS for both servers and for the connections to peers (docs/security.md). With \
         `cert_file` and `key_file` both servers speak TLS only; the files are read again when \
         they change.",
        &[
            k(
                "cert_file",
                "path",
                Unset,
                "The servers' certificate chain (PEM).",
            ),
            k("key_file", "path", Unset, "Its private key (PEM)."),
            k(
                "client_ca_file",
                "path",
                Unset,
                "Clients must present a certificate signed by this CA (mTLS).",
            ),
            k(
                "ca_file",
                "path",
                Text("the system's roots"),
                "The CA `https://` peers' certificates are checked against; embedded mode reaches its own server with it too.",
            ),
            k(
                "client_cert_file",
                "path",
                Unset,
                "The certificate presented to peers that require client certificates.",
            ),
            k("client_key_file", "path", Unset, "Its private key."),
            k(
                "server_name",
                "string",
                Text("`localhost`"),
                "Embedded mode: the name its own certificate is checked against when intake calls this process's server.",
            ),
        ],
    ),
    s(
        "otel",
        "OpenTelemetry export of traces over OTLP/gRPC. Nothing is exported without an \
         endpoint (here or in `OTEL_EXPORTER_OTLP_ENDPOINT`); spans still carry trace context. \
         Each key falls back to its `OTEL_*` variable (docs/observability.md).",
        &[
            k(
                "endpoint",
                "URL (http:// or https://)",
                Unset,
                "The collector's OTLP/gRPC address, `http://otel-collector:4317` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`).",
            ),
            k(
                "protocol",
                "string",
                Unset,
                "`grpc`, the only protocol spoken (`OTEL_EXPORTER_OTLP_PROTOCOL`).",
            ),
            k(
                "sample_ratio",
                "number 0.0–1.0",
                Unset,
                "The share of new traces exported; a caller's sampled or unsampled trace is followed. Default 1.0 (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).",
            ),
            k(
                "resource_attributes",
                "map of strings",
                Yaml("{}"),
                "Extra resource attributes, e.g. `deployment.environment` (`OTEL_RESOURCE_ATTRIBUTES`, merged under these).",
            ),
        ],
    ),
    s(
        "secrets_encryption",
        "The key stored secrets are sealed with (AES-256-GCM): 32 bytes written as 64 hex \
         digits. Without one, run-time integrations cannot have signing secrets; embedded mode \
         makes `secrets.key` in its data directory at its first start.",
        &[
            k(
                "key_file",
                "path",
                Unset,
                "A file holding the key, readable by Firebreak only; read when a service starts.",
            ),
            k(
                "key",
                "secret (64 hex digits)",
                Unset,
                "The key itself, usually from `FIREBREAK_SECRETS_KEY`; not with `key_file`.",
            ),
            k(
                "previous_key_files",
                "list of paths",
                Yaml("[]"),
                "Files of keys used before: what they sealed is still read, and sealed again under the current key at start.",
            ),
        ],
    ),
];

/// Whether the section location `pattern` names the location `at` (both as
/// [`super::walk::show`] writes them): `<…>` stands for any one key, and `channels[]` for
/// a channel of any kind.
pub(crate) fn matches(pattern: &str, at: &str) -> bool {
    let (p, a): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), at.split('.').collect());
    p.len() == a.len()
        && p.iter().zip(&a).all(|(p, a)| {
            if let Some(rest) = p.strip_prefix('<') {
                let suffix = rest.split_once('>').map_or("", |(_, s)| s);
                a.ends_with(suffix)
            } else if let Some(key) = p.strip_suffix("[]") {
                a.strip_prefix(key)
                    .is_some_and(|rest| rest == "[]" || rest.starts_with("[kind="))
            } else {
                p == a
            }
        })
}

/// A key's environment variable, when one can set it alone (no list on the way).
fn env_var(section: &str, key: &str) -> Option<String> {
    if section.contains('[') || section.contains('<') {
        return None;
    }
    let path = if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    };
    Some(format!(
        "FIREBREAK_{}",
        path.to_uppercase().replace('.', "__")
    ))
}

/// The `_file` variant of `key` in `section`, if it has one the loader provides.
fn file_variant(section: &str, key: &str) -> Option<Form> {
    SECRET_KEYS
        .iter()
        .find(|s| {
            s.key == key
                && !s.file_key_in_schema
                && if s.within == "channels[]" {
                    section
                        .strip_prefix("channels[kind=")
                        .is_some_and(|kind| s.kinds.contains(&kind.trim_end_matches(']')))
                } else {
                    s.within == section
                }
        })
        .map(|s| s.form)
}

/// The path a key is shown as: `channels[].token` for a kind's key, `nats.url`.
fn shown_path(section: &str, key: &str) -> String {
    let section = match section.split_once("[kind=") {
        Some((list, _)) => format!("{list}[]"),
        None => section.to_owned(),
    };
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn default_cell(d: Default) -> String {
    match d {
        Yaml(y) => format!("`{y}`"),
        Unset => "not set".to_owned(),
        Required => "**required**".to_owned(),
        Text(t) => t.to_owned(),
    }
}

/// The key tables of docs/configuration.md.
pub(crate) fn markdown() -> String {
    let mut out = String::new();
    for section in SECTIONS {
        let title = match section.at {
            "" => "Top level".to_owned(),
            at => match at.split_once("[kind=") {
                Some((list, kind)) => {
                    format!("`{list}[]` of kind `{}`", kind.trim_end_matches(']'))
                }
                None => format!("`{at}`"),
            },
        };
        let _ = writeln!(out, "### {title}\n\n{}\n", section.about);
        if let Some(list) = section
            .at
            .split('[')
            .next()
            .filter(|_| section.at.contains('['))
        {
            let _ = writeln!(
                out,
                "In a list: the environment sets the whole list as YAML (`{}='[…]'`).\n",
                env_var("", list).unwrap_or_default()
            );
        }
        if section.keys.is_empty() {
            continue;
        }
        out.push_str("| key | type | default | environment | description |\n");
        out.push_str("| --- | --- | --- | --- | --- |\n");
        for key in section.keys {
            let env = env_var(section.at, key.name).map_or("—".to_owned(), |v| format!("`{v}`"));
            let env = if section.at == "secrets_encryption" && key.name == "key" {
                format!("{env}, `FIREBREAK_SECRETS_KEY`")
            } else {
                env
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                shown_path(section.at, key.name),
                cell(key.ty),
                cell(&default_cell(key.default)),
                env,
                cell(key.doc)
            );
            if let Some(form) = file_variant(section.at, key.name) {
                let file_key = format!("{}_file", key.name);
                let env =
                    env_var(section.at, &file_key).map_or("—".to_owned(), |v| format!("`{v}`"));
                let takes = match form {
                    Form::Text => "its value",
                    Form::Named => "the secret",
                };
                let _ = writeln!(
                    out,
                    "| `{}` | path | not set | {env} | A file holding {takes} (see [Secrets in files](#secrets-in-files)); not with `{}`. |",
                    shown_path(section.at, &file_key),
                    key.name
                );
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::walk::{self, Step};
    use super::super::{Config, KEYS};
    use super::*;

    /// The section of a walked location: the one of exactly that place, else the one
    /// pattern naming it.
    fn section_of(at: &str) -> Option<&'static Section> {
        SECTIONS.iter().find(|s| s.at == at).or_else(|| {
            let named: Vec<_> = SECTIONS
                .iter()
                .filter(|s| s.at != "channels[]" && matches(s.at, at))
                .collect();
            assert!(named.len() <= 1, "{at} has several sections");
            named.first().copied()
        })
    }

    fn names(keys: &[Key]) -> Vec<&str> {
        keys.iter().map(|k| k.name).collect()
    }

    /// The walk of serde's answers finds exactly the reference's sections and keys, in the
    /// structs' order: a key missing from the reference, or one it names that the schema
    /// does not have, fails here.
    #[test]
    fn the_reference_follows_the_schema() {
        let walked = walk::walk();
        assert!(
            walked.len() > 50,
            "the walk found {} sections",
            walked.len()
        );
        let mut used = BTreeSet::new();
        for (loc, fields) in &walked {
            let at = walk::show(loc);
            let section = section_of(&at).unwrap_or_else(|| {
                panic!(
                    "the configuration has a section `{at}` ({}) that crates/firebreak/src/config/reference.rs does not describe: add it, then run FIREBREAK_WRITE_DOCS=1 cargo test -p firebreak --lib the_configuration_doc",
                    fields.join(", ")
                )
            });
            assert_eq!(
                names(section.keys),
                *fields,
                "section `{at}`: the reference's keys (left) are not the schema's (right); fix crates/firebreak/src/config/reference.rs, then regenerate docs/configuration.md"
            );
            used.insert(section.at);
        }
        for section in SECTIONS {
            assert!(
                used.contains(section.at) || section.at == "channels[]",
                "the reference describes a section `{}` the configuration does not have",
                section.at
            );
        }
        // A channel's common keys are taken out before its kind's are read (notification's
        // channels/config.rs), so no kind's answer lists them: they are these, and no kind
        // has a key of the same name.
        let common = section_of("channels[]").unwrap();
        assert_eq!(
            names(common.keys),
            ["name", "kind", "events", "max_severity", "templates"]
        );
        for (loc, fields) in &walked {
            if matches!(loc.get(1), Some(Step::Channel(_))) && loc.len() == 2 {
                for f in fields {
                    assert!(!names(common.keys).contains(&f.as_str()), "{f}");
                }
            }
        }
        // The top level is KEYS, which the environment's variables are checked against.
        assert_eq!(names(SECTIONS[0].keys), KEYS);
    }

    #[test]
    fn every_secret_bearing_key_is_a_key_of_the_reference() {
        for secret in SECRET_KEYS {
            let sections: Vec<String> = match secret.within {
                "channels[]" | "channels[].secrets" => secret
                    .kinds
                    .iter()
                    .map(|k| format!("channels[kind={k}]"))
                    .collect(),
                within => vec![within.to_owned()],
            };
            let key = if secret.key == "*" {
                "secrets"
            } else {
                secret.key
            };
            for at in sections {
                let section = SECTIONS.iter().find(|s| s.at == at).unwrap();
                assert!(names(section.keys).contains(&key), "{at} has no key {key}");
                let file_key = format!("{key}_file");
                assert_eq!(
                    names(section.keys).contains(&file_key.as_str()),
                    secret.file_key_in_schema,
                    "{at}.{file_key}"
                );
            }
        }
    }

    /// Setting a key to its documented default changes nothing.
    #[test]
    fn the_documented_defaults_are_the_defaults_in_force() {
        let mut checked = 0;
        for section in SECTIONS {
            let with_defaults: Vec<&Key> = section
                .keys
                .iter()
                .filter(|k| matches!(k.default, Yaml(_)))
                .collect();
            if with_defaults.is_empty() {
                continue;
            }
            let loc = walk::location(section.at);
            let base: serde_yaml::Value = match section.example {
                Some(example) => serde_yaml::from_str(example).unwrap(),
                None => walk::empty_at(&loc),
            };
            let want = Config::layered(base.clone()).unwrap_or_else(|e| {
                panic!(
                    "section `{}`: an empty instance does not load ({e}); give it an example",
                    section.at
                )
            });
            let want = format!("{want:?}");
            for key in with_defaults {
                let Yaml(default) = key.default else {
                    continue;
                };
                let mut value = base.clone();
                let at = walk::instance_mut(&mut value, &loc)
                    .and_then(|v| v.as_mapping_mut())
                    .unwrap_or_else(|| panic!("{}: the example has no instance", section.at));
                at.insert(key.name.into(), serde_yaml::from_str(default).unwrap());
                let got = Config::layered(value).unwrap_or_else(|e| {
                    panic!("{}.{}: {default} does not load: {e}", section.at, key.name)
                });
                assert_eq!(
                    format!("{got:?}"),
                    want,
                    "{}.{}: the documented default {default} is not the default",
                    section.at,
                    key.name
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked} defaults checked");
    }

    /// docs/configuration.md's key tables are the reference's.
    #[test]
    fn the_configuration_doc_shows_every_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (begin, end) = ("<!-- keys:begin -->\n", "<!-- keys:end -->");
        let start = doc.find(begin).unwrap() + begin.len();
        let stop = doc.find(end).unwrap();
        let want = markdown();
        if std::env::var_os("FIREBREAK_WRITE_DOCS").is_some() {
            std::fs::write(path, format!("{}{want}{}", &doc[..start], &doc[stop..])).unwrap();
            return;
        }
        assert!(
            doc[start..stop] == want,
            "docs/configuration.md's key tables are stale: run FIREBREAK_WRITE_DOCS=1 cargo test -p firebreak --lib the_configuration_doc"
        );
    }

    /// Every key path the doc's prose names (`nats.password_file`, `channels[0].events`) is a
    /// key or section of the reference.
    #[test]
    fn the_configuration_doc_names_no_key_that_does_not_exist() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/configuration.md"
        ))
        .unwrap();
        let mut known = BTreeSet::new();
        for section in SECTIONS {
            let at = shown_path(section.at, "x");
            known.insert(at.trim_end_matches(".x").to_owned());
            for key in section.keys {
                known.insert(shown_path(section.at, key.name));
                if file_variant(section.at, key.name).is_some() {
                    known.insert(shown_path(section.at, &format!("{}_file", key.name)));
                }
            }
        }
        let mut named = 0;
        for span in doc.split('`').skip(1).step_by(2) {
            let Some(path) = super::super::origin::KeyPath::parse(span) else {
                continue;
            };
            let shown = path.to_string();
            if !KEYS.contains(&shown.split(['.', '[']).next().unwrap()) {
                continue;
            }
            // Indexes read as any entry; a channel's key as `channels[]`'s.
            let mut normal = String::new();
            let mut rest = shown.as_str();
            while let Some(i) = rest.find('[') {
                normal.push_str(&rest[..i]);
                normal.push_str("[]");
                rest = &rest[rest[i..].find(']').map_or(rest.len(), |j| i + j + 1)..];
            }
            normal.push_str(rest);
            assert!(
                known.contains(&normal),
                "docs/configuration.md names `{span}`, which is no configuration key"
            );
            named += 1;
        }
        assert!(named > 20, "{named}");
    }
}
