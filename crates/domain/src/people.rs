//! How a person is reached: contact methods (email, SMS, voice, Slack, Mattermost, Microsoft
//! Teams, webhook) and personal notification rules ("after N minutes, contact method M"),
//! checked strictly. Escalation pages a person through these.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::access::parse_name;
use crate::error::{Error, invalid};
use crate::states::states;

states!(
    /// Where a contact method reaches its person.
    ContactKind, "contact_methods.kind", {
        /// An email address, sent over SMTP.
        Email => "email",
        /// A phone number in E.164 form (`+4915112345678`), by text message.
        Sms => "sms",
        /// A phone number in E.164 form, by a voice call.
        Voice => "voice",
        /// A Slack member id (`U024BE7LH`), messaged directly.
        Slack => "slack",
        /// A Mattermost user id (26 characters), messaged directly.
        Mattermost => "mattermost",
        /// A Microsoft Teams Workflows webhook URL that posts to the person's chat.
        Teams => "teams",
        /// An HTTPS URL receiving signed JSON.
        Webhook => "webhook",
    }
);

/// One way to reach a person, named so that rules can refer to it (`work-email`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactMethod {
    pub name: String,
    pub kind: ContactKind,
    pub address: String,
}

/// "After `after_minutes` of paging, contact me through `method`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRule {
    #[serde(default)]
    pub after_minutes: u32,
    /// A contact method's name.
    pub method: String,
}

/// The most contact methods and rules one person has.
pub const MAX_CONTACT_METHODS: usize = 10;
pub const MAX_NOTIFICATION_RULES: usize = 20;
/// The latest a rule may fire after paging begins: a day.
pub const MAX_RULE_MINUTES: u32 = 24 * 60;
const MAX_EMAIL: usize = 254;
const MAX_URL: usize = 2048;

/// A person's contact methods and rules, checked together: each method valid and named once,
/// each rule naming one of them, with errors naming the field (`contact_methods[1].address`).
pub fn check_contacts(methods: &[ContactMethod], rules: &[NotificationRule]) -> Result<(), Error> {
    if methods.len() > MAX_CONTACT_METHODS {
        return Err(invalid(
            "contact_methods",
            format!("at most {MAX_CONTACT_METHODS}"),
        ));
    }
    if rules.len() > MAX_NOTIFICATION_RULES {
        return Err(invalid(
            "notification_rules",
            format!("at most {MAX_NOTIFICATION_RULES}"),
        ));
    }
    for (i, m) in methods.iter().enumerate() {
        let at = |f: &str, why: String| invalid("contact_methods", format!("[{i}].{f}: {why}"));
        if let Err(crate::Error::Invalid { reason, .. }) = parse_name("name", &m.name) {
            return Err(at("name", reason));
        }
        if methods[..i].iter().any(|o| o.name == m.name) {
            return Err(at("name", format!("{:?} is named twice", m.name)));
        }
        check_address(m.kind, &m.address).map_err(|why| at("address", why))?;
    }
    for (i, r) in rules.iter().enumerate() {
        let at = |f: &str, why: String| invalid("notification_rules", format!("[{i}].{f}: {why}"));
        if r.after_minutes > MAX_RULE_MINUTES {
            return Err(at("after_minutes", format!("at most {MAX_RULE_MINUTES}")));
        }
        if !methods.iter().any(|m| m.name == r.method) {
            return Err(at(
                "method",
                format!("{:?} is not one of this person's contact methods", r.method),
            ));
        }
    }
    Ok(())
}

/// The rules in force: the person's own, or by default "at once, through the first method"
/// (nothing when they have no method). Sorted by minutes, then as written.
pub fn rules_in_force(
    methods: &[ContactMethod],
    rules: &[NotificationRule],
) -> Vec<NotificationRule> {
    let mut out: Vec<NotificationRule> = if rules.is_empty() {
        methods
            .first()
            .map(|m| NotificationRule {
                after_minutes: 0,
                method: m.name.clone(),
            })
            .into_iter()
            .collect()
    } else {
        rules.to_vec()
    };
    out.sort_by_key(|r| r.after_minutes);
    out
}

/// Why `address` cannot reach a person by `kind`, if it cannot.
fn check_address(kind: ContactKind, address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("is empty".into());
    }
    if address.chars().any(char::is_control) {
        return Err("holds a control character".into());
    }
    match kind {
        ContactKind::Email => {
            let ok = address.len() <= MAX_EMAIL
                && address.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !address.contains(char::is_whitespace)
                        && !domain.contains('@')
                });
            ok.then_some(())
                .ok_or_else(|| format!("{address:?} is not an email address"))
        }
        ContactKind::Sms | ContactKind::Voice => {
            let digits = address.strip_prefix('+').unwrap_or("");
            let ok = (7..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0');
            ok.then_some(()).ok_or_else(|| {
                format!("{address:?} is not a phone number in E.164 form (+4915112345678)")
            })
        }
        ContactKind::Slack => {
            let ok = address.len() <= 32
                && (address.starts_with('U') || address.starts_with('W'))
                && address
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            ok.then_some(())
                .ok_or_else(|| format!("{address:?} is not a Slack member id (U024BE7LH)"))
        }
        ContactKind::Mattermost => {
            let ok = address.len() == 26
                && address
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            ok.then_some(()).ok_or_else(|| {
                format!("{address:?} is not a Mattermost user id (26 lowercase letters and digits)")
            })
        }
        ContactKind::Teams | ContactKind::Webhook => {
            let ok = address.len() <= MAX_URL
                && reqwest_like_https(address)
                && !address.contains(char::is_whitespace);
            ok.then_some(())
                .ok_or_else(|| format!("{address:?} is not an https:// URL"))?;
            // A person's webhook is not a way into the network Firebreak runs in.
            match url_ip(address) {
                Some(ip) if !is_public(ip) => Err(format!(
                    "{address:?} points inside the network (a loopback, private, link-local or unspecified address)"
                )),
                _ => Ok(()),
            }
        }
    }
}

/// The IP address a URL's host is written as, if it is one (`https://10.0.0.1/`,
/// `https://[::1]:8443/`).
fn url_ip(url: &str) -> Option<std::net::IpAddr> {
    let host = url
        .strip_prefix("https://")?
        .split(['/', '?', '#'])
        .next()?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.parse().ok()
}

/// Whether `ip` is on the public internet (not loopback, private, link-local, shared,
/// unspecified, or a unique-local IPv6 address).
fn is_public(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1])))
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| !is_public(v4.into())))
        }
    }
}

/// Whether `url` is `https://HOST...` with a non-empty host.
fn reqwest_like_https(url: &str) -> bool {
    url.strip_prefix("https://")
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .is_some_and(|host| !host.is_empty() && !host.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(name: &str, kind: ContactKind, address: &str) -> ContactMethod {
        ContactMethod {
            name: name.into(),
            kind,
            address: address.into(),
        }
    }

    fn rule(after_minutes: u32, method: &str) -> NotificationRule {
        NotificationRule {
            after_minutes,
            method: method.into(),
        }
    }

    #[test]
    fn each_kind_takes_its_own_address_form() {
        use ContactKind::*;
        for (kind, good, bad) in [
            (Email, "alice@example.com", "alice@localhost"),
            (Email, "a.b+c@mail.example.org", "@example.com"),
            (Sms, "+4915112345678", "015112345678"),
            (Voice, "+14155550100", "+1 415 555 0100"),
            (Slack, "U024BE7LH", "alice"),
            (
                Mattermost,
                "abcdefghijklmnopqrstuvwxyz",
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            ),
            (
                Teams,
                "https://prod.westeurope.logic.azure.com/workflows/1",
                "http://x.example",
            ),
            (Webhook, "https://hooks.example.com/page?x=1", "https://"),
        ] {
            assert!(check_address(kind, good).is_ok(), "{kind} {good}");
            let why = check_address(kind, bad).unwrap_err();
            assert!(why.contains(&format!("{bad:?}")), "{kind} {bad}: {why}");
        }
        for hostile in ["", "a\u{0}b@example.com", "alice@exa\nmple.com"] {
            assert!(check_address(Email, hostile).is_err(), "{hostile:?}");
        }
        assert!(
            check_address(Webhook, &format!("https://x.example/{}", "a".repeat(3000))).is_err()
        );
        // Not into the network Firebreak runs in (cloud metadata, the database, itself).
        for inside in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5/admin",
            "https://127.0.0.1:8443/",
            "https://[::1]/",
            "https://[fd00::1]/x",
            "https://[::ffff:192.168.1.1]/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
        ] {
            let why = check_address(Webhook, inside).unwrap_err();
            assert!(why.contains("inside the network"), "{inside}: {why}");
            assert!(check_address(Teams, inside).is_err(), "{inside}");
        }
        assert!(check_address(Webhook, "https://93.184.216.34/hook").is_ok());
    }

    #[test]
    fn methods_and_rules_are_checked_together_naming_the_field() {
        let methods = vec![
            method("work", ContactKind::Email, "alice@example.com"),
            method("phone", ContactKind::Sms, "+4915112345678"),
        ];
        assert!(check_contacts(&methods, &[rule(0, "work"), rule(5, "phone")]).is_ok());

        let e = check_contacts(&methods, &[rule(0, "pager")]).unwrap_err();
        assert!(
            e.to_string().contains("notification_rules: [0].method"),
            "{e}"
        );
        let e = check_contacts(&methods, &[rule(MAX_RULE_MINUTES + 1, "work")]).unwrap_err();
        assert!(
            e.to_string()
                .contains("notification_rules: [0].after_minutes"),
            "{e}"
        );
        let twice = vec![methods[0].clone(), methods[0].clone()];
        let e = check_contacts(&twice, &[]).unwrap_err();
        assert!(e.to_string().contains("contact_methods: [1].name"), "{e}");
        let bad = vec![methods[0].clone(), method("phone", ContactKind::Sms, "12")];
        let e = check_contacts(&bad, &[]).unwrap_err();
        assert!(
            e.to_string().contains("contact_methods: [1].address"),
            "{e}"
        );
        let e =
            check_contacts(&[method("Work Email", ContactKind::Email, "a@b.co")], &[]).unwrap_err();
        assert!(e.to_string().contains("contact_methods: [0].name"), "{e}");
        let many: Vec<_> = (0..=MAX_CONTACT_METHODS)
            .map(|i| method(&format!("m{i}"), ContactKind::Email, "a@b.co"))
            .collect();
        assert!(
            check_contacts(&many, &[])
                .unwrap_err()
                .to_string()
                .contains("contact_methods")
        );
    }

    #[test]
    fn without_rules_a_person_is_contacted_at_once_through_their_first_method() {
        let methods = vec![
            method("phone", ContactKind::Sms, "+4915112345678"),
            method("work", ContactKind::Email, "alice@example.com"),
        ];
        assert_eq!(rules_in_force(&methods, &[]), [rule(0, "phone")]);
        assert_eq!(rules_in_force(&[], &[]), []);
        assert_eq!(
            rules_in_force(&methods, &[rule(10, "phone"), rule(0, "work")]),
            [rule(0, "work"), rule(10, "phone")]
        );
    }
}
