//! Request validation: API requests decoded from arbitrary bytes (the first
//! byte picks the request, the rest is its protobuf encoding) and put
//! through the checks the scheduler's API and the adapters run on them
//! (`calbridge::validate`, `calbridge::checks`); a request that passes is
//! turned into what the adapters write (the CalDAV object, the Google
//! request body), and one that fails into the gRPC status the caller gets.
//!
//! The scheduler's handlers are not callable without a store, so each
//! request kind repeats its handler's sequence of checks here (see
//! `services/scheduler/src/api.rs`).

use calbridge::validate::{check_event, check_id, check_window};
use calbridge::{limits, pb, ErrorKind, Invalid};
use calbridge_adapter_caldav::{ics, mapping};
use calbridge_adapter_google::mapping::{event_body, BodyOptions};
use prost::Message;
use tonic::Status;

/// The request kinds, in the order the first input byte picks them.
pub const KINDS: &[&str] = &[
    "UpsertEventRequest",
    "ListEventsRequest",
    "QueryFreeBusyRequest",
    "DeleteEventRequest",
    "ProviderCreateEventRequest",
    "ProviderFreeBusyRequest",
];

/// One request: `data[0]` picks its kind from [`KINDS`], the rest is its
/// encoding; input that does not decode is refused before any check runs,
/// as the gRPC server refuses it.
pub fn api_requests(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let outcome = match usize::from(kind) % KINDS.len() {
        0 => decode(body, upsert_event),
        1 => decode(body, list_events),
        2 => decode(body, query_free_busy),
        3 => decode(body, delete_event),
        4 => decode(body, provider_create_event),
        _ => decode(body, provider_free_busy),
    };
    if let Some(Err(status)) = outcome {
        answer(status);
    }
}

fn decode<M: Message + Default>(
    body: &[u8],
    check: fn(M) -> Result<(), Status>,
) -> Option<Result<(), Status>> {
    M::decode(body).ok().map(check)
}

/// What the caller receives for a refused request: the status as the
/// server sends it, read back as a client reads it.
fn answer(status: Status) {
    let _ = ErrorKind::from_status(&status);
    let _ = status.into_http::<()>();
}

fn refused(inv: Invalid) -> Result<(), Status> {
    inv.into_result().map_err(|i| ErrorKind::from(i).into())
}

/// What the adapters make of a valid event: the CalDAV object (read back
/// by the CalDAV reader) and the Google request body.
fn written(event: &pb::Event) {
    if let Ok(text) = ics::event_to_ics(event, "key@calbridge", 0, crate::now()) {
        let _ = mapping::parse_object(&text, None);
    }
    let _ = event_body(
        event,
        BodyOptions {
            id: Some("fuzz0123"),
            patch: false,
            instance: false,
        },
    );
}

fn upsert_event(r: pb::UpsertEventRequest) -> Result<(), Status> {
    let mut inv = Invalid::default();
    check_id(&mut inv, "account_id", &r.account_id, limits::MAX_ID_BYTES);
    check_id(
        &mut inv,
        "calendar_id",
        &r.calendar_id,
        limits::MAX_CALENDAR_ID_BYTES,
    );
    check_id(
        &mut inv,
        "client_event_id",
        &r.client_event_id,
        limits::MAX_ID_BYTES,
    );
    match &r.event {
        None => inv.push("event", "must be set"),
        Some(e) => check_event(&mut inv, "event", e),
    }
    if r.expected_version.len() > limits::MAX_ID_BYTES {
        inv.push("expected_version", "must be at most 256 bytes");
    }
    if r.hold_id.len() > limits::MAX_ID_BYTES {
        inv.push("hold_id", "must be at most 256 bytes");
    }
    refused(inv)?;
    written(r.event.as_ref().expect("checked: the event is set"));
    Ok(())
}

fn list_events(r: pb::ListEventsRequest) -> Result<(), Status> {
    let mut inv = Invalid::default();
    check_id(&mut inv, "account_id", &r.account_id, limits::MAX_ID_BYTES);
    check_id(
        &mut inv,
        "calendar_id",
        &r.calendar_id,
        limits::MAX_CALENDAR_ID_BYTES,
    );
    let _ = check_window(&mut inv, "window", r.window.as_ref());
    if r.page_size > 1000 {
        inv.push("page_size", "must be at most 1000");
    }
    refused(inv)
}

fn query_free_busy(r: pb::QueryFreeBusyRequest) -> Result<(), Status> {
    let mut inv = Invalid::default();
    if r.account_ids.is_empty() {
        inv.push("account_ids", "must name at least one account");
    } else if r.account_ids.len() > limits::MAX_FREE_BUSY_ACCOUNTS {
        inv.push("account_ids", "must name at most 2000 accounts");
    }
    for (i, id) in r.account_ids.iter().enumerate() {
        check_id(
            &mut inv,
            &format!("account_ids[{i}]"),
            id,
            limits::MAX_ID_BYTES,
        );
    }
    if let Some((s, e)) = check_window(&mut inv, "window", r.window.as_ref()) {
        if e - s > chrono::Duration::days(limits::MAX_FREE_BUSY_DAYS) {
            inv.push("window", "must be at most 366 days long");
        }
    }
    refused(inv)
}

fn delete_event(r: pb::DeleteEventRequest) -> Result<(), Status> {
    let mut inv = Invalid::default();
    check_id(&mut inv, "account_id", &r.account_id, limits::MAX_ID_BYTES);
    check_id(
        &mut inv,
        "calendar_id",
        &r.calendar_id,
        limits::MAX_CALENDAR_ID_BYTES,
    );
    match (r.client_event_id.is_empty(), r.provider_event_id.is_empty()) {
        (true, true) => inv.push(
            "client_event_id",
            "set client_event_id or provider_event_id",
        ),
        (false, false) => inv.push(
            "provider_event_id",
            "set only one of client_event_id and provider_event_id",
        ),
        (false, true) => check_id(
            &mut inv,
            "client_event_id",
            &r.client_event_id,
            limits::MAX_ID_BYTES,
        ),
        (true, false) => check_id(
            &mut inv,
            "provider_event_id",
            &r.provider_event_id,
            limits::MAX_CALENDAR_ID_BYTES,
        ),
    }
    refused(inv)
}

fn provider_create_event(r: pb::ProviderCreateEventRequest) -> Result<(), Status> {
    use calbridge::checks::{check_calendar_id, required, writable};
    writable(r.credentials.as_ref())?;
    check_calendar_id("calendar_id", &r.calendar_id)?;
    check_calendar_id("idempotency_key", &r.idempotency_key)?;
    let event = required("event", r.event.as_ref())?;
    written(event);
    Ok(())
}

fn provider_free_busy(r: pb::ProviderFreeBusyRequest) -> Result<(), Status> {
    use calbridge::checks::{check_calendar_id, window};
    for (i, id) in r.calendar_ids.iter().enumerate() {
        check_calendar_id(&format!("calendar_ids[{i}]"), id)?;
    }
    let _ = window("window", r.window.as_ref())?;
    Ok(())
}
