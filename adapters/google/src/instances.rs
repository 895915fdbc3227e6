//! Writes to one instance of a recurring series, by its instance id
//! (`<seriesId>_<originalStart>`, as Google names instances and as sync
//! reports them): the version precondition and the current version an
//! ABORTED answer carries.
//!
//! Sync expands series locally, so an unmodified instance carries its
//! series' etag as its version, while Google gives the instance an etag of
//! its own; an exception (an overridden instance) carries its own etag in
//! both. So for an instance id `expected_version` holds when it is the
//! instance's own etag, or when it is the series' current etag and the
//! instance is still unmodified — an exception made since the caller's sync
//! is a change the caller has not seen. Either way Google then gets the
//! instance's current etag as `If-Match`, so a change between this check
//! and the write is a 412 at Google rather than a lost update.

use reqwest::Method;

use crate::client::{Call, Session};
use crate::error::GoogleError;
use crate::model;
use crate::times::parse_instance_id;

/// The most `events.list` requests spent looking for a series' exceptions;
/// past it the instance counts as modified (the caller is answered ABORTED
/// with the instance's own etag, which then holds).
const MAX_EXCEPTION_PAGES: usize = 8;
/// `maxResults` of those requests (Google's cap).
const EXCEPTION_PAGE_SIZE: u32 = 2500;

/// An instance as Google holds it, and its series.
struct Instance {
    instance: model::Event,
    series: model::Event,
}

/// The instance `event_id` names and its series: NOT_FOUND when Google has
/// no such instance, or it was deleted (a cancelled instance is no event of
/// the calendar any more, as sync reports it).
async fn instance(
    session: &Session<'_>,
    calendar_id: &str,
    event_id: &str,
    series_id: &str,
) -> Result<Instance, GoogleError> {
    let instance = session.get_event(calendar_id, event_id).await?;
    let of_series = instance.recurring_event_id.as_deref() == Some(series_id);
    if instance.is_cancelled() || !of_series {
        return Err(GoogleError::NotFound("the event".into()));
    }
    let series = session.get_event(calendar_id, series_id).await?;
    if series.is_cancelled() {
        return Err(GoogleError::NotFound("the event".into()));
    }
    Ok(Instance { instance, series })
}

/// True when Google holds an exception of instance `event_id` of `series`
/// (or when that cannot be told within the request budget).
async fn is_modified(
    session: &Session<'_>,
    calendar_id: &str,
    series: &model::Event,
    event_id: &str,
) -> Result<bool, GoogleError> {
    let Some(uid) = series.ical_uid.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(true);
    };
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_EXCEPTION_PAGES {
        let mut call = Call::new(
            "calendar.events.list",
            Method::GET,
            vec!["calendars", calendar_id, "events"],
        );
        call.query.push(("iCalUID", uid.to_string()));
        call.query
            .push(("maxResults", EXCEPTION_PAGE_SIZE.to_string()));
        call.query.push(("showDeleted", "true".into()));
        call.query.push(("singleEvents", "false".into()));
        if let Some(t) = &page_token {
            call.query.push(("pageToken", t.clone()));
        }
        let page: model::EventsPage = session.request(&call, "the calendar").await?.json()?;
        let named = page
            .items
            .unwrap_or_default()
            .iter()
            .any(|item| item.get("id").and_then(|v| v.as_str()) == Some(event_id));
        if named {
            return Ok(true);
        }
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) => page_token = Some(t),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// The `If-Match` for a write of `event_id` the caller last saw at
/// `expected` (`None`: unconditional). For an instance id, also checks that
/// the instance exists and is not deleted, even when the write is
/// unconditional.
pub async fn precondition(
    session: &Session<'_>,
    calendar_id: &str,
    event_id: &str,
    expected: &str,
) -> Result<Option<String>, GoogleError> {
    let Some((series_id, _)) = parse_instance_id(event_id) else {
        return Ok((!expected.is_empty()).then(|| expected.to_string()));
    };
    let Instance { instance, series } = instance(session, calendar_id, event_id, series_id).await?;
    if expected.is_empty() {
        return Ok(None);
    }
    let own = instance.etag.clone().unwrap_or_default();
    if own == expected {
        return Ok(Some(own));
    }
    let modified = is_modified(session, calendar_id, &series, event_id).await?;
    if !modified && series.etag.as_deref() == Some(expected) {
        return Ok(Some(own));
    }
    let current = if modified { Some(own) } else { series.etag };
    Err(GoogleError::VersionConflict { current })
}

/// The version sync would report for `event_id` now: its etag, or for an
/// unmodified instance its series' etag. `None` when it cannot be read.
pub async fn current_version(
    session: &Session<'_>,
    calendar_id: &str,
    event_id: &str,
) -> Option<String> {
    let Some((series_id, _)) = parse_instance_id(event_id) else {
        return session.get_event(calendar_id, event_id).await.ok()?.etag;
    };
    let Instance { instance, series } = instance(session, calendar_id, event_id, series_id)
        .await
        .ok()?;
    match is_modified(session, calendar_id, &series, event_id).await {
        Ok(false) => series.etag,
        _ => instance.etag,
    }
}

/// Turns a failed precondition (412) into a conflict naming the current
/// version.
pub async fn with_current_version<T>(
    session: &Session<'_>,
    calendar_id: &str,
    event_id: &str,
    result: Result<T, GoogleError>,
) -> Result<T, GoogleError> {
    match result {
        Err(GoogleError::VersionConflict { current: None }) => Err(GoogleError::VersionConflict {
            current: current_version(session, calendar_id, event_id).await,
        }),
        other => other,
    }
}
