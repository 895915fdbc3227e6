//! Busy time of a calendar: the server's free-busy-query where it answers
//! one, else derived from the events, and reading VFREEBUSY answers.

use super::*;

impl Account {
    /// Busy intervals of one calendar in `window`: the server's
    /// free-busy-query where it answers one, else derived from the events.
    pub async fn free_busy(
        &self,
        calendar_id: &str,
        window: Window,
    ) -> Result<Vec<pb::BusyInterval>, DavError> {
        let calendar = self.url("calendar_id", calendar_id)?;
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range start="{}" end="{}"/></C:free-busy-query>"#,
            window.start.format("%Y%m%dT%H%M%SZ"),
            window.end.format("%Y%m%dT%H%M%SZ")
        );
        let resp = self
            .client
            .report("REPORT.free-busy-query", &calendar, Some(1), &body)
            .await?;
        match resp.status.as_u16() {
            200 => {
                if let Ok(periods) = parse_free_busy(&resp.body) {
                    return Ok(periods
                        .into_iter()
                        .filter_map(|(s, e, status)| {
                            clip(s, e, window).map(|(s, e)| (s, e, status))
                        })
                        .map(|(s, e, status)| interval(s, e, status, calendar_id))
                        .collect());
                }
                tracing::warn!("unreadable free-busy answer; deriving from events");
            }
            404 | 410 => return Err(DavError::NotFound("the calendar".into())),
            s => tracing::debug!(
                status = s,
                "free-busy-query unsupported; deriving from events"
            ),
        }
        self.free_busy_from_events(&calendar, calendar_id, window)
            .await
    }

    async fn free_busy_from_events(
        &self,
        calendar: &Url,
        calendar_id: &str,
        window: Window,
    ) -> Result<Vec<pb::BusyInterval>, DavError> {
        let snap = self.snapshot(calendar).await?;
        let zone = snap.zone;
        let hrefs: Vec<String> = snap.members.into_iter().map(|m| m.href).collect();
        let fetched = self.multiget(calendar, &hrefs).await?;
        let calendar_id = calendar_id.to_string();
        // CPU work, off the async workers, within a budget of a few pages'
        // worth (see `crate::mapping::bounds`).
        let _cpu = crate::recurrence::expansion_permit().await;
        tokio::task::spawn_blocking(move || busy_of(fetched, zone, &calendar_id, window))
            .await
            .map_err(|_| DavError::Protocol("reading the calendar objects failed".into()))?
    }
}

/// The busy intervals of fetched objects in `window`, within a work budget
/// of four sync pages.
fn busy_of(
    fetched: Vec<Fetched>,
    zone: Option<Tz>,
    calendar_id: &str,
    window: Window,
) -> Result<Vec<pb::BusyInterval>, DavError> {
    use crate::mapping::bounds::{MAX_STEPS, PAGE_STEPS};
    let mut out = Vec::new();
    let mut spent = 0usize;
    for f in fetched {
        if spent > 4 * PAGE_STEPS {
            return Err(DavError::Unsupported(
                "the calendar is too costly to derive free/busy from; its server answers no free-busy-query".into(),
            ));
        }
        spent += f.data.len() / 256;
        let events = match parse_object(&f.data, zone)
            .and_then(|o| crate::recurrence::expand_bounded(&o, &f.href, &f.etag, window, true))
        {
            Ok(x) => {
                spent += x.steps;
                x.events
            }
            Err(e) => {
                if matches!(e, IcalError::TooCostly(_)) {
                    spent += MAX_STEPS;
                }
                tracing::warn!(error = %e, "skipping an unreadable calendar object");
                continue;
            }
        };
        let tz = zone.unwrap_or(Tz::UTC);
        for e in events {
            if e.transparency() == Transparency::Transparent || e.status() == EventStatus::Cancelled
            {
                continue;
            }
            let bound = |t: Option<&pb::EventTime>| {
                t.and_then(|t| calbridge::time::parse_event_time(t).ok())
                    .map(|b| calbridge::time::boundary_utc(b, Some(tz)))
            };
            let (Some(s), Some(en)) = (bound(e.start.as_ref()), bound(e.end.as_ref())) else {
                continue;
            };
            let status = if e.status() == EventStatus::Tentative {
                BusyStatus::Tentative
            } else {
                BusyStatus::Busy
            };
            if let Some((s, en)) = clip(s, en, window) {
                out.push(interval(s, en, status, calendar_id));
            }
        }
    }
    Ok(out)
}

fn clip(s: DateTime<Utc>, e: DateTime<Utc>, w: Window) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (s, e) = (s.max(w.start), e.min(w.end));
    (e > s).then_some((s, e))
}

fn interval(
    s: DateTime<Utc>,
    e: DateTime<Utc>,
    status: BusyStatus,
    calendar_id: &str,
) -> pb::BusyInterval {
    pb::BusyInterval {
        start: Some(calbridge::time::to_timestamp(s)),
        end: Some(calbridge::time::to_timestamp(e)),
        status: status as i32,
        calendar_id: calendar_id.to_string(),
    }
}

/// A busy period: start, end and how busy.
pub type BusyPeriod = (DateTime<Utc>, DateTime<Utc>, BusyStatus);

/// The most busy periods read from one free-busy answer (a year of
/// back-to-back half-hour meetings in working hours is under 5,000).
pub const MAX_BUSY_PERIODS: usize = 20_000;

/// The busy periods of a VFREEBUSY answer, at most [`MAX_BUSY_PERIODS`].
pub fn parse_free_busy(data: &str) -> Result<Vec<BusyPeriod>, IcalError> {
    use calcard::icalendar::{
        ICalendarComponentType, ICalendarParameterName, ICalendarPeriod, ICalendarProperty,
        ICalendarValue,
    };
    let ical = parse_calendar(data)?;
    let mut out = Vec::new();
    let utc = |p: &calcard::common::PartialDateTime| -> Option<DateTime<Utc>> {
        let r = p.to_date_time()?;
        let off = r.offset.map(|o| o.local_minus_utc()).unwrap_or(0);
        Some(DateTime::<Utc>::from_naive_utc_and_offset(
            r.date_time
                .checked_sub_signed(chrono::Duration::seconds(i64::from(off)))?,
            Utc,
        ))
    };
    for c in ical
        .components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VFreebusy)
    {
        for e in c
            .entries
            .iter()
            .filter(|e| e.name == ICalendarProperty::Freebusy)
        {
            let status = match e
                .parameter(&ICalendarParameterName::Fbtype)
                .and_then(|v| v.as_text())
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("FREE") => continue,
                Some("BUSY-TENTATIVE") => BusyStatus::Tentative,
                Some("BUSY-UNAVAILABLE") => BusyStatus::OutOfOffice,
                _ => BusyStatus::Busy,
            };
            for v in &e.values {
                let (s, en) = match v {
                    ICalendarValue::Period(ICalendarPeriod::Range { start, end }) => {
                        (utc(start), utc(end))
                    }
                    ICalendarValue::Period(ICalendarPeriod::Duration { start, duration }) => {
                        let s = utc(start);
                        (
                            s,
                            s.and_then(|s| s.checked_add_signed(duration.to_time_delta()?)),
                        )
                    }
                    _ => (None, None),
                };
                if let (Some(s), Some(en)) = (s, en) {
                    if out.len() == MAX_BUSY_PERIODS {
                        return Err(IcalError::TooLarge(format!(
                            "more than {MAX_BUSY_PERIODS} busy periods"
                        )));
                    }
                    out.push((s, en, status));
                }
            }
        }
    }
    Ok(out)
}
