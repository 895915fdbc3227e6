use super::*;
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
            s.sync_soon(&id, &c.calendar_id);
        }
    }
}

/// A successful sync that changed no event (no mirror signal).
fn synced_now(s: &Shared, k: usize, cal: &str) {
    let id = account_id(k);
    let mut st = s.store.sync_state(&id, cal).unwrap().unwrap_or_default();
    st.last_success_ms = Some(now_ms() - 1000 * (k as i64 + 1));
    s.store.put_sync_state(&id, cal, &st).unwrap();
}

fn put_event(s: &Shared, k: usize, cal: &str, pid: &str, start: i64, len: i64, busy: i32) {
    let id = account_id(k);
    let previous = s.store.event(&id, cal, pid).unwrap();
    let put = MirrorPut {
        provider_event_id: pid.into(),
        record: EventRecord {
            version: format!("{start}"),
            start_ms: start,
            end_ms: start + len,
            busy,
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
    if let Some(e) = s.store.event(&id, cal, pid).unwrap() {
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
    let st = s.store.sync_state(&id, cal).unwrap().unwrap_or_default();
    s.store
        .apply_sync_page(&PageCommit {
            tenant: "t",
            account: &id,
            calendar: cal,
            puts,
            removes,
            state: &st,
            changes: &[],
            now_ms: now_ms(),
        })
        .unwrap();
    s.mirror_changed(&id, cal);
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
        "t",
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
    format!("{:?}", query(s, "t", req))
}

fn explained(s: &Shared, req: &pb::QueryAvailabilityRequest, at: i64) -> String {
    let e = pb::ExplainAvailabilityRequest {
        query: Some(req.clone()),
        slot: Some(pb::TimeWindow {
            start: ts(at),
            end: ts(at + 30 * MIN),
        }),
    };
    format!("{:?}", explain(s, "t", &e))
}

fn revoked(s: &Shared, k: usize) -> bool {
    revoked_id(s, &account_id(k))
}

fn revoked_id(s: &Shared, id: &str) -> bool {
    s.store
        .account(id)
        .unwrap()
        .is_some_and(|a| a.status == pb::AccountStatus::Revoked as i32)
}

/// The cached answers (and explanations) equal those built afresh, for
/// the members whose accounts are not revoked (a revoked one fails the
/// request, see `revoked_members_fail_the_request`).
fn check_cache(s: &Shared, n: usize) -> Result<(), TestCaseError> {
    let mut req = request(n, pb::AvailabilityFormat::OverlappingSlots);
    let group = &mut req.groups[0];
    group.members.retain(|m| !revoked_id(s, &m.account_id));
    group.required = group.required.min(group.members.len() as u32);
    let probes: Vec<i64> = (0..6).map(|i| base() + i * 11 * 60 * MIN).collect();
    let cached = answer(s, &req);
    let cached_x: Vec<String> = probes.iter().map(|&t| explained(s, &req, t)).collect();
    s.availability_cache.clear();
    let fresh = answer(s, &req);
    prop_assert_eq!(&cached, &fresh);
    s.availability_cache.clear();
    let fresh_x: Vec<String> = probes.iter().map(|&t| explained(s, &req, t)).collect();
    prop_assert_eq!(cached_x, fresh_x);
    // Warm again for the next step.
    prop_assert_eq!(answer(s, &req), fresh);
    Ok(())
}

#[derive(Debug, Clone)]
enum Change {
    PutEvent {
        k: usize,
        work: bool,
        pid: u8,
        start5: i64,
        len5: i64,
        busy: i32,
    },
    RemoveEvent {
        k: usize,
        work: bool,
        pid: u8,
    },
    CreateHold {
        ks: Vec<usize>,
        start5: i64,
    },
    ReleaseHold(usize),
    PutHours {
        late: bool,
    },
    DeleteHours,
    SyncOff {
        k: usize,
    },
    SyncOn {
        k: usize,
    },
    NewCalendar {
        k: usize,
    },
    SyncedNow {
        k: usize,
    },
    Revoke {
        k: usize,
    },
    ReauthRequired {
        k: usize,
    },
}

fn arb_change(n: usize) -> impl Strategy<Value = Change> {
    let k = 0..n;
    prop_oneof![
        4 => (k.clone(), any::<bool>(), 0u8..6, 0i64..(3 * 288), 1i64..36, 1i32..4).prop_map(
            |(k, work, pid, start5, len5, busy)| Change::PutEvent { k, work, pid, start5, len5, busy }
        ),
        2 => (k.clone(), any::<bool>(), 0u8..6).prop_map(|(k, work, pid)| Change::RemoveEvent { k, work, pid }),
        2 => (prop::collection::vec(0..n, 1..3), 0i64..(3 * 288))
            .prop_map(|(ks, start5)| Change::CreateHold { ks, start5 }),
        1 => (0usize..4).prop_map(Change::ReleaseHold),
        1 => any::<bool>().prop_map(|late| Change::PutHours { late }),
        1 => Just(Change::DeleteHours),
        1 => k.clone().prop_map(|k| Change::SyncOff { k }),
        1 => k.clone().prop_map(|k| Change::SyncOn { k }),
        1 => k.clone().prop_map(|k| Change::NewCalendar { k }),
        2 => k.clone().prop_map(|k| Change::SyncedNow { k }),
        1 => k.clone().prop_map(|k| Change::Revoke { k }),
        1 => k.prop_map(|k| Change::ReauthRequired { k }),
    ]
}

/// Applies a change the way the scheduler's own code paths do (store
/// writes followed by the same signals).
fn apply(s: &Shared, c: &Change, holds: &mut Vec<String>) {
    let cal = |work: bool| if work { "work" } else { "primary" };
    // A revoked account takes no writes (the store refuses them, see
    // `a_revoked_account_takes_no_new_rows`): changes naming one are
    // refused as the scheduler's paths refuse them.
    let named = match c {
        Change::PutEvent { k, .. }
        | Change::RemoveEvent { k, .. }
        | Change::SyncOff { k }
        | Change::SyncOn { k }
        | Change::NewCalendar { k }
        | Change::SyncedNow { k } => Some(*k),
        _ => None,
    };
    if named.is_some_and(|k| revoked(s, k)) {
        return;
    }
    if let Change::CreateHold { ks, .. } = c {
        if ks.iter().any(|&k| revoked(s, k)) {
            let e = block_on(create_hold(
                s,
                "t",
                &pb::CreateHoldRequest {
                    account_ids: ks.iter().map(|&k| account_id(k)).collect(),
                    slot: Some(pb::TimeWindow {
                        start: ts(base()),
                        end: ts(base() + 45 * MIN),
                    }),
                    ttl_minutes: 30,
                },
            ))
            .expect_err("a hold on a revoked account");
            assert!(matches!(e, ErrorKind::FailedPrecondition(_)), "{e:?}");
            return;
        }
    }
    match c {
        Change::PutEvent {
            k,
            work,
            pid,
            start5,
            len5,
            busy,
        } => put_event(
            s,
            *k,
            cal(*work),
            &format!("e{pid}"),
            base() + start5 * 5 * MIN,
            len5 * 5 * MIN,
            *busy,
        ),
        Change::RemoveEvent { k, work, pid } => remove_event(s, *k, cal(*work), &format!("e{pid}")),
        Change::CreateHold { ks, start5 } => {
            let start = base() + start5 * 5 * MIN;
            let h = block_on(create_hold(
                s,
                "t",
                &pb::CreateHoldRequest {
                    account_ids: ks.iter().map(|&k| account_id(k)).collect(),
                    slot: Some(pb::TimeWindow {
                        start: ts(start),
                        end: ts(start + 45 * MIN),
                    }),
                    ttl_minutes: 30,
                },
            ))
            .unwrap();
            holds.push(h.hold_id);
        }
        Change::ReleaseHold(i) => {
            if !holds.is_empty() {
                let id = holds.remove(i % holds.len());
                block_on(release_hold(s, "t", &id)).unwrap();
            }
        }
        Change::PutHours { late } => {
            let (a, b) = if *late {
                ("12:00", "23:00")
            } else {
                ("08:00", "17:30")
            };
            put_hours(s, "wh0", hours("Asia/Tokyo", a, b));
        }
        Change::DeleteHours => {
            let _ = block_on(delete_working_hours(s, "t", "wh0"));
        }
        Change::SyncOff { k } => {
            // As SetCalendarSync does when turning sync off.
            let id = account_id(*k);
            if let Some(mut c) = s.store.calendar(&id, "work").unwrap() {
                c.synced = false;
                s.store.put_calendar(&id, &c).unwrap();
                s.store.clear_calendar_mirror(&id, "work").unwrap();
                s.mirror_changed(&id, "work");
            }
        }
        Change::SyncOn { k } => {
            // As SetCalendarSync does when turning sync on.
            let id = account_id(*k);
            if let Some(mut c) = s.store.calendar(&id, "other").unwrap() {
                c.synced = true;
                s.store.put_calendar(&id, &c).unwrap();
                s.sync_soon(&id, "other");
            }
        }
        Change::NewCalendar { k } => {
            // A refresh of the calendar list (SyncNow) that finds one
            // more synced calendar and a new primary zone.
            let id = account_id(*k);
            let account = s.store.account(&id).unwrap().unwrap();
            let mut cals = s.store.calendars(&id).unwrap();
            if cals.is_empty() {
                return;
            }
            for c in &mut cals {
                c.time_zone = "Australia/Lord_Howe".into();
            }
            cals.push(calendar(&format!("new{}", cals.len()), true, "UTC"));
            s.store
                .put_account_with_calendars(&account, &cals, 0)
                .unwrap();
            for c in &cals {
                if c.synced {
                    s.sync_soon(&id, &c.calendar_id);
                }
            }
        }
        Change::SyncedNow { k } => {
            for cal in ["primary", "work"] {
                if s.store.calendar(&account_id(*k), cal).unwrap().is_some() {
                    synced_now(s, *k, cal);
                }
            }
        }
        Change::Revoke { k } => {
            // As accounts::revoke does.
            let id = account_id(*k);
            let mut a = s.store.account(&id).unwrap().unwrap();
            a.status = pb::AccountStatus::Revoked as i32;
            s.store.put_account(&a).unwrap();
            crate::accounts::purge_revoked_rows(s, &id).unwrap();
        }
        Change::ReauthRequired { k } => {
            block_on(crate::accounts::mark_reauth_required(
                s,
                &account_id(*k),
                "test",
            ))
            .unwrap();
        }
    }
}

fn seeded(dir: &std::path::Path, n: usize) -> Shared {
    let s = Shared::for_test(dir);
    for k in 0..n {
        connect(&s, k);
        for (i, cal) in ["primary", "work"].iter().enumerate() {
            for j in 0..4 {
                put_event(
                    &s,
                    k,
                    cal,
                    &format!("e{j}"),
                    base() + (k as i64 * 97 + j * 333 + i as i64 * 51) * 5 * MIN,
                    (30 + 15 * j) * MIN,
                    1 + (j as i32 % 3),
                );
            }
        }
    }
    put_hours(&s, "wh0", hours("Europe/London", "09:00", "17:00"));
    put_hours(&s, "wh3", hours("America/New_York", "09:00", "17:00"));
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn cached_participants_answer_like_fresh_ones_after_every_change(
        changes in prop::collection::vec(arb_change(4), 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = seeded(dir.path(), 4);
        let mut holds = Vec::new();
        check_cache(&s, 4)?;
        for c in &changes {
            apply(&s, c, &mut holds);
            check_cache(&s, 4)?;
        }
    }
}

#[test]
fn revoked_members_fail_the_request_naming_them_even_when_cached() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path(), 3);
    let req = request(3, pb::AvailabilityFormat::OverlappingSlots);
    // Cached while the account was active.
    query(&s, "t", &req).unwrap();
    apply(&s, &Change::Revoke { k: 1 }, &mut Vec::new());
    for e in [
        query(&s, "t", &req).map(|_| ()),
        explain(
            &s,
            "t",
            &pb::ExplainAvailabilityRequest {
                query: Some(req.clone()),
                slot: Some(pb::TimeWindow {
                    start: ts(base()),
                    end: ts(base() + 30 * MIN),
                }),
            },
        )
        .map(|_| ()),
    ] {
        match e {
            Err(ErrorKind::FailedPrecondition(m)) => {
                assert!(m.contains("groups[0].members[1].account_id"), "{m}");
                assert!(m.contains("acc1") && m.contains("revoked"), "{m}");
            }
            other => panic!("a revoked member answered {other:?}"),
        }
    }
}

#[test]
fn an_unchanged_participant_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path(), 4);
    let req = request(4, pb::AvailabilityFormat::Slots);
    let first = query(&s, "t", &req).unwrap();
    let (participants, intervals) = s.availability_cache.usage();
    assert_eq!(participants, 4);
    assert!(intervals > 0);
    let (_, g) = prepare(&s, "t", &req).unwrap();
    let (_, again) = prepare(&s, "t", &req).unwrap();
    for (a, b) in g.built.iter().zip(&again.built) {
        assert!(Arc::ptr_eq(a, b), "the same built participant is reused");
    }
    assert_eq!(query(&s, "t", &req).unwrap(), first);
    // A mirror change rebuilds that account only.
    put_event(&s, 1, "primary", "x", base() + 600 * MIN, 30 * MIN, 1);
    let (_, after) = prepare(&s, "t", &req).unwrap();
    assert!(!Arc::ptr_eq(&after.built[1], &g.built[1]));
    assert!(Arc::ptr_eq(&after.built[0], &g.built[0]));
}

#[test]
fn stale_calendars_fail_the_request() {
    // One account consults 2 calendars, four consult 7.
    for n in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let s = seeded(dir.path(), n);
        let mut req = request(n, pb::AvailabilityFormat::Slots);
        req.max_staleness_seconds = 3600;
        let ok = query(&s, "t", &req).unwrap();
        let consulted: Vec<(String, String)> = ok
            .freshness
            .iter()
            .map(|f| (f.account_id.clone(), f.calendar_id.clone()))
            .collect();
        let mut expected = Vec::new();
        for k in 0..n {
            let cals: &[&str] = if k % 3 == 2 {
                &["work"]
            } else {
                &["primary", "work"]
            };
            for c in cals {
                expected.push((account_id(k), c.to_string()));
            }
        }
        assert_eq!(consulted, expected, "in member order");
        let id = account_id(n - 1);
        let mut st = s.store.sync_state(&id, "work").unwrap().unwrap();
        st.last_success_ms = Some(now_ms() - 7200 * 1000);
        s.store.put_sync_state(&id, "work", &st).unwrap();
        match query(&s, "t", &req) {
            Err(ErrorKind::FailedPrecondition(m)) => {
                assert!(m.contains(&format!("{id}/work")), "{m}")
            }
            other => panic!("unexpected {other:?}"),
        }
        req.max_staleness_seconds = 0;
        let again = query(&s, "t", &req).unwrap();
        assert_eq!(again.slots, ok.slots);
    }
}

#[test]
fn an_expired_hold_no_longer_blocks_a_cached_participant() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path(), 1);
    let mut req = request(1, pb::AvailabilityFormat::Periods);
    req.groups[0].members[0].working_hours_id.clear();
    let before = query(&s, "t", &req).unwrap();
    let start = base() + 12 * 60 * MIN;
    s.store
        .put_hold(
            "t",
            &HoldRecord {
                hold_id: "h1".into(),
                account_ids: vec![account_id(0)],
                start_ms: start,
                end_ms: start + 60 * MIN,
                expires_ms: now_ms() + 300,
            },
        )
        .unwrap();
    // As create_hold does after storing it.
    s.availability_cache.holds_changed();
    let held = query(&s, "t", &req).unwrap();
    assert_ne!(held, before, "the hold blocks its hour");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(query(&s, "t", &req).unwrap(), before, "expired: free again");
}

const WEEK: i64 = 7 * 86_400_000;

/// Seeds `people` as accounts of tenant "t", shifted by whole weeks so
/// the scenario lies in the future; returns the request.
fn seed_scenario(s: &Shared, n: usize) -> pb::QueryAvailabilityRequest {
    let (req, people, now) = engine::scenario(n, 42);
    let weeks = (now_ms() - now) / WEEK + 1;
    let shift = weeks * WEEK;
    let mut ids = Vec::new();
    for (i, p) in people.iter().enumerate() {
        let id = format!("acc_{i:024}");
        let account = AccountRecord {
            sealed_credentials: vec![7; 120],
            sealed_identity: vec![9; 60],
            identity_hash: "h".repeat(64),
            ..AccountRecord::for_test(&id)
        };
        let cal = CalendarRecord {
            calendar_id: "primary".into(),
            sealed_name: vec![3; 40],
            primary: true,
            read_only: false,
            time_zone: p.time_zone().name().into(),
            synced: true,
            color: "#123456".into(),
        };
        s.store
            .put_account_with_calendars(&account, &[cal], 0)
            .unwrap();
        let puts: Vec<MirrorPut> = p
            .busy()
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let (start_ms, end_ms, all_day) = match b.span {
                    engine::BusySpan::Timed { start_ms, end_ms } => {
                        (start_ms + shift, end_ms + shift, None)
                    }
                    engine::BusySpan::AllDay { start, end } => {
                        use chrono::Datelike;
                        let (a, b) = (
                            start + chrono::Duration::weeks(weeks),
                            end + chrono::Duration::weeks(weeks),
                        );
                        let ms = |d: NaiveDate| {
                            engine::local_to_utc(
                                p.time_zone(),
                                d.and_time(NaiveTime::MIN),
                                engine::Edge::Start,
                            )
                        };
                        (
                            ms(a),
                            ms(b),
                            Some((a.num_days_from_ce(), b.num_days_from_ce())),
                        )
                    }
                };
                let busy = match b.status {
                    engine::BusyStatus::Busy => pb::BusyStatus::Busy,
                    engine::BusyStatus::Tentative => pb::BusyStatus::Tentative,
                    engine::BusyStatus::OutOfOffice => pb::BusyStatus::OutOfOffice,
                    engine::BusyStatus::Free => pb::BusyStatus::Unspecified,
                } as i32;
                MirrorPut {
                    provider_event_id: format!("ev{k}"),
                    record: EventRecord {
                        version: "1".into(),
                        start_ms,
                        end_ms,
                        busy,
                        client_event_id: None,
                        all_day,
                        written_hash: None,
                        sealed: vec![1; 200],
                    },
                    previous_start_ms: None,
                    previous_client_id: None,
                }
            })
            .collect();
        let st = crate::store::SyncRecord {
            cursor: "c".repeat(40),
            last_success_ms: Some(now_ms()),
            ..Default::default()
        };
        s.store
            .apply_sync_page(&PageCommit {
                tenant: "t",
                account: &id,
                calendar: "primary",
                puts: &puts,
                removes: &[],
                state: &st,
                changes: &[],
                now_ms: 0,
            })
            .unwrap();
        let wh = scenario_hours(p, weeks).unwrap();
        s.store
            .put_working_hours("t", &format!("wh{i}"), &wh.encode_to_vec())
            .unwrap();
        ids.push((id, p.max_events_per_day(), p.max_events_per_week()));
    }
    let member = |i: usize| pb::AvailabilityMember {
        account_id: ids[i].0.clone(),
        working_hours_id: format!("wh{i}"),
        max_events_per_day: ids[i].1,
        max_events_per_week: ids[i].2,
        ..Default::default()
    };
    scenario_request(&req, member, shift)
}

/// Server-side time of `QueryAvailability` on the benchmark scenario
/// (`HN` participants, default 50; `HR` runs), without gRPC and without
/// a sync loop competing: `cargo test --release -p calbridge-scheduler
/// --lib server_side_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn server_side_timing() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, runs) = (env("HN", 50), env("HR", 200));
    let dir = tempfile::tempdir().unwrap();
    let s = Shared::for_test(dir.path());
    let req = seed_scenario(&s, n);
    let t = std::time::Instant::now();
    let first = query(&s, "t", &req).unwrap();
    let cold = t.elapsed();
    let mut times: Vec<std::time::Duration> = (0..runs)
        .map(|_| {
            let t = std::time::Instant::now();
            assert_eq!(query(&s, "t", &req).unwrap(), first);
            t.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "request {} bytes, response {} bytes",
        req.encoded_len(),
        first.encoded_len()
    );
    let (kept, intervals) = s.availability_cache.usage();
    println!(
        "{n} participants, {} slots: first {cold:?}, then p50 {:?} p99 {:?}; \
         cache: {kept} participants, {intervals} intervals ({} + {} + 2 x {} bytes each)",
        first.slots.len(),
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        std::mem::size_of::<engine::BusyInterval>(),
        std::mem::size_of::<Source>(),
        std::mem::size_of::<(i64, i64)>(),
    );
}

#[test]
fn eviction_keeps_the_most_recently_used_participants() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path(), 2);
    let req = request(2, pb::AvailabilityFormat::Slots);
    query(&s, "t", &req).unwrap();
    let mut inner = s.availability_cache.lock();
    assert_eq!(inner.participants, 2);
    let ticks: Vec<u64> = inner
        .accounts
        .values()
        .flatten()
        .map(|b| b.last_used.load(Ordering::Relaxed))
        .collect();
    // Pretend the bound was exceeded: everything older than 3/4 goes.
    inner.participants = MAX_CACHED_PARTICIPANTS + 1;
    evict(&mut inner);
    assert!(inner.participants <= 2);
    let kept: Vec<u64> = inner
        .accounts
        .values()
        .flatten()
        .map(|b| b.last_used.load(Ordering::Relaxed))
        .collect();
    assert!(kept.iter().all(|t| t >= ticks.iter().min().unwrap()));
    assert_eq!(
        inner.intervals,
        inner
            .accounts
            .values()
            .flatten()
            .map(|b| b.weight())
            .sum::<usize>()
    );
}

#[test]
fn working_hours_convert_with_fields_named() {
    let h = pb::WorkingHours {
        time_zone: "Europe/London".into(),
        weekly: vec![pb::WeeklyRule {
            weekday: 1,
            start: "09:00".into(),
            end: "17:30".into(),
        }],
        overrides: vec![pb::DateOverride {
            date: "2026-12-24".into(),
            ranges: vec![],
        }],
    };
    let (tz, wh) = convert_hours("hours", &h).unwrap();
    assert_eq!(tz, chrono_tz::Europe::London);
    assert_eq!(wh.weekly[0].range.end_minute, 17 * 60 + 30);
    assert_eq!(wh.overrides[0].date.day(), 24);

    let bad = pb::WorkingHours {
        time_zone: "Mars/Base".into(),
        weekly: vec![pb::WeeklyRule {
            weekday: 8,
            start: "17:00".into(),
            end: "09:00".into(),
        }],
        overrides: vec![],
    };
    let fields: Vec<String> = convert_hours("hours", &bad)
        .unwrap_err()
        .0
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        vec![
            "hours.time_zone",
            "hours.weekly[0].weekday",
            "hours.weekly[0].end"
        ]
    );
}

#[test]
fn working_hours_lists_are_bounded_and_dates_unique() {
    let day = |d: &str| pb::DateOverride {
        date: d.into(),
        ranges: vec![],
    };
    let hours = |overrides| pb::WorkingHours {
        time_zone: "Europe/London".into(),
        weekly: vec![],
        overrides,
    };
    let fields = |h: &pb::WorkingHours| -> Vec<String> {
        convert_hours("hours", h)
            .err()
            .map(|i| i.0.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    let h = hours(vec![
        day("2026-12-24"),
        day("0000-01-01"),
        day("2026-12-24"),
    ]);
    assert_eq!(
        fields(&h),
        vec!["hours.overrides[1].date", "hours.overrides[2].date"]
    );
    let h = hours(vec![day("2026-12-24"); limits::MAX_DATE_OVERRIDES + 1]);
    assert_eq!(fields(&h), vec!["hours.overrides"]);
    let mut h = hours(vec![day("2026-12-24")]);
    h.overrides[0].ranges = vec![
        pb::LocalRange {
            start: "09:00".into(),
            end: "10:00".into(),
        };
        limits::MAX_OVERRIDE_RANGES + 1
    ];
    h.weekly = vec![
        pb::WeeklyRule {
            weekday: 1,
            start: "09:00".into(),
            end: "17:00".into(),
        };
        limits::MAX_WEEKLY_RULES + 1
    ];
    assert_eq!(
        fields(&h),
        vec!["hours.weekly", "hours.overrides[0].ranges"]
    );
}

#[test]
fn hh_mm_accepts_midnight_as_an_end_only() {
    assert_eq!(parse_hhmm("00:00"), Some(0));
    assert_eq!(parse_hhmm("24:00"), Some(1440));
    assert_eq!(parse_hhmm("25:00"), None);
}
