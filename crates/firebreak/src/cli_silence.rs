//! The CLI's silences (`firebreak silence add|list|show|expire`), over intake's gRPC
//! `SilenceService`: matchers in amtool's syntax, `add --dry-run` to see which firing alerts
//! a silence would catch, and the alerts each silence caught.

use std::time::Duration;

use clap::{Args, Subcommand};
use firebreak_domain::silence::Matcher;
use firebreak_proto::access::AuthedChannel;
use firebreak_proto::v1::{self, silence_service_client::SilenceServiceClient};
use serde_json::{Value, json};

use crate::cli_access::print_json;
use crate::output::{Exit, Failure, OutputFormat, rfc3339, say_raw, table, ts_json};

#[derive(Debug, Subcommand)]
pub enum SilenceCmd {
    /// Silence the alerts every MATCHER accepts (none opens an incident or pages anyone
    /// while it lasts); prints the new silence's id. With --dry-run, prints the firing
    /// alerts it would silence, and creates nothing.
    Add(AddArgs),
    /// Active and pending silences (--expired: the ended ones), with how many alerts each
    /// silenced.
    List {
        #[arg(long)]
        expired: bool,
    },
    /// A silence and the alerts it silenced, newest first.
    Show {
        id: String,
        /// The most alerts to list (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// End a silence now (a pending one never starts).
    Expire { id: String },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Matchers in amtool's syntax: `alertname=DiskFull`, `job!=batch`, `host=~"web-.*"`,
    /// `env!~"dev|test"` (a regex matches the whole value); a first bare word is an
    /// alertname.
    #[arg(required = true)]
    pub matchers: Vec<String>,
    /// How long it lasts from its start: `90m`, `2h`, `1d`.
    #[arg(long, value_parser = parse_length, required_unless_present = "ends", conflicts_with = "ends")]
    pub duration: Option<Duration>,
    /// When it ends (RFC 3339: 2026-12-24T18:00:00Z).
    #[arg(long)]
    pub ends: Option<String>,
    /// When it starts (RFC 3339) [default: now].
    #[arg(long)]
    pub starts: Option<String>,
    /// Why (at most 4 KiB).
    #[arg(long)]
    pub comment: String,
    /// Written beside your token's identity as its creator.
    #[arg(long, default_value = "")]
    pub author: String,
    /// Show the firing alerts it would silence; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run, the most alerts to list (at most 1000; all are counted).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// A silence's length: `90m`, `2h`, `1d`, or seconds.
fn parse_length(text: &str) -> Result<Duration, String> {
    let d = crate::cli::parse_span(
        text,
        &[
            ("s", Duration::from_secs(1)),
            ("m", Duration::from_secs(60)),
            ("h", Duration::from_secs(3600)),
            ("d", Duration::from_secs(86_400)),
        ],
        "a length such as 90m, 2h or 1d",
    )?;
    if d.is_zero() {
        return Err(format!("{text:?} is no time at all"));
    }
    Ok(d)
}

fn usage(message: String) -> anyhow::Error {
    Failure::new(Exit::Usage, message).into()
}

/// An RFC 3339 time given to `flag`, as a wire timestamp.
fn wire_time(flag: &str, text: &str) -> anyhow::Result<firebreak_proto::Timestamp> {
    let t: jiff::Timestamp = text
        .trim()
        .parse()
        .map_err(|e| usage(format!("{flag} {text:?} is not an RFC 3339 time: {e}")))?;
    Ok(firebreak_proto::Timestamp {
        seconds: t.as_second(),
        nanos: t.subsec_nanosecond(),
    })
}

/// An operator as amtool writes it (`?` for one this build does not know).
fn op_text(op: i32) -> &'static str {
    firebreak_proto::silence::wire_op(op).map_or("?", |op| op.as_str())
}

/// The request `add` sends: matchers parsed (only their syntax: the server checks the
/// rest, naming the field), times read.
fn request(a: &AddArgs) -> anyhow::Result<v1::CreateSilenceRequest> {
    let matchers = a
        .matchers
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Matcher::parse(text)
                .map(|m| v1::SilenceMatcher {
                    op: firebreak_proto::silence::op_wire(m.op).into(),
                    name: m.name,
                    value: m.value,
                })
                .map_err(|e| usage(format!("matchers[{i}]: {e}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let starts_at = a
        .starts
        .as_deref()
        .map(|s| wire_time("--starts", s))
        .transpose()?;
    let ends_at = match (&a.ends, a.duration) {
        (Some(ends), _) => wire_time("--ends", ends)?,
        (None, Some(length)) => {
            // From its start, or from now.
            let from = match &starts_at {
                Some(s) => jiff::Timestamp::new(s.seconds, s.nanos)
                    .map_err(|e| usage(format!("--starts: {e}")))?,
                None => jiff::Timestamp::now(),
            };
            let length = jiff::SignedDuration::try_from(length)
                .map_err(|e| usage(format!("--duration: {e}")))?;
            let end = from
                .checked_add(length)
                .map_err(|e| usage(format!("--duration: too long: {e}")))?;
            firebreak_proto::Timestamp {
                seconds: end.as_second(),
                nanos: end.subsec_nanosecond(),
            }
        }
        (None, None) => return Err(usage("give --duration or --ends".into())),
    };
    Ok(v1::CreateSilenceRequest {
        matchers,
        starts_at,
        ends_at: Some(ends_at),
        comment: a.comment.clone(),
        created_by: a.author.clone(),
        id: String::new(),
    })
}

fn state_name(state: i32) -> &'static str {
    match v1::SilenceState::try_from(state) {
        Ok(v1::SilenceState::Pending) => "pending",
        Ok(v1::SilenceState::Active) => "active",
        Ok(v1::SilenceState::Expired) => "expired",
        _ => "unknown",
    }
}

/// A silence's matchers as amtool writes them: `alertname="DiskFull", host=~"web-.*"`.
fn matchers_text(s: &v1::Silence) -> String {
    s.matchers
        .iter()
        .map(|m| format!("{}{}{:?}", m.name, op_text(m.op), m.value))
        .collect::<Vec<_>>()
        .join(", ")
}

fn silence_json(s: &v1::Silence) -> Value {
    json!({
        "id": s.id, "state": state_name(s.state),
        "matchers": s.matchers.iter().map(|m| json!({
            "name": m.name, "op": op_text(m.op), "value": m.value,
        })).collect::<Vec<_>>(),
        "starts_at": ts_json(s.starts_at.as_ref()), "ends_at": ts_json(s.ends_at.as_ref()),
        "created_by": s.created_by, "comment": s.comment,
        "updated_at": ts_json(s.updated_at.as_ref()), "silenced_alerts": s.silenced_alerts,
    })
}

fn alert_json(a: &v1::SilencedAlert) -> Value {
    json!({
        "id": a.id, "received_at": ts_json(a.received_at.as_ref()), "title": a.title,
        "source": a.source,
        "labels": a.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "integration": a.integration, "alert_key": a.alert_key,
        "silenced_by": a.silenced_by,
    })
}

fn labels_text(a: &v1::SilencedAlert) -> String {
    a.labels
        .iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn alerts_table(alerts: &[v1::SilencedAlert]) {
    table(
        &["alert", "received", "integration", "title", "labels"],
        alerts
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    rfc3339(a.received_at.as_ref()).unwrap_or_default(),
                    a.integration.clone(),
                    a.title.clone(),
                    labels_text(a),
                ]
            })
            .collect(),
    );
}

/// A silence a write answered with: as JSON, or as `text`.
fn print_one(json_out: bool, s: &v1::Silence, text: String) {
    if json_out {
        print_json(silence_json(s));
    } else {
        say_raw(&text);
    }
}

/// Runs a silence command against intake.
pub(crate) async fn run(
    cmd: SilenceCmd,
    channel: AuthedChannel,
    format: OutputFormat,
    status: impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<()> {
    let json_out = matches!(format, OutputFormat::Json);
    let mut silences = SilenceServiceClient::new(channel);
    match cmd {
        SilenceCmd::Add(a) if a.dry_run => {
            let r = silences
                .preview_silence(v1::PreviewSilenceRequest {
                    silence: Some(request(&a)?),
                    limit: a.limit,
                })
                .await
                .map_err(status)?
                .into_inner();
            if json_out {
                print_json(json!({
                    "dry_run": true, "matching": r.matching, "firing": r.firing,
                    "truncated": r.truncated,
                    "alerts": r.alerts.iter().map(alert_json).collect::<Vec<_>>(),
                }));
            } else {
                if !r.alerts.is_empty() {
                    alerts_table(&r.alerts);
                }
                let shown = if (r.alerts.len() as u64) < r.matching {
                    format!(" ({} listed: --limit)", r.alerts.len())
                } else {
                    String::new()
                };
                let read = if r.truncated {
                    " (only the first 100,000 firing alerts were read)"
                } else {
                    ""
                };
                say_raw(&format!(
                    "{} of {} firing alerts would be silenced{shown}{read}; dry run: nothing was created\n",
                    r.matching, r.firing
                ));
            }
        }
        SilenceCmd::Add(a) => {
            let r = silences
                .create_silence(request(&a)?)
                .await
                .map_err(status)?
                .into_inner();
            let s = r.silence.unwrap_or_default();
            // The id alone, as amtool prints it: `ID=$(firebreak silence add …)`.
            print_one(json_out, &s, format!("{}\n", s.id));
        }
        SilenceCmd::List { expired } => {
            let r = v1::ListSilencesResponse {
                silences: every_page!(page_token => silences
                    .list_silences(v1::ListSilencesRequest {
                        expired,
                        page_size: 0,
                        page_token,
                    })
                    .await
                    .map_err(&status)?
                    .into_inner(), silences),
                next_page_token: String::new(),
            };
            if json_out {
                print_json(Value::Array(r.silences.iter().map(silence_json).collect()));
            } else {
                table(
                    &[
                        "id",
                        "state",
                        "matchers",
                        "starts",
                        "ends",
                        "silenced",
                        "created by",
                        "comment",
                    ],
                    r.silences
                        .iter()
                        .map(|s| {
                            vec![
                                s.id.clone(),
                                state_name(s.state).to_owned(),
                                matchers_text(s),
                                rfc3339(s.starts_at.as_ref()).unwrap_or_default(),
                                rfc3339(s.ends_at.as_ref()).unwrap_or_default(),
                                s.silenced_alerts.to_string(),
                                s.created_by.clone(),
                                s.comment.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        SilenceCmd::Show { id, limit } => {
            let r = silences
                .get_silence(v1::GetSilenceRequest {
                    id,
                    alert_limit: limit,
                })
                .await
                .map_err(status)?
                .into_inner();
            let s = r.silence.unwrap_or_default();
            if json_out {
                let mut v = silence_json(&s);
                v["alerts"] = Value::Array(r.alerts.iter().map(alert_json).collect());
                print_json(v);
            } else {
                let mut text = String::new();
                for (k, v) in [
                    ("id", s.id.clone()),
                    ("state", state_name(s.state).to_owned()),
                    ("matchers", matchers_text(&s)),
                    (
                        "starts_at",
                        rfc3339(s.starts_at.as_ref()).unwrap_or_default(),
                    ),
                    ("ends_at", rfc3339(s.ends_at.as_ref()).unwrap_or_default()),
                    ("created_by", s.created_by.clone()),
                    ("comment", s.comment.clone()),
                    ("silenced_alerts", s.silenced_alerts.to_string()),
                ] {
                    text.push_str(&format!("{k:<20} {v}\n"));
                }
                say_raw(&text);
                if !r.alerts.is_empty() {
                    say_raw("\n");
                    alerts_table(&r.alerts);
                }
            }
            if (r.alerts.len() as u64) < s.silenced_alerts {
                eprintln!(
                    "{} of {} silenced alerts listed (--limit)",
                    r.alerts.len(),
                    s.silenced_alerts
                );
            }
        }
        SilenceCmd::Expire { id } => {
            let r = silences
                .expire_silence(v1::ExpireSilenceRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            let s = r.silence.unwrap_or_default();
            print_one(json_out, &s, format!("expired silence {}\n", s.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(args: &[&str]) -> AddArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cmd {
            #[command(flatten)]
            add: AddArgs,
        }
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        Cmd::try_parse_from(all).unwrap().add
    }

    #[test]
    fn add_reads_amtool_matchers_and_its_times() {
        let r = request(&add(&[
            "alertname=DiskFull",
            "host=~\"web-.*\"",
            "job!=batch",
            "--starts",
            "2030-01-01T00:00:00Z",
            "--duration",
            "2h",
            "--comment",
            "resize",
        ]))
        .unwrap();
        let ops: Vec<(&str, &str, &str)> = r
            .matchers
            .iter()
            .map(|m| (m.name.as_str(), op_text(m.op), m.value.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("alertname", "=", "DiskFull"),
                ("host", "=~", "web-.*"),
                ("job", "!=", "batch")
            ]
        );
        let starts = r.starts_at.unwrap().seconds;
        assert_eq!(r.ends_at.unwrap().seconds - starts, 7200);
        let e = request(&add(&["job~web", "--duration", "1h", "--comment", "x"])).unwrap_err();
        assert!(e.to_string().starts_with("matchers[0]: "), "{e}");
        let e = request(&add(&["job=web", "--ends", "tomorrow", "--comment", "x"])).unwrap_err();
        assert!(e.to_string().starts_with("--ends "), "{e}");
        assert!(parse_length("0s").is_err() && parse_length("2w").is_err());
    }
}
