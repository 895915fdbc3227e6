//! Checks of request fields shared by the handlers, each naming the field
//! it finds wrong, and the tokens the API hands out for paging.

use base64::Engine;
use calbridge::limits;
use calbridge::validate::check_id;
use calbridge::{ErrorKind, Invalid};

/// Checks a request's one id field.
pub(super) fn require_id(field: &str, value: &str) -> Result<(), ErrorKind> {
    let mut inv = Invalid::default();
    check_id(&mut inv, field, value, limits::MAX_ID_BYTES);
    inv.into_result().map_err(ErrorKind::from)
}

/// An `account_id` field.
pub(super) fn account_id_field(inv: &mut Invalid, id: &str) {
    check_id(inv, "account_id", id, limits::MAX_ID_BYTES);
}

/// A `calendar_id` field.
pub(super) fn calendar_id_field(inv: &mut Invalid, id: &str) {
    check_id(inv, "calendar_id", id, limits::MAX_CALENDAR_ID_BYTES);
}

/// A `page_size` field: 0 means `default`, at most 1,000.
pub(super) fn page_size(inv: &mut Invalid, n: u32, default: u32) -> usize {
    match n {
        0 => default as usize,
        1..=1000 => n as usize,
        _ => {
            inv.push("page_size", "must be at most 1000");
            default as usize
        }
    }
}

/// The ListEvents page token of a position (start ms, provider event id).
pub(super) fn event_page_token(start_ms: i64, pid: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{start_ms}:{pid}"))
}

/// The position a ListEvents page token names.
pub(super) fn parse_event_page_token(t: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.to_string()))
}

/// An optional `expected_version`: at most a version's length.
pub(super) fn check_version(inv: &mut Invalid, version: &str) {
    if version.len() > limits::MAX_VERSION_BYTES {
        inv.push(
            "expected_version",
            format!("must be at most {} bytes", limits::MAX_VERSION_BYTES),
        );
    }
}

/// A change-feed cursor's length (its form is checked by the feed).
pub(super) fn check_cursor_len(cursor: &str) -> Result<(), ErrorKind> {
    if cursor.len() > limits::MAX_TOKEN_BYTES {
        return Err(Invalid::field("cursor", "is not a cursor returned by calbridge").into());
    }
    Ok(())
}

/// At least one of an event's two ids (an upsert by provider id may attach
/// the caller's id too), each within its bounds.
pub(super) fn at_least_one_id(inv: &mut Invalid, client: &str, provider: &str) {
    if client.is_empty() && provider.is_empty() {
        inv.push(
            "client_event_id",
            "set client_event_id, provider_event_id or both",
        );
        return;
    }
    if !client.is_empty() {
        check_id(inv, "client_event_id", client, limits::MAX_ID_BYTES);
    }
    if !provider.is_empty() {
        check_id(
            inv,
            "provider_event_id",
            provider,
            limits::MAX_CALENDAR_ID_BYTES,
        );
    }
}

/// Exactly one of an event's two ids.
pub(super) fn one_id(inv: &mut Invalid, client: &str, provider: &str) {
    match (client.is_empty(), provider.is_empty()) {
        (true, true) => inv.push(
            "client_event_id",
            "set client_event_id or provider_event_id",
        ),
        (false, false) => inv.push(
            "provider_event_id",
            "set only one of client_event_id and provider_event_id",
        ),
        (false, true) => check_id(inv, "client_event_id", client, limits::MAX_ID_BYTES),
        (true, false) => check_id(
            inv,
            "provider_event_id",
            provider,
            limits::MAX_CALENDAR_ID_BYTES,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(client: &str, provider: &str) -> Vec<String> {
        let mut inv = Invalid::default();
        at_least_one_id(&mut inv, client, provider);
        inv.0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn an_upsert_names_its_event_by_either_id_or_both_each_bounded() {
        assert!(named("mine", "").is_empty());
        assert!(named("", "evt-1").is_empty());
        assert!(named("mine", "evt-1").is_empty());
        assert_eq!(named("", ""), vec!["client_event_id"]);
        let long = "x".repeat(limits::MAX_CALENDAR_ID_BYTES + 1);
        assert_eq!(named("mine", &long), vec!["provider_event_id"]);
        assert_eq!(named("", "evt\u{202e}1"), vec!["provider_event_id"]);
        assert_eq!(
            named(&"c".repeat(limits::MAX_ID_BYTES + 1), "evt\n"),
            vec!["client_event_id", "provider_event_id"]
        );
    }
}
