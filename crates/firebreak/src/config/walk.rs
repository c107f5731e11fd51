//! A walk of the configuration's schema through serde's own answers: a map with an unknown
//! key `?` placed at a location is refused with the fields the type there expects, which
//! finds every nested section and its keys without a second description of them to drift.

use serde_yaml::{Mapping, Value};

use super::Config;

/// One step of a location in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// A map key.
    Key(String),
    /// An entry of a list.
    Item,
    /// The value of any key of a map whose keys are names (`reopen.integrations.NAME`).
    AnyKey,
    /// A `channels:` entry of this kind (its `name` and `kind` filled in).
    Channel(&'static str),
}

/// A location: `channels[kind=slack].templates`, `schedules[].layers[].rotation`.
pub(crate) type Location = Vec<Step>;

/// The location as the reference writes it: keys joined with `.`, `[]` for list entries,
/// `*` for any key, `[kind=K]` for a channel kind.
pub(crate) fn show(loc: &[Step]) -> String {
    let mut out = String::new();
    for step in loc {
        match step {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Item => out.push_str("[]"),
            Step::AnyKey => out.push_str(".*"),
            Step::Channel(kind) => out.push_str(&format!("[kind={kind}]")),
        }
    }
    out
}

/// The configuration with `leaf` at `loc`.
fn place(loc: &[Step], leaf: Value) -> Value {
    let Some((step, rest)) = loc.split_first() else {
        return leaf;
    };
    let inner = place(rest, leaf);
    let map = |k: &str, v: Value| {
        let mut m = Mapping::new();
        m.insert(Value::String(k.to_owned()), v);
        Value::Mapping(m)
    };
    match step {
        Step::Key(k) => map(k, inner),
        Step::Item => Value::Sequence(vec![inner]),
        // A name any map of names takes, and an event kind too (`templates.by_event`).
        Step::AnyKey => map("opened", inner),
        Step::Channel(kind) => {
            let Value::Mapping(mut m) = inner else {
                return Value::Sequence(vec![inner]);
            };
            m.insert("name".into(), "probe".into());
            m.insert("kind".into(), (*kind).into());
            Value::Sequence(vec![Value::Mapping(m)])
        }
    }
}

/// The fields the type at `loc` takes, when it is a map of fixed fields (a struct), in
/// declaration order; `None` for anything else.
pub(crate) fn fields_at(loc: &[Step]) -> Option<Vec<String>> {
    let probe = place(loc, place(&[Step::Key("?".into())], Value::from(1)));
    let err = serde_yaml::from_value::<Config>(probe).err()?.to_string();
    let rest = err.split("unknown field `?`, ").nth(1)?;
    if rest.starts_with("there are no fields") {
        return Some(Vec::new());
    }
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every struct-typed location of the configuration and its fields, from the top and from
/// each channel kind, in the order found.
pub(crate) fn walk() -> Vec<(Location, Vec<String>)> {
    let mut roots: Vec<Location> = vec![Vec::new()];
    for kind in firebreak_notification::ChannelKind::ALL {
        roots.push(vec![
            Step::Key("channels".into()),
            Step::Channel(kind.as_str()),
        ]);
    }
    // The keys every channel has are read before its kind's (so they are not among the
    // fields a kind's answer lists); the one that is a map is walked from here.
    roots.push(vec![
        Step::Key("channels".into()),
        Step::Channel("log"),
        Step::Key("templates".into()),
    ]);
    let mut found: Vec<(Location, Vec<String>)> = Vec::new();
    let mut queue = roots;
    while let Some(loc) = queue.pop() {
        if found.iter().any(|(l, _)| *l == loc) {
            continue;
        }
        let Some(fields) = fields_at(&loc) else {
            continue;
        };
        for f in fields.iter().rev() {
            let at = |more: &[Step]| {
                let mut l = loc.clone();
                l.push(Step::Key(f.clone()));
                l.extend_from_slice(more);
                l
            };
            for child in [
                at(&[]),
                at(&[Step::Item]),
                at(&[Step::AnyKey]),
                at(&[Step::AnyKey, Step::Item]),
            ] {
                queue.push(child);
            }
        }
        found.push((loc, fields));
    }
    found
}

/// The location a section's `at` names (`channels[kind=slack]`, `schedules[].layers[]`);
/// `<…>` is read as a key of that name.
pub(crate) fn location(at: &str) -> Location {
    let mut loc = Vec::new();
    for part in at.split('.').filter(|p| !p.is_empty()) {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        loc.push(Step::Key(key.to_owned()));
        match rest.strip_prefix("kind=") {
            Some(kind) => {
                let kind = kind.trim_end_matches(']');
                let known = firebreak_notification::ChannelKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .find(|k| *k == kind);
                loc.push(Step::Channel(known.unwrap_or("log")));
            }
            None if rest == "]" => loc.push(Step::Item),
            None => {}
        }
    }
    loc
}

/// The value at the first instance of `loc` in `value`, to change.
pub(crate) fn instance_mut<'a>(value: &'a mut Value, loc: &[Step]) -> Option<&'a mut Value> {
    loc.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::Item | Step::Channel(_) => v.get_mut(0),
        Step::AnyKey => match v {
            Value::Mapping(m) => m.values_mut().next(),
            _ => None,
        },
    })
}

/// A configuration with an empty map at `loc`.
pub(crate) fn empty_at(loc: &[Step]) -> Value {
    place(loc, Value::Mapping(Mapping::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_and_print_alike_and_probes_answer_with_fields() {
        for at in [
            "",
            "nats",
            "channels[kind=slack]",
            "schedules[].layers[].rotation",
        ] {
            assert_eq!(show(&location(at)), at);
        }
        assert_eq!(
            fields_at(&location("commander")),
            Some(vec![
                "required_through_severity".to_owned(),
                "schedule".to_owned()
            ])
        );
        assert_eq!(
            fields_at(&location("channels[kind=teams]")),
            Some(vec!["url".to_owned()])
        );
        assert_eq!(fields_at(&location("channels[kind=log]")), Some(vec![]));
        // Not maps of fixed keys: a scalar, a map of names, a list of scalars.
        for at in ["live", "reopen.integrations", "exec.allow"] {
            assert_eq!(fields_at(&location(at)), None, "{at}");
        }
    }
}
