//! Message templates (MiniJinja): built-in defaults per channel style and part, per-channel
//! overrides from configuration (for every event, or for one event kind), checked at load
//! by rendering samples of every event kind, and bounded in time, memory and output size.

use std::collections::BTreeMap;

use firebreak_domain::people::ContactMethod;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::message::{EventKind, Message};

/// A rendered part of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// An email's subject, a Teams card's title.
    Subject,
    /// The message itself: an email's body, a chat message, an SMS.
    Text,
    /// What a voice call says.
    Speech,
}

impl Part {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::Text => "text",
            Self::Speech => "speech",
        }
    }
}

/// Which built-in default a part renders with: each provider formats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Email,
    /// Slack's mrkdwn (`*bold*`, `<url|label>`, `&`, `<`, `>` escaped).
    Slack,
    /// Mattermost's Markdown.
    Markdown,
    /// A Teams Adaptive Card's text blocks (links become card actions).
    Teams,
    /// A text message: short.
    Sms,
    /// Words a voice call speaks.
    Voice,
}

/// One part a channel kind sends: rendered in `style`, at most `limit` characters (longer
/// renders are cut at send time, and refused at load when a sample is already too long).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartSpec {
    pub(crate) part: Part,
    pub(crate) style: Style,
    pub(crate) limit: usize,
}

/// The most bytes a template's source may have.
pub(crate) const MAX_SOURCE: usize = 16 * 1024;
/// Fuel per render: bounds a template's instructions and the memory it allocates (about 64
/// bytes per unit), so `{% for i in range(10**9) %}` fails instead of hanging a dispatcher.
const FUEL: u64 = 200_000;

/// Templates written in a channel's configuration, overriding the built-in ones: for every
/// event (`text`), or for one event kind (`by_event: {resolved: {text: ...}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateOverrides {
    /// An email's subject, a Teams card's title.
    #[serde(default)]
    pub(crate) subject: Option<String>,
    /// The message: an email's body, a Slack/Mattermost/Teams text, an SMS.
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// What a Twilio voice call says.
    #[serde(default)]
    pub(crate) speech: Option<String>,
    /// Overrides for one event kind, over the ones above.
    #[serde(default)]
    pub(crate) by_event: BTreeMap<EventKind, PartOverrides>,
}

/// An event kind's templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartOverrides {
    #[serde(default)]
    pub(crate) subject: Option<String>,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) speech: Option<String>,
}

impl PartOverrides {
    fn get(&self, part: Part) -> Option<&str> {
        pick(&self.subject, &self.text, &self.speech, part)
    }
}

fn pick<'a>(
    subject: &'a Option<String>,
    text: &'a Option<String>,
    speech: &'a Option<String>,
    part: Part,
) -> Option<&'a str> {
    match part {
        Part::Subject => subject.as_deref(),
        Part::Text => text.as_deref(),
        Part::Speech => speech.as_deref(),
    }
}

impl TemplateOverrides {
    fn get(&self, part: Part) -> Option<&str> {
        pick(&self.subject, &self.text, &self.speech, part)
    }

    /// The template `part` of `event` renders with, and its name (the configuration field it
    /// came from, or `default STYLE PART`).
    pub(crate) fn source(&self, event: EventKind, spec: PartSpec) -> (String, &str) {
        let part = spec.part.as_str();
        if let Some(src) = self.by_event.get(&event).and_then(|o| o.get(spec.part)) {
            return (format!("templates.by_event.{event}.{part}"), src);
        }
        if let Some(src) = self.get(spec.part) {
            return (format!("templates.{part}"), src);
        }
        (
            format!("default {:?} {part}", spec.style).to_lowercase(),
            builtin(spec.style, spec.part),
        )
    }

    /// Every template written, with its field, for checks at load.
    pub(crate) fn written(&self) -> Vec<(String, Part, &str)> {
        let all = [Part::Subject, Part::Text, Part::Speech];
        let mut out: Vec<(String, Part, &str)> = all
            .iter()
            .filter_map(|&p| {
                self.get(p)
                    .map(|src| (format!("templates.{}", p.as_str()), p, src))
            })
            .collect();
        for (event, o) in &self.by_event {
            out.extend(all.iter().filter_map(|&p| {
                o.get(p)
                    .map(|src| (format!("templates.by_event.{event}.{}", p.as_str()), p, src))
            }));
        }
        out
    }
}

/// How values are written into a template's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    /// As they are (chat text, email bodies, URLs, header values).
    None,
    /// As JSON values (`{{ text }}` writes `"..."` quoted and escaped): a JSON request body.
    Json,
}

/// The environment every template renders in: undefined values fail when printed (a typo
/// shows at load with the samples) but may be tested (`{% if incident.title %}`), fuel
/// bounds the work, block tags take their line's whitespace with them.
fn environment(escape: Escape) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(50);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_auto_escape_callback(move |_| match escape {
        Escape::None => AutoEscape::None,
        Escape::Json => AutoEscape::Json,
    });
    env.add_filter("slack_escape", |s: String| slack_escape(&s));
    env
}

/// Renders `source` (named `name` in the engine's errors: `(in NAME:LINE)`) with `ctx`. The
/// error says what failed, in words for an operator.
pub(crate) fn render(
    name: &str,
    source: &str,
    ctx: &Value,
    escape: Escape,
) -> Result<String, String> {
    if source.len() > MAX_SOURCE {
        return Err(format!(
            "the template has {} bytes, more than {MAX_SOURCE}",
            source.len()
        ));
    }
    let env = environment(escape);
    env.render_named_str(name, source, minijinja::Value::from(Serde(ctx)))
        .map_err(|e| match e.kind() {
            minijinja::ErrorKind::OutOfFuel => {
                "the template does too much work or writes too much (it ran out of fuel)".into()
            }
            _ => e.to_string(),
        })
}

/// What templates see: `event` (`opened`), `kind` (`incident.opened`), `headline`, `actor`,
/// `incident` (its fields), `incident_id`, `message` (a runbook's words), `ack_url`,
/// `resolve_url` (empty when unset), `channel`, `to` (the contact's address, or empty),
/// `update` (true when it replaces an earlier message), `reply_code` (the number an SMS reply
/// names the incident by, or none).
pub(crate) fn context(
    channel: &str,
    msg: &Message,
    to: Option<&ContactMethod>,
) -> Map<String, Value> {
    let mut incident = msg.incident.clone();
    incident
        .entry("id")
        .or_insert_with(|| Value::String(msg.incident_id.clone()));
    let json = json!({
        "event": msg.event.as_str(),
        "kind": msg.event.delivery_kind(),
        "headline": msg.event.headline(),
        "actor": msg.actor,
        "incident": incident,
        "incident_id": msg.incident_id,
        "message": msg.text,
        "ack_url": msg.ack_url.clone().unwrap_or_default(),
        "resolve_url": msg.resolve_url.clone().unwrap_or_default(),
        "channel": channel,
        "to": to.map(|c| c.address.clone()).unwrap_or_default(),
        "update": msg.previous_id.is_some(),
        "reply_code": msg.reply_code,
    });
    match json {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `text` cut to at most `limit` characters, marked with `…` when cut.
pub(crate) fn fit(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(limit.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's text escapes: `&`, `<` and `>` are control characters in mrkdwn.
pub(crate) fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The sample incident templates are checked with at load (and previews use by default).
pub fn sample_incident() -> Map<String, Value> {
    match json!({
        "id": "01JC0FFEE0SAMP1E0000000000",
        "title": "checkout: error rate above 5%",
        "description": "HTTP 5xx on /api/checkout since 09:12 UTC",
        "category": "service-outage",
        "severity": 2,
        "priority": 1,
        "state": "open",
        "dedup_key": "prometheus/checkout-errors",
        "alert_count": 3,
        "labels": { "env": "prod", "service": "checkout" },
        "source": "prometheus",
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Sample messages of `event`: with and without links, and (for an incident's change) with
/// the state it leads to.
pub(crate) fn samples(event: EventKind) -> Vec<Message> {
    let mut msg = if event == EventKind::RunbookMessage {
        Message::runbook(
            "sample-event",
            "runbook:restart-service",
            "01JC0FFEE0SAMP1E0000000000",
            "restarted checkout (3 pods)",
        )
    } else {
        let mut incident = sample_incident();
        let state = match event {
            EventKind::Acknowledged => "acknowledged",
            EventKind::Resolved => "resolved",
            EventKind::Closed => "closed",
            _ => "open",
        };
        incident.insert("state".into(), Value::String(state.into()));
        let mut msg = Message::incident("sample-event", event, "user:alice", incident);
        if event == EventKind::StatusUpdated {
            msg.text = "monitoring: checkout is back; we are watching error rates".into();
        }
        if event == EventKind::StatusReminder {
            msg.text = "no status update for 30 minutes: post one with `firebreak incident update 01JC0FFEE0SAMP1E0000000000 --status ... \"...\"`".into();
        }
        msg
    };
    let plain = msg.clone();
    msg.ack_url =
        Some("https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/ack".into());
    msg.resolve_url =
        Some("https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/resolve".into());
    msg.previous_id = Some("sample-provider-id".into());
    vec![plain, msg]
}

/// The built-in template of `part` in `style`.
pub(crate) fn builtin(style: Style, part: Part) -> &'static str {
    match (style, part) {
        (Style::Email, Part::Subject) | (Style::Teams, Part::Subject) => SUBJECT,
        (Style::Email, _) => EMAIL_TEXT,
        (Style::Slack, _) => SLACK_TEXT,
        (Style::Markdown, _) => MARKDOWN_TEXT,
        (Style::Teams, _) => TEAMS_TEXT,
        (Style::Sms, _) => SMS_TEXT,
        (Style::Voice, _) => VOICE_SPEECH,
    }
}

const SUBJECT: &str = "\
{% if event == 'runbook_message' %}\
[Firebreak] Runbook message on incident {{ incident_id }}\
{% else %}\
[{% if incident.severity %}SEV{{ incident.severity }}{% else %}Firebreak{% endif %}] \
{{ headline }}: {{ incident.title|default(incident_id) }}\
{% endif %}";

const EMAIL_TEXT: &str = "\
{% if event == 'runbook_message' %}
{{ message }}

Incident: {{ incident_id }}
{% if actor %}
From:     {{ actor }}
{% endif %}
{% else %}
{{ headline }}{% if actor %} by {{ actor }}{% endif %}.

Incident: {{ incident.title|default(incident_id) }}
ID:       {{ incident_id }}
{% if incident.severity %}
Severity: SEV{{ incident.severity }}
{% endif %}
{% if incident.priority %}
Priority: P{{ incident.priority }}
{% endif %}
{% if incident.state %}
State:    {{ incident.state }}
{% endif %}
{% if incident.category %}
Category: {{ incident.category }}
{% endif %}
{% if incident.labels %}
Labels:   {% for k, v in incident.labels|items %}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}{{ '' }}
{% endif %}
{% if incident.description %}

{{ incident.description }}
{% endif %}
{% if message %}

{{ message }}
{% endif %}
{% endif %}
{% if ack_url or resolve_url %}

{% endif %}
{% if ack_url %}
Acknowledge: {{ ack_url }}
{% endif %}
{% if resolve_url %}
Resolve:     {{ resolve_url }}
{% endif %}
";

const SLACK_TEXT: &str = "\
{% set icons = {'opened': ':rotating_light:', 'escalated': ':rotating_light:', 'acknowledged': ':eyes:', 'resolved': ':white_check_mark:', 'closed': ':lock:', 'runbook_message': ':memo:'} %}
{{ icons[event]|default(':information_source:') }} \
{% if event == 'runbook_message' %}
*Runbook message* on incident `{{ incident_id }}`{% if actor %} from {{ actor|slack_escape }}{% endif %}{{ '' }}

{{ message|slack_escape }}
{% else %}
*{% if incident.severity %}[SEV{{ incident.severity }}] {% endif %}{{ headline }}*: {{ incident.title|default(incident_id)|slack_escape }}
`{{ incident_id }}`{% if incident.state %} · {{ incident.state }}{% endif %}{% if incident.priority %} · P{{ incident.priority }}{% endif %}{% if actor %} · by {{ actor|slack_escape }}{% endif %}{{ '' }}
{% if message %}
{{ message|slack_escape }}
{% endif %}
{% endif %}
{% if ack_url or resolve_url %}
{% if ack_url %}<{{ ack_url }}|Acknowledge>{% endif %}{% if ack_url and resolve_url %} · {% endif %}{% if resolve_url %}<{{ resolve_url }}|Resolve>{% endif %}
{% endif %}";

const MARKDOWN_TEXT: &str = "\
{% if event == 'runbook_message' %}
**Runbook message** on incident `{{ incident_id }}`{% if actor %} from {{ actor }}{% endif %}{{ '' }}

{{ message }}
{% else %}
**{% if incident.severity %}[SEV{{ incident.severity }}] {% endif %}{{ headline }}**: {{ incident.title|default(incident_id) }}
`{{ incident_id }}`{% if incident.state %} · {{ incident.state }}{% endif %}{% if incident.priority %} · P{{ incident.priority }}{% endif %}{% if actor %} · by {{ actor }}{% endif %}{{ '' }}
{% if message %}
{{ message }}
{% endif %}
{% endif %}
{% if ack_url or resolve_url %}
{% if ack_url %}[Acknowledge]({{ ack_url }}){% endif %}{% if ack_url and resolve_url %} · {% endif %}{% if resolve_url %}[Resolve]({{ resolve_url }}){% endif %}
{% endif %}";

const TEAMS_TEXT: &str = "\
{% if event == 'runbook_message' %}
{{ message }}

Incident {{ incident_id }}{% if actor %}, from {{ actor }}{% endif %}{{ '' }}
{% else %}
{{ headline }}{% if actor %} by {{ actor }}{% endif %}.

ID: {{ incident_id }}{% if incident.state %} · State: {{ incident.state }}{% endif %}{% if incident.priority %} · P{{ incident.priority }}{% endif %}{% if incident.category %} · {{ incident.category }}{% endif %}{{ '' }}
{% if message %}

{{ message }}
{% endif %}
{% endif %}";

const SMS_TEXT: &str = "\
{% if event == 'runbook_message' %}
Firebreak {{ incident_id }}: {{ message }}
{% else %}
{% if incident.severity %}[SEV{{ incident.severity }}] {% endif %}{{ headline }}: {{ incident.title|default(incident_id) }} ({{ incident_id }})
{% if message %}
{{ message }}
{% endif %}
{% endif %}
{% if reply_code %}
Reply {{ reply_code }}a to acknowledge, {{ reply_code }}r to resolve.
{% endif %}
{% if ack_url %}
Ack: {{ ack_url }}
{% endif %}";

const VOICE_SPEECH: &str = "\
This is Firebreak. \
{% if event == 'runbook_message' %}
A runbook says: {{ message }}.
{% else %}
{% if incident.severity %}Severity {{ incident.severity }}. {% endif %}{{ headline }}: {{ incident.title|default('an incident') }}.
{% endif %}
Please check Firebreak.";

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(style: Style, part: Part) -> PartSpec {
        PartSpec {
            part,
            style,
            limit: 100_000,
        }
    }

    #[test]
    fn the_defaults_read_well() {
        let overrides = TemplateOverrides::default();
        let msg = &samples(EventKind::Opened)[1];
        let ctx = Value::Object(context("ops", msg, None));
        let show = |style, part| {
            let (name, src) = overrides.source(EventKind::Opened, spec(style, part));
            render(&name, src, &ctx, Escape::None).unwrap()
        };
        assert_eq!(
            show(Style::Email, Part::Subject),
            "[SEV2] Incident opened: checkout: error rate above 5%"
        );
        assert_eq!(
            show(Style::Email, Part::Text),
            "Incident opened by user:alice.\n\nIncident: checkout: error rate above 5%\nID:       01JC0FFEE0SAMP1E0000000000\nSeverity: SEV2\nPriority: P1\nState:    open\nCategory: service-outage\nLabels:   env=prod, service=checkout\n\nHTTP 5xx on /api/checkout since 09:12 UTC\n\nAcknowledge: https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/ack\nResolve:     https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/resolve\n"
        );
        assert_eq!(
            show(Style::Slack, Part::Text),
            ":rotating_light: *[SEV2] Incident opened*: checkout: error rate above 5%\n`01JC0FFEE0SAMP1E0000000000` · open · P1 · by user:alice\n<https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/ack|Acknowledge> · <https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/resolve|Resolve>"
        );
        assert_eq!(
            show(Style::Sms, Part::Text),
            "[SEV2] Incident opened: checkout: error rate above 5% (01JC0FFEE0SAMP1E0000000000)\nAck: https://firebreak.example.com/incidents/01JC0FFEE0SAMP1E0000000000/ack\n"
        );
        assert_eq!(
            show(Style::Voice, Part::Speech),
            "This is Firebreak. Severity 2. Incident opened: checkout: error rate above 5%.\nPlease check Firebreak."
        );
    }

    #[test]
    fn slack_text_escapes_what_people_typed() {
        let mut msg = samples(EventKind::Opened).remove(0);
        msg.incident
            .insert("title".into(), Value::String("<!channel> & <b>".into()));
        let ctx = Value::Object(context("ops", &msg, None));
        let out = render("t", SLACK_TEXT, &ctx, Escape::None).unwrap();
        assert!(out.contains("&lt;!channel&gt; &amp; &lt;b&gt;"), "{out}");
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let ctx = Value::Object(Map::new());
        let e = render(
            "templates.text",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &ctx,
            Escape::None,
        )
        .unwrap_err();
        assert!(e.contains("ran out of fuel"), "{e}");
        let e = render(
            "templates.text",
            "{{ 'x' * 100000000 }}",
            &ctx,
            Escape::None,
        )
        .unwrap_err();
        assert!(e.contains("ran out of fuel"), "{e}");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
