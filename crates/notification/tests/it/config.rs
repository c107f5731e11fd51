//! Channel configuration: every kind reads and checks; each bad field is refused with an error
//! naming the channel and the field; secrets are named, looked up, and never shown; templates
//! render for every kind and event, overrides apply, and broken ones fail at load; contact
//! kinds find their channel; previews render.

use firebreak_domain::people::ContactKind;
use firebreak_notification::{
    Channel, ChannelKind, EventKind, channel_for, preview, sample_incident,
};

use crate::support::{assert_no_secret, channel, parse, refusal, with_secrets};

/// One channel of every kind, with every secret it can name.
fn every_kind() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("{ name: l, kind: log }", vec![]),
        (
            "{ name: w, kind: webhook, url: 'https://hooks.example.com/x', signing_secret: {secret: w-key} }",
            vec![("w-key", "whsec-value-111")],
        ),
        (
            "{ name: e, kind: email, host: smtp.example.com, username: fb, password: {secret: e-pass}, from: fb@example.com, to: [ops@example.com] }",
            vec![("e-pass", "smtp-value-222")],
        ),
        (
            "{ name: s, kind: slack, token: {secret: s-tok}, channel: C024BE91L }",
            vec![("s-tok", "xoxb-value-333")],
        ),
        (
            "{ name: sw, kind: slack_webhook, url: {secret: sw-url} }",
            vec![("sw-url", "https://hooks.slack.com/services/T/B/value444")],
        ),
        (
            "{ name: m, kind: mattermost, url: 'https://chat.example.com', token: {secret: m-tok}, channel_id: t0wnsquare0000000000000000 }",
            vec![("m-tok", "mm-value-555")],
        ),
        (
            "{ name: mw, kind: mattermost_webhook, url: 'https://chat.example.com/hooks/abc' }",
            vec![],
        ),
        (
            "{ name: t, kind: teams, url: {secret: t-url} }",
            vec![(
                "t-url",
                "https://prod.westus.logic.azure.com/workflows/1?sig=value666",
            )],
        ),
        (
            "{ name: tw, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: tw-tok}, from: '+15557654321', to: '+15551234567' }",
            vec![("tw-tok", "twilio-value-777")],
        ),
        (
            "{ name: g, kind: sms_gateway, url: 'https://sms.example.com/send', headers: {Authorization: 'Bearer {{ secrets.t }}'}, body: '{\"to\": {{ to }}, \"text\": {{ text }}}', secrets: {t: {secret: g-tok}}, to: '+15551234567' }",
            vec![("g-tok", "gateway-value-888")],
        ),
    ]
}

#[test]
fn every_kind_reads_checks_and_renders_every_event() {
    let kinds: Vec<ChannelKind> = every_kind()
        .iter()
        .map(|(yaml, secrets)| {
            let c = channel(yaml, secrets);
            assert!(c.broadcasts(), "{yaml}");
            for &event in EventKind::ALL {
                let text = preview(&c, event, &sample_incident())
                    .unwrap_or_else(|e| panic!("{yaml} {event}: {e}"));
                assert!(!text.trim().is_empty(), "{yaml} {event}");
            }
            c.kind()
        })
        .collect();
    assert_eq!(kinds, ChannelKind::ALL);
    let log = Channel::log();
    log.check().unwrap();
    assert_eq!(log.kind(), ChannelKind::Log);
}

#[test]
fn no_secret_value_shows_in_debug_output() {
    let all: Vec<Channel> = every_kind()
        .iter()
        .map(|(yaml, secrets)| channel(yaml, secrets))
        .collect();
    let text = format!("{all:?} {all:#?}");
    let values: Vec<&str> = every_kind()
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(_, v)| *v))
        .collect();
    assert_no_secret(&text, &values);
    // A token in an inline webhook URL does not show either: scheme and host only.
    let c = channel(
        "{ name: mw, kind: mattermost_webhook, url: 'https://chat.example.com/hooks/inline-t0ken' }",
        &[],
    );
    assert!(format!("{c:?}").contains("https://chat.example.com/…"));
    assert_no_secret(&format!("{c:?}"), &["inline-t0ken"]);
}

#[test]
fn previews_show_what_each_kind_would_say() {
    let email = channel(every_kind()[2].0, &every_kind()[2].1);
    assert_eq!(
        preview(&email, EventKind::Resolved, &sample_incident())
            .unwrap()
            .lines()
            .next(),
        Some("Subject: [SEV2] Incident resolved: checkout: error rate above 5%")
    );
    let twilio = channel(every_kind()[8].0, &every_kind()[8].1);
    let p = preview(&twilio, EventKind::Opened, &sample_incident()).unwrap();
    assert!(
        p.starts_with("SMS:\n[SEV2] Incident opened: checkout"),
        "{p}"
    );
    assert!(
        p.contains("\n\nVoice:\nThis is Firebreak. Severity 2."),
        "{p}"
    );
    let webhook = channel(every_kind()[1].0, &every_kind()[1].1);
    let p = preview(&webhook, EventKind::Opened, &sample_incident()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&p).unwrap();
    assert_eq!(json["kind"], "incident.opened");
    assert_eq!(json["incident"]["title"], "checkout: error rate above 5%");
}

#[test]
fn each_bad_field_is_refused_naming_the_channel_and_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ name: x, kind: pagerduty }",
            "kind",
            "unknown kind \"pagerduty\" (one of log, webhook, email",
        ),
        ("{ name: x }", "kind", "is required"),
        ("{ kind: log }", "name", "is required"),
        ("{ name: '', kind: log }", "name", "is required"),
        (
            "{ name: x, kind: log, url: 'https://x' }",
            "",
            "unknown field `url`",
        ),
        ("{ name: x, kind: webhook }", "url", "is required"),
        (
            "{ name: x, kind: webhook, url: 'ftp://x' }",
            "url",
            "must start with http:// or https://",
        ),
        (
            "{ name: x, kind: webhook, url: 'not a url' }",
            "url",
            "is not a URL",
        ),
        (
            "{ name: x, kind: webhook, url: 'https://x', events: [opend] }",
            "events[0]",
            "\"opend\" is not an incident change",
        ),
        (
            "{ name: x, kind: webhook, url: 'https://x', max_severity: 9 }",
            "max_severity",
            "must be 0 (all) to 5",
        ),
        (
            "{ name: x, kind: webhook, url: 'https://x', max_severity: high }",
            "max_severity",
            "invalid type",
        ),
        (
            "{ name: x, kind: slack, tokn: {secret: t} }",
            "",
            "unknown field `tokn`",
        ),
        (
            "{ name: x, kind: slack, channel: C1 }",
            "",
            "missing field `token`",
        ),
        (
            "{ name: x, kind: slack, token: {secret: t}, api_url: 'http://slack.example.com/api' }",
            "api_url",
            "must start with https://",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'http://hooks.slack.com/x' }",
            "url",
            "must start with https://",
        ),
        (
            "{ name: x, kind: email, from: a@example.com }",
            "",
            "missing field `host`",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com }",
            "",
            "missing field `from`",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, tls: none, from: a@example.com }",
            "tls",
            "only to a loopback host",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, tls: ssl, from: a@example.com }",
            "tls",
            "unknown variant `ssl`",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, port: 70000, from: a@example.com }",
            "port",
            "invalid value",
        ),
        (
            "{ name: x, kind: email, host: 'smtp example', from: a@example.com }",
            "host",
            "is not a host name",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, from: 'not an address' }",
            "from",
            "is not an email address",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, from: a@example.com, to: [b@example.com, nope] }",
            "to[1]",
            "is not an email address",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, from: a@example.com, username: fb }",
            "password",
            "is required with username",
        ),
        (
            "{ name: x, kind: email, host: smtp.example.com, from: a@example.com, ca_file: /nonexistent/ca.pem }",
            "ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
        (
            "{ name: x, kind: mattermost, url: 'https://chat.example.com', token: {secret: t}, channel_id: town-square }",
            "channel_id",
            "is not a Mattermost id",
        ),
        (
            "{ name: x, kind: mattermost, url: 'chat.example.com', token: {secret: t} }",
            "url",
            "is not a URL",
        ),
        (
            "{ name: x, kind: teams, url: 'https://x', extra: 1 }",
            "",
            "unknown field `extra`",
        ),
        (
            "{ name: x, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: t}, from: '5557654321' }",
            "from",
            "is not a phone number in E.164 form",
        ),
        (
            "{ name: x, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: t}, from: '+15557654321', to: '+0155' }",
            "to",
            "E.164",
        ),
        (
            "{ name: x, kind: twilio, account_sid: SK123, auth_token: {secret: t}, from: '+15557654321' }",
            "account_sid",
            "is not an account SID",
        ),
        (
            "{ name: x, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: t}, from: '+15557654321', broadcast_as: fax }",
            "broadcast_as",
            "unknown variant `fax`",
        ),
        (
            "{ name: x, kind: slack, token: {secret: '../../etc/passwd'} }",
            "token",
            "is not a secret's name",
        ),
        (
            "{ name: x, kind: slack, token: {secrets: t} }",
            "token",
            "expects {secret: NAME}",
        ),
        (
            "{ name: x, kind: webhook, url: 'https://x', templates: { text: hi } }",
            "templates.text",
            "a webhook channel has no templates",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { speech: hi } }",
            "templates.speech",
            "a slack_webhook channel renders no speech (it renders text)",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { text: '{{ incident.title|shout }}' } }",
            "templates.text",
            "unknown filter",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { text: '{% if %}' } }",
            "templates.text",
            "syntax error",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { text: '{{ incident.titel }}' } }",
            "templates.text",
            "undefined",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { by_event: { resolved: { text: '{% if false %}x{% endif %}' } } } }",
            "templates.by_event.resolved.text",
            "renders nothing for a sample resolved event",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { by_event: { unheard_of: { text: x } } } }",
            "templates.by_event",
            "unknown variant `unheard_of`",
        ),
        (
            "{ name: x, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: t}, from: '+15557654321', templates: { text: \"{{ 'x' * 2000 }}\" } }",
            "templates.text",
            "renders 2000 characters for a sample opened event, more than the 1600 a twilio text may have",
        ),
        (
            "{ name: x, kind: slack_webhook, url: 'https://x', templates: { text: \"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}\" } }",
            "templates.text",
            "ran out of fuel",
        ),
    ];
    for (yaml, field, why) in cases {
        let e = refusal(yaml, &[("t", "value")]);
        let name = if yaml.contains("name: x") { "x" } else { "" };
        let prefix = if field.is_empty() {
            format!("channel {name:?}: ")
        } else {
            format!("channel {name:?}: {field}")
        };
        assert!(e.contains(&prefix), "{yaml}\n  wanted {prefix:?} in: {e}");
        assert!(e.contains(why), "{yaml}\n  wanted {why:?} in: {e}");
    }
    // A template too large to keep.
    let big = format!(
        "{{ name: x, kind: slack_webhook, url: 'https://x', templates: {{ text: '{}' }} }}",
        "x".repeat(17_000)
    );
    let e = refusal(&big, &[]);
    assert!(
        e.starts_with(
            "channel \"x\": templates.text: the template has 17000 bytes, more than 16384"
        ),
        "{e}"
    );
}

#[test]
fn secrets_are_named_looked_up_and_never_echoed() {
    // Written inline, the value is refused and not repeated.
    let e = parse("{ name: x, kind: slack, token: xoxb-pasted-value-999 }").unwrap_err();
    assert!(
        e.contains("channel \"x\": token: expects {secret: NAME}"),
        "{e}"
    );
    assert_no_secret(&e, &["xoxb-pasted-value-999"]);
    // Not set: the error names the channel, the field, the secret and where it is looked for.
    let c = parse("{ name: x, kind: twilio, account_sid: AC0123456789abcdef0123456789abcdef, auth_token: {secret: twilio-token}, from: '+15557654321' }").unwrap();
    assert_eq!(
        c.secret_names(),
        [("auth_token".to_owned(), "twilio-token".to_owned())]
    );
    let e = with_secrets(c.clone(), &[]).unwrap_err();
    assert_eq!(
        e,
        "channel \"x\": auth_token: secret \"twilio-token\" is not set (a file of that name in secrets_dir, or FIREBREAK_SECRET_TWILIO_TOKEN)"
    );
    assert!(
        with_secrets(c, &[("twilio-token", "")]).is_err(),
        "empty is unset"
    );
    // A URL held by a secret is checked without showing it.
    let c = parse("{ name: x, kind: teams, url: {secret: teams-url} }").unwrap();
    let e = with_secrets(
        c,
        &[("teams-url", "http://teams.example.com/wf?sig=SIGvalue")],
    )
    .unwrap_err();
    assert!(
        e.starts_with(
            "channel \"x\": url: the URL in secret \"teams-url\" must start with https://"
        ),
        "{e}"
    );
    assert_no_secret(&e, &["SIGvalue", "teams.example.com"]);
}

#[test]
fn contact_kinds_find_their_channel() {
    let all: Vec<Channel> = std::iter::once(Channel::log())
        .chain(every_kind().iter().map(|(y, s)| channel(y, s)))
        .collect();
    let pick = |k| channel_for(&all, k).map(|c| c.name.as_str());
    assert_eq!(pick(ContactKind::Email), Some("e"));
    assert_eq!(pick(ContactKind::Sms), Some("tw"));
    assert_eq!(pick(ContactKind::Voice), Some("tw"));
    assert_eq!(pick(ContactKind::Slack), Some("s"));
    assert_eq!(pick(ContactKind::Mattermost), Some("m"));
    assert_eq!(pick(ContactKind::Teams), Some("t"));
    assert_eq!(pick(ContactKind::Webhook), Some("w"));
    // Without Twilio, SMS goes through the gateway; voice has no channel.
    let no_twilio: Vec<Channel> = all.into_iter().filter(|c| c.name != "tw").collect();
    assert_eq!(
        channel_for(&no_twilio, ContactKind::Sms).map(|c| c.name.as_str()),
        Some("g")
    );
    assert!(channel_for(&no_twilio, ContactKind::Voice).is_none());
}

#[test]
fn templates_can_be_overridden_per_channel_and_per_event() {
    let c = channel(
        r#"
name: sms
kind: sms_gateway
url: "https://sms.example.com/send"
body: '{"text": {{ text }}}'
to: "+15551234567"
templates:
  text: "{{ event|upper }} {{ incident.title }}"
  by_event:
    runbook_message:
      text: "RUNBOOK {{ message }}"
"#,
        &[],
    );
    assert_eq!(
        preview(&c, EventKind::Opened, &sample_incident()).unwrap(),
        "OPENED checkout: error rate above 5%"
    );
    assert_eq!(
        preview(&c, EventKind::RunbookMessage, &sample_incident()).unwrap(),
        "RUNBOOK (the runbook's message)"
    );
}
