//! Google Calendar API v3 payloads, as far as the adapter reads them (field
//! names as in the discovery document's `schemas`). Every field is optional
//! and `null` is read as absent, so a resource Google trims (cancelled
//! items carry little more than `id` and `status`) still parses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// `EventDateTime`: a date (all-day) or a date-time with an optional IANA
/// zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDateTime {
    /// `yyyy-mm-dd` for all-day events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// RFC 3339 date-time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    /// IANA zone name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `EventAttendee`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendee {
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// `needsAction`, `declined`, `tentative`, `accepted`.
    #[serde(default)]
    pub response_status: Option<String>,
    /// Optional attendance.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// An event's `organizer` (or `creator`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// E-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `extendedProperties`: string maps (values may be `null` after a patch
/// deleted them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExtendedProperties {
    /// Per calendar copy.
    #[serde(default)]
    pub private: Option<HashMap<String, Option<String>>>,
    /// Shared by all attendees' copies.
    #[serde(default)]
    pub shared: Option<HashMap<String, Option<String>>>,
}

/// `Event`, the fields the adapter maps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event id.
    #[serde(default)]
    pub id: Option<String>,
    /// `confirmed`, `tentative`, `cancelled`.
    #[serde(default)]
    pub status: Option<String>,
    /// The etag, quoted.
    #[serde(default)]
    pub etag: Option<String>,
    /// The iCalendar UID.
    #[serde(default, rename = "iCalUID")]
    pub ical_uid: Option<String>,
    /// Title.
    #[serde(default)]
    pub summary: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Location.
    #[serde(default)]
    pub location: Option<String>,
    /// Start.
    #[serde(default)]
    pub start: Option<EventDateTime>,
    /// End (exclusive).
    #[serde(default)]
    pub end: Option<EventDateTime>,
    /// For exceptions: where the instance would start per the rule.
    #[serde(default)]
    pub original_start_time: Option<EventDateTime>,
    /// For exceptions: the series master's id.
    #[serde(default)]
    pub recurring_event_id: Option<String>,
    /// For masters: RRULE/EXRULE/RDATE/EXDATE lines.
    #[serde(default)]
    pub recurrence: Option<Vec<String>>,
    /// `opaque` (default) or `transparent`.
    #[serde(default)]
    pub transparency: Option<String>,
    /// Invited people.
    #[serde(default)]
    pub attendees: Option<Vec<Attendee>>,
    /// The organizer.
    #[serde(default)]
    pub organizer: Option<Person>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created: Option<String>,
    /// Last modification time (RFC 3339).
    #[serde(default)]
    pub updated: Option<String>,
    /// `default`, `outOfOffice`, `focusTime`, `workingLocation`, ...
    #[serde(default)]
    pub event_type: Option<String>,
    /// Extended properties.
    #[serde(default)]
    pub extended_properties: Option<ExtendedProperties>,
}

impl Event {
    /// The id, empty when absent.
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or("")
    }

    /// True for `status: cancelled`.
    pub fn is_cancelled(&self) -> bool {
        self.status.as_deref() == Some("cancelled")
    }

    /// True for a series master (it carries recurrence lines).
    pub fn is_master(&self) -> bool {
        self.recurrence.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// The private extended property `key`, when set.
    pub fn private_property(&self, key: &str) -> Option<&str> {
        self.extended_properties
            .as_ref()?
            .private
            .as_ref()?
            .get(key)?
            .as_deref()
    }
}

/// `Events`: one page of `events.list`. Items stay raw so that one item
/// Google shapes unexpectedly is skipped rather than failing the page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    /// The events (and cancelled items) of this page.
    #[serde(default)]
    pub items: Option<Vec<serde_json::Value>>,
    /// Present when more pages follow.
    #[serde(default)]
    pub next_page_token: Option<String>,
    /// Present on the last page only.
    #[serde(default)]
    pub next_sync_token: Option<String>,
    /// The calendar's zone.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// `CalendarListEntry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarListEntry {
    /// The calendar id.
    #[serde(default)]
    pub id: Option<String>,
    /// The calendar's title.
    #[serde(default)]
    pub summary: Option<String>,
    /// The user's own name for it.
    #[serde(default)]
    pub summary_override: Option<String>,
    /// IANA zone.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// `freeBusyReader`, `reader`, `writer`, `owner`.
    #[serde(default)]
    pub access_role: Option<String>,
    /// True for the user's primary calendar.
    #[serde(default)]
    pub primary: Option<bool>,
    /// True for a removed entry (sync listings only).
    #[serde(default)]
    pub deleted: Option<bool>,
    /// `#rrggbb`.
    #[serde(default)]
    pub background_color: Option<String>,
}

/// `CalendarList`: one page of `calendarList.list`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CalendarListPage {
    /// The entries.
    #[serde(default)]
    pub items: Option<Vec<CalendarListEntry>>,
    /// Present when more pages follow.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// `Channel`, as answered by `events.watch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// The channel id.
    #[serde(default)]
    pub id: Option<String>,
    /// The watched resource's opaque id.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Expiry, Unix milliseconds, as a string (`int64` in JSON).
    #[serde(default)]
    pub expiration: Option<serde_json::Value>,
}

/// `TimePeriod`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TimePeriod {
    /// Start (inclusive), RFC 3339.
    #[serde(default)]
    pub start: Option<String>,
    /// End (exclusive), RFC 3339.
    #[serde(default)]
    pub end: Option<String>,
}

/// `Error` inside a free/busy answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FreeBusyError {
    /// The error domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// The reason (`notFound`, `internalError`, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `FreeBusyCalendar`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct FreeBusyCalendar {
    /// Busy periods.
    #[serde(default)]
    pub busy: Option<Vec<TimePeriod>>,
    /// Per-calendar problems.
    #[serde(default)]
    pub errors: Option<Vec<FreeBusyError>>,
}

/// `FreeBusyResponse`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FreeBusyResponse {
    /// Per calendar id.
    #[serde(default)]
    pub calendars: Option<HashMap<String, FreeBusyCalendar>>,
}

/// One entry of an error body's `errors`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorItem {
    /// The domain (`global`, `usageLimits`, `calendar`).
    #[serde(default)]
    pub domain: Option<String>,
    /// The reason to branch on.
    #[serde(default)]
    pub reason: Option<String>,
    /// The parameter or header concerned.
    #[serde(default)]
    pub location: Option<String>,
}

/// The `error` object of an API error body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorInfo {
    /// The HTTP status.
    #[serde(default)]
    pub code: Option<u16>,
    /// The details.
    #[serde(default)]
    pub errors: Option<Vec<ErrorItem>>,
}

/// An API error body: `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    /// The error.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

impl ErrorBody {
    /// Reads a body; an unreadable one has no reason.
    pub fn parse(body: &[u8]) -> ErrorBody {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// `errors[0]`, when present.
    pub fn first(&self) -> Option<&ErrorItem> {
        self.error.as_ref()?.errors.as_ref()?.first()
    }

    /// `errors[0].reason`.
    pub fn reason(&self) -> Option<&str> {
        self.first()?.reason.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_cancelled_item_parses() {
        let e: Event = serde_json::from_str(
            r#"{"kind":"calendar#event","etag":"\"1\"","id":"abc","status":"cancelled"}"#,
        )
        .unwrap();
        assert!(e.is_cancelled());
        assert!(!e.is_master());
        assert_eq!(e.id(), "abc");
    }

    #[test]
    fn nulls_read_as_absent() {
        let e: Event = serde_json::from_str(
            r#"{"id":"x","summary":null,"attendees":null,"extendedProperties":{"private":{"k":null}}}"#,
        )
        .unwrap();
        assert_eq!(e.summary, None);
        assert_eq!(e.private_property("k"), None);
    }

    #[test]
    fn an_error_body_yields_its_reason() {
        let b = ErrorBody::parse(
            br#"{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"domain":"usageLimits","reason":"rateLimitExceeded","message":"Rate Limit Exceeded"}]}}"#,
        );
        assert_eq!(b.reason(), Some("rateLimitExceeded"));
        assert_eq!(ErrorBody::parse(b"<html>").reason(), None);
    }
}
