//! The daylight-saving rules of schedules, on real time-zone data: a local time that does not
//! exist runs at the first instant after the gap; a local time that occurs twice runs once
//! (the first); hourly-or-finer schedules fire on every real hour. Plus checks of bad input and
//! properties over wide inputs.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use flowkit_wire::api::schedules::ScheduleSpec;
use flowkit_wire::schedule::Schedule;
use proptest::prelude::*;

fn cron(expression: &str, zone: &str) -> Schedule {
    let mut spec = ScheduleSpec::cron(expression);
    spec.timezone = zone.into();
    Schedule::compile(&spec).unwrap_or_else(|e| panic!("{expression} in {zone}: {e}"))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("valid instant")
}

/// The instants in `(from, until]`.
fn instants(schedule: &Schedule, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let (found, more) = schedule.between(from, until, 10_000);
    assert!(!more);
    found
}

#[test]
fn a_skipped_local_time_runs_at_the_end_of_the_gap_once() {
    // Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    let daily = cron("30 2 * * *", "Europe/Paris");
    let runs = instants(&daily, utc(2026, 3, 27, 12, 0), utc(2026, 3, 30, 12, 0));
    assert_eq!(
        runs,
        vec![
            utc(2026, 3, 28, 1, 30), // 02:30 CET
            utc(2026, 3, 29, 1, 0),  // 02:30 does not exist: 03:00 CEST
            utc(2026, 3, 30, 0, 30), // 02:30 CEST
        ]
    );
    // Several skipped times of one day, and a real time at the end of the gap: one run.
    let several = cron("0,15,30,45 2 * * *", "Europe/Paris");
    let day = instants(&several, utc(2026, 3, 28, 22, 0), utc(2026, 3, 29, 22, 0));
    assert_eq!(day, vec![utc(2026, 3, 29, 1, 0)]);
    let with_three = cron("30 2,3 * * *", "Europe/Paris");
    let day = instants(
        &with_three,
        utc(2026, 3, 28, 22, 0),
        utc(2026, 3, 29, 22, 0),
    );
    assert_eq!(day, vec![utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)]);
}

#[test]
fn a_repeated_local_time_runs_once_the_first_time() {
    // Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice.
    let daily = cron("30 2 * * *", "Europe/Paris");
    let runs = instants(&daily, utc(2026, 10, 24, 12, 0), utc(2026, 10, 26, 12, 0));
    assert_eq!(
        runs,
        vec![
            utc(2026, 10, 25, 0, 30), // 02:30 CEST, the first 02:30
            utc(2026, 10, 26, 1, 30), // 02:30 CET
        ]
    );
    // Asked from inside the second pass, the repeated time is not run again.
    assert_eq!(
        daily.next_after(utc(2026, 10, 25, 1, 0)),
        Some(utc(2026, 10, 26, 1, 30))
    );
    // Every other hour is not "hourly or finer": 02:30 runs once.
    let two_hourly = cron("30 */2 * * *", "Europe/Paris");
    let runs = instants(
        &two_hourly,
        utc(2026, 10, 24, 22, 0),
        utc(2026, 10, 25, 4, 0),
    );
    assert_eq!(
        runs,
        vec![
            utc(2026, 10, 24, 22, 30), // 00:30 CEST
            utc(2026, 10, 25, 0, 30),  // 02:30 CEST, not again at 02:30 CET
            utc(2026, 10, 25, 3, 30),  // 04:30 CET
        ]
    );
}

#[test]
fn hourly_schedules_fire_on_every_real_hour() {
    let hourly = cron("0 * * * *", "Europe/Paris");
    for (from, until) in [
        (utc(2026, 3, 28, 20, 0), utc(2026, 3, 29, 6, 0)),
        (utc(2026, 10, 24, 20, 0), utc(2026, 10, 25, 6, 0)),
    ] {
        let runs = instants(&hourly, from, until);
        let every_hour: Vec<_> = (1..=10).map(|h| from + Duration::hours(h)).collect();
        assert_eq!(runs, every_hour, "{from}");
    }
    // Half-hourly through the repeated hour: both passes.
    let half_hourly = cron("*/30 * * * *", "Europe/Paris");
    let runs = instants(
        &half_hourly,
        utc(2026, 10, 24, 23, 45),
        utc(2026, 10, 25, 1, 45),
    );
    assert_eq!(
        runs,
        vec![
            utc(2026, 10, 25, 0, 0),
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 25, 1, 0),
            utc(2026, 10, 25, 1, 30)
        ]
    );
}

#[test]
fn other_zones_and_half_hour_shifts() {
    // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    let ny = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        ny.next_after(utc(2026, 3, 8, 0, 0)),
        Some(utc(2026, 3, 8, 7, 0))
    );
    // Lord Howe shifts by 30 minutes: 2026-10-04 02:00 becomes 02:30 (+10:30 → +11).
    let lord_howe = cron("15 2 * * *", "Australia/Lord_Howe");
    assert_eq!(
        lord_howe.next_after(utc(2026, 10, 3, 12, 0)),
        Some(utc(2026, 10, 3, 15, 30)) // 02:30 local (+11)
    );
    // UTC has no gaps: the plain next minute.
    let utc_daily = cron("0 3 * * *", "UTC");
    assert_eq!(
        utc_daily.next_after(utc(2026, 3, 29, 3, 0)),
        Some(utc(2026, 3, 30, 3, 0))
    );
}

#[test]
fn intervals_count_real_time_from_their_anchor() {
    let quarter = Schedule::compile(&ScheduleSpec::interval("15m")).expect("valid");
    assert_eq!(
        quarter.next_after(utc(2026, 3, 29, 0, 59)),
        Some(utc(2026, 3, 29, 1, 0))
    );
    assert_eq!(
        quarter.next_after(utc(2026, 3, 29, 1, 0)),
        Some(utc(2026, 3, 29, 1, 15))
    );
    let mut anchored = ScheduleSpec::interval("1d");
    anchored.anchor = Some(utc(2026, 1, 1, 5, 30));
    let daily = Schedule::compile(&anchored).expect("valid");
    assert_eq!(
        daily.next_after(utc(2026, 6, 1, 6, 0)),
        Some(utc(2026, 6, 2, 5, 30))
    );
    // Before the anchor too.
    assert_eq!(
        daily.next_after(utc(2025, 12, 31, 6, 0)),
        Some(utc(2026, 1, 1, 5, 30))
    );
    let (runs, more) = quarter.between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 2, 0, 0), 10);
    assert_eq!(runs.len(), 10);
    assert!(more, "96 instants in a day, 10 asked");
    assert_eq!(runs[0], utc(2026, 1, 1, 0, 15));
}

#[test]
fn bad_schedules_name_their_field_and_show_a_valid_one() {
    let cases: Vec<(ScheduleSpec, &str, &str)> = vec![
        (ScheduleSpec::cron("0 3 * *"), "cron", "0 3 * * *"),
        (ScheduleSpec::cron("0 3 * * * *"), "cron", "five fields"),
        (ScheduleSpec::cron("61 3 * * *"), "cron", "0 3 * * *"),
        (ScheduleSpec::cron("0 0 30 2 *"), "cron", "never matches"),
        (ScheduleSpec::interval("0s"), "interval", "15m"),
        (ScheduleSpec::interval("-5m"), "interval", "15m"),
        (ScheduleSpec::interval("soon"), "interval", "15m"),
        (ScheduleSpec::interval("500ms"), "interval", "one second"),
        (ScheduleSpec::interval("1000years"), "interval", "century"),
        (
            ScheduleSpec {
                timezone: "Mars/Olympus".into(),
                ..ScheduleSpec::cron("0 3 * * *")
            },
            "timezone",
            "Europe/Paris",
        ),
        (
            ScheduleSpec {
                max_lateness: Some("0s".into()),
                ..ScheduleSpec::cron("0 3 * * *")
            },
            "max_lateness",
            "30m",
        ),
        (
            ScheduleSpec {
                interval: Some("1h".into()),
                ..ScheduleSpec::cron("0 3 * * *")
            },
            "cron",
            "not both",
        ),
        (
            ScheduleSpec {
                cron: None,
                ..ScheduleSpec::cron("0 3 * * *")
            },
            "cron",
            "15m",
        ),
        (
            ScheduleSpec {
                anchor: Some(Utc::now()),
                ..ScheduleSpec::cron("0 3 * * *")
            },
            "anchor",
            "interval",
        ),
    ];
    for (spec, field, hint) in cases {
        let error = Schedule::compile(&spec).expect_err(&format!("{spec:?} must be refused"));
        assert_eq!(error.field, field, "{spec:?}: {error}");
        assert!(error.message.contains(hint), "{spec:?}: {error}");
    }
    // Unknown fields are refused when a schedule is read.
    let unknown = serde_json::from_str::<ScheduleSpec>(r#"{"cron": "0 3 * * *", "tz": "UTC"}"#);
    assert!(unknown.is_err());
}

fn zones() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        chrono_tz::Europe::Paris,
        chrono_tz::America::New_York,
        chrono_tz::America::Santiago,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kolkata,
        chrono_tz::Pacific::Apia,
        chrono_tz::UTC,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A fixed daily time runs exactly once per local date, whatever the zone's changes, and
    /// at that time when it exists.
    #[test]
    fn a_daily_time_runs_once_per_local_day(
        zone in zones(),
        hour in 0u32..24,
        minute in 0u32..60,
        start_day in 0i64..(3 * 365),
    ) {
        let expression = format!("{minute} {hour} * * *");
        let schedule = cron(&expression, zone.name());
        let start = utc(2025, 1, 1, 0, 0) + Duration::days(start_day);
        let runs = instants(&schedule, start, start + Duration::days(40));
        let mut dates: Vec<NaiveDate> = Vec::new();
        for run in &runs {
            let local = run.with_timezone(&zone);
            let date = local.date_naive();
            // Moved past a gap, it runs on the same date or the next (a gap at midnight).
            if local.hour() == hour && local.minute() == minute {
                prop_assert!(dates.last() != Some(&date), "{expression} {zone}: twice on {date}");
            }
            dates.push(date);
        }
        prop_assert!(runs.windows(2).all(|w| w[0] < w[1]));
        prop_assert!((38..=41).contains(&runs.len()), "{expression} {zone}: {} runs", runs.len());
    }

    /// An hourly schedule fires once per real hour, on the zone's wall-clock minute.
    #[test]
    fn an_hourly_schedule_fires_every_real_hour(
        zone in zones(),
        minute in 0u32..60,
        start_day in 0i64..(3 * 365),
    ) {
        let schedule = cron(&format!("{minute} * * * *"), zone.name());
        let start = utc(2025, 1, 1, 0, 0) + Duration::days(start_day);
        let runs = instants(&schedule, start, start + Duration::days(3));
        for run in &runs {
            prop_assert_eq!(run.with_timezone(&zone).minute(), minute);
        }
        prop_assert!(runs.windows(2).all(|w| w[0] < w[1]));
        // Zones whose offset is a whole number of hours: one run in each real hour.
        let whole_hours = [chrono_tz::Europe::Paris, chrono_tz::America::New_York, chrono_tz::UTC];
        if whole_hours.contains(&zone) {
            prop_assert_eq!(runs.len(), 72);
        }
    }

    /// next_after always moves forward, and `between` agrees with repeated next_after.
    #[test]
    fn next_after_moves_forward(
        zone in zones(),
        expression in prop::sample::select(vec![
            "0 3 * * *", "*/7 * * * *", "30 1-3 * * 0", "0 0 1 * *", "15 2,14 * * 1-5",
        ]),
        at in 0i64..(4 * 365 * 24 * 60),
    ) {
        let schedule = cron(expression, zone.name());
        let after = utc(2024, 1, 1, 0, 0) + Duration::minutes(at);
        let next = schedule.next_after(after).expect("a next instant");
        prop_assert!(next > after);
        prop_assert!(next - after <= Duration::days(32));
        let (first, _) = schedule.between(after, next, 5);
        prop_assert_eq!(first, vec![next]);
    }
}
