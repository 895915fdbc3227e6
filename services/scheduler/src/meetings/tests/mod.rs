use super::*;
use crate::ids::{AccountId, CalendarId, TenantId};
use chrono::Datelike;
use std::sync::atomic::Ordering;

use crate::store::{AccountRecord, EventRecord, MirrorPut, MirrorRemove, PageCommit};
use proptest::prelude::*;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

const MIN: i64 = 60_000;

/// Midnight UTC two days from now: every test period lies after it.
fn base() -> i64 {
    (now_ms() / DAY_MS + 2) * DAY_MS
}

fn account_id(k: usize) -> String {
    format!("acc{k}")
}

fn calendar(id: &str, synced: bool, zone: &str) -> CalendarRecord {
    CalendarRecord {
        calendar_id: id.into(),
        sealed_name: Vec::new(),
        primary: id == "primary",
        read_only: false,
        time_zone: zone.into(),
        synced,
        color: String::new(),
    }
}

/// Connects account `k` of tenant "t" with a synced primary calendar, a
/// synced calendar "work" and an unsynced "other", as the scheduler
/// would (records, then the sync signal).
fn connect(s: &Shared, k: usize) {
    let id = account_id(k);
    let account = AccountRecord {
        identity_hash: format!("h{k}"),
        ..AccountRecord::for_test(&id)
    };
    let zone = ["Europe/London", "America/New_York", "Asia/Kathmandu"][k % 3];
    let cals = [
        calendar("primary", true, zone),
        calendar("work", true, zone),
        calendar("other", false, zone),
    ];
    s.store
        .put_account_with_calendars(&account, &cals, 0)
        .unwrap();
    for c in &cals {
        if c.synced {
            synced_now(s, k, &c.calendar_id);
            s.sync_soon(&AccountId::from(id.as_str()), &c.calendar_id);
        }
    }
}

/// A successful sync that changed no event (no mirror signal).
fn synced_now(s: &Shared, k: usize, cal: &str) {
    let id = account_id(k);
    let mut st = s
        .store
        .sync_state(&AccountId::from(&id), &CalendarId::from(cal))
        .unwrap()
        .unwrap_or_default();
    st.last_success_ms = Some(now_ms() - 1000 * (k as i64 + 1));
    s.store
        .put_sync_state(&AccountId::from(&id), &CalendarId::from(cal), &st)
        .unwrap();
}

fn put_event(s: &Shared, k: usize, cal: &str, pid: &str, start: i64, len: i64, busy: i32) {
    let id = account_id(k);
    let previous = s
        .store
        .event(&AccountId::from(&id), &CalendarId::from(cal), pid)
        .unwrap();
    let put = MirrorPut {
        provider_event_id: pid.into(),
        record: EventRecord {
            series: false,
            version: format!("{start}"),
            start_ms: start,
            end_ms: start + len,
            busy: calbridge::pb::BusyStatus::try_from(busy).expect("a busy status"),
            client_event_id: None,
            all_day: None,
            written_hash: None,
            sealed: Vec::new(),
        },
        previous_start_ms: previous.map(|p| p.start_ms),
        previous_client_id: None,
    };
    commit(s, k, cal, &[put], &[]);
}

fn remove_event(s: &Shared, k: usize, cal: &str, pid: &str) {
    let id = account_id(k);
    if let Some(e) = s
        .store
        .event(&AccountId::from(&id), &CalendarId::from(cal), pid)
        .unwrap()
    {
        let r = MirrorRemove {
            provider_event_id: pid.into(),
            start_ms: e.start_ms,
            client_event_id: None,
        };
        commit(s, k, cal, &[], &[r]);
    }
}

/// Applies a page as the sync loop does: store, then the signal.
fn commit(s: &Shared, k: usize, cal: &str, puts: &[MirrorPut], removes: &[MirrorRemove]) {
    let id = account_id(k);
    let st = s
        .store
        .sync_state(&AccountId::from(&id), &CalendarId::from(cal))
        .unwrap()
        .unwrap_or_default();
    s.store
        .apply_sync_page(&PageCommit {
            tenant: &crate::ids::TenantId::from("t"),
            account: &crate::ids::AccountId::from(id.as_str()),
            calendar: &crate::ids::CalendarId::from(cal),
            puts,
            removes,
            state: &st,
            changes: &[],
            now_ms: now_ms(),
        })
        .unwrap();
    s.mirror_changed(&AccountId::from(&id), &CalendarId::from(cal));
}

fn hours(zone: &str, start: &str, end: &str) -> pb::WorkingHours {
    pb::WorkingHours {
        time_zone: zone.into(),
        weekly: (1..=7)
            .map(|weekday| pb::WeeklyRule {
                weekday,
                start: start.into(),
                end: end.into(),
            })
            .collect(),
        overrides: Vec::new(),
    }
}

fn put_hours(s: &Shared, id: &str, h: pb::WorkingHours) {
    block_on(put_working_hours(
        s,
        &TenantId::from("t"),
        &pb::PutWorkingHoursRequest {
            working_hours_id: id.into(),
            hours: Some(h),
        },
    ))
    .unwrap();
}

/// Members: account 0 with stored hours "wh0", account 1 with inline
/// hours, account 2 without hours and only its "work" calendar.
fn request(n: usize, format: pb::AvailabilityFormat) -> pb::QueryAvailabilityRequest {
    let member = |k: usize| pb::AvailabilityMember {
        account_id: account_id(k),
        working_hours_id: if k.is_multiple_of(3) {
            format!("wh{k}")
        } else {
            String::new()
        },
        working_hours: (k % 3 == 1).then(|| hours("Europe/Berlin", "07:00", "19:00")),
        calendar_ids: if k % 3 == 2 {
            vec!["work".into()]
        } else {
            vec![]
        },
        max_events_per_day: if k == 1 { 3 } else { 0 },
        ..Default::default()
    };
    let b = base();
    pb::QueryAvailabilityRequest {
        groups: vec![pb::ParticipantGroup {
            members: (0..n).map(member).collect(),
            required: if n > 1 { n as u32 - 1 } else { 0 },
        }],
        duration_minutes: 30,
        periods: vec![pb::TimeWindow {
            start: ts(b),
            end: ts(b + 3 * DAY_MS),
        }],
        buffer_before_minutes: 5,
        buffer_after_minutes: 10,
        start_interval_minutes: 15,
        tentative_is_busy: true,
        format: format as i32,
        max_results: 1000,
        ..Default::default()
    }
}

fn answer(s: &Shared, req: &pb::QueryAvailabilityRequest) -> String {
    format!("{:?}", query(s, &TenantId::from("t"), req))
}

fn explained(s: &Shared, req: &pb::QueryAvailabilityRequest, at: i64) -> String {
    let e = pb::ExplainAvailabilityRequest {
        query: Some(req.clone()),
        slot: Some(pb::TimeWindow {
            start: ts(at),
            end: ts(at + 30 * MIN),
        }),
    };
    format!("{:?}", explain(s, &TenantId::from("t"), &e))
}

fn revoked(s: &Shared, k: usize) -> bool {
    revoked_id(s, &account_id(k))
}

fn revoked_id(s: &Shared, id: &str) -> bool {
    s.store
        .account(id)
        .unwrap()
        .is_some_and(|a| a.status == pb::AccountStatus::Revoked)
}

mod cache;
mod eviction;
mod hours;
mod scenario;
