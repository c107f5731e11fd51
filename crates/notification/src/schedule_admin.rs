//! Schedules managed at run time over gRPC: list, put (create or replace a run-time
//! schedule), delete, and overrides added to or removed from any schedule. Each write is
//! checked as the configuration's schedules are (the domain's `validate`, with the schedule's
//! other overrides, so overlapping ones are refused), its people against the directory, and
//! refused whole, changing nothing, when anything is wrong. Declared schedules change only in
//! configuration; a schedule a policy pages cannot be deleted.

use firebreak_domain::schedule::{OverrideSpec, ScheduleSpec};
use firebreak_proto::v1;
use firebreak_storage::{OverrideRecord, ScheduleRecord, ScheduleStore};
use std::sync::Arc;

use crate::Notification;
use crate::error::Error;
use crate::escalation::Target;

/// The most bytes of a schedule's YAML a call may send.
const MAX_YAML: usize = 256 * 1024;
/// The most run-time overrides one schedule holds.
const MAX_OVERRIDES: usize = 500;

impl Notification {
    fn schedule_store(&self) -> Result<&Arc<dyn ScheduleStore>, Error> {
        self.schedules
            .store()
            .ok_or_else(|| Error::Invalid("schedules are configuration-only here".into()))
    }

    /// Every schedule with its run-time overrides.
    pub(crate) async fn list_schedule_infos(&self) -> Result<Vec<v1::ScheduleInfo>, Error> {
        let (_, records) = self.schedule_store()?.schedules().await?;
        Ok(records.iter().map(info).collect())
    }

    /// Creates or replaces the run-time schedule `yaml` describes, as `actor`.
    pub(crate) async fn put_schedule_yaml(
        &self,
        yaml: &str,
        actor: &str,
    ) -> Result<v1::ScheduleInfo, Error> {
        if yaml.len() > MAX_YAML {
            return Err(Error::Invalid(format!("yaml: at most {MAX_YAML} bytes")));
        }
        let spec =
            ScheduleSpec::from_yaml(yaml).map_err(|e| Error::Invalid(format!("yaml: {e}")))?;
        let store = self.schedule_store()?;
        let (_, records) = store.schedules().await?;
        let existing = records.iter().find(|r| r.name == spec.name);
        if existing.is_some_and(|r| r.declared) {
            return Err(Error::FailedPrecondition(format!(
                "schedule {:?} is declared in configuration; change it there",
                spec.name
            )));
        }
        if existing.is_none() && records.len() >= 1_000 {
            return Err(Error::Invalid("schedules: at most 1000".into()));
        }
        let record = ScheduleRecord {
            name: spec.name.clone(),
            spec: serde_json::to_value(&spec).map_err(|e| Error::Invalid(e.to_string()))?,
            declared: false,
            updated_at: self.clock.now(),
            updated_by: actor.to_owned(),
            overrides: existing.map(|r| r.overrides.clone()).unwrap_or_default(),
        };
        self.check_schedule(&record).await?;
        store.put_schedule(&record).await?;
        self.schedules.reload().await;
        Ok(info(&record))
    }

    /// Deletes a run-time schedule and its overrides.
    pub(crate) async fn delete_schedule_named(&self, name: &str) -> Result<(), Error> {
        let store = self.schedule_store()?;
        let (_, records) = store.schedules().await?;
        let record = records
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::NotFound(format!("schedule {name:?}")))?;
        if record.declared {
            return Err(Error::FailedPrecondition(format!(
                "schedule {name:?} is declared in configuration; remove it there"
            )));
        }
        if let Some(p) = self.policies.iter().find(|p| {
            p.steps
                .iter()
                .flat_map(|s| s.targets.iter())
                .chain(p.fallback.iter())
                .any(|t| matches!(t, Target::Schedule(s) if s == name))
        }) {
            return Err(Error::FailedPrecondition(format!(
                "escalation policy {:?} pages schedule {name:?}",
                p.name
            )));
        }
        store.delete_schedule(name).await?;
        self.schedules.reload().await;
        Ok(())
    }

    /// Adds `o` to schedule `name`, as `actor`.
    pub(crate) async fn add_schedule_override(
        &self,
        name: &str,
        o: &v1::ScheduleOverride,
        actor: &str,
    ) -> Result<v1::ScheduleOverride, Error> {
        let spec = override_spec(o)?;
        let store = self.schedule_store()?;
        let (_, records) = store.schedules().await?;
        let mut record = records
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::NotFound(format!("schedule {name:?}")))?;
        if record.overrides.len() >= MAX_OVERRIDES {
            return Err(Error::Invalid(format!(
                "overrides: at most {MAX_OVERRIDES} a schedule; remove past ones"
            )));
        }
        let added = OverrideRecord {
            id: firebreak_domain::new_id().to_string(),
            schedule: name.to_owned(),
            spec: serde_json::to_value(&spec).map_err(|e| Error::Invalid(e.to_string()))?,
            created_at: self.clock.now(),
            created_by: actor.to_owned(),
        };
        record.overrides.push(added.clone());
        self.check_schedule(&record).await?;
        store.add_override(&added).await?;
        self.schedules.reload().await;
        Ok(override_info(&added))
    }

    /// Removes override `id` of schedule `name`.
    pub(crate) async fn remove_schedule_override(&self, name: &str, id: &str) -> Result<(), Error> {
        if !self.schedule_store()?.remove_override(name, id).await? {
            return Err(Error::NotFound(format!(
                "override {id:?} of schedule {name:?}"
            )));
        }
        self.schedules.reload().await;
        Ok(())
    }

    /// Checks a schedule as it would stand: its rules, and every person it names is in the
    /// directory.
    async fn check_schedule(&self, record: &ScheduleRecord) -> Result<(), Error> {
        let spec = crate::schedules::spec_of(record).map_err(Error::Invalid)?;
        let known: std::collections::HashSet<String> = match &self.directory {
            Some(d) => d.store.users().await?.into_iter().map(|u| u.name).collect(),
            None => Default::default(),
        };
        let checked = spec.validate(&|user| self.directory.is_none() || known.contains(user));
        checked.map(drop).map_err(|e| Error::Invalid(e.to_string()))
    }
}

/// An override as a call gives it: `from` and `to`, and `replace` with `with`, or `add`.
fn override_spec(o: &v1::ScheduleOverride) -> Result<OverrideSpec, Error> {
    let at = |field: &str, t: &Option<_>| {
        t.as_ref()
            .map(|t| crate::schedules::instant(firebreak_proto::micros(t)))
            .ok_or_else(|| Error::Invalid(format!("override.{field}: required")))
    };
    let name = |field: &str, s: &str| -> Result<Option<String>, Error> {
        let s = crate::name_arg(&format!("override.{field}"), s)?;
        Ok((!s.is_empty()).then(|| s.to_owned()))
    };
    Ok(OverrideSpec {
        from: at("from", &o.from)?,
        to: at("to", &o.to)?,
        replace: name("replace", &o.replace)?,
        with: name("with", &o.with)?,
        add: name("add", &o.add)?,
    })
}

fn override_info(o: &OverrideRecord) -> v1::ScheduleOverride {
    let spec: Option<OverrideSpec> = serde_json::from_value(o.spec.clone()).ok();
    let at = |t: jiff::Timestamp| {
        firebreak_proto::timestamp(firebreak_domain::Micros::from_unix_micros(
            t.as_microsecond(),
        ))
    };
    v1::ScheduleOverride {
        id: o.id.clone(),
        from: spec.as_ref().map(|s| at(s.from)),
        to: spec.as_ref().map(|s| at(s.to)),
        replace: spec
            .as_ref()
            .and_then(|s| s.replace.clone())
            .unwrap_or_default(),
        with: spec
            .as_ref()
            .and_then(|s| s.with.clone())
            .unwrap_or_default(),
        add: spec
            .as_ref()
            .and_then(|s| s.add.clone())
            .unwrap_or_default(),
        created_by: o.created_by.clone(),
    }
}

fn info(r: &ScheduleRecord) -> v1::ScheduleInfo {
    let yaml = serde_json::from_value::<ScheduleSpec>(r.spec.clone())
        .ok()
        .and_then(|s| serde_yaml::to_string(&s).ok())
        .unwrap_or_default();
    v1::ScheduleInfo {
        name: r.name.clone(),
        declared: r.declared,
        yaml,
        overrides: r.overrides.iter().map(override_info).collect(),
        updated_at: Some(firebreak_proto::timestamp(r.updated_at)),
        updated_by: r.updated_by.clone(),
    }
}
