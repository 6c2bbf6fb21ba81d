//! A simulated year of schedules in five time zones with their changes of time (Paris, New
//! York, Lord Howe's half-hour shift, Santiago's change at midnight, Kolkata without any), run
//! by two replicas — two stores and two states on ONE database — ticking at the same injected
//! instants: every instant the time-zone rules give gets exactly one run, none is missed and
//! none is run twice, and the daylight-saving rule holds as written (a local time that does not
//! exist runs once, at the first instant after the gap; one that occurs twice runs once, the
//! first time).
//!
//! Nothing sleeps: both replicas tick at once, at each due instant plus a jitter of up to 30 s
//! in the days around each change of time, and once a day elsewhere (catch-up `all` creates
//! the instants since), so the year takes about 700 ticks.

use crate::harness::TestServer;
use crate::schedules::{registered, schedules_of};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use flowkit_server::AppState;
use flowkit_server::config::Settings;
use flowkit_server::scheduler::tick;
use flowkit_server::store::{Backend, Store};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use uuid::Uuid;

on_every_backend!(a_year_in_five_zones_by_two_replicas_runs_each_instant_once);

/// (time zone, local hour, minute): a daily run at that wall-clock time. Each zone's times
/// fall in its gap (spring) and in its repeated hour (autumn), where it has them.
const DAILY: [(&str, u32, u32); 9] = [
    ("Europe/Paris", 2, 30),     // gap 02:00–03:00 in March, repeated in October
    ("America/New_York", 2, 30), // gap 02:00–03:00 in March
    ("America/New_York", 1, 30), // repeated 01:00–02:00 in November
    ("Australia/Lord_Howe", 2, 15), // gap 02:00–02:30 in October
    ("Australia/Lord_Howe", 1, 45), // repeated 01:30–02:00 in April
    ("America/Santiago", 0, 30), // gap 00:00–01:00 in September
    ("America/Santiago", 23, 30), // repeated 23:00–24:00 in April
    ("Asia/Kolkata", 2, 30),     // no change of time
    ("UTC", 12, 0),
];

const YEAR: i32 = 2027;

/// The instant of `hour:minute` on `date` in `zone` by the rule as written, computed from the
/// time-zone data alone: the first of two, or the first instant after a gap.
fn expected(zone: Tz, date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    let mut local = date.and_hms_opt(hour, minute, 0).expect("local time");
    loop {
        if let Some(first) = zone.from_local_datetime(&local).earliest() {
            return first.with_timezone(&Utc);
        }
        // In a gap: the first local minute that exists is the end of the gap.
        local += Duration::minutes(1);
    }
}

async fn a_year_in_five_zones_by_two_replicas_runs_each_instant_once(server: &TestServer) {
    let specs: Vec<Value> = DAILY
        .iter()
        .map(|(zone, hour, minute)| {
            json!({"cron": format!("{minute} {hour} * * *"), "timezone": zone,
                   "parameters": {"dataset": "d"}, "overlap": "allow", "catchup": "all"})
        })
        .collect();
    registered(server, "year", Value::Array(specs)).await;
    // The ids by timing (the detail lists schedules of one registration by id, not in order).
    let listed = schedules_of(server, "year").await;
    let ids: Vec<Uuid> = DAILY
        .iter()
        .map(|(zone, hour, minute)| {
            listed
                .iter()
                .find(|s| {
                    s["spec"]["timezone"] == *zone
                        && s["spec"]["cron"] == format!("{minute} {hour} * * *")
                })
                .and_then(|s| s["id"].as_str())
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("no schedule {zone} {hour}:{minute}: {listed:?}"))
        })
        .collect();
    // The second replica: its own store and state on the same database.
    let other = AppState::new(
        Arc::new(Store::connect(&server.url).await.expect("second replica")),
        Settings::default(),
    );

    // Every schedule starts at the beginning of the year (as if registered then).
    let start = Utc
        .with_ymd_and_hms(YEAR, 1, 1, 0, 0, 0)
        .single()
        .expect("start");
    let end = Utc
        .with_ymd_and_hms(YEAR + 1, 1, 1, 0, 0, 0)
        .single()
        .expect("end");
    let due = server
        .store
        .due_schedules(Utc::now() + Duration::days(3), 100)
        .await
        .expect("due");
    // Every schedule, by its spec (the detail lists them in the order registered).
    let mut wanted: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for (i, (zone, hour, minute)) in DAILY.iter().enumerate() {
        let id = ids[i];
        let last_at = due
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.last_at)
            .expect("the schedule is due within 3 days");
        let zone: Tz = zone.parse().expect("zone");
        let mut instants = Vec::new();
        let mut date = NaiveDate::from_ymd_opt(YEAR - 1, 12, 30).expect("date");
        while date <= NaiveDate::from_ymd_opt(YEAR + 1, 1, 2).expect("date") {
            let at = expected(zone, date, *hour, *minute);
            if at > start && at <= end {
                instants.push(at);
            }
            date = date.succ_opt().expect("date");
        }
        let first = instants[0];
        assert!(
            server
                .store
                .advance_schedule(id, last_at, start, Some(first))
                .await
                .expect("rewind")
        );
        wanted.insert(id, instants);
    }

    // Both replicas tick at once: at each due instant plus a jitter in the days around a change
    // of time of any zone (where the rule matters), and once a day at a random time elsewhere
    // (catch-up `all` then creates every instant since, as after a short outage).
    let zones: Vec<Tz> = DAILY
        .iter()
        .map(|(zone, _, _)| zone.parse().expect("zone"))
        .collect();
    let offset = |zone: &Tz, date: NaiveDate| {
        zone.from_utc_datetime(&date.and_hms_opt(12, 0, 0).expect("noon"))
            .offset()
            .fix()
    };
    let mut hot = BTreeSet::new();
    let mut date = NaiveDate::from_ymd_opt(YEAR, 1, 1).expect("date");
    while date.year() == YEAR {
        let before = date.pred_opt().expect("date");
        if zones.iter().any(|z| offset(z, date) != offset(z, before)) {
            for d in -2..=2 {
                hot.insert(date + Duration::days(d));
            }
        }
        date = date.succ_opt().expect("date");
    }
    let mut rng = fastrand::Rng::with_seed(9);
    let mut ticks = BTreeSet::new();
    for at in wanted.values().flatten() {
        if hot.contains(&at.date_naive()) {
            ticks.insert(*at + Duration::milliseconds(rng.i64(0..30_000)));
        }
    }
    let mut day = start;
    while day < end {
        if !hot.contains(&day.date_naive()) {
            ticks.insert(day + Duration::seconds(rng.i64(0..86_400)));
        }
        day += Duration::days(1);
    }
    ticks.insert(end + Duration::minutes(1));
    assert!(hot.len() >= 30, "{hot:?}");
    let mut created = 0;
    for now in ticks {
        let (a, b) = tokio::join!(tick(&server.state, now), tick(&other, now));
        created += a.expect("tick").created + b.expect("tick").created;
    }
    let total: usize = wanted.values().map(Vec::len).sum();
    assert!(total >= DAILY.len() * 365, "{total}");
    assert_eq!(created, total, "runs created by the two replicas");

    // The runs as the API lists them: exactly the instants of the rule, once each.
    let mut got: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/flow-runs?deployment=train/year&limit=500&cursor={c}"),
            None => "/api/v1/flow-runs?deployment=train/year&limit=500".to_string(),
        };
        let page = server.get_ok(&uri).await;
        for run in page["items"].as_array().expect("items") {
            let by = run["created_by"].as_str().expect("created_by");
            let id: Uuid = by
                .strip_prefix("schedule:")
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("not a schedule's run: {run}"));
            got.entry(id)
                .or_default()
                .push(crate::schedules::instant(&run["scheduled_for"]));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    for (i, (zone, hour, minute)) in DAILY.iter().enumerate() {
        let id = ids[i];
        let mut runs = got.remove(&id).unwrap_or_default();
        runs.sort();
        let want = &wanted[&id];
        let duplicates = runs.windows(2).filter(|w| w[0] == w[1]).count();
        assert_eq!(duplicates, 0, "{zone} {hour}:{minute}: duplicate runs");
        let missing: Vec<_> = want.iter().filter(|t| !runs.contains(t)).collect();
        assert!(
            missing.is_empty(),
            "{zone} {hour}:{minute}: missing {missing:?}"
        );
        assert_eq!(&runs, want, "{zone} {hour}:{minute}");
    }
    assert!(got.is_empty(), "runs of no schedule: {got:?}");

    // The rule as written, on the days it matters (2027).
    let has = |i: usize, at: DateTime<Utc>| wanted[&ids[i]].contains(&at);
    let utc = |mo, d, h, mi| {
        Utc.with_ymd_and_hms(YEAR, mo, d, h, mi, 0)
            .single()
            .expect("instant")
    };
    // Paris, 28 March: 02:30 does not exist; it runs once, at 03:00 CEST (01:00 UTC).
    assert!(has(0, utc(3, 28, 1, 0)));
    assert!(!has(0, utc(3, 28, 0, 30)) && !has(0, utc(3, 28, 1, 30)));
    // Paris, 31 October: 02:30 happens twice; it runs once, the first (CEST, 00:30 UTC).
    assert!(has(0, utc(10, 31, 0, 30)) && !has(0, utc(10, 31, 1, 30)));
    // New York, 14 March: 02:30 does not exist: 03:00 EDT (07:00 UTC).
    assert!(has(1, utc(3, 14, 7, 0)));
    // New York, 7 November: 01:30 twice; once, at 01:30 EDT (05:30 UTC), not at 06:30.
    assert!(has(2, utc(11, 7, 5, 30)) && !has(2, utc(11, 7, 6, 30)));
}
