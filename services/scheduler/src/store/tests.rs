use super::*;

/// The id key of the stores these tests open (the same across reopens).
fn ids() -> IdCipher {
    IdCipher::from_raw(&[7; 32])
}

use calbridge::pb::ChangeKind;

use crate::ids::{AccountId, CalendarId, TenantId};

/// The tenant and calendar of the tests' pages.
static T: std::sync::LazyLock<TenantId> = std::sync::LazyLock::new(|| "t".into());
static CAL: std::sync::LazyLock<CalendarId> = std::sync::LazyLock::new(|| "cal".into());

fn draft(kind: ChangeKind) -> ChangeDraft {
    ChangeDraft {
        kind,
        account_id: "a".into(),
        calendar_id: "c".into(),
        provider_event_id: "e".into(),
        account_status: calbridge::pb::AccountStatus::Unspecified,
        sealed_event: vec![],
    }
}

fn record(start: i64, end: i64) -> EventRecord {
    EventRecord {
        series: false,
        version: "v1".into(),
        start_ms: start,
        end_ms: end,
        busy: calbridge::pb::BusyStatus::Busy,
        client_event_id: Some("mine".into()),
        all_day: None,
        written_hash: None,
        sealed: vec![1, 2, 3],
    }
}

#[test]
fn change_sequences_are_per_tenant_and_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    s.append_changes(
        &TenantId::from("t1"),
        &[
            draft(ChangeKind::EventCreated),
            draft(ChangeKind::EventUpdated),
        ],
        0,
    )
    .unwrap();
    s.append_changes(&TenantId::from("t2"), &[draft(ChangeKind::EventCreated)], 0)
        .unwrap();
    s.append_changes(&TenantId::from("t1"), &[draft(ChangeKind::EventDeleted)], 0)
        .unwrap();
    let seqs: Vec<u64> = s
        .changes_after(&TenantId::from("t1"), 0, 100)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(
        s.changes_after(&TenantId::from("t1"), 2, 100)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.log_bounds(&TenantId::from("t2")).unwrap().head, 1);
}

#[test]
fn pruning_moves_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    s.append_changes(
        &TenantId::from("t"),
        &[
            draft(ChangeKind::EventCreated),
            draft(ChangeKind::EventCreated),
        ],
        10,
    )
    .unwrap();
    s.append_changes(&TenantId::from("t"), &[draft(ChangeKind::EventCreated)], 50)
        .unwrap();
    assert_eq!(s.prune_changes(&TenantId::from("t"), 20).unwrap(), 2);
    let b = s.log_bounds(&TenantId::from("t")).unwrap();
    assert_eq!((b.head, b.pruned_through), (3, 2));
    assert_eq!(
        s.changes_after(&TenantId::from("t"), 0, 10).unwrap()[0].seq,
        3
    );
}

#[test]
fn overlap_query_uses_start_and_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    let st = SyncRecord::default();
    let puts: Vec<MirrorPut> = [(0, 10, "a"), (5, 30, "b"), (40, 50, "c"), (-100, -50, "d")]
        .iter()
        .map(|(a, b, id)| MirrorPut {
            provider_event_id: (*id).into(),
            record: EventRecord {
                client_event_id: None,
                ..record(*a, *b)
            },
            previous_start_ms: None,
            previous_client_id: None,
        })
        .collect();
    s.apply_sync_page(&PageCommit {
        tenant: &crate::ids::TenantId::from("t"),
        account: &crate::ids::AccountId::from("acc"),
        calendar: &crate::ids::CalendarId::from("cal"),
        puts: &puts,
        removes: &[],
        state: &st,
        changes: &[],
        now_ms: 0,
    })
    .unwrap();
    let ids: Vec<String> = s
        .events_overlapping(
            &AccountId::from("acc"),
            &CalendarId::from("cal"),
            8,
            45,
            None,
            100,
        )
        .unwrap()
        .into_iter()
        .map(|(_, id, _)| id)
        .collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    let page = s
        .events_overlapping(
            &AccountId::from("acc"),
            &CalendarId::from("cal"),
            8,
            45,
            Some((0, "a")),
            100,
        )
        .unwrap();
    assert_eq!(page.len(), 2);
}

#[test]
fn a_write_commit_removes_the_outbox_entry_and_maps_the_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    let op = OutboxRecord::for_test(7, "acc");
    s.outbox_put(&op).unwrap();
    let put = MirrorPut {
        provider_event_id: "p1".into(),
        record: record(0, 10),
        previous_start_ms: None,
        previous_client_id: None,
    };
    s.commit_write(
        &AccountId::from("acc"),
        &CalendarId::from("cal"),
        Some(&put),
        &[],
        7,
    )
    .unwrap();
    assert!(s.outbox_all().unwrap().is_empty());
    assert_eq!(
        s.provider_id_for_client(&AccountId::from("acc"), &CalendarId::from("cal"), "mine")
            .unwrap()
            .as_deref(),
        Some("p1")
    );
}

fn revoked_account(id: &str) -> AccountRecord {
    AccountRecord {
        status: calbridge::pb::AccountStatus::Revoked,
        ..AccountRecord::for_test(id)
    }
}

fn channel_record(id: &str, account: &str) -> ChannelRecord {
    ChannelRecord {
        channel_id: id.into(),
        account_id: account.into(),
        calendar_id: "cal".into(),
        token_hash: String::new(),
        resource_id: String::new(),
        expires_ms: 0,
    }
}

fn hold_record(id: &str, accounts: &[&str]) -> HoldRecord {
    HoldRecord {
        hold_id: id.into(),
        account_ids: accounts.iter().map(|a| (*a).into()).collect(),
        start_ms: 0,
        end_ms: 10,
        expires_ms: i64::MAX,
    }
}

fn page<'a>(account: &'a AccountId, puts: &'a [MirrorPut], st: &'a SyncRecord) -> PageCommit<'a> {
    PageCommit {
        tenant: &T,
        account,
        calendar: &CAL,
        puts,
        removes: &[],
        state: st,
        changes: &[],
        now_ms: 0,
    }
}

/// Every row that names `account`, tree by tree (the account record
/// and the change log aside).
fn rows_naming(s: &Store, account: &str) -> Vec<String> {
    let p = prefix(&[account]);
    let mut out = Vec::new();
    for (name, tree) in [
        ("calendars", &s.calendars),
        ("sync", &s.sync),
        ("events", &s.events),
        ("event_index", &s.event_index),
        ("client_ids", &s.client_ids),
    ] {
        for k in tree.scan_prefix(&p).keys() {
            out.push(format!("{name} {:?}", k.unwrap()));
        }
    }
    out.extend(
        s.channels()
            .unwrap()
            .into_iter()
            .filter(|c| c.account_id == account)
            .map(|c| format!("channel {}", c.channel_id)),
    );
    out.extend(
        s.outbox_all()
            .unwrap()
            .into_iter()
            .filter(|o| o.account_id == account)
            .map(|o| format!("outbox {}", o.op_id)),
    );
    out.extend(
        s.holds(&TenantId::from("t"))
            .unwrap()
            .into_iter()
            .filter(|h| h.account_ids.iter().any(|a| a == account))
            .map(|h| format!("hold {}", h.hold_id)),
    );
    for item in s.identities.iter() {
        let (k, v) = item.unwrap();
        if v.as_ref() == account.as_bytes() {
            out.push(format!("identity {k:?}"));
        }
    }
    for item in s.auth_states.iter() {
        let (k, v) = item.unwrap();
        if dec::<AuthStateRecord>("auth state", &v).unwrap().account_id == account {
            out.push(format!("auth state {k:?}"));
        }
    }
    if s.all_sync_states()
        .unwrap()
        .iter()
        .any(|(a, _, _)| a == account)
    {
        out.push("sync state in memory".into());
    }
    out
}

/// Writes one row of `account` into every tree that can name it.
fn fill(s: &Store, account: &str) {
    let acc = AccountRecord {
        identity_hash: format!("id-{account}"),
        ..AccountRecord::for_test(account)
    };
    s.put_account_with_calendars(&acc, &[CalendarRecord::for_test("cal")], 0)
        .unwrap();
    let put = MirrorPut {
        provider_event_id: "p1".into(),
        record: record(0, 10),
        previous_start_ms: None,
        previous_client_id: None,
    };
    s.apply_sync_page(&page(&account.into(), &[put], &SyncRecord::default()))
        .unwrap();
    s.outbox_put(&OutboxRecord::for_test(s.next_id().unwrap(), account))
        .unwrap();
    s.put_channel(&channel_record(&format!("ch-{account}"), account))
        .unwrap();
    s.put_hold(
        &TenantId::from("t"),
        &hold_record(&format!("alone-{account}"), &[account]),
    )
    .unwrap();
    s.put_auth_state(
        &format!("state-{account}"),
        &AuthStateRecord {
            tenant_id: "t".into(),
            provider: calbridge::pb::Provider::Google,
            access_level: calbridge::pb::AccessLevel::FreeBusy,
            redirect_uri: String::new(),
            account_id: account.into(),
            wrapped_key: vec![],
            sealed_verifier: vec![],
            expires_ms: i64::MAX,
        },
    )
    .unwrap();
}

#[test]
fn a_revoked_account_takes_no_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    s.put_account_with_calendars(
        &AccountRecord::for_test("acc"),
        &[CalendarRecord::for_test("cal")],
        0,
    )
    .unwrap();
    s.purge_account_rows(&AccountId::from("acc")).unwrap();
    s.put_account(&revoked_account("acc")).unwrap();

    let put = MirrorPut {
        provider_event_id: "late".into(),
        record: record(0, 10),
        previous_start_ms: None,
        previous_client_id: None,
    };
    let st = SyncRecord::default();
    let changes = [draft(calbridge::pb::ChangeKind::EventCreated)];
    let refused = |r: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(r, Err(StoreError::AccountRevoked)),
            "{what}: {r:?}"
        );
    };
    refused(
        s.apply_sync_page(&PageCommit {
            changes: &changes,
            ..page(&"acc".into(), std::slice::from_ref(&put), &st)
        }),
        "a sync page",
    );
    refused(
        s.commit_write(
            &AccountId::from("acc"),
            &CalendarId::from("cal"),
            Some(&put),
            &[],
            1,
        ),
        "a write's result",
    );
    refused(
        s.put_sync_state(&AccountId::from("acc"), &CalendarId::from("cal"), &st),
        "a sync state",
    );
    refused(
        s.put_account_with_calendars(
            &AccountRecord::for_test("acc"),
            &[CalendarRecord::for_test("cal")],
            0,
        ),
        "a reconnection",
    );
    refused(
        s.put_account(&AccountRecord::for_test("acc")),
        "an active record",
    );
    refused(
        s.put_account_with_changes(&AccountRecord::for_test("acc"), &changes, 0),
        "an active record with changes",
    );
    refused(
        s.append_account_changes(&AccountId::from("acc"), &TenantId::from("t"), &changes, 0),
        "a status change",
    );
    refused(
        s.put_calendar(&AccountId::from("acc"), &CalendarRecord::for_test("cal")),
        "a calendar",
    );
    refused(
        s.outbox_put(&OutboxRecord::for_test(9, "acc")),
        "a pending write",
    );
    refused(s.put_channel(&channel_record("ch", "acc")), "a channel");
    refused(
        s.put_hold(&TenantId::from("t"), &hold_record("h", &["other", "acc"])),
        "a hold",
    );
    assert_eq!(rows_naming(&s, "acc"), Vec::<String>::new());
    assert!(
        s.changes_after(&TenantId::from("t"), 0, 10)
            .unwrap()
            .is_empty(),
        "no change logged"
    );
    assert_eq!(
        s.account("acc").unwrap().unwrap().status,
        calbridge::pb::AccountStatus::Revoked
    );
    // A revoked record may still be written (revocation itself).
    s.put_account(&revoked_account("acc")).unwrap();
}

#[test]
fn purging_accounts_clears_every_tree_that_names_them_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    for a in ["gone", "kept"] {
        fill(&s, a);
    }
    s.put_hold(
        &TenantId::from("t"),
        &hold_record("shared", &["gone", "kept"]),
    )
    .unwrap();
    assert!(
        rows_naming(&s, "gone").len() >= 12,
        "{:?}",
        rows_naming(&s, "gone")
    );
    let kept_before = rows_naming(&s, "kept");

    let n = s
        .purge_accounts_rows(&std::iter::once(AccountId::from("gone")).collect())
        .unwrap();
    assert_eq!(rows_naming(&s, "gone"), Vec::<String>::new());
    // Calendar, sync state, event, index entry, client id, channel,
    // pending write, pending authorisation, identity, and two holds.
    assert_eq!(n, 11, "rows purged");
    assert_eq!(rows_naming(&s, "kept"), kept_before);
    // The hold both named still holds the other account.
    assert_eq!(
        s.hold(&TenantId::from("t"), "shared")
            .unwrap()
            .unwrap()
            .account_ids,
        vec!["kept".to_string()]
    );
    assert!(s
        .hold(&TenantId::from("t"), "alone-gone")
        .unwrap()
        .is_none());
    assert_eq!(
        s.event_count(&AccountId::from("gone"), &CalendarId::from("cal")),
        0
    );
    assert_eq!(
        s.event_count(&AccountId::from("kept"), &CalendarId::from("cal")),
        1
    );
    let after_reopen = {
        drop(s);
        reopen(dir.path())
    };
    assert_eq!(rows_naming(&after_reopen, "gone"), Vec::<String>::new());
}

#[test]
fn reopening_keeps_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), ids()).unwrap());
    let s = reopen(dir.path());
    assert_eq!(
        s.meta_get(SCHEMA_KEY).unwrap().unwrap(),
        SCHEMA_VERSION.to_be_bytes().to_vec()
    );
}

/// Opens the store again after its previous handle was dropped. sled
/// releases the directory's lock when its flusher thread has stopped,
/// which can be a moment after the drop: the open is retried until then.
fn reopen(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir, ids()) {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The `sync` tree decoded straight from sled, as `all_sync_states`
/// shows it.
fn tree_states(s: &Store) -> Vec<String> {
    let mut out: Vec<String> = s
        .sync
        .iter()
        .map(|item| {
            let (k, v) = item.unwrap();
            let k = String::from_utf8(k.to_vec()).unwrap();
            let (a, c) = k.split_once('\0').unwrap();
            let k = format!("{a}/{}", s.ids.open(c).unwrap());
            let st: SyncRecord = dec_ids(&s.ids, "sync", &v).unwrap();
            format!("{k} {st:?}")
        })
        .collect();
    out.sort();
    out
}

fn memory_states(s: &Store) -> Vec<String> {
    let mut out: Vec<String> = s
        .all_sync_states()
        .unwrap()
        .into_iter()
        .map(|(a, c, st)| format!("{a}/{c} {st:?}"))
        .collect();
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum SyncOp {
    Put(usize, usize, i64),
    Page(usize, usize, i64),
    Paused(usize, bool, i64),
    Clear(usize, usize),
    Connect(usize, Vec<bool>, i64),
    Purge(usize),
    Write(usize, usize, i64),
}

fn arb_sync_op() -> impl proptest::strategy::Strategy<Value = SyncOp> {
    use proptest::prelude::*;
    prop_oneof![
        (0..2usize, 0..3usize, 0..100i64).prop_map(|(a, c, t)| SyncOp::Put(a, c, t)),
        (0..2usize, 0..3usize, 0..100i64).prop_map(|(a, c, t)| SyncOp::Page(a, c, t)),
        (0..2usize, any::<bool>(), 0..100i64).prop_map(|(a, p, t)| SyncOp::Paused(a, p, t)),
        (0..2usize, 0..3usize).prop_map(|(a, c)| SyncOp::Clear(a, c)),
        (
            0..2usize,
            proptest::collection::vec(any::<bool>(), 0..3),
            0..100i64
        )
            .prop_map(|(a, cs, t)| SyncOp::Connect(a, cs, t)),
        (0..2usize).prop_map(SyncOp::Purge),
        (0..2usize, 0..3usize, 0..100i64).prop_map(|(a, c, t)| SyncOp::Write(a, c, t)),
    ]
}

/// A mirror put of `id` starting at `slot` hundred ms.
fn mirror_put(id: &str, slot: i64) -> MirrorPut {
    MirrorPut {
        provider_event_id: id.into(),
        record: EventRecord {
            client_event_id: None,
            ..record(slot * 100, slot * 100 + 50)
        },
        previous_start_ms: None,
        previous_client_id: None,
    }
}

fn mirror_remove(id: &str, slot: i64) -> MirrorRemove {
    MirrorRemove {
        provider_event_id: id.into(),
        start_ms: slot * 100,
        client_event_id: None,
    }
}

fn apply_sync_op(s: &Store, op: &SyncOp) {
    let acc = |a: usize| format!("acc{a}");
    let cal = |c: usize| format!("cal{c}");
    let state = |t: i64| SyncRecord {
        cursor: format!("cursor-{t}"),
        next_due_ms: t,
        last_success_ms: Some(t * 1000),
        failures: (t % 3) as u32,
        ..Default::default()
    };
    match op {
        SyncOp::Put(a, c, t) => s
            .put_sync_state(
                &AccountId::from(&acc(*a)),
                &CalendarId::from(&cal(*c)),
                &state(*t),
            )
            .unwrap(),
        SyncOp::Page(a, c, t) => s
            .apply_sync_page(&PageCommit {
                tenant: &crate::ids::TenantId::from("t"),
                account: &crate::ids::AccountId::from(acc(*a)),
                calendar: &crate::ids::CalendarId::from(cal(*c)),
                // Pages of odd times put one event and remove another
                // (each id has one start, so its index entry is found).
                puts: &if t % 2 == 1 {
                    vec![mirror_put(&format!("e{}", t % 4), t % 4)]
                } else {
                    vec![]
                },
                removes: &if t % 2 == 1 {
                    vec![mirror_remove(&format!("e{}", (t + 1) % 4), (t + 1) % 4)]
                } else {
                    vec![]
                },
                state: &state(*t),
                changes: &[draft(calbridge::pb::ChangeKind::EventCreated)],
                now_ms: *t,
            })
            .unwrap(),
        SyncOp::Paused(a, p, t) => s
            .set_account_paused(&AccountId::from(acc(*a).as_str()), *p, *t)
            .unwrap(),
        SyncOp::Clear(a, c) => s
            .clear_calendar_mirror(&AccountId::from(&acc(*a)), &CalendarId::from(&cal(*c)))
            .unwrap(),
        SyncOp::Write(a, c, t) => {
            let id = format!("w{}", t % 2);
            let (put, remove) = if t % 3 == 0 {
                (None, Some(mirror_remove(&id, t % 2)))
            } else {
                (Some(mirror_put(&id, t % 2)), None)
            };
            s.commit_write(
                &AccountId::from(&acc(*a)),
                &CalendarId::from(&cal(*c)),
                put.as_ref(),
                remove.as_slice(),
                1,
            )
            .unwrap()
        }
        SyncOp::Connect(a, synced, t) => {
            let account = AccountRecord::for_test(&acc(*a));
            let calendars: Vec<CalendarRecord> = synced
                .iter()
                .enumerate()
                .map(|(c, on)| CalendarRecord {
                    calendar_id: cal(c).into(),
                    sealed_name: vec![],
                    primary: c == 0,
                    read_only: false,
                    time_zone: "UTC".into(),
                    synced: *on,
                    color: String::new(),
                })
                .collect();
            s.put_account_with_calendars(&account, &calendars, *t)
                .unwrap()
        }
        SyncOp::Purge(a) => {
            s.purge_account_rows(&AccountId::from(acc(*a).as_str()))
                .unwrap();
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn sync_states_in_memory_and_event_counts_equal_the_trees_after_every_write(
        ops in proptest::collection::vec(arb_sync_op(), 1..24)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), ids()).unwrap();
        // Cells taken before any write (as a cached participant keeps
        // them) follow every later write.
        let cells: Vec<(String, String, Arc<FreshnessCell>)> = (0..2)
            .flat_map(|a| (0..3).map(move |c| (format!("acc{a}"), format!("cal{c}"))))
            .map(|(a, c)| {
                let cell = s.freshness(&AccountId::from(&a), &CalendarId::from(&c));
                (a, c, cell)
            })
            .collect();
        for op in &ops {
            apply_sync_op(&s, op);
            proptest::prop_assert_eq!(memory_states(&s), tree_states(&s), "after {:?}", op);
            // Counts kept between writes equal a fresh count.
            for (a, c, _) in &cells {
                let scanned = s.events.scan_prefix(cal_prefix(&s.ids, a, c)).count() as u64;
                proptest::prop_assert_eq!(s.event_count(&AccountId::from(a), &CalendarId::from(c)), scanned, "{}/{} after {:?}", a, c, op);
            }
            for (a, c, cell) in &cells {
                let stored = s.sync_state(&AccountId::from(a), &CalendarId::from(c)).unwrap().and_then(|st| st.last_success_ms);
                proptest::prop_assert_eq!(cell.get(), stored, "{}/{} after {:?}", a, c, op);
            }
        }
        let before = memory_states(&s);
        drop(s);
        let s = reopen(dir.path());
        proptest::prop_assert_eq!(memory_states(&s), before, "after reopening");
    }
}

#[test]
fn concurrent_sync_state_writers_leave_memory_and_counts_equal_to_the_trees() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), ids()).unwrap();
    std::thread::scope(|scope| {
        for w in 0..4i64 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..100i64 {
                    let op = match (w + i) % 4 {
                        0 => SyncOp::Put(0, 0, w * 1000 + i),
                        1 => SyncOp::Page(0, 0, w * 1000 + i),
                        2 => SyncOp::Paused(0, i % 2 == 0, w * 1000 + i),
                        _ => SyncOp::Connect(0, vec![true, i % 3 == 0], w * 1000 + i),
                    };
                    apply_sync_op(s, &op);
                }
            });
        }
        // Counts asked for while the pages write the mirror.
        let s = &s;
        scope.spawn(move || {
            for _ in 0..400 {
                s.event_count(&AccountId::from("acc0"), &CalendarId::from("cal0"));
            }
        });
    });
    assert_eq!(memory_states(&s), tree_states(&s));
    let scanned = s
        .events
        .scan_prefix(cal_prefix(&s.ids, "acc0", "cal0"))
        .count() as u64;
    assert_eq!(
        s.event_count(&AccountId::from("acc0"), &CalendarId::from("cal0")),
        scanned
    );
    let expected = s
        .sync_state(&AccountId::from("acc0"), &CalendarId::from("cal0"))
        .unwrap()
        .unwrap()
        .last_success_ms;
    assert!(expected.is_some());
    assert_eq!(
        s.freshness(&AccountId::from("acc0"), &CalendarId::from("cal0"))
            .get(),
        expected
    );
    assert_eq!(
        s.freshness(&AccountId::from("acc0"), &CalendarId::from("nope"))
            .get(),
        None
    );
    assert_eq!(
        s.freshness(&AccountId::from("nobody"), &CalendarId::from("cal0"))
            .get(),
        None
    );
}

#[test]
fn an_open_waits_for_a_lock_held_a_moment_longer_and_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let held = open_db(dir.path(), false).unwrap();
    assert!(db_file_locked(dir.path()), "sled's lock is seen");
    assert!(open_db(dir.path(), false).is_err(), "no waiting asked for");
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
    });
    let started = std::time::Instant::now();
    let db = open_db(dir.path(), true).expect("opened once the lock was released");
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    release.join().unwrap();
    drop(db);
    // An unlocked directory whose open fails for another reason is not
    // waited on: a file where sled wants its directory.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let started = std::time::Instant::now();
    assert!(open_db(&file, true).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
