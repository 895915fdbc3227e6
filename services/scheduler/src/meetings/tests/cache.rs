//! Cached participants answer exactly as freshly built ones, through
//! every kind of change; revoked and stale members fail even when cached.

use super::*;

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
                &TenantId::from("t"),
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
                &TenantId::from("t"),
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
                block_on(release_hold(s, &TenantId::from("t"), &id)).unwrap();
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
            let _ = block_on(delete_working_hours(s, &TenantId::from("t"), "wh0"));
        }
        Change::SyncOff { k } => {
            // As SetCalendarSync does when turning sync off.
            let id = account_id(*k);
            if let Some(mut c) = s
                .store
                .calendar(&AccountId::from(&id), &CalendarId::from("work"))
                .unwrap()
            {
                c.synced = false;
                s.store
                    .put_calendar(&AccountId::from(id.as_str()), &c)
                    .unwrap();
                s.store
                    .clear_calendar_mirror(&AccountId::from(&id), &CalendarId::from("work"))
                    .unwrap();
                s.mirror_changed(&AccountId::from(&id), &CalendarId::from("work"));
            }
        }
        Change::SyncOn { k } => {
            // As SetCalendarSync does when turning sync on.
            let id = account_id(*k);
            if let Some(mut c) = s
                .store
                .calendar(&AccountId::from(&id), &CalendarId::from("other"))
                .unwrap()
            {
                c.synced = true;
                s.store
                    .put_calendar(&AccountId::from(id.as_str()), &c)
                    .unwrap();
                s.sync_soon(&AccountId::from(&id), &CalendarId::from("other"));
            }
        }
        Change::NewCalendar { k } => {
            // A refresh of the calendar list (SyncNow) that finds one
            // more synced calendar and a new primary zone.
            let id = account_id(*k);
            let account = s.store.account(&id).unwrap().unwrap();
            let mut cals = s.store.calendars(&AccountId::from(id.as_str())).unwrap();
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
                    s.sync_soon(&AccountId::from(id.as_str()), &c.calendar_id);
                }
            }
        }
        Change::SyncedNow { k } => {
            for cal in ["primary", "work"] {
                if s.store
                    .calendar(&AccountId::from(&account_id(*k)), &CalendarId::from(cal))
                    .unwrap()
                    .is_some()
                {
                    synced_now(s, *k, cal);
                }
            }
        }
        Change::Revoke { k } => {
            // As accounts::revoke does.
            let id = account_id(*k);
            let mut a = s.store.account(&id).unwrap().unwrap();
            a.status = pb::AccountStatus::Revoked;
            s.store.put_account(&a).unwrap();
            crate::accounts::purge_revoked_rows(s, &AccountId::from(id.as_str())).unwrap();
        }
        Change::ReauthRequired { k } => {
            block_on(crate::accounts::mark_reauth_required(
                s,
                &AccountId::from(account_id(*k).as_str()),
                "test",
            ))
            .unwrap();
        }
    }
}

pub(super) fn seeded(dir: &std::path::Path, n: usize) -> Shared {
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
    query(&s, &TenantId::from("t"), &req).unwrap();
    apply(&s, &Change::Revoke { k: 1 }, &mut Vec::new());
    for e in [
        query(&s, &TenantId::from("t"), &req).map(|_| ()),
        explain(
            &s,
            &TenantId::from("t"),
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
    let first = query(&s, &TenantId::from("t"), &req).unwrap();
    let (participants, intervals) = s.availability_cache.usage();
    assert_eq!(participants, 4);
    assert!(intervals > 0);
    let (_, g) = prepare(&s, &TenantId::from("t"), &req).unwrap();
    let (_, again) = prepare(&s, &TenantId::from("t"), &req).unwrap();
    for (a, b) in g.built.iter().zip(&again.built) {
        assert!(Arc::ptr_eq(a, b), "the same built participant is reused");
    }
    assert_eq!(query(&s, &TenantId::from("t"), &req).unwrap(), first);
    // A mirror change rebuilds that account only.
    put_event(&s, 1, "primary", "x", base() + 600 * MIN, 30 * MIN, 1);
    let (_, after) = prepare(&s, &TenantId::from("t"), &req).unwrap();
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
        let ok = query(&s, &TenantId::from("t"), &req).unwrap();
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
        let mut st = s
            .store
            .sync_state(&AccountId::from(&id), &CalendarId::from("work"))
            .unwrap()
            .unwrap();
        st.last_success_ms = Some(now_ms() - 7200 * 1000);
        s.store
            .put_sync_state(&AccountId::from(&id), &CalendarId::from("work"), &st)
            .unwrap();
        match query(&s, &TenantId::from("t"), &req) {
            Err(ErrorKind::FailedPrecondition(m)) => {
                assert!(m.contains(&format!("{id}/work")), "{m}")
            }
            other => panic!("unexpected {other:?}"),
        }
        req.max_staleness_seconds = 0;
        let again = query(&s, &TenantId::from("t"), &req).unwrap();
        assert_eq!(again.slots, ok.slots);
    }
}

#[test]
fn an_expired_hold_no_longer_blocks_a_cached_participant() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeded(dir.path(), 1);
    let mut req = request(1, pb::AvailabilityFormat::Periods);
    req.groups[0].members[0].working_hours_id.clear();
    let before = query(&s, &TenantId::from("t"), &req).unwrap();
    let start = base() + 12 * 60 * MIN;
    s.store
        .put_hold(
            &TenantId::from("t"),
            &HoldRecord {
                hold_id: "h1".into(),
                account_ids: vec![account_id(0).into()],
                start_ms: start,
                end_ms: start + 60 * MIN,
                expires_ms: now_ms() + 300,
            },
        )
        .unwrap();
    // As create_hold does after storing it.
    s.availability_cache.holds_changed();
    let held = query(&s, &TenantId::from("t"), &req).unwrap();
    assert_ne!(held, before, "the hold blocks its hour");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        query(&s, &TenantId::from("t"), &req).unwrap(),
        before,
        "expired: free again"
    );
}
