//! OpenTelemetry export: which spans leave the process, where to, and as which service —
//! decided from the `otel:` configuration and the standard `OTEL_*` variables, then built
//! into a tracer provider that exports over OTLP/gRPC.
//!
//! When nothing names an endpoint, nothing is exported: spans still carry trace context
//! (events, calls, logs and audit entries keep their trace ids), but none is sampled.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

/// How many resource attributes, and how long each key and value, may be given.
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_LEN: usize = 256;
/// How long an endpoint may be.
const MAX_ENDPOINT_LEN: usize = 2048;

/// The `otel:` section of the configuration; every field optional, as each falls back to its
/// `OTEL_*` variable and then a default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtelConfig {
    /// The OTLP/gRPC endpoint (`http://collector:4317`). `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT` when unset; nothing is exported without one.
    pub endpoint: Option<String>,
    /// `grpc`, the only protocol spoken (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: Option<String>,
    /// The share of new traces sampled, 0.0–1.0 (`OTEL_TRACES_SAMPLER_ARG`); a trace whose
    /// caller sampled it (or not) follows the caller. Default 1.0.
    pub sample_ratio: Option<f64>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`, merged under these).
    pub resource_attributes: BTreeMap<String, String>,
}

/// What export was decided: where to, at which ratio, as what resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub endpoint: String,
    pub sample_ratio: f64,
    /// `service.name` and the rest, sorted.
    pub resource: BTreeMap<String, String>,
}

/// A setting that cannot be used, naming the key or variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

fn refuse(key: &str, message: impl Into<String>) -> SettingError {
    SettingError {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Decides export from the configuration and the environment: `None` when nothing is to be
/// exported (no endpoint, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
/// `service` is the default `service.name` (`firebreak-intake`, or `firebreak` embedded).
pub fn decide(
    config: &OtelConfig,
    env: &BTreeMap<String, String>,
    service: &str,
) -> Result<Option<Export>, SettingError> {
    let var = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER") {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(refuse(
                "OTEL_TRACES_EXPORTER",
                format!("{other:?} is not supported: use otlp or none"),
            ));
        }
    }
    let (protocol_key, protocol) = match (
        &config.protocol,
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        var("OTEL_EXPORTER_OTLP_PROTOCOL"),
    ) {
        (Some(p), _, _) => ("otel.protocol", Some(p.as_str())),
        (None, Some(p), _) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
        (None, None, p) => ("OTEL_EXPORTER_OTLP_PROTOCOL", p),
    };
    if let Some(p) = protocol.filter(|p| *p != "grpc") {
        return Err(refuse(
            protocol_key,
            format!("{p:?} is not supported: Firebreak exports OTLP over gRPC (grpc)"),
        ));
    }
    let (endpoint_key, endpoint) = match (
        &config.endpoint,
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        var("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(e), _, _) => ("otel.endpoint", e.trim()),
        (None, Some(e), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e),
        (None, None, Some(e)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
        (None, None, None) => return Ok(None),
    };
    if endpoint.is_empty() {
        return Ok(None);
    }
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(refuse(
            endpoint_key,
            format!("longer than {MAX_ENDPOINT_LEN} bytes"),
        ));
    }
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || endpoint.parse::<http::Uri>().is_err()
    {
        return Err(refuse(
            endpoint_key,
            format!("{endpoint:?} is not an http:// or https:// address"),
        ));
    }
    let sample_ratio = match config.sample_ratio {
        Some(r) => ratio("otel.sample_ratio", r)?,
        None => sampler_from_env(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?,
    };
    let mut resource = BTreeMap::from([
        ("service.name".to_owned(), service.to_owned()),
        (
            "service.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ]);
    if let Some(attrs) = var("OTEL_RESOURCE_ATTRIBUTES") {
        for (k, v) in parse_attributes(attrs)? {
            resource.insert(k, v);
        }
    }
    for (k, v) in &config.resource_attributes {
        resource.insert(k.clone(), v.clone());
    }
    if let Some(name) = var("OTEL_SERVICE_NAME")
        && !config.resource_attributes.contains_key("service.name")
    {
        resource.insert("service.name".to_owned(), name.to_owned());
    }
    if resource.len() > MAX_ATTRIBUTES {
        return Err(refuse(
            "otel.resource_attributes",
            format!("more than {MAX_ATTRIBUTES} attributes"),
        ));
    }
    if let Some((k, _)) = resource
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > MAX_ATTRIBUTE_LEN || v.len() > MAX_ATTRIBUTE_LEN)
    {
        return Err(refuse(
            "otel.resource_attributes",
            format!(
                "{k:?}: keys must be 1–{MAX_ATTRIBUTE_LEN} bytes and values at most {MAX_ATTRIBUTE_LEN}"
            ),
        ));
    }
    Ok(Some(Export {
        endpoint: endpoint.to_owned(),
        sample_ratio,
        resource,
    }))
}

fn ratio(key: &str, r: f64) -> Result<f64, SettingError> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(refuse(key, format!("{r} is not between 0.0 and 1.0")))
    }
}

/// The ratio the standard sampler variables ask for (parent-based in every case: a caller's
/// decision is followed).
fn sampler_from_env(sampler: Option<&str>, arg: Option<&str>) -> Result<f64, SettingError> {
    let arg = || -> Result<f64, SettingError> {
        match arg {
            None => Ok(1.0),
            Some(a) => ratio(
                "OTEL_TRACES_SAMPLER_ARG",
                a.parse().map_err(|_| {
                    refuse("OTEL_TRACES_SAMPLER_ARG", format!("{a:?} is not a number"))
                })?,
            ),
        }
    };
    match sampler {
        None | Some("always_on" | "parentbased_always_on") => Ok(1.0),
        Some("always_off" | "parentbased_always_off") => Ok(0.0),
        Some("traceidratio" | "parentbased_traceidratio") => arg(),
        Some(other) => Err(refuse(
            "OTEL_TRACES_SAMPLER",
            format!(
                "{other:?} is not supported: use always_on, always_off, traceidratio or their parentbased_ forms"
            ),
        )),
    }
}

/// `key=value,key=value`, values percent-decoded (the variable's format).
fn parse_attributes(text: &str) -> Result<Vec<(String, String)>, SettingError> {
    let key = "OTEL_RESOURCE_ATTRIBUTES";
    if text.len() > MAX_ATTRIBUTES * (2 * MAX_ATTRIBUTE_LEN + 2) {
        return Err(refuse(key, "too long"));
    }
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| refuse(key, format!("{pair:?} is not key=value")))?;
            let decode = |s: &str| {
                percent_decode(s.trim())
                    .ok_or_else(|| refuse(key, format!("{pair:?}: bad percent-encoding")))
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A tracer provider exporting to `export`'s endpoint in batches (the batch settings come
/// from `OTEL_BSP_*`), or one that exports nothing and samples nothing.
pub(crate) fn provider(export: Option<&Export>) -> Result<SdkTracerProvider, SettingError> {
    let Some(export) = export else {
        return Ok(SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(export.endpoint.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| refuse("otel.endpoint", e.to_string()))?;
    let resource = Resource::builder_empty()
        .with_attributes(
            export
                .resource
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(
            if export.sample_ratio >= 1.0 {
                Sampler::AlwaysOn
            } else {
                Sampler::TraceIdRatioBased(export.sample_ratio)
            },
        )))
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_set_exports_nothing() {
        assert_eq!(
            decide(&OtelConfig::default(), &env(&[]), "firebreak"),
            Ok(None)
        );
        let disabled = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(
            decide(&OtelConfig::default(), &disabled, "firebreak"),
            Ok(None)
        );
        let none = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert_eq!(decide(&OtelConfig::default(), &none, "firebreak"), Ok(None));
    }

    #[test]
    fn the_standard_variables_configure_export_and_the_file_wins() {
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=sre%2Fpayments",
            ),
            ("OTEL_SERVICE_NAME", "fb-intake"),
        ]);
        let e = decide(&OtelConfig::default(), &vars, "firebreak-intake")
            .unwrap()
            .unwrap();
        assert_eq!(e.endpoint, "http://collector:4317");
        assert_eq!(e.sample_ratio, 0.25);
        assert_eq!(e.resource["service.name"], "fb-intake");
        assert_eq!(e.resource["team"], "sre/payments");
        assert_eq!(e.resource["deployment.environment"], "prod");
        let file = OtelConfig {
            endpoint: Some("https://other:4317".into()),
            protocol: Some("grpc".into()),
            sample_ratio: Some(0.01),
            resource_attributes: [("deployment.environment".to_owned(), "staging".to_owned())]
                .into(),
        };
        let e = decide(&file, &vars, "firebreak-intake").unwrap().unwrap();
        assert_eq!(e.endpoint, "https://other:4317");
        assert_eq!(e.sample_ratio, 0.01);
        assert_eq!(e.resource["deployment.environment"], "staging");
        // The traces-only variable wins over the general one.
        let traces = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4317"),
        ]);
        let e = decide(&OtelConfig::default(), &traces, "firebreak")
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.endpoint.as_str(), e.sample_ratio),
            ("http://b:4317", 1.0)
        );
        assert_eq!(e.resource["service.name"], "firebreak");
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let with = |c: OtelConfig, vars: &[(&str, &str)]| {
            decide(&c, &env(vars), "firebreak").unwrap_err().key
        };
        let ep = |e: &str| OtelConfig {
            endpoint: Some(e.into()),
            ..Default::default()
        };
        assert_eq!(with(ep("collector:4317"), &[]), "otel.endpoint");
        assert_eq!(
            with(ep(&format!("http://{}", "a".repeat(3000))), &[]),
            "otel.endpoint"
        );
        assert_eq!(
            with(
                OtelConfig {
                    sample_ratio: Some(1.5),
                    ..ep("http://c:4317")
                },
                &[]
            ),
            "otel.sample_ratio"
        );
        assert_eq!(
            with(
                OtelConfig {
                    protocol: Some("http/protobuf".into()),
                    ..ep("http://c:4317")
                },
                &[]
            ),
            "otel.protocol"
        );
        let c = ep("http://c:4317");
        assert_eq!(
            with(c.clone(), &[("OTEL_TRACES_SAMPLER", "jaeger_remote")]),
            "OTEL_TRACES_SAMPLER"
        );
        assert_eq!(
            with(
                c.clone(),
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "lots")
                ]
            ),
            "OTEL_TRACES_SAMPLER_ARG"
        );
        assert_eq!(
            with(c.clone(), &[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]),
            "OTEL_RESOURCE_ATTRIBUTES"
        );
        assert_eq!(
            with(c.clone(), &[("OTEL_RESOURCE_ATTRIBUTES", "a=%zz")]),
            "OTEL_RESOURCE_ATTRIBUTES"
        );
        assert_eq!(
            with(c.clone(), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        assert_eq!(
            with(c.clone(), &[("OTEL_TRACES_EXPORTER", "zipkin")]),
            "OTEL_TRACES_EXPORTER"
        );
        let many: BTreeMap<String, String> =
            (0..70).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(
            with(
                OtelConfig {
                    resource_attributes: many,
                    ..c.clone()
                },
                &[]
            ),
            "otel.resource_attributes"
        );
        assert_eq!(
            with(
                OtelConfig {
                    resource_attributes: [("k".to_owned(), "v".repeat(300))].into(),
                    ..c
                },
                &[]
            ),
            "otel.resource_attributes"
        );
    }
}
