//! Writes of one instance of a stored series, named by its instance id
//! `<href>#<original start>`: an override VEVENT for it, or an EXDATE. Both
//! rewrite the series' resource, conditional on its etag (every instance's
//! version).

use chrono::Utc;
use chrono_tz::Tz;

use calbridge::pb;

use crate::account::Account;
use crate::error::DavError;
use crate::mapping::{parse_object, CalendarObject, EventParts, When};
use crate::recurrence::find_instance;

/// One instance of a series, as a request names it.
pub(super) struct Instance<'a> {
    /// The calendar of the series.
    pub(super) calendar_id: &'a str,
    /// The instance id as the caller wrote it.
    pub(super) id: &'a str,
    /// The series' resource.
    pub(super) href: &'a str,
    /// The original start after `#` ([`When::id_suffix`]).
    pub(super) suffix: &'a str,
}

/// The series resource's data and etag, checked against `expected`, its
/// object (floating times in the calendar's zone) and the instance's
/// original start; NOT_FOUND when the suffix names no instance.
async fn read(
    account: &Account,
    target: &Instance<'_>,
    expected: Option<&str>,
) -> Result<(String, String, CalendarObject, When, Option<Tz>), DavError> {
    let (data, etag) = account.current(target.href).await?;
    if expected.is_some_and(|v| v != etag) {
        return Err(DavError::VersionConflict {
            current: Some(etag),
        });
    }
    let zone = account
        .zone(&account.url("calendar_id", target.calendar_id)?)
        .await?;
    let obj = parse_object(&data, zone).map_err(|e| DavError::Protocol(e.to_string()))?;
    let original = find_instance(&obj, target.suffix)
        .ok_or_else(|| DavError::NotFound("the instance".into()))?;
    Ok((data, etag, obj, original, zone))
}

/// Deletes one instance: the series is rewritten with an EXDATE for it
/// (and without its override).
pub(super) async fn delete_instance(
    account: &Account,
    target: &Instance<'_>,
    expected: Option<&str>,
) -> Result<(), DavError> {
    let (data, etag, obj, original, _) = read(account, target, expected).await?;
    let ics = crate::ics::drop_instance(&data, &original, obj.floating_zone).ok_or_else(|| {
        DavError::Unsupported(
            "this series cannot lose one instance here (it has no master event to carry an EXDATE)"
                .into(),
        )
    })?;
    account.put_matching(target.href, &ics, &etag).await
}

/// Rewrites one instance: an override VEVENT with its RECURRENCE-ID and
/// `event`'s fields, replacing an earlier override of it. Answers the
/// instance as stored.
pub(super) async fn update_instance(
    account: &Account,
    target: &Instance<'_>,
    event: &pb::Event,
    expected: Option<&str>,
) -> Result<pb::Event, DavError> {
    let (data, etag, obj, original, zone) = read(account, target, expected).await?;
    let floating = obj.floating_zone;
    // Rewriting the instance a THISANDFUTURE override starts at would end
    // that override's change to the later instances, or spread the new
    // fields to them: neither is what one instance's update asks.
    if obj.overrides.iter().any(|ov| {
        ov.this_and_future
            && ov
                .recurrence_id
                .is_some_and(|r| r.utc(floating) == original.utc(floating))
    }) {
        return Err(DavError::Unsupported(
            "this instance starts a THISANDFUTURE change of the series; rewriting it alone is not supported by the CalDAV adapter".into(),
        ));
    }
    let ics = crate::ics::put_override(&data, event, &original, floating, Utc::now())?.ok_or_else(
        || {
            DavError::Unsupported(
                "this series cannot take an override here (it has no master event)".into(),
            )
        },
    )?;
    account.put_matching(target.href, &ics, &etag).await?;
    let (data, etag) = account.current(target.href).await?;
    let obj = parse_object(&data, zone).map_err(|e| DavError::Protocol(e.to_string()))?;
    let ov = obj
        .overrides
        .iter()
        .rev()
        .find(|ov| {
            !ov.this_and_future
                && ov
                    .recurrence_id
                    .is_some_and(|r| r.utc(obj.floating_zone) == original.utc(obj.floating_zone))
        })
        .ok_or_else(|| DavError::Protocol("the written instance did not read back".into()))?;
    Ok(EventParts {
        vevent: ov,
        id: target.id.to_string(),
        etag: &etag,
        start: ov.start,
        end: ov.end,
        link: Some(pb::RecurrenceLink {
            series_event_id: target.href.to_string(),
            original_start: Some(original.event_time()),
        }),
        busy_only: false,
    }
    .build())
}
