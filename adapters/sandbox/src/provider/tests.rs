//! Tests of the in-memory provider: versions, cursors, series, passwords, free/busy and push.

use super::instances::approximate_size;
use super::*;
use calbridge::pb::Attendee;
use calbridge::time::instant;

const USER: &str = "ada@example.com";
const PRIMARY: &str = "ada@example.com/primary";

fn at(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, d, h, 0, 0).unwrap()
}

fn now() -> DateTime<Utc> {
    at(1, 0)
}

fn window() -> Window {
    Window {
        start: at(1, 0),
        end: Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap(),
    }
}

fn provider() -> Provider {
    let mut p = Provider::new();
    p.check_password(USER, "secret").unwrap();
    p
}

fn meeting(title: &str, d: u32, h: u32) -> Event {
    Event {
        title: title.into(),
        description: "agenda".into(),
        location: "room 1".into(),
        start: Some(instant(at(d, h), "")),
        end: Some(instant(at(d, h + 1), "")),
        attendees: vec![Attendee {
            email: "bob@example.com".into(),
            ..Default::default()
        }],
        organizer: Some(pb::Organizer {
            email: USER.into(),
            display_name: "Ada".into(),
        }),
        ..Default::default()
    }
}

fn create(p: &mut Provider, key: &str, e: Event) -> Event {
    p.create_event(USER, PRIMARY, e, key, now()).unwrap().event
}

fn sync(p: &Provider, cursor: &str, page_size: u32) -> Result<SyncEventsResponse> {
    p.sync(
        USER,
        PRIMARY,
        &SyncQuery {
            cursor,
            window: window(),
            page_size,
            busy_only: false,
        },
    )
}

/// Syncs every page from `cursor`; returns (upserted ids, deleted ids,
/// final cursor).
fn sync_all(p: &Provider, cursor: &str) -> (Vec<String>, Vec<String>, String) {
    let (mut up, mut del, mut cursor) = (Vec::new(), Vec::new(), cursor.to_string());
    loop {
        let r = sync(p, &cursor, 0).unwrap();
        up.extend(r.upserted.into_iter().map(|e| e.provider_event_id));
        del.extend(r.deleted);
        cursor = r.next_cursor;
        if !r.more {
            return (up, del, cursor);
        }
    }
}

#[test]
fn oversize_recurrence_is_refused_and_large_series_are_expanded_within_bounds() {
    let mut p = provider();
    let mut e = meeting("Daily", 5, 9);
    e.recurrence = vec!["EXDATE:20260110T090000Z".to_string(); 20_000];
    e.recurrence.insert(0, "RRULE:FREQ=DAILY".into());
    let refused = p.create_event(USER, PRIMARY, e.clone(), "k1", now());
    match refused {
        Err(ProviderError::Invalid(i)) => {
            assert_eq!(i.0[0].field, "event.recurrence", "{i:?}")
        }
        other => panic!("accepted: {other:?}"),
    }
    // An hourly series of a large event shows fewer instances, so that
    // one series stays within SERIES_BYTES.
    e.recurrence = vec!["RRULE:FREQ=HOURLY".into()];
    e.description = "d".repeat(60_000);
    create(&mut p, "k2", e.clone());
    let shown = sync(&p, "", MAX_PAGE_SIZE).unwrap().upserted;
    assert!(!shown.is_empty());
    assert!(
        shown.len() * approximate_size(&e) <= SERIES_BYTES,
        "{} instances",
        shown.len()
    );
}

#[test]
fn an_incremental_cursor_returns_only_changes_since() {
    let mut p = provider();
    let a = create(&mut p, "a", meeting("A", 5, 9));
    let b = create(&mut p, "b", meeting("B", 6, 9));
    let (up, del, cursor) = sync_all(&p, "");
    assert_eq!(
        up,
        vec![a.provider_event_id.clone(), b.provider_event_id.clone()]
    );
    assert!(del.is_empty());

    let (up, del, same) = sync_all(&p, &cursor);
    assert!(up.is_empty() && del.is_empty());
    assert_eq!(same, cursor);

    let c = create(&mut p, "c", meeting("C", 7, 9));
    p.update_event(
        USER,
        PRIMARY,
        &a.provider_event_id,
        meeting("A2", 5, 10),
        "",
        now(),
    )
    .unwrap();
    p.delete_event(USER, PRIMARY, &b.provider_event_id, "")
        .unwrap();
    let (mut up, del, _) = sync_all(&p, &cursor);
    up.sort();
    let mut want = vec![a.provider_event_id.clone(), c.provider_event_id];
    want.sort();
    assert_eq!(up, want);
    assert_eq!(del, vec![b.provider_event_id]);
}

#[test]
fn a_full_listing_is_paged_with_more_until_the_last_page() {
    let mut p = provider();
    for i in 0..5 {
        create(&mut p, &format!("k{i}"), meeting("M", 5 + i, 9));
    }
    let mut cursor = String::new();
    let mut pages = Vec::new();
    loop {
        let r = sync(&p, &cursor, 2).unwrap();
        assert!(r.full_listing);
        assert!(r.deleted.is_empty());
        pages.push(r.upserted.len());
        cursor = r.next_cursor;
        if !r.more {
            break;
        }
    }
    assert_eq!(pages, vec![2, 2, 1]);
    // The last page's cursor is the position at the start of the listing.
    let w = window();
    assert_eq!(
        cursor,
        format!("s2:5:{}:{}", w.start.timestamp(), w.end.timestamp())
    );
    let r = sync(&p, &cursor, 2).unwrap();
    assert!(!r.full_listing && !r.more && r.upserted.is_empty());
}

#[test]
fn incremental_changes_are_paged_too() {
    let mut p = provider();
    let (_, _, cursor) = sync_all(&p, "");
    for i in 0..5 {
        create(&mut p, &format!("k{i}"), meeting("M", 5 + i, 9));
    }
    let r = sync(&p, &cursor, 2).unwrap();
    assert!(r.more && !r.full_listing);
    assert_eq!(r.upserted.len(), 2);
    let (up, _, _) = sync_all(&p, &r.next_cursor);
    assert_eq!(up.len(), 3);
}

#[test]
fn an_expired_or_garbled_cursor_is_out_of_range() {
    let mut p = provider();
    create(&mut p, "a", meeting("A", 5, 9));
    let (_, _, cursor) = sync_all(&p, "");
    p.expire_journal(USER, PRIMARY).unwrap();
    assert_eq!(sync(&p, &cursor, 0), Err(ProviderError::CursorExpired));
    assert_eq!(sync(&p, "nonsense", 0), Err(ProviderError::CursorExpired));
    assert_eq!(sync(&p, "s1:999", 0), Err(ProviderError::CursorExpired));
    let status = tonic::Status::from(ProviderError::CursorExpired);
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert_eq!(status.message(), "sync cursor expired; resync from scratch");
    // A listing from scratch still works, and hands out a valid cursor.
    let (up, _, cursor) = sync_all(&p, "");
    assert_eq!(up.len(), 1);
    assert!(sync(&p, &cursor, 0).is_ok());
}

#[test]
fn cursors_older_than_the_retained_journal_expire() {
    let mut p = Provider::with_journal_retention(2);
    p.check_password(USER, "secret").unwrap();
    let (_, _, cursor) = sync_all(&p, "");
    for i in 0..3 {
        create(&mut p, &format!("k{i}"), meeting("M", 5 + i, 9));
    }
    assert_eq!(sync(&p, &cursor, 0), Err(ProviderError::CursorExpired));
    assert!(sync(&p, "s1:1", 0).is_ok());
}

#[test]
fn a_cursor_naming_no_window_lists_again_and_then_names_one() {
    let mut p = provider();
    create(&mut p, "a", meeting("A", 5, 9));
    let (_, _, cursor) = sync_all(&p, "");
    // The older form of that cursor, as handed out before windows were kept.
    let seq = cursor.split(':').nth(1).unwrap();
    let r = sync(&p, &format!("s1:{seq}"), 0).unwrap();
    assert!(r.full_listing);
    assert_eq!(r.upserted.len(), 1);
    assert_eq!(r.next_cursor, cursor);
    let r = sync(&p, &cursor, 0).unwrap();
    assert!(!r.full_listing && r.upserted.is_empty());
    // A window that is no window is no cursor of ours.
    assert_eq!(
        sync(&p, &format!("s2:{seq}:20:10"), 0),
        Err(ProviderError::CursorExpired)
    );
}

#[test]
fn a_replayed_create_returns_the_existing_event_as_already_existed() {
    let mut p = provider();
    let mut e = meeting("A", 5, 9);
    e.client_event_id = "client-1".into();
    let first = p
        .create_event(USER, PRIMARY, e.clone(), "abc123", now())
        .unwrap();
    assert!(!first.already_existed);
    assert_eq!(first.event.provider_event_id, "cbabc123");
    assert_eq!(first.event.client_event_id, "client-1");
    assert!(first.event.managed);
    e.title = "changed".into();
    let again = p.create_event(USER, PRIMARY, e, "abc123", now()).unwrap();
    assert!(again.already_existed);
    assert_eq!(again.event, first.event);
    assert_eq!(p.list_provider_events(USER, "").unwrap().len(), 1);
    // Keys that are not short lowercase alphanumerics get a uuid.
    let other = create(&mut p, "Key-With/Slash", meeting("B", 6, 9));
    assert_eq!(other.provider_event_id.len(), 32);
}

#[test]
fn an_update_with_a_stale_version_conflicts_with_the_current_version() {
    let mut p = provider();
    let e = create(&mut p, "a", meeting("A", 5, 9));
    let v1 = e.version.clone();
    let updated = p
        .update_event(
            USER,
            PRIMARY,
            &e.provider_event_id,
            meeting("A2", 5, 9),
            &v1,
            now(),
        )
        .unwrap();
    assert_ne!(updated.version, v1);
    let stale = p.update_event(
        USER,
        PRIMARY,
        &e.provider_event_id,
        meeting("A3", 5, 9),
        &v1,
        now(),
    );
    assert_eq!(
        stale,
        Err(ProviderError::VersionConflict {
            current: updated.version.clone()
        })
    );
    assert_eq!(
        p.delete_event(USER, PRIMARY, &e.provider_event_id, &v1),
        Err(ProviderError::VersionConflict {
            current: updated.version.clone()
        })
    );
    p.delete_event(USER, PRIMARY, &e.provider_event_id, &updated.version)
        .unwrap();
    assert_eq!(
        p.delete_event(USER, PRIMARY, &e.provider_event_id, ""),
        Err(ProviderError::EventNotFound)
    );
}

fn weekly_series(p: &mut Provider) -> Event {
    let mut e = meeting("Weekly", 5, 9);
    e.recurrence = vec![
        "RRULE:FREQ=WEEKLY;COUNT=6".into(),
        "EXDATE:20260112T090000Z".into(),
    ];
    create(p, "weekly", e)
}

#[test]
fn a_weekly_series_with_exdate_and_exceptions_expands_to_the_right_instances() {
    let mut p = provider();
    let series = weekly_series(&mut p);
    let sid = series.provider_event_id.clone();
    assert_eq!(sid, "cbweekly");
    // Move the 19 January instance to 14:00.
    let mut moved = meeting("Moved", 19, 14);
    moved.recurrence_link = Some(RecurrenceLink {
        series_event_id: sid.clone(),
        original_start: Some(instant(at(19, 9), "")),
    });
    p.put_event(USER, "", moved, now()).unwrap();
    // Cancel the 26 January instance.
    let mut cancelled = meeting("Weekly", 26, 9);
    cancelled.set_status(EventStatus::Cancelled);
    cancelled.recurrence_link = Some(RecurrenceLink {
        series_event_id: sid.clone(),
        original_start: Some(instant(at(26, 9), "")),
    });
    p.put_event(USER, "", cancelled, now()).unwrap();

    // Window: January only (the 2 February instance is outside).
    let r = sync(&p, "", 0).unwrap();
    let got: Vec<(String, String, i32)> = r
        .upserted
        .iter()
        .map(|e| {
            let start = bounds(e, None).unwrap().0;
            (e.provider_event_id.clone(), start.to_rfc3339(), e.status)
        })
        .collect();
    let confirmed = EventStatus::Confirmed as i32;
    let want = vec![
        (
            format!("{sid}_20260105T090000Z"),
            "2026-01-05T09:00:00+00:00".to_string(),
            confirmed,
        ),
        (
            format!("{sid}_20260119T090000Z"),
            "2026-01-19T14:00:00+00:00".to_string(),
            confirmed,
        ),
        (
            format!("{sid}_20260126T090000Z"),
            "2026-01-26T09:00:00+00:00".to_string(),
            EventStatus::Cancelled as i32,
        ),
    ];
    assert_eq!(got, want);
    for e in &r.upserted {
        assert!(e.recurrence.is_empty());
        assert_eq!(e.ical_uid, series.ical_uid);
        let link = e.recurrence_link.as_ref().unwrap();
        assert_eq!(link.series_event_id, sid);
    }
    assert_eq!(r.upserted[0].version, series.version);
    assert_eq!(r.upserted[1].title, "Moved");
    // The moved instance keeps its original start in the link.
    assert_eq!(
        r.upserted[1]
            .recurrence_link
            .as_ref()
            .unwrap()
            .original_start,
        Some(instant(at(19, 9), ""))
    );
    // Instances last as long as the series.
    let (s, e) = bounds(&r.upserted[0], None).unwrap();
    assert_eq!(e - s, Duration::hours(1));
}

#[test]
fn deleting_an_instance_reports_it_deleted_and_a_second_delete_is_not_found() {
    let mut p = provider();
    let sid = weekly_series(&mut p).provider_event_id;
    let (_, _, cursor) = sync_all(&p, "");
    let instance = format!("{sid}_20260119T090000Z");
    p.delete_event(USER, PRIMARY, &instance, "").unwrap();
    let (up, del, _) = sync_all(&p, &cursor);
    assert!(del.contains(&instance));
    assert!(!up.contains(&instance));
    // 5 and 26 January remain (12 January is an EXDATE).
    assert_eq!(up.len(), 2);
    assert_eq!(
        p.delete_event(USER, PRIMARY, &instance, ""),
        Err(ProviderError::EventNotFound)
    );
}

#[test]
fn updating_an_instance_creates_an_exception_with_its_own_version() {
    let mut p = provider();
    let series = weekly_series(&mut p);
    let instance = format!("{}_20260105T090000Z", series.provider_event_id);
    let e = p
        .update_event(
            USER,
            PRIMARY,
            &instance,
            meeting("Once", 5, 11),
            &series.version,
            now(),
        )
        .unwrap();
    assert_eq!(e.provider_event_id, instance);
    assert_ne!(e.version, series.version);
    let stale = p.update_event(
        USER,
        PRIMARY,
        &instance,
        meeting("Twice", 5, 11),
        &series.version,
        now(),
    );
    assert!(matches!(stale, Err(ProviderError::VersionConflict { .. })));
}

#[test]
fn changing_a_series_reports_instances_it_no_longer_produces_as_deleted() {
    let mut p = provider();
    let series = weekly_series(&mut p);
    let sid = series.provider_event_id.clone();
    let (_, _, cursor) = sync_all(&p, "");
    let mut shorter = meeting("Weekly", 5, 9);
    shorter.recurrence = vec!["RRULE:FREQ=WEEKLY;COUNT=2".into()];
    p.update_event(USER, PRIMARY, &sid, shorter, "", now())
        .unwrap();
    let (mut up, del, _) = sync_all(&p, &cursor);
    up.sort();
    assert_eq!(
        up,
        vec![
            format!("{sid}_20260105T090000Z"),
            format!("{sid}_20260112T090000Z")
        ]
    );
    assert!(del.contains(&format!("{sid}_20260119T090000Z")));
    assert!(del.contains(&format!("{sid}_20260126T090000Z")));
    assert!(!del.contains(&format!("{sid}_20260105T090000Z")));
}

#[test]
fn busy_only_strips_content_but_keeps_times_and_status() {
    let mut p = provider();
    let mut e = meeting("Secret plans", 5, 9);
    e.set_status(EventStatus::Tentative);
    create(&mut p, "a", e);
    let r = p
        .sync(
            USER,
            PRIMARY,
            &SyncQuery {
                cursor: "",
                window: window(),
                page_size: 0,
                busy_only: true,
            },
        )
        .unwrap();
    let e = &r.upserted[0];
    assert!(e.title.is_empty() && e.description.is_empty() && e.location.is_empty());
    assert!(e.attendees.is_empty() && e.organizer.is_none());
    assert_eq!(e.status(), EventStatus::Tentative);
    assert!(e.start.is_some() && e.end.is_some());
}

#[test]
fn a_wrong_password_is_rejected() {
    let mut p = provider();
    assert_eq!(
        p.check_password(USER, "guess"),
        Err(ProviderError::WrongCredentials)
    );
    assert_eq!(
        p.authenticate(USER, "guess"),
        Err(ProviderError::WrongCredentials)
    );
    assert_eq!(
        p.authenticate("nobody@example.com", "secret"),
        Err(ProviderError::WrongCredentials)
    );
    assert!(p.authenticate(USER, "secret").is_ok());
    let status = tonic::Status::from(ProviderError::WrongCredentials);
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(!status.message().contains("guess"));
}

#[test]
fn revoked_credentials_are_rejected_until_the_user_signs_in_again() {
    let mut p = provider();
    p.revoke_user_access(USER).unwrap();
    assert_eq!(
        p.authenticate(USER, "secret"),
        Err(ProviderError::WrongCredentials)
    );
    p.check_password(USER, "secret").unwrap();
    assert!(p.authenticate(USER, "secret").is_ok());
    p.revoke_user_access(USER).unwrap();
    p.create_user(USER, "new-secret").unwrap();
    assert!(p.authenticate(USER, "secret").is_err());
    assert!(p.authenticate(USER, "new-secret").is_ok());
}

#[test]
fn a_new_user_has_primary_team_and_read_only_holidays_calendars() {
    let p = provider();
    let cals = p.calendars(USER).unwrap();
    let ids: Vec<&str> = cals.iter().map(|c| c.calendar_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![PRIMARY, "ada@example.com/team", "ada@example.com/holidays"]
    );
    assert!(cals[0].primary && cals[0].name == USER && cals[0].time_zone == "UTC");
    assert!(!cals[1].read_only && cals[2].read_only);
}

#[test]
fn writes_to_the_holidays_calendar_are_refused() {
    let mut p = provider();
    let r = p.create_event(
        USER,
        "ada@example.com/holidays",
        meeting("A", 5, 9),
        "a",
        now(),
    );
    assert_eq!(r, Err(ProviderError::ReadOnly));
    // The holidays calendar shows New Year's Day as an all-day instance.
    let r = p
        .sync(
            USER,
            "ada@example.com/holidays",
            &SyncQuery {
                cursor: "",
                window: window(),
                page_size: 0,
                busy_only: false,
            },
        )
        .unwrap();
    assert_eq!(r.upserted.len(), 1);
    assert_eq!(r.upserted[0].provider_event_id, "new-year_20260101");
}

#[test]
fn invalid_events_name_their_fields() {
    let mut p = provider();
    let mut e = meeting("A", 5, 9);
    std::mem::swap(&mut e.start, &mut e.end);
    match p.create_event(USER, PRIMARY, e, "a", now()) {
        Err(ProviderError::Invalid(i)) => assert_eq!(i.0[0].field, "event.end"),
        other => panic!("unexpected {other:?}"),
    }
    let mut e = meeting("A", 5, 9);
    e.recurrence = vec!["RRULE:FREQ=NEVER".into()];
    match p.create_event(USER, PRIMARY, e, "b", now()) {
        Err(ProviderError::Invalid(i)) => assert_eq!(i.0[0].field, "event.recurrence"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn free_busy_reports_statuses_and_skips_free_events() {
    let mut p = provider();
    let mut tentative = meeting("T", 5, 9);
    tentative.set_status(EventStatus::Tentative);
    let mut ooo = meeting("O", 6, 9);
    ooo.set_event_type(EventType::OutOfOffice);
    let mut free = meeting("F", 7, 9);
    free.set_transparency(Transparency::Transparent);
    let mut wl = meeting("W", 8, 9);
    wl.set_event_type(EventType::WorkingLocation);
    create(&mut p, "o", ooo);
    create(&mut p, "t", tentative);
    create(&mut p, "f", free);
    create(&mut p, "w", wl);
    create(&mut p, "b", meeting("B", 9, 9));
    let busy = p.free_busy(USER, &[PRIMARY.to_string()], window()).unwrap();
    let statuses: Vec<i32> = busy.iter().map(|b| b.status).collect();
    assert_eq!(
        statuses,
        vec![
            BusyStatus::Tentative as i32,
            BusyStatus::OutOfOffice as i32,
            BusyStatus::Busy as i32
        ]
    );
    assert!(p.free_busy(USER, &["nope".to_string()], window()).is_err());
}

#[test]
fn notifications_go_to_unexpired_channels_of_the_changed_calendar() {
    let mut p = provider();
    let watch = |id: &str, calendar: &str, ttl| pb::StartWatchRequest {
        calendar_id: calendar.into(),
        channel_id: id.into(),
        channel_token: "token".into(),
        callback_endpoint: "http://127.0.0.1:1".into(),
        ttl_seconds: ttl,
        ..Default::default()
    };
    let ch = p
        .start_watch(USER, &watch("c1", PRIMARY, 0), now())
        .unwrap();
    assert_eq!(ch.resource_id, PRIMARY);
    assert_eq!(ch.expires_at, Some(ts(now() + Duration::seconds(3600))));
    p.start_watch(USER, &watch("c2", PRIMARY, 60), now())
        .unwrap();
    p.start_watch(USER, &watch("c3", "ada@example.com/team", 0), now())
        .unwrap();
    let later = now() + Duration::seconds(120);
    let n = p.notifications(PRIMARY, later);
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].channel_id.as_str(), n[0].message_number), ("c1", 1));
    assert!(!format!("{n:?}").contains("token"));
    assert_eq!(p.notifications(PRIMARY, later)[0].message_number, 2);
    p.stop_watch(USER, "c1");
    p.stop_watch(USER, "c1");
    assert!(p.notifications(PRIMARY, later).is_empty());
}
