//! Intake from real monitoring tools: recorded Alertmanager, Grafana and PagerDuty payloads
//! replayed through the HTTP endpoints, gRPC batches with idempotency keys, integrations,
//! and a bad-input corpus per endpoint that must store nothing.

use firebreak_proto::v1::{self, AlertInput, integration_service_client::IntegrationServiceClient};
use serde_json::{Value, json};
use tonic::Code;

use crate::harness::{Stack, eventually};

const AM_KEY: &str = "am-key-0000000000000001";
const PD_KEY: &str = "R0UT1NGKEY0000000000000000000001";
const V1_KEY: &str = "S3RV1CEKEY0000000000000000000001";
const GRPC_KEY: &str = "grpc-key-000000000000001";

fn config() -> String {
    format!(
        "integrations:
  - {{ name: prom, kind: alertmanager, key: {AM_KEY} }}
  - {{ name: pd, kind: pagerduty, key: {PD_KEY} }}
  - {{ name: pd-v1, kind: pagerduty, key: {V1_KEY}, auto_resolve: true }}
  - {{ name: batcher, kind: grpc, key: {GRPC_KEY}, category: service-outage }}
  - {{ name: slow, kind: pagerduty, key: slow-key-00000000000001, rate_limit_per_second: 1 }}
"
    )
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/intake/tests/data")
            .join(name),
    )
    .unwrap()
}

/// POSTs `body` to the stack's HTTP server; returns status, headers and JSON body.
async fn post(
    s: &Stack,
    path: &str,
    body: Vec<u8>,
    bearer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", s.http))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Every incident, newest first, page by page.
async fn incidents(s: &Stack) -> Vec<v1::Incident> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .incidents
            .clone()
            .list_incidents(v1::ListIncidentsRequest {
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.incidents);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// An incident's whole timeline, page by page, as the entries themselves.
async fn timeline_entries(s: &Stack, id: &str) -> Vec<v1::TimelineEntry> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = s
            .incidents
            .clone()
            .get_timeline(v1::GetTimelineRequest {
                id: id.into(),
                page_size: 0,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.entries);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn timeline(s: &Stack, id: &str) -> Vec<(String, Value)> {
    timeline_entries(s, id)
        .await
        .into_iter()
        .map(|e| (e.kind, serde_json::from_str(&e.data).unwrap_or(Value::Null)))
        .collect()
}

/// Waits until the incidents satisfy `check`.
async fn incidents_where(
    s: &Stack,
    what: &str,
    check: impl Fn(&[v1::Incident]) -> bool,
) -> Vec<v1::Incident> {
    eventually(what, || async {
        let list = incidents(s).await;
        check(&list).then_some(list)
    })
    .await
}

#[tokio::test]
async fn an_alertmanager_group_is_one_incident_whose_alerts_resolve_it() {
    let s = Stack::start(&runbooks(), &config()).await;
    let path = format!("/v1/webhooks/alertmanager/{AM_KEY}");

    let (status, _, body) = post(&s, &path, data("alertmanager-firing.json"), None).await;
    assert_eq!(
        (status, &body),
        (200, &json!({ "status": "success", "alerts": 2, "new": 2 }))
    );
    let list = incidents_where(&s, "the group's incident with both alerts", |l| {
        l.len() == 1 && l[0].alert_count == 2
    })
    .await;
    let inc = &list[0];
    assert_eq!(inc.severity, 1, "the critical alert sets the severity");
    assert_eq!(inc.source, "alertmanager/prom");
    assert_eq!(
        inc.labels.get("alertname").map(String::as_str),
        Some("HighRequestLatency")
    );
    let t = timeline(&s, &inc.id).await;
    let opened = &t.iter().find(|(k, _)| k == "opened").unwrap().1;
    assert_eq!(opened["integration"], "prom");
    assert!(
        ["80b4132af2cfa132", "4748e09dcb9f20d2"].contains(&opened["alert_key"].as_str().unwrap())
    );
    assert!(opened["annotations"]["runbook_url"].is_string(), "{opened}");

    // Alertmanager repeats the group on its repeat_interval: nothing new.
    let (status, _, body) = post(&s, &path, data("alertmanager-firing.json"), None).await;
    assert_eq!((status, body["new"].as_u64()), (200, Some(0)));

    // One alert resolves: the incident stays open.
    let (status, _, _) = post(&s, &path, data("alertmanager-partly-resolved.json"), None).await;
    assert_eq!(status, 200);
    eventually("the first alert resolved", || async {
        let t = timeline(&s, &inc.id).await;
        t.iter()
            .any(|(k, d)| k == "alert_resolved" && d["unresolved_alerts"] == 1)
            .then_some(())
    })
    .await;
    assert_eq!(incidents(&s).await[0].state(), v1::IncidentState::Open);

    // The rest resolves: the incident resolves itself, by the integration.
    let (status, _, _) = post(&s, &path, data("alertmanager-resolved.json"), None).await;
    assert_eq!(status, 200);
    let list = incidents_where(&s, "the incident resolved", |l| {
        l[0].state() == v1::IncidentState::Resolved
    })
    .await;
    assert_eq!(list.len(), 1);
    let t = timeline(&s, &inc.id).await;
    assert_eq!(t.iter().filter(|(k, _)| k == "alert_resolved").count(), 2);
    assert_eq!(
        incidents(&s).await[0].alert_count,
        2,
        "repeats added no alert"
    );

    // The group fires again after it resolved: a new incident.
    let (_, _, body) = post(&s, &path, data("alertmanager-firing.json"), None).await;
    assert_eq!(body["new"], 2);
    incidents_where(&s, "a second incident", |l| l.len() == 2).await;
}

fn runbooks() -> std::path::PathBuf {
    // No runbooks: these tests are about intake.
    let dir = std::env::temp_dir().join("firebreak-e2e-no-runbooks");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn grafana_bearer_tokens_and_truncated_groups_are_understood() {
    let s = Stack::start(&runbooks(), &config()).await;
    let (status, _, body) = post(
        &s,
        "/v1/webhooks/alertmanager",
        data("grafana-firing.json"),
        Some(AM_KEY),
    )
    .await;
    assert_eq!((status, body["new"].as_u64()), (200, Some(1)), "{body}");
    let (status, _, _) = post(
        &s,
        &format!("/v1/webhooks/alertmanager/{AM_KEY}"),
        data("alertmanager-truncated.json"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let list = incidents_where(&s, "two incidents", |l| l.len() == 2).await;
    let grafana = list.iter().find(|i| i.source == "grafana/prom").unwrap();
    assert_eq!(
        grafana.labels.get("alertname").map(String::as_str),
        Some("CPUHigh")
    );
    let disk = list
        .iter()
        .find(|i| i.labels.get("alertname").map(String::as_str) == Some("DiskFull"))
        .unwrap();
    let t = timeline(&s, &disk.id).await;
    let opened = &t.iter().find(|(k, _)| k == "opened").unwrap().1;
    assert_eq!(opened["truncated_alerts"], 3, "{opened}");
}

#[tokio::test]
async fn pagerduty_events_follow_dedup_key_semantics() {
    let s = Stack::start(&runbooks(), &config()).await;
    let (status, _, body) = post(&s, "/v2/enqueue", data("pagerduty-trigger.json"), None).await;
    assert_eq!(
        (status, &body),
        (
            202,
            &json!({ "status": "success", "message": "Event processed", "dedup_key": "checkout-latency" })
        )
    );
    let list = incidents_where(&s, "the incident", |l| l.len() == 1).await;
    assert_eq!(list[0].severity, 1, "critical maps to SEV1");
    assert_eq!(list[0].source, "pagerduty/pd");
    // A repeated trigger with the same dedup key is the same alert.
    let (status, _, _) = post(&s, "/v2/enqueue", data("pagerduty-trigger.json"), None).await;
    assert_eq!(status, 202);

    // A change event lands on the timeline of the integration's open incident, paging nobody.
    let (status, _, body) = post(
        &s,
        "/v2/change/enqueue",
        data("pagerduty-change.json"),
        None,
    )
    .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("success")));
    let id = list[0].id.clone();
    eventually("the change on the timeline", || async {
        let t = timeline(&s, &id).await;
        t.iter()
            .any(|(k, d)| k == "change" && d["integration"] == "pd")
            .then_some(())
    })
    .await;

    let (status, _, _) = post(&s, "/v2/enqueue", data("pagerduty-acknowledge.json"), None).await;
    assert_eq!(status, 202);
    incidents_where(&s, "acknowledged", |l| {
        l[0].state() == v1::IncidentState::Acknowledged
    })
    .await;
    let (status, _, _) = post(&s, "/v2/enqueue", data("pagerduty-resolve.json"), None).await;
    assert_eq!(status, 202);
    let list = incidents_where(&s, "resolved", |l| {
        l[0].state() == v1::IncidentState::Resolved
    })
    .await;
    assert_eq!(
        list[0].alert_count, 1,
        "the repeated trigger added no alert"
    );
    // Follow-ups for a resolved alert change nothing; a new trigger opens a new alert.
    let (status, _, _) = post(&s, "/v2/enqueue", data("pagerduty-acknowledge.json"), None).await;
    assert_eq!(status, 202);
    post(&s, "/v2/enqueue", data("pagerduty-trigger.json"), None).await;
    incidents_where(&s, "a second incident", |l| l.len() == 2).await;

    // No dedup key: one is generated and returned.
    let (status, _, body) = post(
        &s,
        "/v2/enqueue",
        data("pagerduty-trigger-no-dedup.json"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(body["dedup_key"].as_str().unwrap().len(), 32);
    let list = incidents_where(&s, "a third incident", |l| l.len() == 3).await;
    assert!(list.iter().any(|i| i.severity == 3), "warning maps to SEV3");

    // The v1 API Alertmanager's pagerduty_configs use.
    let (status, _, body) = post(
        &s,
        "/generic/2010-04-15/create_event.json",
        data("pagerduty-v1-trigger.json"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("success")),
        "{body}"
    );
    incidents_where(&s, "a v1 incident", |l| l.len() == 4).await;
    let (status, _, _) = post(
        &s,
        "/generic/2010-04-15/create_event.json",
        data("pagerduty-v1-resolve.json"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    incidents_where(&s, "the v1 incident resolved", |l| {
        l.iter()
            .any(|i| i.source == "pagerduty/pd-v1" && i.state() == v1::IncidentState::Resolved)
    })
    .await;
}

#[tokio::test]
async fn bad_webhook_input_gets_a_clear_4xx_and_stores_nothing() {
    let s = Stack::start(&runbooks(), &config()).await;
    let am = format!("/v1/webhooks/alertmanager/{AM_KEY}");
    let firing: Value = serde_json::from_slice(&data("alertmanager-firing.json")).unwrap();
    let trigger: Value = serde_json::from_slice(&data("pagerduty-trigger.json")).unwrap();
    let with = |base: &Value, path: &[&str], v: Value| {
        let mut b = base.clone();
        let mut at = &mut b;
        for p in &path[..path.len() - 1] {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at[path[path.len() - 1]] = v;
        serde_json::to_vec(&b).unwrap()
    };
    let huge = format!(
        "{{\"routing_key\":\"{PD_KEY}\",\"pad\":\"{}\"}}",
        "x".repeat(600 * 1024)
    );
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "am: malformed json",
            am.clone(),
            b"{\"version\":".to_vec(),
            400,
            "body",
        ),
        (
            "am: invalid utf-8",
            am.clone(),
            vec![0xff, 0xfe, b'{'],
            400,
            "body",
        ),
        (
            "am: wrong type",
            am.clone(),
            with(&firing, &["alerts"], json!("many")),
            400,
            "body",
        ),
        (
            "am: missing groupKey",
            am.clone(),
            {
                let mut b = firing.clone();
                b.as_object_mut().unwrap().remove("groupKey");
                serde_json::to_vec(&b).unwrap()
            },
            400,
            "groupKey",
        ),
        (
            "am: version 3",
            am.clone(),
            with(&firing, &["version"], json!("3")),
            400,
            "version",
        ),
        (
            "am: bad status",
            am.clone(),
            with(&firing, &["alerts", "0", "status"], json!("pending")),
            400,
            "status",
        ),
        (
            "am: bad label",
            am.clone(),
            with(&firing, &["alerts", "1", "labels", "9bad"], json!("x")),
            400,
            "alert 1",
        ),
        (
            "am: unknown key",
            "/v1/webhooks/alertmanager/no-such-key-000000".into(),
            data("alertmanager-firing.json"),
            401,
            "unknown integration key",
        ),
        (
            "am: a pagerduty key",
            format!("/v1/webhooks/alertmanager/{PD_KEY}"),
            data("alertmanager-firing.json"),
            403,
            "kind pagerduty",
        ),
        (
            "pd: malformed json",
            "/v2/enqueue".into(),
            b"not json".to_vec(),
            400,
            "body",
        ),
        (
            "pd: invalid utf-8",
            "/v2/enqueue".into(),
            b"{\"routing_key\":\"\xff\xfe\"}".to_vec(),
            400,
            "body",
        ),
        (
            "pd: wrong type",
            "/v2/enqueue".into(),
            with(&trigger, &["payload"], json!([1, 2])),
            400,
            "body",
        ),
        (
            "pd: missing routing key",
            "/v2/enqueue".into(),
            with(&trigger, &["routing_key"], json!("")),
            400,
            "routing_key",
        ),
        (
            "pd: unknown routing key",
            "/v2/enqueue".into(),
            with(
                &trigger,
                &["routing_key"],
                json!("nope-nope-nope-nope-nope"),
            ),
            401,
            "unknown",
        ),
        (
            "pd: an alertmanager key",
            "/v2/enqueue".into(),
            with(&trigger, &["routing_key"], json!(AM_KEY)),
            403,
            "kind alertmanager",
        ),
        (
            "pd: bad action",
            "/v2/enqueue".into(),
            with(&trigger, &["event_action"], json!("explode")),
            400,
            "event_action",
        ),
        (
            "pd: bad severity",
            "/v2/enqueue".into(),
            with(&trigger, &["payload", "severity"], json!("fatal")),
            400,
            "severity",
        ),
        (
            "pd: long summary",
            "/v2/enqueue".into(),
            with(&trigger, &["payload", "summary"], json!("s".repeat(1025))),
            400,
            "summary",
        ),
        (
            "pd: long dedup key",
            "/v2/enqueue".into(),
            with(&trigger, &["dedup_key"], json!("d".repeat(256))),
            400,
            "dedup_key",
        ),
        (
            // 100 characters, 300 bytes: the limit is in bytes, and the error says so.
            "pd: dedup key over 255 bytes",
            "/v2/enqueue".into(),
            with(&trigger, &["dedup_key"], json!("€".repeat(100))),
            400,
            "greater than 255 bytes",
        ),
        (
            "am: NUL in an annotation key",
            am.clone(),
            with(
                &firing,
                &["alerts", "0", "annotations", "a\u{0}b"],
                json!("x"),
            ),
            400,
            "annotations",
        ),
        (
            "am: annotations over 64 KiB",
            am.clone(),
            with(&firing, &["alerts", "0", "annotations", "log"], json!("l".repeat(70_000))),
            400,
            "annotations",
        ),
        (
            "v1: incident key over 255 bytes",
            "/generic/2010-04-15/create_event.json".into(),
            serde_json::to_vec(&json!({ "service_key": V1_KEY, "event_type": "trigger",
                "description": "d", "incident_key": "€".repeat(100) }))
            .unwrap(),
            400,
            "greater than 255 bytes",
        ),
        (
            "am: more alerts than a call may hold",
            am.clone(),
            {
                let mut b = firing.clone();
                let one = b["alerts"][0].clone();
                b["alerts"] = Value::Array(
                    (0..1001)
                        .map(|i| {
                            let mut a = one.clone();
                            a["fingerprint"] = json!(format!("{i:016x}"));
                            a
                        })
                        .collect(),
                );
                serde_json::to_vec(&b).unwrap()
            },
            413,
            "max_alerts: 1000",
        ),
        (
            "pd: no payload",
            "/v2/enqueue".into(),
            with(&trigger, &["payload"], Value::Null),
            400,
            "payload",
        ),
        (
            "pd: resolve without key",
            "/v2/enqueue".into(),
            serde_json::to_vec(&json!({ "routing_key": PD_KEY, "event_action": "resolve" }))
                .unwrap(),
            400,
            "dedup_key",
        ),
        (
            "pd: body over 512 KB",
            "/v2/enqueue".into(),
            huge.into_bytes(),
            413,
            "",
        ),
        (
            "change: details over 64 KiB",
            "/v2/change/enqueue".into(),
            serde_json::to_vec(&json!({ "routing_key": PD_KEY, "payload": {
                "summary": "deploy", "source": "ci", "custom_details": { "log": "l".repeat(70_000) },
            } }))
            .unwrap(),
            400,
            "custom_details",
        ),
        (
            "change: no summary",
            "/v2/change/enqueue".into(),
            serde_json::to_vec(&json!({ "routing_key": PD_KEY, "payload": {} })).unwrap(),
            400,
            "summary",
        ),
        (
            "v1: bad event type",
            "/generic/2010-04-15/create_event.json".into(),
            serde_json::to_vec(&json!({ "service_key": V1_KEY, "event_type": "boom" })).unwrap(),
            400,
            "event_type",
        ),
        (
            "v1: no description",
            "/generic/2010-04-15/create_event.json".into(),
            serde_json::to_vec(&json!({ "service_key": V1_KEY, "event_type": "trigger" })).unwrap(),
            400,
            "description",
        ),
    ];
    for (name, path, body, want, says) in cases {
        let (status, _, answer) = post(&s, &path, body, None).await;
        assert_eq!(status, want, "{name}: {answer}");
        if !says.is_empty() {
            assert!(
                answer.to_string().contains(says),
                "{name}: {answer} lacks {says:?}"
            );
        }
    }
    // A good call after all of them: its incident is the only one. The alerts stream is
    // consumed in order, so an alert a bad call had stored would have made its incident
    // before this one.
    let (status, _, _) = post(&s, "/v2/enqueue", data("pagerduty-trigger.json"), None).await;
    assert_eq!(status, 202);
    let list = incidents_where(&s, "the good incident", |l| !l.is_empty()).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].source, "pagerduty/pd");
}

#[tokio::test]
async fn an_integration_over_its_rate_gets_429_with_retry_after() {
    let s = Stack::start(&runbooks(), &config()).await;
    let mut trigger: Value = serde_json::from_slice(&data("pagerduty-trigger.json")).unwrap();
    trigger["routing_key"] = json!("slow-key-00000000000001");
    let body = serde_json::to_vec(&trigger).unwrap();
    let (first, _, _) = post(&s, "/v2/enqueue", body.clone(), None).await;
    let (second, headers, answer) = post(&s, "/v2/enqueue", body, None).await;
    assert_eq!(first, 202);
    assert_eq!(second, 429, "{answer}");
    assert_eq!(headers.get("retry-after").unwrap(), "1");
}

/// A batch larger than the integration's rate per second was refused forever: the bucket
/// never holds that many tokens.
#[tokio::test]
async fn a_group_larger_than_the_rate_is_admitted_and_the_next_told_when_to_retry() {
    let s = Stack::start(
        &runbooks(),
        &format!(
            "{}  - {{ name: prom5, kind: alertmanager, key: am5-key-00000000000001, rate_limit_per_second: 5 }}\n",
            config()
        ),
    )
    .await;
    let mut group: Value = serde_json::from_slice(&data("alertmanager-firing.json")).unwrap();
    let one = group["alerts"][0].clone();
    group["alerts"] = Value::Array(
        (0..6)
            .map(|i| {
                let mut a = one.clone();
                a["fingerprint"] = json!(format!("{i:016x}"));
                a
            })
            .collect(),
    );
    let body = serde_json::to_vec(&group).unwrap();
    let path = "/v1/webhooks/alertmanager/am5-key-00000000000001";
    let (status, _, answer) = post(&s, path, body.clone(), None).await;
    assert_eq!((status, &answer["new"]), (200, &json!(6)), "{answer}");
    // It borrowed a second's worth and more: the next group waits 1.2 s, rounded up.
    let (status, headers, answer) = post(&s, path, body, None).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(headers.get("retry-after").unwrap(), "2");
}

/// The `RetryInfo` in a RESOURCE_EXHAUSTED status's details.
fn retry_delay(status: &tonic::Status) -> std::time::Duration {
    use firebreak_proto::Message;
    let details = firebreak_intake::RpcStatus::decode(status.details()).unwrap();
    let any = details
        .details
        .iter()
        .find(|a| a.type_url == firebreak_intake::RETRY_INFO_TYPE)
        .expect("a RetryInfo detail");
    let delay = firebreak_intake::RetryInfo::decode(any.value.as_slice())
        .unwrap()
        .retry_delay
        .unwrap();
    std::time::Duration::new(delay.seconds as u64, delay.nanos as u32)
}

/// Keyless gRPC callers skipped every rate limit; RESOURCE_EXHAUSTED said nothing of when
/// to retry. Now keyless callers are refused outright, a token's caller is bounded only by
/// the in-flight cap, and an integration over its rate is told when to retry.
#[tokio::test]
async fn keyless_grpc_callers_are_refused_and_integrations_told_when_to_retry() {
    let mut s = Stack::start(
        &runbooks(),
        &format!(
            "{}  - {{ name: slowgrpc, kind: grpc, key: slow-grpc-key-000000001, rate_limit_per_second: 2 }}\nintake_anonymous_rate_limit_per_second: 3\n",
            config()
        ),
    )
    .await;
    let batch = |n: usize| v1::RaiseAlertsRequest {
        alerts: (0..n)
            .map(|i| grpc_alert("anon", &format!("k{i}")))
            .collect(),
        idempotency_key: String::new(),
    };
    let keyless = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = v1::intake_service_client::IntakeServiceClient::new(keyless)
        .raise_alerts(batch(1))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // The admin's token is not held to the anonymous budget of 3.
    for _ in 0..3 {
        s.intake.raise_alerts(batch(3)).await.unwrap();
    }
    // An integration over its rate is told when to retry too.
    s.intake
        .raise_alerts(authed(batch(2), "slow-grpc-key-000000001"))
        .await
        .unwrap();
    let refused = s
        .intake
        .raise_alerts(authed(batch(1), "slow-grpc-key-000000001"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(retry_delay(&refused) > std::time::Duration::ZERO);
}

/// `bearer` was refused: only `Bearer ` with that case was understood.
#[tokio::test]
async fn bearer_schemes_are_case_insensitive() {
    let mut s = Stack::start(&runbooks(), &config()).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/webhooks/alertmanager", s.http))
        .header("content-type", "application/json")
        .header("authorization", format!("bearer {AM_KEY}"))
        .body(data("alertmanager-firing.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut req = tonic::Request::new(v1::RaiseAlertsRequest {
        alerts: vec![grpc_alert("lowercase", "l")],
        idempotency_key: String::new(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("BEARER {GRPC_KEY}").parse().unwrap(),
    );
    s.intake.raise_alerts(req).await.unwrap();
}

/// A request body that is not protobuf was answered INTERNAL, as if the server had failed.
#[tokio::test]
async fn malformed_protobuf_is_an_invalid_argument() {
    let s = Stack::start(&runbooks(), &config()).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // A gRPC frame (uncompressed, 3 bytes) holding a field 1 of length 100: truncated.
    let mut frame = vec![0u8, 0, 0, 0, 3];
    frame.extend_from_slice(&[0x0a, 100, 1]);
    for method in [
        "firebreak.v1.IntakeService/RaiseIncident",
        "firebreak.v1.IntakeService/RaiseAlerts",
        "firebreak.v1.IntegrationService/CreateIntegration",
    ] {
        let resp = client
            .post(format!("{}/{method}", s.grpc))
            .header("authorization", format!("Bearer {}", s.admin_token))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(frame.clone())
            .send()
            .await
            .unwrap();
        let status = resp
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            status.as_deref(),
            Some("3"),
            "{method}: {:?}",
            resp.headers()
        );
    }
}

fn grpc_alert(title: &str, key: &str) -> AlertInput {
    AlertInput {
        title: title.into(),
        alert_key: key.into(),
        source: "batch".into(),
        dedup_key: format!("batch-{key}"),
        ..Default::default()
    }
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn grpc_batches_report_per_alert_and_retries_return_the_first_answer() {
    let mut s = Stack::start(&runbooks(), &config()).await;
    let batch = v1::RaiseAlertsRequest {
        alerts: vec![
            grpc_alert("checkout down", "a"),
            grpc_alert("  ", "b"),
            grpc_alert("payments down", "c"),
        ],
        idempotency_key: "batch-1".into(),
    };
    let first = s
        .intake
        .raise_alerts(authed(batch.clone(), GRPC_KEY))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(first.len(), 3);
    assert!(first[0].error.is_empty() && !first[0].alert_id.is_empty());
    assert!(
        first[1].alert_id.is_empty() && first[1].error.contains("title"),
        "{:?}",
        first[1]
    );
    assert!(first[2].error.is_empty());
    // The retry gets the same answer and stores nothing new.
    let again = s
        .intake
        .raise_alerts(authed(batch, GRPC_KEY))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(again, first);
    let list = incidents_where(&s, "two incidents", |l| l.len() == 2).await;
    assert!(
        list.iter().all(|i| i.category == "service-outage"),
        "the integration's category hint"
    );
    // A repeat of a firing alert key is a duplicate, not a new alert.
    let dup = s
        .intake
        .raise_alerts(authed(
            v1::RaiseAlertsRequest {
                alerts: vec![grpc_alert("checkout down", "a")],
                idempotency_key: String::new(),
            },
            GRPC_KEY,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].alert_id, first[0].alert_id);

    // Resolving by alert key resolves the incident (its only alert).
    let resolved = s
        .intake
        .resolve_alert(authed(
            v1::ResolveAlertRequest {
                alert_key: "a".into(),
                idempotency_key: String::new(),
            },
            GRPC_KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.alert_id, first[0].alert_id);
    incidents_where(&s, "one resolved", |l| {
        l.iter().any(|i| i.state() == v1::IncidentState::Resolved)
    })
    .await;

    // Unknown and wrong-kind tokens are refused.
    let unknown = s
        .intake
        .raise_alerts(authed(
            v1::RaiseAlertsRequest {
                alerts: vec![grpc_alert("x", "z")],
                idempotency_key: String::new(),
            },
            "not-a-real-key-at-all",
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    let wrong = s
        .intake
        .raise_alerts(authed(
            v1::RaiseAlertsRequest {
                alerts: vec![grpc_alert("x", "z")],
                idempotency_key: String::new(),
            },
            AM_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    let empty = s
        .intake
        .raise_alerts(v1::RaiseAlertsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn integrations_created_at_run_time_authenticate_until_deleted() {
    let s = Stack::start(&runbooks(), &config()).await;
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut api = IntegrationServiceClient::new(firebreak_proto::access::authed(
        channel,
        Some(&s.admin_token),
    ));
    let created = api
        .create_integration(v1::CreateIntegrationRequest {
            name: "staging-prom".into(),
            integration_kind: v1::IntegrationKind::Alertmanager as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .integration
        .unwrap();
    assert_eq!(created.key.len(), 32);
    let path = format!("/v1/webhooks/alertmanager/{}", created.key);
    let (status, _, _) = post(&s, &path, data("alertmanager-truncated.json"), None).await;
    assert_eq!(status, 200);
    let listed = api
        .list_integrations(v1::ListIntegrationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .integrations;
    let mine = listed.iter().find(|i| i.name == "staging-prom").unwrap();
    assert!(!mine.declared, "{mine:?}");
    assert!(
        !mine.key.contains(&created.key),
        "keys are masked when listed"
    );
    // Declared integrations are GitOps-managed: not deletable here.
    let declared = api
        .delete_integration(v1::DeleteIntegrationRequest {
            name: "prom".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(declared.code(), Code::FailedPrecondition);
    let dup = api
        .create_integration(v1::CreateIntegrationRequest {
            name: "staging-prom".into(),
            integration_kind: v1::IntegrationKind::Alertmanager as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad = api
        .create_integration(v1::CreateIntegrationRequest {
            name: "x".into(),
            integration_kind: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    api.delete_integration(v1::DeleteIntegrationRequest {
        name: "staging-prom".into(),
    })
    .await
    .unwrap();
    let (status, _, _) = post(&s, &path, data("alertmanager-truncated.json"), None).await;
    assert_eq!(status, 401);
}

/// A `prometheus-alertmanager` process on a free port, sending to Firebreak; killed on drop.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Alertmanager with the README's receiver (pointed at this stack) as its only route.
    fn start(firebreak_http: &str) -> Self {
        let bin = std::env::var("FIREBREAK_ALERTMANAGER_BIN")
            .unwrap_or_else(|_| "prometheus-alertmanager".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .unwrap();
        let receivers = readme
            .split("**Prometheus Alertmanager**")
            .nth(1)
            .and_then(|rest| rest.split("```yaml\n").nth(1))
            .and_then(|block| block.split("```").next())
            .expect("the README shows an Alertmanager receiver")
            .replace("http://firebreak.example.com:7401", firebreak_http)
            .replace("KEY", AM_KEY);
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: firebreak\n  group_by: [alertname, service]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n{receivers}"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin}: {e}. Install it (Debian: apt-get install prometheus-alertmanager) or set FIREBREAK_ALERTMANAGER_BIN")
            });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// Posts one alert to Alertmanager's API; `ends` in the past resolves it.
    async fn alert(&self, ends: Option<&str>) -> u16 {
        let mut alert = json!({
            "labels": { "alertname": "CheckoutErrors", "service": "checkout", "severity": "critical" },
            "annotations": { "summary": "checkout returns 5xx" },
        });
        if let Some(ends) = ends {
            alert["endsAt"] = json!(ends);
        }
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            // Alertmanager takes a moment to listen.
            match client
                .post(format!("{}/api/v2/alerts", self.url))
                .json(&json!([alert]))
                .send()
                .await
            {
                Ok(r) => return r.status().as_u16(),
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "alertmanager is not up: {e}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls for up to 30 s: Alertmanager batches by its group intervals.
async fn within_30s<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_real_alertmanager_raises_and_resolves_incidents() {
    let s = Stack::start(&runbooks(), &config()).await;
    let am = Alertmanager::start(&s.http);
    assert_eq!(am.alert(None).await, 200);
    let list = within_30s("the incident from Alertmanager", || async {
        let l = incidents(&s).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].title, "checkout returns 5xx");
    assert_eq!(list[0].severity, 1);
    assert_eq!(list[0].source, "alertmanager/prom");

    // Ending the alert: Alertmanager sends the resolved group, the incident resolves.
    let past = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let past = past
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(am.alert(Some(&past)).await, 200);
    within_30s("the incident resolved", || async {
        let l = incidents(&s).await;
        (l.len() == 1 && l[0].state() == v1::IncidentState::Resolved).then_some(())
    })
    .await;
}

#[tokio::test]
async fn overload_is_refused_at_once_and_refused_calls_store_nothing() {
    let s = Stack::start(
        &runbooks(),
        &format!("{}intake_max_in_flight: 1\n", config()),
    )
    .await;
    // 40 calls of 1000 alerts each at once: with one call storing at a time, the others are
    // told to come back rather than queued.
    let mut calls = tokio::task::JoinSet::new();
    for call in 0..40 {
        // A connection each, so the calls really arrive together.
        let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut intake = v1::intake_service_client::IntakeServiceClient::new(
            firebreak_proto::access::authed(channel, Some(&s.admin_token)),
        );
        calls.spawn(async move {
            let alerts = (0..1000)
                .map(|i| AlertInput {
                    title: format!("storm {call}"),
                    source: "storm".into(),
                    dedup_key: format!("storm-{call}"),
                    labels: [("n".to_owned(), i.to_string())].into(),
                    ..Default::default()
                })
                .collect();
            let r = intake
                .raise_alerts(v1::RaiseAlertsRequest {
                    alerts,
                    idempotency_key: String::new(),
                })
                .await;
            (
                call,
                r.map(|r| r.into_inner().results.len())
                    .map_err(|e| e.code()),
            )
        });
    }
    let mut stored = Vec::new();
    let mut refused = 0;
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            (call, Ok(n)) => {
                assert_eq!(n, 1000);
                stored.push(call);
            }
            (_, Err(code)) => {
                assert_eq!(code, Code::ResourceExhausted);
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no call was refused");
    assert!(!stored.is_empty(), "every call was refused");
    // One incident per stored call (its 1000 alerts attached), none for a refused one.
    let list = incidents_where(&s, "the stored calls' incidents", |l| {
        l.len() == stored.len() && l.iter().all(|i| i.alert_count == 1000)
    })
    .await;
    let mut titles: Vec<String> = list.iter().map(|i| i.title.clone()).collect();
    titles.sort();
    let mut want: Vec<String> = stored.iter().map(|c| format!("storm {c}")).collect();
    want.sort();
    assert_eq!(titles, want);
}

/// One raised incident's id (a keyless gRPC raise).
async fn raise(s: &mut Stack, title: &str) -> String {
    s.intake
        .raise_incident(v1::RaiseIncidentRequest {
            alert: Some(AlertInput {
                title: title.into(),
                source: "hostile".into(),
                dedup_key: title.into(),
                ..Default::default()
            }),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .incident_id
}

/// Summaries, root causes, actors and notes had no limit and took NUL: two 3.9 MB summaries
/// made every `ListIncidents` fail (gRPC's 4 MiB limit).
#[tokio::test]
async fn free_text_reaching_triage_is_limited_and_never_holds_nul() {
    let mut s = Stack::start(&runbooks(), &config()).await;
    let id = raise(&mut s, "hostile text").await;
    let big = "s".repeat(3_900_000);
    let cases: Vec<(&str, tonic::Status)> = vec![
        (
            "summary",
            s.incidents
                .resolve(v1::ResolveRequest {
                    id: id.clone(),
                    actor: "alice".into(),
                    summary: big.clone(),
                })
                .await
                .map(drop)
                .unwrap_err(),
        ),
        (
            "summary",
            s.incidents
                .resolve(v1::ResolveRequest {
                    id: id.clone(),
                    actor: "alice".into(),
                    summary: "fixed\0".into(),
                })
                .await
                .map(drop)
                .unwrap_err(),
        ),
        // The request's actor is not checked: it is never recorded (the token's identity
        // is; tests/e2e/access.rs).
        (
            "text",
            s.incidents
                .add_note(v1::AddNoteRequest {
                    id: id.clone(),
                    actor: "alice".into(),
                    text: "a\0b".into(),
                })
                .await
                .map(drop)
                .unwrap_err(),
        ),
    ];
    for (field, status) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    // Nothing changed: still open, and only the opening entries on the timeline.
    assert_eq!(incidents(&s).await[0].state(), v1::IncidentState::Open);
    assert!(timeline(&s, &id).await.iter().all(|(k, _)| k != "note"));
    s.incidents
        .resolve(v1::ResolveRequest {
            id: id.clone(),
            actor: "alice".into(),
            summary: "r".repeat(16 * 1024),
        })
        .await
        .unwrap();
    let closed = s
        .incidents
        .close(v1::CloseRequest {
            id: id.clone(),
            actor: "alice".into(),
            root_cause: "c".repeat(16 * 1024 + 1),
        })
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(closed.code(), Code::InvalidArgument);
    assert!(closed.message().contains("root_cause"), "{closed:?}");
}

/// Lists were bounded in rows only: a page of large incidents or entries outgrew what a
/// client decodes (4 MiB). Each page now stays within 1 MiB, and the tokens lead through all.
#[tokio::test]
async fn incident_and_timeline_pages_are_bounded_in_bytes_and_lead_through_everything() {
    use firebreak_proto::Message;
    let mut s = Stack::start(&runbooks(), &config()).await;
    let mut ids = Vec::new();
    for n in 0..80 {
        let id = raise(&mut s, &format!("big {n}")).await;
        s.incidents
            .resolve(v1::ResolveRequest {
                id: id.clone(),
                actor: "alice".into(),
                summary: format!("{n} {}", "s".repeat(16 * 1024 - 8)),
            })
            .await
            .unwrap();
        ids.push(id);
    }
    for n in 0..80 {
        s.incidents
            .add_note(v1::AddNoteRequest {
                id: ids[0].clone(),
                actor: "alice".into(),
                text: format!("{n} {}", "n".repeat(16 * 1024 - 8)),
            })
            .await
            .unwrap();
    }
    // Incidents: 80 × 16 KiB in pages of up to 100 rows.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = s
            .incidents
            .list_incidents(v1::ListIncidentsRequest {
                page_size: 100,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.encoded_len() <= 1024 * 1024,
            "{} bytes",
            page.encoded_len()
        );
        assert!(!page.incidents.is_empty());
        pages += 1;
        seen.extend(page.incidents.into_iter().map(|i| i.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(pages >= 2, "one page held 80 × 16 KiB");
    ids.reverse();
    assert_eq!(seen, ids, "every incident once, newest first");
    // The timeline: 80 notes of 16 KiB.
    let mut notes = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = s
            .incidents
            .get_timeline(v1::GetTimelineRequest {
                id: ids[79].clone(),
                page_size: 0,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.encoded_len() <= 1024 * 1024,
            "{} bytes",
            page.encoded_len()
        );
        pages += 1;
        notes.extend(
            page.entries
                .into_iter()
                .filter(|e| e.kind == "note")
                .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["text"].clone()),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(pages >= 2);
    let numbers: Vec<String> = notes
        .iter()
        .map(|t| t.as_str().unwrap().split(' ').next().unwrap().to_owned())
        .collect();
    let want: Vec<String> = (0..80).map(|n| n.to_string()).collect();
    assert_eq!(numbers, want, "every note once, in order");
    let bad = s
        .incidents
        .list_incidents(v1::ListIncidentsRequest {
            page_token: "nonsense".into(),
            ..Default::default()
        })
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("page_token"));
}

/// A change event was copied onto every open incident of its integration: with many open,
/// one event multiplied the store's growth.
#[tokio::test]
async fn a_change_event_is_stored_once_whatever_the_incidents_it_concerns() {
    let s = Stack::start(&runbooks(), &config()).await;
    let mut trigger: Value = serde_json::from_slice(&data("pagerduty-trigger.json")).unwrap();
    const OPEN: usize = 40;
    for n in 0..OPEN {
        trigger["dedup_key"] = json!(format!("svc-{n}"));
        let (status, _, _) = post(
            &s,
            "/v2/enqueue",
            serde_json::to_vec(&trigger).unwrap(),
            None,
        )
        .await;
        assert_eq!(status, 202);
    }
    incidents_where(&s, "the open incidents", |l| l.len() == OPEN).await;
    let log = "l".repeat(60_000);
    let change = json!({ "routing_key": PD_KEY, "payload": {
        "summary": "deploy 42", "source": "ci", "custom_details": { "log": log },
    } });
    let event_bytes = change["payload"]["custom_details"].to_string().len();
    let (status, _, _) = post(
        &s,
        "/v2/change/enqueue",
        serde_json::to_vec(&change).unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let list = incidents(&s).await;
    let mut stored = 0;
    let mut change_ids = std::collections::BTreeSet::new();
    for inc in &list {
        let entry = eventually("the change on every timeline", || async {
            timeline_entries(&s, &inc.id)
                .await
                .into_iter()
                .find(|e| e.kind == "change")
        })
        .await;
        stored += entry.data.len();
        let data: Value = serde_json::from_str(&entry.data).unwrap();
        assert_eq!(data["summary"], "deploy 42");
        change_ids.insert(data["change_id"].as_str().unwrap_or_default().to_owned());
    }
    // Every entry names one stored change, which holds the details once.
    assert_eq!(change_ids.len(), 1, "{change_ids:?}");
    let id = change_ids.into_iter().next().unwrap();
    let stored_change = s
        .incidents
        .clone()
        .get_change(v1::GetChangeRequest { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored_change.details.len(), event_bytes);
    stored += stored_change.details.len();
    // What was stored for the event: its details once, plus a small entry per incident.
    assert!(
        stored < event_bytes + OPEN * 512,
        "{stored} bytes stored for a {event_bytes}-byte change on {OPEN} incidents"
    );
}

const SIGNED_KEY: &str = "signed-key-000000000001";
const SIGNING_SECRET: &str = "whsec-declared-0000000001";

/// A declared integration that signs its calls, beside the usual ones.
fn signed_config() -> String {
    format!(
        "{}  - {{ name: signed, kind: alertmanager, key: {SIGNED_KEY}, signing_secret: {SIGNING_SECRET} }}\n",
        config()
    )
}

/// The recorded Alertmanager group under another group key and alert name, so each call's
/// incident is its own.
fn am_group(name: &str) -> Vec<u8> {
    let mut group: Value = serde_json::from_slice(&data("alertmanager-firing.json")).unwrap();
    group["groupKey"] = json!(format!("{{}}:{{alertname=\"{name}\"}}"));
    for a in group["alerts"].as_array_mut().unwrap() {
        a["labels"]["alertname"] = json!(name);
        a["fingerprint"] = json!(format!("{name}-{}", a["fingerprint"].as_str().unwrap()));
    }
    serde_json::to_vec(&group).unwrap()
}

/// Request headers: (name, value).
type Headers<'a> = Vec<(&'a str, String)>;

/// POSTs `body` with headers, from `client`; returns status, headers and JSON body.
async fn post_with(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// The stack's time in unix seconds (its clock is a manual one).
fn now_seconds(s: &Stack) -> i64 {
    use firebreak_domain::Clock;
    s.clock.now_micros().div_euclid(1_000_000)
}

/// An integration with a signing secret (declared, or created at run time and stored
/// sealed) accepts a call signed over its body within five minutes; unsigned, wrongly signed,
/// stale and malformed calls are 401 naming the header, and store nothing. Listings show
/// every key masked, and never the secret.
#[tokio::test]
async fn signed_webhooks_are_accepted_and_bad_signatures_store_nothing() {
    let s = Stack::start(&runbooks(), &signed_config()).await;
    let mut api = s.integrations();
    let runtime_secret = "whsec-runtime-000000000002";
    let created = api
        .create_integration(v1::CreateIntegrationRequest {
            name: "signed-runtime".into(),
            integration_kind: v1::IntegrationKind::Alertmanager as i32,
            signing_secret: runtime_secret.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .integration
        .unwrap();
    let client = reqwest::Client::new();
    let url = |key: &str| format!("{}/v1/webhooks/alertmanager/{key}", s.http);
    let now = now_seconds(&s);
    let sig = |secret: &str, t: i64, body: &[u8]| {
        firebreak_intake::sign(&firebreak_intake::Secret::new(secret), t, body)
    };

    let bad = am_group("bad");
    let good_sig = sig(SIGNING_SECRET, now, &bad);
    let v1 = &good_sig[good_sig.find("v1=").unwrap() + 3..];
    // (what, the signature header if any, what the answer says)
    let cases: Vec<(&str, Headers, &str)> = vec![
        ("unsigned", vec![], "missing X-Firebreak-Signature"),
        (
            "wrong secret",
            vec![(
                "x-firebreak-signature",
                sig("whsec-wrong-0000000000001", now, &bad),
            )],
            "does not match",
        ),
        (
            "another body",
            vec![("x-firebreak-signature", sig(SIGNING_SECRET, now, b"{}"))],
            "does not match",
        ),
        (
            "stale",
            vec![(
                "x-firebreak-signature",
                sig(SIGNING_SECRET, now - 301, &bad),
            )],
            "more than 5 minutes",
        ),
        (
            "malformed",
            vec![("x-firebreak-signature", format!("v1={v1}"))],
            "malformed X-Firebreak-Signature",
        ),
        (
            "oversized",
            vec![(
                "x-firebreak-signature",
                format!("t={now},v1={v1},pad={}", "a".repeat(4000)),
            )],
            "malformed X-Firebreak-Signature",
        ),
        (
            "non-hex",
            vec![(
                "x-firebreak-signature",
                format!("t={now},v1={}", "zz".repeat(32)),
            )],
            "malformed X-Firebreak-Signature",
        ),
        (
            "huge t",
            vec![(
                "x-firebreak-signature",
                format!("t={},v1={v1}", "9".repeat(400)),
            )],
            "malformed X-Firebreak-Signature",
        ),
    ];
    for (what, headers, says) in &cases {
        let (status, _, answer) = post_with(&client, &url(SIGNED_KEY), bad.clone(), headers).await;
        assert_eq!(status, 401, "{what}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {answer}");
        assert!(!message.contains(SIGNING_SECRET), "{what}: {answer}");
    }
    // The run-time one: its secret was stored sealed and read back.
    let (status, _, answer) = post_with(&client, &url(&created.key), bad.clone(), &[]).await;
    assert_eq!(status, 401, "{answer}");

    // Signed right, both are accepted; theirs are the only incidents.
    let good = am_group("good");
    let (status, _, answer) = post_with(
        &client,
        &url(SIGNED_KEY),
        good.clone(),
        &[("x-firebreak-signature", sig(SIGNING_SECRET, now, &good))],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = post_with(
        &client,
        &url(&created.key),
        good.clone(),
        &[(
            "X-Firebreak-Signature",
            sig(runtime_secret, now - 299, &good),
        )],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // An integration without a secret takes unsigned calls as before.
    let (status, _, _) = post(
        &s,
        &format!("/v1/webhooks/alertmanager/{AM_KEY}"),
        am_group("plain"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let list = incidents_where(&s, "the good incidents", |l| l.len() >= 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let list = incidents(&s).await.len().max(list.len());
    assert_eq!(list, 3, "a refused call opened an incident");

    // Listed masked: the first four characters, declared and run-time alike.
    let listed = api
        .list_integrations(v1::ListIntegrationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .integrations;
    let masked = |name: &str| listed.iter().find(|i| i.name == name).unwrap().key.clone();
    assert_eq!(masked("signed"), "sign…");
    assert_eq!(masked("prom"), "am-k…");
    assert_eq!(masked("signed-runtime"), format!("{}…", &created.key[..4]));
    let text = format!("{listed:?}");
    for secret in [SIGNED_KEY, &created.key, SIGNING_SECRET, runtime_secret] {
        assert!(!text.contains(secret), "listing shows {secret}");
    }
}

/// A source that keeps presenting wrong keys is answered 429 with Retry-After for the rest
/// of its minute, whatever it presents (a good key, a gRPC raise), while another source goes
/// on; failures are counted in `firebreak_auth_failures_total`.
#[tokio::test]
async fn a_source_failing_again_and_again_is_held_back_and_others_are_not() {
    let s = Stack::start(&runbooks(), &config()).await;
    let failures = || async {
        let text = reqwest::get(format!("{}/metrics", s.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("firebreak_auth_failures_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = failures().await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let (one, two) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    let url = |key: &str| format!("{}/v1/webhooks/alertmanager/{key}", s.http);
    for n in 0..firebreak_intake::MAX_FAILURES {
        let (status, _, _) = post_with(
            &one,
            &url(&format!("wrong-key-{n:012}")),
            am_group("x"),
            &[],
        )
        .await;
        assert_eq!(status, 401, "failure {n}");
    }
    let (status, headers, answer) = post_with(&one, &url(AM_KEY), am_group("held"), &[]).await;
    assert_eq!(
        status, 429,
        "a good key from a failing source waits: {answer}"
    );
    assert_eq!(headers["retry-after"], "60");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications"),
        "{answer}"
    );
    // Over gRPC too, with an integration key.
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let held = v1::intake_service_client::IntakeServiceClient::new(channel)
        .raise_alerts(authed(
            v1::RaiseAlertsRequest {
                alerts: vec![grpc_alert("held", "h")],
                idempotency_key: String::new(),
            },
            GRPC_KEY,
        ))
        .await
        .unwrap_err();
    assert_eq!(held.code(), Code::ResourceExhausted, "{held:?}");
    // Another source is not held.
    let (status, _, answer) = post_with(&two, &url(AM_KEY), am_group("other"), &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(failures().await - before >= f64::from(firebreak_intake::MAX_FAILURES));
    // Its minute over, the first source may call again.
    s.clock.advance(firebreak_intake::WINDOW);
    let (status, _, answer) = post_with(&one, &url(AM_KEY), am_group("later"), &[]).await;
    assert_eq!(status, 200, "{answer}");
}

/// Wrong gRPC integration keys count against their source as webhook ones do.
#[tokio::test]
async fn wrong_grpc_integration_keys_hold_back_their_source() {
    let s = Stack::start(&runbooks(), &config()).await;
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut intake = v1::intake_service_client::IntakeServiceClient::new(channel);
    let raise = |key: &str| {
        authed(
            v1::RaiseAlertsRequest {
                alerts: vec![grpc_alert("g", "g")],
                idempotency_key: String::new(),
            },
            key,
        )
    };
    for n in 0..firebreak_intake::MAX_FAILURES {
        let e = intake
            .raise_alerts(raise(&format!("wrong-grpc-key-{n:08}")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "failure {n}");
    }
    let held = intake.raise_alerts(raise(GRPC_KEY)).await.unwrap_err();
    assert_eq!(held.code(), Code::ResourceExhausted, "{held:?}");
    assert!(retry_delay(&held) > std::time::Duration::from_secs(50));
}
