//! Run-time schedules: stored with their overrides, each change taking the next version;
//! run-time maintenance windows beside them, on the same version.

use firebreak_storage::{MaintenanceRecord, OverrideRecord, ScheduleRecord, ScheduleStore};
use serde_json::json;

use crate::fixtures::{Fixture, micros};

crate::contract!(schedules:
    schedules_and_overrides_round_trip_and_every_change_takes_a_version,
    maintenance_windows_round_trip_and_take_the_same_version,
);

fn schedule(name: &str, declared: bool, at: i64) -> ScheduleRecord {
    ScheduleRecord {
        name: name.into(),
        spec: json!({ "name": name, "layers": [] }),
        declared,
        updated_at: micros(at),
        updated_by: "user:amy".into(),
        overrides: Vec::new(),
    }
}

fn over(id: &str, schedule: &str, at: i64) -> OverrideRecord {
    OverrideRecord {
        id: id.into(),
        schedule: schedule.into(),
        spec: json!({ "from": "2026-12-01T00:00:00Z", "to": "2026-12-02T00:00:00Z", "add": "bob" }),
        created_at: micros(at),
        created_by: "user:bob".into(),
    }
}

async fn schedules_and_overrides_round_trip_and_every_change_takes_a_version(
    f: &Fixture<dyn ScheduleStore>,
) {
    let store = &*f.store;
    assert_eq!(store.schedules().await.unwrap(), (0, Vec::new()));
    store.put_schedule(&schedule("b", false, 1)).await.unwrap();
    store.put_schedule(&schedule("a", true, 2)).await.unwrap();
    assert_eq!(store.schedules_version().await.unwrap(), 2);
    store.add_override(&over("o2", "b", 20)).await.unwrap();
    store.add_override(&over("o1", "b", 10)).await.unwrap();
    // An override of no schedule is refused, and takes no version.
    let e = store
        .add_override(&over("o3", "nope", 30))
        .await
        .unwrap_err();
    assert!(matches!(e, firebreak_storage::Error::NotFound(_)), "{e}");
    let (version, all) = store.schedules().await.unwrap();
    assert_eq!(version, 4);
    assert_eq!(
        all.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(all[0], schedule("a", true, 2));
    assert_eq!(
        all[1].overrides,
        [over("o1", "b", 10), over("o2", "b", 20)],
        "overrides oldest first"
    );
    // Replacing keeps the overrides.
    let mut changed = schedule("b", false, 5);
    changed.spec = json!({ "name": "b", "layers": [{ "name": "x" }] });
    store.put_schedule(&changed).await.unwrap();
    let (_, all) = store.schedules().await.unwrap();
    assert_eq!(all[1].spec, changed.spec);
    assert_eq!(all[1].overrides.len(), 2);
    // Removing: what is not there changes nothing and takes no version.
    assert!(store.remove_override("b", "o1").await.unwrap());
    assert!(!store.remove_override("b", "o1").await.unwrap());
    assert!(!store.remove_override("a", "o2").await.unwrap());
    assert_eq!(store.schedules_version().await.unwrap(), 6);
    assert!(store.delete_schedule("b").await.unwrap());
    assert!(!store.delete_schedule("b").await.unwrap());
    let (version, all) = store.schedules().await.unwrap();
    assert_eq!((version, all.len()), (7, 1));
    // The deleted schedule's overrides went with it: a new one of that name has none.
    store.put_schedule(&schedule("b", false, 8)).await.unwrap();
    assert!(store.schedules().await.unwrap().1[1].overrides.is_empty());
}

fn window(name: &str, duration: &str, at: i64) -> MaintenanceRecord {
    MaintenanceRecord {
        name: name.into(),
        spec: json!({ "name": name, "time_zone": "UTC", "start": "2026-12-01T01:00", "duration": duration }),
        updated_at: micros(at),
        updated_by: "user:amy".into(),
    }
}

async fn maintenance_windows_round_trip_and_take_the_same_version(f: &Fixture<dyn ScheduleStore>) {
    let store = &*f.store;
    assert!(store.maintenance_windows().await.unwrap().is_empty());
    store.put_schedule(&schedule("a", false, 1)).await.unwrap();
    store
        .put_maintenance_window(&window("deploy", "1h", 2))
        .await
        .unwrap();
    store
        .put_maintenance_window(&window("backup", "2h", 3))
        .await
        .unwrap();
    assert_eq!(store.schedules_version().await.unwrap(), 3);
    // Replaced in place, by name.
    store
        .put_maintenance_window(&window("deploy", "3h", 4))
        .await
        .unwrap();
    assert_eq!(
        store.maintenance_windows().await.unwrap(),
        [window("backup", "2h", 3), window("deploy", "3h", 4)]
    );
    assert_eq!(store.schedules_version().await.unwrap(), 4);
    // Deleting one that exists takes a version; one that does not takes none.
    assert!(store.delete_maintenance_window("deploy").await.unwrap());
    assert!(!store.delete_maintenance_window("deploy").await.unwrap());
    assert_eq!(store.schedules_version().await.unwrap(), 5);
    assert_eq!(
        store.maintenance_windows().await.unwrap(),
        [window("backup", "2h", 3)]
    );
    // Schedules are untouched by windows.
    assert_eq!(
        store.schedules().await.unwrap().1,
        [schedule("a", false, 1)]
    );
}
