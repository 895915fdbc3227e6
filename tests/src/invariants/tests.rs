//! The checks of [`super::verify`] against synthetic observations, each
//! with one planted fault.

use super::*;

fn change(seq: u64, account: &str, kind: ChangeKind, pid: &str, title: &str) -> pb::Change {
    pb::Change {
        sequence: seq,
        kind: kind as i32,
        account_id: account.into(),
        provider_event_id: pid.into(),
        event: Some(pb::Event {
            title: title.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mirror(entries: &[(&str, &str, &str)]) -> BTreeMap<String, MirrorEvent> {
    entries
        .iter()
        .map(|(pid, title, cid)| {
            (
                pid.to_string(),
                MirrorEvent {
                    title: title.to_string(),
                    start: None,
                    client_event_id: cid.to_string(),
                },
            )
        })
        .collect()
}

/// Two tenants' accounts A and B on one calendar; A wrote c1 (acked),
/// someone edited o1 outside; everything consistent.
fn world() -> (Ledger, Observed) {
    let mut l = Ledger::default();
    l.add_calendar(
        "dav",
        ProviderCalendar::Caldav {
            base: "http://127.0.0.1:1/".into(),
            username: "u".into(),
            password: "p".into(),
            href: "/u/cal/".into(),
        },
    );
    l.add_account("A", "t1", "dav", "/u/cal/");
    l.add_account("B", "t2", "dav", "/u/cal/");
    let i = l.begin_write("c1", "A", "/u/cal/k1.ics", Effect::Present("P c1 1".into()));
    l.end_write("c1", i, Outcome::Acked);
    l.outside_edit(
        "o1",
        "dav",
        "/u/cal/o1.ics",
        Effect::Present("O o1 2".into()),
    );
    let mut o = Observed::default();
    o.provider.insert(
        "dav".into(),
        BTreeMap::from([
            ("/u/cal/k1.ics".to_string(), "P c1 1".to_string()),
            ("/u/cal/o1.ics".to_string(), "O o1 2".to_string()),
        ]),
    );
    o.mirrors.insert(
        "A".into(),
        mirror(&[
            ("/u/cal/k1.ics", "P c1 1", "c1"),
            ("/u/cal/o1.ics", "O o1 2", ""),
        ]),
    );
    o.mirrors.insert(
        "B".into(),
        mirror(&[
            ("/u/cal/k1.ics", "P c1 1", ""),
            ("/u/cal/o1.ics", "O o1 2", ""),
        ]),
    );
    o.feeds.insert(
        "t1".into(),
        vec![
            change(1, "A", ChangeKind::EventCreated, "/u/cal/o1.ics", "O o1 1"),
            change(2, "A", ChangeKind::EventUpdated, "/u/cal/o1.ics", "O o1 2"),
        ],
    );
    o.feeds.insert(
        "t2".into(),
        vec![
            change(1, "B", ChangeKind::EventCreated, "/u/cal/o1.ics", "O o1 2"),
            change(2, "B", ChangeKind::EventCreated, "/u/cal/k1.ics", "P c1 1"),
        ],
    );
    (l, o)
}

fn kinds(l: &Ledger, o: &Observed) -> Vec<&'static str> {
    verify(l, o).into_iter().map(|v| v.kind).collect()
}

#[test]
fn a_consistent_world_has_no_violations() {
    let (l, o) = world();
    assert_eq!(verify(&l, &o), vec![]);
}

#[test]
fn a_write_applied_twice_is_found() {
    let (l, mut o) = world();
    o.provider
        .get_mut("dav")
        .unwrap()
        .insert("/u/cal/k1-again.ics".into(), "P c1 1".into());
    assert!(kinds(&l, &o).contains(&"written more than once at the provider"));
}

#[test]
fn a_lost_acknowledged_write_is_found() {
    let (l, mut o) = world();
    o.provider.get_mut("dav").unwrap().remove("/u/cal/k1.ics");
    let found = kinds(&l, &o);
    assert!(found.contains(&"acknowledged write not at the provider as acknowledged"));
    assert!(found.contains(&"mirror differs from provider"));
}

#[test]
fn a_write_in_doubt_may_or_may_not_have_happened() {
    let (mut l, mut o) = world();
    l.starts.insert("P c1 2".into(), Utc::now());
    l.begin_write("c1", "A", "/u/cal/k1.ics", Effect::Absent);
    assert_eq!(verify(&l, &o), vec![], "the delete's answer is not in yet");
    o.provider.get_mut("dav").unwrap().remove("/u/cal/k1.ics");
    o.mirrors.get_mut("A").unwrap().remove("/u/cal/k1.ics");
    o.mirrors.get_mut("B").unwrap().remove("/u/cal/k1.ics");
    o.feeds.get_mut("t2").unwrap().push(change(
        3,
        "B",
        ChangeKind::EventDeleted,
        "/u/cal/k1.ics",
        "P c1 1",
    ));
    assert_eq!(verify(&l, &o), vec![]);
}

#[test]
fn an_echo_of_the_accounts_own_write_is_found() {
    let (l, mut o) = world();
    o.feeds.get_mut("t1").unwrap().push(change(
        3,
        "A",
        ChangeKind::EventCreated,
        "/u/cal/k1.ics",
        "P c1 1",
    ));
    assert!(kinds(&l, &o).contains(&"echo of the account's own write"));
}

#[test]
fn gaps_duplicates_and_lost_changes_in_a_feed_are_found() {
    let (l, mut o) = world();
    o.feeds.get_mut("t1").unwrap()[1].sequence = 3;
    assert!(kinds(&l, &o).contains(&"feed not numbered without gaps"));

    let (l, mut o) = world();
    let again = o.feeds["t2"][0].clone();
    o.feeds.get_mut("t2").unwrap().push(pb::Change {
        sequence: 3,
        ..again
    });
    assert!(kinds(&l, &o).contains(&"duplicate or impossible change"));

    let (l, mut o) = world();
    o.feeds.get_mut("t1").unwrap().pop();
    assert!(kinds(&l, &o).contains(&"feed does not replay to the mirror"));
}

#[test]
fn a_change_after_revoked_and_a_surviving_mirror_are_found() {
    let (mut l, mut o) = world();
    l.revoked("B");
    let mut mirror_b = o.mirrors.remove("B").unwrap();
    let feed = o.feeds.get_mut("t2").unwrap();
    for ch in feed.iter_mut() {
        ch.event = None;
    }
    feed.push(pb::Change {
        sequence: 3,
        kind: ChangeKind::AccountStatus as i32,
        account_id: "B".into(),
        account_status: AccountStatus::Revoked as i32,
        ..Default::default()
    });
    o.revoked.insert(
        "B".into(),
        RevokedProbe {
            status: format!("{:?}", AccountStatus::Revoked),
            list_events_error: Some("FailedPrecondition".into()),
            events: 0,
        },
    );
    assert_eq!(verify(&l, &o), vec![]);

    let mut late = o.clone();
    late.feeds.get_mut("t2").unwrap().push(pb::Change {
        sequence: 4,
        event: None,
        ..change(4, "B", ChangeKind::EventDeleted, "/u/cal/o1.ics", "")
    });
    assert!(kinds(&l, &late).contains(&"change after REVOKED"));

    mirror_b.clear();
    o.revoked.get_mut("B").unwrap().list_events_error = None;
    assert!(kinds(&l, &o).contains(&"revoked account still has a mirror"));
}

#[test]
fn settling_pins_what_the_provider_holds() {
    let (mut l, o) = world();
    l.starts.insert("P c1 2".into(), Utc::now());
    let i = l.begin_write("c1", "A", "/u/cal/k1.ics", Effect::Present("P c1 2".into()));
    l.end_write("c1", i, Outcome::InDoubt);
    l.settle_writes(&o);
    let w = &l.writes["c1"];
    assert_eq!(w.settled, Effect::Present("P c1 1".into()));
    assert!(w.ops.is_empty());
    assert_eq!(l.writes_of("c1"), 2);
}
