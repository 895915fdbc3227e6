//! What every adapter must do alike, kept once so the adapters cannot drift
//! apart: the free/busy view of an event (the privacy rule for FREE_BUSY
//! accounts and busy-only pages), the time window a request names, reading
//! the credentials a call carries, the answer to an operation a provider
//! does not offer, and the path of a REST resource below an API base.

use chrono::{DateTime, Utc};
use tonic::Status;

use crate::pb::{self, provider_credentials::Secret};
use crate::ErrorKind;

/// What a FREE_BUSY account may see of `e`: its identity, times, status,
/// transparency, recurrence and bookkeeping, never its title, description,
/// location, attendees or organizer.
///
/// The view is built as a fresh event that copies only the allowed fields,
/// so a field added to `Event` later stays out of it until it is named
/// here on purpose.
pub fn free_busy_view(e: pb::Event) -> pb::Event {
    pb::Event {
        account_id: e.account_id,
        calendar_id: e.calendar_id,
        provider_event_id: e.provider_event_id,
        client_event_id: e.client_event_id,
        ical_uid: e.ical_uid,
        version: e.version,
        start: e.start,
        end: e.end,
        status: e.status,
        transparency: e.transparency,
        recurrence: e.recurrence,
        recurrence_link: e.recurrence_link,
        created_at: e.created_at,
        updated_at: e.updated_at,
        managed: e.managed,
        event_type: e.event_type,
        ..Default::default()
    }
}

/// A time window `[start, end)`: what a sync page or a free/busy query
/// covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
}

/// The window at `field` of a request: required and ordered, else
/// `INVALID_ARGUMENT` naming the field.
pub fn window(field: &str, w: Option<&pb::TimeWindow>) -> Result<Window, Status> {
    let (start, end) = crate::checks::window(field, w)?;
    Ok(Window { start, end })
}

/// The password credentials a call carries, if that is what it carries.
pub fn password_credentials(
    c: Option<&pb::ProviderCredentials>,
) -> Option<&pb::PasswordCredentials> {
    match c.and_then(|c| c.secret.as_ref()) {
        Some(Secret::Password(p)) => Some(p),
        _ => None,
    }
}

/// The provider account id and OAuth tokens a call carries, if that is
/// what it carries.
pub fn oauth_tokens(c: Option<&pb::ProviderCredentials>) -> Option<(&str, &pb::OAuthTokens)> {
    match c {
        Some(pb::ProviderCredentials {
            provider_account_id,
            secret: Some(Secret::Oauth(t)),
            ..
        }) => Some((provider_account_id, t)),
        _ => None,
    }
}

/// `UNAUTHENTICATED` for credentials of the wrong kind; `expected` says
/// what the adapter takes.
pub fn wrong_credentials(expected: &str) -> Status {
    ErrorKind::Unauthenticated(expected.to_string()).into()
}

/// `UNIMPLEMENTED` for an operation the provider does not offer:
/// `"<what> is not supported: <why>"`.
pub fn not_supported(what: &str, why: &str) -> Status {
    ErrorKind::Unimplemented(format!("{what} is not supported: {why}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event with every field set. Written out field by field (no
    /// `..Default::default()`), so adding a field to `Event` breaks this
    /// test until someone decides whether free/busy may show it.
    fn full_event() -> pb::Event {
        let t = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        let time = |s| pb::EventTime {
            value: Some(pb::event_time::Value::Instant(t(s))),
            time_zone: "Europe/London".into(),
        };
        pb::Event {
            account_id: "acct".into(),
            calendar_id: "cal".into(),
            provider_event_id: "ev".into(),
            client_event_id: "client".into(),
            ical_uid: "uid@example.com".into(),
            version: "\"1\"".into(),
            title: "Salary talk".into(),
            description: "private notes".into(),
            location: "Room 4".into(),
            start: Some(time(1_000)),
            end: Some(time(2_000)),
            status: pb::EventStatus::Tentative as i32,
            transparency: pb::Transparency::Opaque as i32,
            attendees: vec![pb::Attendee {
                email: "ada@example.com".into(),
                ..Default::default()
            }],
            organizer: Some(pb::Organizer {
                email: "boss@example.com".into(),
                ..Default::default()
            }),
            recurrence: vec!["RRULE:FREQ=DAILY".into()],
            recurrence_link: Some(pb::RecurrenceLink {
                series_event_id: "series".into(),
                original_start: Some(time(1_000)),
            }),
            created_at: Some(t(10)),
            updated_at: Some(t(20)),
            managed: true,
            event_type: 1,
        }
    }

    #[test]
    fn the_free_busy_view_drops_content_and_keeps_times_status_and_ids() {
        let full = full_event();
        let view = free_busy_view(full.clone());
        let expected = pb::Event {
            title: String::new(),
            description: String::new(),
            location: String::new(),
            attendees: Vec::new(),
            organizer: None,
            ..full
        };
        assert_eq!(view, expected);
    }

    #[test]
    fn credentials_of_the_other_kind_are_not_read() {
        let password = pb::ProviderCredentials {
            provider_account_id: "ada".into(),
            secret: Some(Secret::Password(pb::PasswordCredentials {
                username: "ada".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            password_credentials(Some(&password)).map(|p| p.username.as_str()),
            Some("ada")
        );
        assert!(oauth_tokens(Some(&password)).is_none());
        let oauth = pb::ProviderCredentials {
            provider_account_id: "ada@example.com".into(),
            secret: Some(Secret::Oauth(pb::OAuthTokens::default())),
            ..Default::default()
        };
        assert_eq!(
            oauth_tokens(Some(&oauth)).map(|(a, _)| a),
            Some("ada@example.com")
        );
        assert!(password_credentials(Some(&oauth)).is_none());
        assert!(password_credentials(None).is_none());
    }

    #[test]
    fn not_supported_is_unimplemented_and_says_why() {
        let s = not_supported("CheckPassword", "this provider uses OAuth");
        assert_eq!(s.code(), tonic::Code::Unimplemented);
        assert!(s
            .message()
            .contains("CheckPassword is not supported: this provider uses OAuth"));
    }
}

/// Characters kept as they are in a path segment: the unreserved ones (RFC
/// 3986 §2.3); everything else is percent-encoded, `/` included, so an id
/// from a caller or a provider stays one segment below the base.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `base` (ending in `/`) followed by `segments`, each percent-encoded and
/// joined by `/`: the URL of a REST resource that cannot leave the base.
pub fn path_below(base: &str, segments: &[&str]) -> String {
    let mut s = base.to_string();
    for (i, seg) in segments.iter().enumerate() {
        if i > 0 {
            s.push('/');
        }
        s.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
    }
    s
}

#[cfg(test)]
mod path_tests {
    use super::path_below;

    #[test]
    fn every_segment_stays_one_segment_below_the_base() {
        assert_eq!(
            path_below(
                "https://api.example/v3/",
                &["calendars", "ada@example.com", "events"]
            ),
            "https://api.example/v3/calendars/ada%40example.com/events"
        );
        assert_eq!(
            path_below(
                "https://api.example/v3/",
                &["../../x", "a/b?c#d", "a-b.c_d~e"]
            ),
            "https://api.example/v3/..%2F..%2Fx/a%2Fb%3Fc%23d/a-b.c_d~e"
        );
    }
}
