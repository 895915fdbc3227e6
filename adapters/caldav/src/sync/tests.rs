//! Tests of the sync cursor and listing helpers.

use super::cursor::{front_code, front_decode};
use super::*;

fn listing_state(hrefs: &[&str]) -> PageState {
    PageState {
        kind: PageKind::Listing,
        zone: Some(Tz::Europe__Berlin),
        events: 12,
        resources: 7,
        offset: 3,
        hrefs: hrefs.iter().map(|h| h.to_string()).collect(),
        after: Some("/c/z;|^,.ics".into()),
    }
}

#[test]
fn cursors_round_trip_with_tokens_and_hrefs_containing_separators() {
    let c = Cursor {
        mode: Mode::SyncToken,
        value: "http://radicale.org/ns/sync/abc|def;x,y".into(),
        recurring: [href_hash("/a.ics"), href_hash("/b.ics")]
            .into_iter()
            .collect(),
        window: Some(Covered {
            start: -86_400,
            end: 1_767_225_600,
        }),
        page: Some(listing_state(&[
            "/user/cal/a%40b.ics",
            "/user/cal/a|b.ics",
            "/user/cal/a;b,c^d.ics",
            "/user/cal/é\u{1}ü.ics",
            "https://p1.example.com/user/cal/z.ics",
        ])),
    };
    assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
    let bare = Cursor {
        mode: Mode::Ctag,
        value: "ae44".into(),
        recurring: BTreeSet::new(),
        window: None,
        page: None,
    };
    assert_eq!(bare.encode(), "v2|ct||-|ae44");
    assert_eq!(Cursor::decode(&bare.encode()), Some(bare));
    let pending = Cursor {
        mode: Mode::PendingToken,
        value: "\"47e4\"".into(),
        recurring: BTreeSet::new(),
        window: None,
        page: Some(PageState {
            kind: PageKind::Changes,
            zone: None,
            events: 0,
            resources: 0,
            offset: 0,
            hrefs: Vec::new(),
            after: None,
        }),
    };
    assert_eq!(Cursor::decode(&pending.encode()), Some(pending));
    let digest = Cursor {
        mode: Mode::PendingDigest,
        value: "0af3".into(),
        recurring: BTreeSet::new(),
        window: None,
        page: None,
    };
    assert_eq!(digest.encode(), "v2|pd||-|0af3");
    assert_eq!(Cursor::decode(&digest.encode()), Some(digest));
    assert_eq!(Cursor::decode("v1|pd|-||0af3"), None);
    // Cursors written before the window was kept carry none.
    let v2 = Cursor::decode("v2|st|ab12|-|tok|en").unwrap();
    assert_eq!((v2.window, v2.value.as_str()), (None, "tok|en"));
    assert!(v2.recurring.contains("ab12") && v2.page.is_none());
}

#[test]
fn a_window_moved_by_a_day_or_a_cursor_without_one_is_listed_again() {
    let day = chrono::Duration::days(1);
    let start = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 1, 1, 0, 0, 0).unwrap();
    let w = Window {
        start,
        end: start + day * 60,
    };
    let covered = Some(Covered::of(w));
    assert!(!Covered::moved(covered, w));
    let almost = chrono::Duration::seconds(WINDOW_SLACK_SECONDS - 1);
    let nudged = Window {
        start: w.start + almost,
        end: w.end + almost,
    };
    assert!(!Covered::moved(covered, nudged));
    for moved in [
        Window {
            start: w.start,
            end: w.end + day,
        },
        Window {
            start: w.start + day,
            end: w.end,
        },
        Window {
            start: w.start - day,
            end: w.end,
        },
    ] {
        assert!(Covered::moved(covered, moved), "{moved:?}");
    }
    assert!(Covered::moved(None, w));
}

#[test]
fn member_digests_ignore_order_and_href_spelling_but_not_etags() {
    let cal = Url::parse("https://dav.example/user/cal/").unwrap();
    let d = |m: &[(&'static str, &'static str)]| members_digest(&cal, m.iter().copied());
    let listed = d(&[
        ("/user/cal/a%40b.ics", "\"1\""),
        ("/user/cal/c.ics", "\"2\""),
    ]);
    assert_eq!(
        listed,
        d(&[
            ("https://dav.example/user/cal/c.ics", "\"2\""),
            ("/user/cal/a@b.ics", "\"1\"")
        ])
    );
    assert_ne!(
        listed,
        d(&[
            ("/user/cal/a%40b.ics", "\"1\""),
            ("/user/cal/c.ics", "\"3\"")
        ])
    );
    assert_ne!(listed, d(&[("/user/cal/a%40b.ics", "\"1\"")]));
}

#[test]
fn carried_hrefs_share_their_prefixes() {
    let hrefs: Vec<String> = (0..1000)
        .map(|i| format!("/user/cal/bench-{i:04}%40example.com.ics"))
        .collect();
    let coded = front_code(&hrefs);
    assert_eq!(front_decode(&coded).unwrap(), hrefs);
    // The calendar path and the common suffix are written once, not a
    // thousand times.
    assert_eq!(coded.matches("/user/cal/").count(), 1);
    assert_eq!(coded.matches("example.com").count(), 1);
    assert!(coded.len() < hrefs.iter().map(String::len).sum::<usize>() / 4);
    let uuids: Vec<String> = ["0b6f", "0b7a", "c2d1"]
        .iter()
        .map(|u| format!("/1/calendars/home/{u}-9e2c.ics"))
        .collect();
    assert_eq!(front_decode(&front_code(&uuids)).unwrap(), uuids);
    // Shared prefixes longer than one digit can say are cut at 61.
    let long = vec!["x".repeat(100) + "a", "x".repeat(100) + "b"];
    assert_eq!(front_decode(&front_code(&long)).unwrap(), long);
}

#[test]
fn settled_v1_cursors_still_read_and_v1_listings_restart() {
    let c = Cursor::decode("v1|st|-|abc,def|http://radicale.org/ns/sync/1|2").unwrap();
    assert_eq!(c.mode, Mode::SyncToken);
    assert_eq!(c.value, "http://radicale.org/ns/sync/1|2");
    assert_eq!(c.recurring.len(), 2);
    assert_eq!(c.page, None);
    assert_eq!(Cursor::decode("v1|ct|-||ae44").unwrap().mode, Mode::Ctag);
    // A v1 listing in progress carried an offset, not the hrefs.
    assert_eq!(Cursor::decode("v1|st|7||tok"), None);
    assert_eq!(Cursor::decode("v1|pt|-||tok"), None);
}

#[test]
fn foreign_cursors_are_refused() {
    for s in [
        "",
        "garbage",
        "v3|st|-||x",
        "v2|xx||-|x",
        "v2|st||X;;0;0;;|x",
        "v2|st||L;Mars/Base;0;0;;|x",
        "v2|st||L;;n;0;;|x",
        "v2|st||L;;0;0;;!0a|x",
        "v2|st||L;;0;0;;00a,55b|x",
        "v2|st||L;;0;0;^G1;|x",
        "v2|st||-",
        "v2|st|@x~1|-|x",
        "v2|st|@1-2|-|x",
        "v2|st|@1~2,@1~2|-|x",
    ] {
        assert_eq!(Cursor::decode(s), None, "{s}");
    }
}

#[test]
fn long_listings_are_carried_in_chunks() {
    let mut hrefs: Vec<String> = (0..MAX_CARRIED_HREFS + 3)
        .map(|i| format!("/c/{i:06}.ics"))
        .collect();
    let after = carry(&mut hrefs, MAX_CARRIED_HREFS);
    assert_eq!(hrefs.len(), MAX_CARRIED_HREFS);
    assert_eq!(after.as_deref(), hrefs.last().map(String::as_str));
    let mut short = vec!["/c/a.ics".to_string()];
    assert_eq!(carry(&mut short, MAX_CARRIED_HREFS), None);
    let mut two = vec!["/c/a.ics".to_string(), "/c/b.ics".to_string()];
    assert_eq!(carry(&mut two, 0).as_deref(), Some("/c/a.ics"));
}

#[test]
fn href_hashes_ignore_percent_encoding() {
    assert_eq!(href_hash("/c/a%20b.ics"), href_hash("/c/a b.ics"));
    assert_ne!(href_hash("/c/a.ics"), href_hash("/c/b.ics"));
}
