//! Times typed on the command line: window bounds (`--from`, `--to`) and
//! event boundaries (`--start`, `--end`), turned into contract values. Every
//! error names the flag it came from.

use anyhow::{anyhow, bail, Result};
use calbridge::pb;
use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::cli::{EventFields, WindowArgs};

const LOCAL_FORMATS: [&str; 4] = [
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
];

fn parse_date(value: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()
}

fn parse_local(value: &str) -> Option<NaiveDateTime> {
    LOCAL_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
}

/// The IANA zone of `--time-zone`.
pub(crate) fn parse_zone_flag(value: &str) -> Result<Tz> {
    calbridge::time::parse_zone(value).map_err(|e| anyhow!("--time-zone: {e}"))
}

/// A local wall-clock time in `zone`; the earlier instant when the clocks go
/// back, an error naming `flag` when they skip it.
fn resolve_local<Z: TimeZone>(flag: &str, local: NaiveDateTime, zone: &Z) -> Result<DateTime<Utc>> {
    zone.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            anyhow!("{flag}: {local} does not exist in that time zone (the clocks skip it)")
        })
}

/// A window bound: RFC3339, or a date meaning midnight in `local`.
pub(crate) fn parse_bound<Z: TimeZone>(
    flag: &str,
    value: &str,
    local: &Z,
) -> Result<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(d) = parse_date(value) {
        return resolve_local(flag, d.and_hms_opt(0, 0, 0).expect("midnight"), local);
    }
    bail!("{flag}: cannot read {value:?}: expected RFC3339 (2026-12-01T09:00:00Z) or a date (2026-12-01)")
}

/// The window of `--from`/`--to` in the machine's local zone, with defaults
/// relative to `now`.
pub(crate) fn window(
    args: &WindowArgs,
    now: DateTime<Utc>,
    back: Duration,
    ahead: Duration,
) -> Result<pb::TimeWindow> {
    window_in(args, now, back, ahead, &chrono::Local)
}

fn window_in<Z: TimeZone>(
    args: &WindowArgs,
    now: DateTime<Utc>,
    back: Duration,
    ahead: Duration,
    local: &Z,
) -> Result<pb::TimeWindow> {
    let start = match &args.from {
        Some(v) => parse_bound("--from", v, local)?,
        None => now - back,
    };
    let end = match &args.to {
        Some(v) => parse_bound("--to", v, local)?,
        None => start.max(now) + ahead,
    };
    if end <= start {
        bail!(
            "--to: must be after --from ({})",
            crate::output::rfc3339(start)
        );
    }
    Ok(pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(start)),
        end: Some(calbridge::time::to_timestamp(end)),
    })
}

/// One event boundary: RFC3339, `YYYY-MM-DDTHH:MM` local in `zone`, or with
/// `all_day` a date.
pub(crate) fn parse_event_time(
    flag: &str,
    value: &str,
    zone: Option<&str>,
    all_day: bool,
) -> Result<pb::EventTime> {
    let value = value.trim();
    let tz = zone.map(parse_zone_flag).transpose()?;
    if all_day {
        return match parse_date(value) {
            Some(d) => Ok(calbridge::time::date(d)),
            None => bail!("{flag}: with --all-day, give a date YYYY-MM-DD (got {value:?})"),
        };
    }
    let zone_name = zone.unwrap_or("");
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(calbridge::time::instant(t.with_timezone(&Utc), zone_name));
    }
    if let Some(local) = parse_local(value) {
        let Some(tz) = tz else {
            bail!("{flag}: {value:?} is a local time: add --time-zone (an IANA name such as Europe/London) or give an offset (2026-12-01T09:00:00+01:00)");
        };
        return Ok(calbridge::time::instant(
            resolve_local(flag, local, &tz)?,
            zone_name,
        ));
    }
    if parse_date(value).is_some() {
        bail!("{flag}: {value:?} is a date: add --all-day for an all-day event, or give a time");
    }
    bail!("{flag}: cannot read {value:?}: expected RFC3339 (2026-12-01T09:00:00Z), YYYY-MM-DDTHH:MM with --time-zone, or YYYY-MM-DD with --all-day")
}

/// The start and end of an event from its flags.
pub(crate) fn event_times(f: &EventFields) -> Result<(pb::EventTime, pb::EventTime)> {
    let zone = f.time_zone.as_deref();
    let start = parse_event_time("--start", &f.start, zone, f.all_day)?;
    let end = parse_event_time("--end", &f.end, zone, f.all_day)?;
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use calbridge::pb::event_time::Value;

    fn instant_of(t: &pb::EventTime) -> String {
        match &t.value {
            Some(Value::Instant(ts)) => calbridge::time::from_timestamp(ts)
                .expect("in range")
                .to_rfc3339(),
            other => panic!("not an instant: {other:?}"),
        }
    }

    #[test]
    fn rfc3339_times_are_taken_as_instants() {
        let t = parse_event_time("--start", "2026-12-01T09:00:00+01:00", None, false).unwrap();
        assert_eq!(instant_of(&t), "2026-12-01T08:00:00+00:00");
        assert_eq!(t.time_zone, "");
    }

    #[test]
    fn local_times_are_read_in_the_given_zone() {
        let t =
            parse_event_time("--start", "2026-07-01T09:30", Some("Europe/London"), false).unwrap();
        assert_eq!(instant_of(&t), "2026-07-01T08:30:00+00:00");
        assert_eq!(t.time_zone, "Europe/London");
    }

    #[test]
    fn all_day_boundaries_are_dates() {
        let t = parse_event_time("--end", "2026-11-27", None, true).unwrap();
        assert_eq!(t.value, Some(Value::Date("2026-11-27".into())));
    }

    #[test]
    fn bad_input_names_the_flag() {
        let e = parse_event_time("--end", "tomorrow", None, false).unwrap_err();
        assert!(e.to_string().starts_with("--end:"), "{e}");
        let e = parse_event_time("--start", "2026-07-01T09:30", None, false).unwrap_err();
        assert!(e.to_string().starts_with("--start:"), "{e}");
        let e = parse_event_time("--start", "2026-07-01", None, false).unwrap_err();
        assert!(e.to_string().contains("--all-day"), "{e}");
        let e = parse_event_time("--start", "2026-07-01T09:30", None, true).unwrap_err();
        assert!(e.to_string().starts_with("--start:"), "{e}");
        let e =
            parse_event_time("--start", "2026-07-01T09:30", Some("Mars/Base"), false).unwrap_err();
        assert!(e.to_string().starts_with("--time-zone:"), "{e}");
    }

    #[test]
    fn a_local_time_skipped_by_the_clocks_is_refused() {
        let e = parse_event_time("--start", "2026-03-29T01:30", Some("Europe/London"), false)
            .unwrap_err();
        assert!(e.to_string().starts_with("--start:"), "{e}");
    }

    #[test]
    fn window_bounds_accept_rfc3339_and_dates() {
        assert_eq!(
            parse_bound("--from", "2026-12-01T10:00:00Z", &Utc)
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T10:00:00+00:00"
        );
        assert_eq!(
            parse_bound("--to", "2026-12-02", &Utc)
                .unwrap()
                .to_rfc3339(),
            "2026-12-02T00:00:00+00:00"
        );
        let e = parse_bound("--to", "next week", &Utc).unwrap_err();
        assert!(e.to_string().starts_with("--to:"), "{e}");
    }

    #[test]
    fn the_default_window_surrounds_now() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let w = window_in(
            &WindowArgs::default(),
            now,
            Duration::days(1),
            Duration::days(30),
            &Utc,
        )
        .unwrap();
        let start = calbridge::time::from_timestamp(w.start.as_ref().unwrap()).unwrap();
        let end = calbridge::time::from_timestamp(w.end.as_ref().unwrap()).unwrap();
        assert_eq!(start, now - Duration::days(1));
        assert_eq!(end, now + Duration::days(30));
    }

    #[test]
    fn a_window_ending_before_it_starts_is_refused() {
        let args = WindowArgs {
            from: Some("2026-12-02".into()),
            to: Some("2026-12-01".into()),
        };
        let e = window_in(
            &args,
            Utc::now(),
            Duration::days(1),
            Duration::days(1),
            &Utc,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--to:"), "{e}");
    }
}
