//! A generic HTTP SMS gateway: the request (method, URL, headers, body) written as templates
//! over the message, the rendered text, the number, the idempotency key and the gateway's
//! secrets, for providers without a built-in integration.

use std::collections::BTreeMap;

use firebreak_domain::people::{ContactKind, ContactMethod};
use serde::Deserialize;
use serde_json::Value;

use super::config::{Scheme, check_e164, check_url};
use super::http;
use super::secrets::SecretRef;
use super::templates::{self, Escape, TemplateOverrides};
use super::{Channel, ChannelError, ChannelKind, DeliveryError, EventKind, Message, Receipt};

const PROVIDER: &str = "sms gateway";

/// The request's method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum Method {
    #[default]
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
    #[serde(rename = "GET", alias = "get")]
    Get,
}

/// An SMS gateway channel's configuration. `url`, `headers` and `body` are templates that
/// see what message templates see, plus `text` (the rendered SMS), `to` (the number),
/// `idempotency_key` and `secrets.ALIAS`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewaySpec {
    /// `https://sms.example.com/send?to={{ to|urlencode }}`.
    pub(crate) url: String,
    #[serde(default)]
    pub(crate) method: Method,
    /// `{Authorization: "Bearer {{ secrets.token }}"}`.
    #[serde(default)]
    pub(crate) headers: BTreeMap<String, String>,
    /// With a JSON content type, values are written as JSON: `{"to": {{ to }}, "text": {{ text }}}`.
    #[serde(default)]
    pub(crate) body: Option<String>,
    /// The body's content type; default `application/json`.
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    /// Secrets the templates may use, by alias: `{token: {secret: sms-gateway-token}}`.
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, SecretRef>,
    /// Where broadcasts go, in E.164 form; without it, the channel reaches people only.
    #[serde(default)]
    pub(crate) to: Option<String>,
    /// A JSON pointer to the message's id in the gateway's answer (`/messages/0/id`).
    #[serde(default)]
    pub(crate) id_pointer: Option<String>,
}

/// A rendered request.
#[derive(Debug)]
struct Request {
    url: reqwest::Url,
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    body: Option<String>,
}

impl GatewaySpec {
    fn content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or("application/json")
    }

    fn is_json(&self) -> bool {
        self.content_type().to_ascii_lowercase().contains("json")
    }

    /// Renders the request from `ctx`; an error names the field at fault.
    fn request(&self, ctx: &Value) -> Result<Request, (String, String)> {
        let render = |field: &str, src: &str, escape| {
            templates::render(field, src, ctx, escape).map_err(|e| (field.to_owned(), e))
        };
        let scheme = if self.secrets.is_empty() {
            Scheme::Any
        } else {
            Scheme::Secure
        };
        let url = render("url", &self.url, Escape::None)?;
        let url = check_url(url.trim(), scheme)
            .map_err(|e| ("url".to_owned(), format!("renders a URL that {e}")))?;
        let mut headers = Vec::new();
        for (name, src) in &self.headers {
            let field = format!("headers.{name}");
            let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| (field.clone(), "is not a header name".to_owned()))?;
            let value = render(&field, src, Escape::None)?;
            let mut value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| {
                (
                    field.clone(),
                    "renders a value a header cannot hold".to_owned(),
                )
            })?;
            value.set_sensitive(true);
            headers.push((header, value));
        }
        let body = match &self.body {
            None => None,
            Some(src) => {
                let escape = if self.is_json() {
                    Escape::Json
                } else {
                    Escape::None
                };
                let body = render("body", src, escape)?;
                if self.is_json() {
                    serde_json::from_str::<Value>(&body).map_err(|e| {
                        (
                            "body".to_owned(),
                            format!("renders invalid JSON ({e}); values are written as JSON, so write {{{{ text }}}} without quotes"),
                        )
                    })?;
                }
                Some(body)
            }
        };
        Ok(Request { url, headers, body })
    }

    /// The gateway's secrets by alias, each value from `secret`.
    fn secret_values(
        &self,
        secret: &dyn Fn(&str, &SecretRef) -> Result<String, DeliveryError>,
    ) -> Result<serde_json::Map<String, Value>, DeliveryError> {
        self.secrets
            .iter()
            .map(|(alias, r)| Ok((alias.clone(), Value::String(secret(alias, r)?))))
            .collect()
    }

    pub(crate) fn check(
        &self,
        channel: &str,
        overrides: &TemplateOverrides,
    ) -> Result<(), ChannelError> {
        let err = |field: &str, reason: String| ChannelError::new(channel, field, reason);
        for alias in self.secrets.keys() {
            if alias.is_empty()
                || !alias
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(err(
                    &format!("secrets.{alias}"),
                    "an alias has letters, digits and '_' only (templates write secrets.ALIAS)"
                        .into(),
                ));
            }
        }
        if let Some(to) = &self.to {
            check_e164(to).map_err(|e| err("to", e))?;
        }
        if self.method == Method::Get && self.body.is_some() {
            return Err(err("body", "a GET request has no body".into()));
        }
        reqwest::header::HeaderValue::from_str(self.content_type())
            .map_err(|_| err("content_type", "is not a header value".into()))?;
        if let Some(p) = &self.id_pointer
            && !p.is_empty()
            && !p.starts_with('/')
        {
            return Err(err(
                "id_pointer",
                format!("{p:?} is not a JSON pointer (/messages/0/id)"),
            ));
        }
        for (field, src) in std::iter::once(("url".to_owned(), &self.url))
            .chain(
                self.headers
                    .iter()
                    .map(|(n, v)| (format!("headers.{n}"), v)),
            )
            .chain(self.body.iter().map(|b| ("body".to_owned(), b)))
        {
            if src.len() > templates::MAX_SOURCE {
                return Err(err(
                    &field,
                    format!("the template has more than {} bytes", templates::MAX_SOURCE),
                ));
            }
        }
        // Rendered with samples of every event, the secrets standing in as placeholders.
        let spec = ChannelKind::SmsGateway.parts()[0];
        for &event in EventKind::ALL {
            for msg in templates::samples(event) {
                let (field, src) = overrides.source(event, spec);
                let ctx = Value::Object(templates::context(channel, &msg, None));
                let text = templates::render(&field, src, &ctx, Escape::None)
                    .map_err(|e| err(&field, format!("{e}, rendering a sample {event} event")))?;
                let secrets = self
                    .secret_values(&|alias, _| Ok(format!("[secret {alias}]")))
                    .map_err(|e| err("secrets", e.to_string()))?;
                let ctx = context(
                    templates::context(channel, &msg, None),
                    "+15550100100",
                    text.trim(),
                    "sample-idempotency-key",
                    secrets,
                );
                self.request(&ctx).map_err(|(field, e)| {
                    err(&field, format!("{e}, rendering a sample {event} event"))
                })?;
            }
        }
        Ok(())
    }

    pub(crate) async fn deliver(
        &self,
        ch: &Channel,
        client: &reqwest::Client,
        to: Option<&ContactMethod>,
        msg: &Message,
        key: &str,
    ) -> Result<Receipt, DeliveryError> {
        let number = match to {
            None => self.to.as_deref().ok_or(DeliveryError::NoRecipient {
                channel: ch.name.clone(),
                field: "to",
            })?,
            Some(c) if c.kind == ContactKind::Sms => c.address.as_str(),
            Some(c) => return Err(ch.unreachable(c)),
        };
        check_e164(number).map_err(|reason| DeliveryError::Address {
            channel: ch.name.clone(),
            address: number.to_owned(),
            reason,
        })?;
        let text = ch.render(msg, to)?.text;
        let secrets = self.secret_values(&|alias, r| {
            ch.secret(&format!("secrets.{alias}"), r).map(str::to_owned)
        })?;
        let ctx = context(
            templates::context(&ch.name, msg, to),
            number,
            &text,
            key,
            secrets,
        );
        let req = self
            .request(&ctx)
            .map_err(|(field, e)| DeliveryError::Template {
                channel: ch.name.clone(),
                detail: format!("{field}: {e}"),
            })?;
        let method = match self.method {
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Get => reqwest::Method::GET,
        };
        let mut builder = client.request(method, req.url);
        for (name, value) in req.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = req.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, self.content_type())
                .body(body);
        }
        let answer = http::call(PROVIDER, builder).await?.success(PROVIDER)?;
        let provider_id =
            self.id_pointer
                .as_deref()
                .and_then(|p| match answer.json().pointer(p)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
        Ok(Receipt { provider_id })
    }
}

/// What the request's templates see: what message templates see, and `text` (the rendered
/// SMS), `to` (the number), `idempotency_key` and `secrets`.
fn context(
    mut ctx: serde_json::Map<String, Value>,
    number: &str,
    text: &str,
    key: &str,
    secrets: serde_json::Map<String, Value>,
) -> Value {
    ctx.insert("text".into(), Value::String(text.to_owned()));
    ctx.insert("to".into(), Value::String(number.to_owned()));
    ctx.insert("idempotency_key".into(), Value::String(key.to_owned()));
    ctx.insert("secrets".into(), Value::Object(secrets));
    Value::Object(ctx)
}
