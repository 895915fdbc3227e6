//! Tests of sync paging and cursors against a scripted event source.

use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::json;

/// Answers queued pages in order and records the queries.
struct Pages {
    pages: Mutex<VecDeque<Result<Value, GoogleError>>>,
    queries: Mutex<Vec<ListQuery>>,
}

impl Pages {
    fn new(pages: Vec<Value>) -> Self {
        Pages {
            pages: Mutex::new(pages.into_iter().map(Ok).collect()),
            queries: Mutex::new(Vec::new()),
        }
    }
    fn push(&self, page: Value) {
        self.pages.lock().unwrap().push_back(Ok(page));
    }
    fn fail(&self, e: GoogleError) {
        self.pages.lock().unwrap().push_back(Err(e));
    }
    fn queries(&self) -> Vec<ListQuery> {
        std::mem::take(&mut self.queries.lock().unwrap())
    }
}

impl EventSource for Pages {
    fn page(
        &self,
        q: &ListQuery,
    ) -> impl Future<Output = Result<model::EventsPage, GoogleError>> + Send {
        self.queries.lock().unwrap().push(q.clone());
        let next = self
            .pages
            .lock()
            .unwrap()
            .pop_front()
            .expect("a page was queued");
        async move { next.map(|v| serde_json::from_value(v).unwrap()) }
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn window() -> Window {
    Window {
        start: at("2026-01-01T00:00:00Z"),
        end: at("2026-03-01T00:00:00Z"),
    }
}

fn req(cursor: &str, page_size: usize) -> SyncRequest<'_> {
    SyncRequest {
        cursor,
        window: window(),
        page_size,
        busy_only: false,
    }
}

fn single(id: &str, day: u32) -> Value {
    json!({
        "kind": "calendar#event", "etag": format!("\"{id}-1\""), "id": id, "status": "confirmed",
        "summary": format!("Event {id}"),
        "start": {"dateTime": format!("2026-01-{day:02}T10:00:00Z"), "timeZone": "UTC"},
        "end": {"dateTime": format!("2026-01-{day:02}T11:00:00Z"), "timeZone": "UTC"},
    })
}

fn series() -> Value {
    json!({
        "kind": "calendar#event", "etag": "\"s-1\"", "id": "weekly", "status": "confirmed",
        "summary": "Weekly",
        "start": {"dateTime": "2026-01-05T09:00:00Z", "timeZone": "Europe/London"},
        "end": {"dateTime": "2026-01-05T10:00:00Z", "timeZone": "Europe/London"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"],
    })
}

fn moved_exception() -> Value {
    json!({
        "kind": "calendar#event", "etag": "\"x-1\"", "id": "weekly_20260112T090000Z",
        "status": "confirmed", "summary": "Weekly (moved)", "recurringEventId": "weekly",
        "originalStartTime": {"dateTime": "2026-01-12T09:00:00Z", "timeZone": "Europe/London"},
        "start": {"dateTime": "2026-01-12T14:00:00Z", "timeZone": "Europe/London"},
        "end": {"dateTime": "2026-01-12T15:00:00Z", "timeZone": "Europe/London"},
    })
}

fn cancelled_instance() -> Value {
    json!({
        "kind": "calendar#event", "etag": "\"c-1\"", "id": "weekly_20260119T090000Z",
        "status": "cancelled", "recurringEventId": "weekly",
        "originalStartTime": {"dateTime": "2026-01-19T09:00:00Z", "timeZone": "Europe/London"},
    })
}

fn page(items: Vec<Value>, next_page: Option<&str>, next_sync: Option<&str>) -> Value {
    let mut p = json!({"kind": "calendar#events", "timeZone": "Europe/London", "items": items});
    if let Some(t) = next_page {
        p["nextPageToken"] = json!(t);
    }
    if let Some(t) = next_sync {
        p["nextSyncToken"] = json!(t);
    }
    p
}

fn ids(r: &pb::SyncEventsResponse) -> Vec<&str> {
    r.upserted
        .iter()
        .map(|e| e.provider_event_id.as_str())
        .collect()
}

#[test]
fn cursors_round_trip_and_foreign_ones_are_refused() {
    let c = Cursor {
        sync_token: Some("CPDAlvWDx70CEPDAlvWDx70CGAU=|x".into()),
        max_results: 250,
        horizon: 1_800_000_000,
        window_start: 1_790_000_000,
        series: [id_hash("a"), id_hash("b")].into_iter().collect(),
        listing: Some(Listing {
            full: true,
            page_token: Some("EjYKKD".into()),
            offset: 3,
            item_events: 250,
            time_min: 1,
            time_max: 2,
            exceptions: [id_hash("a_20260101")].into_iter().collect(),
            series: BTreeSet::new(),
        }),
    };
    let s = c.encode();
    assert!(s.starts_with("g1."));
    assert!(s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    assert_eq!(Cursor::decode(&s), Some(c));
    for bad in ["", "garbage", "g1.!!!", "g2.e30", "g1.e30"] {
        assert_eq!(Cursor::decode(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn a_series_of_more_instances_than_a_page_is_split_across_pages_and_bounded() {
    let flood = json!({
        "kind": "calendar#event", "etag": "\"f-1\"", "id": "flood", "status": "confirmed",
        "summary": "Flood",
        "start": {"dateTime": "2026-01-01T00:00:00Z", "timeZone": "UTC"},
        "end": {"dateTime": "2026-01-01T00:01:00Z", "timeZone": "UTC"},
        "recurrence": ["RRULE:FREQ=MINUTELY"],
    });
    let listing = page(
        vec![single("a1111", 5), flood, single("b2222", 6)],
        None,
        Some("sync-1"),
    );
    // Each call reads the page again, from the item it stopped in.
    let src = Pages::new(vec![listing.clone(); 6]);
    let mut cursor = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut skipped = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        let r = sync(&src, &req(&cursor, 2500)).await.unwrap();
        assert!(
            r.upserted.len() <= 2500,
            "call {calls}: {}",
            r.upserted.len()
        );
        for e in &r.upserted {
            assert!(
                seen.insert(e.provider_event_id.clone()),
                "twice: {}",
                e.provider_event_id
            );
        }
        skipped.extend(r.skipped.clone());
        cursor = r.next_cursor.clone();
        if !r.more {
            break;
        }
    }
    assert_eq!(calls, 6);
    assert_eq!(seen.len(), calbridge::expansion::MAX_INSTANCES + 2);
    assert!(seen.contains("a1111") && seen.contains("b2222"));
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].item_id, "flood");
}

#[tokio::test]
async fn a_full_listing_follows_empty_pages_until_no_page_token_is_left() {
    let src = Pages::new(vec![
        page(vec![single("a1111", 5)], Some("p2"), None),
        page(vec![], Some("p3"), None),
        page(vec![], Some("p4"), None),
        page(vec![single("b2222", 6)], None, Some("sync-1")),
    ]);
    let r = sync(&src, &req("", 100)).await.unwrap();
    assert_eq!(ids(&r), vec!["a1111", "b2222"]);
    assert!(r.full_listing && !r.more);
    let q = src.queries();
    assert_eq!(q.len(), 4);
    assert_eq!(q[0].sync_token, None);
    assert_eq!(q[0].time_min, Some(window().start));
    assert_eq!(q[0].time_max, Some(window().end));
    assert_eq!(q[0].max_results, 100);
    assert_eq!(q[3].page_token.as_deref(), Some("p4"));
    assert_eq!(
        q[3].time_min,
        Some(window().start),
        "page requests repeat the parameters"
    );

    // The next sync is incremental, without time bounds.
    src.push(page(vec![], None, Some("sync-2")));
    let r2 = sync(&src, &req(&r.next_cursor, 100)).await.unwrap();
    assert!(!r2.full_listing && !r2.more && r2.upserted.is_empty());
    let q = src.queries();
    assert_eq!(q[0].sync_token.as_deref(), Some("sync-1"));
    assert_eq!((q[0].time_min, q[0].time_max), (None, None));
    assert_eq!(q[0].max_results, 100);
    assert_eq!(
        Cursor::decode(&r2.next_cursor)
            .unwrap()
            .sync_token
            .as_deref(),
        Some("sync-2")
    );
}

#[tokio::test]
async fn a_long_run_of_empty_pages_answers_more_with_nothing() {
    let src = Pages::new(
        (0..MAX_REQUESTS_PER_CALL)
            .map(|i| page(vec![], Some(&format!("p{i}")), None))
            .collect(),
    );
    let r = sync(&src, &req("", 50)).await.unwrap();
    assert!(r.more && r.full_listing && r.upserted.is_empty());
    let c = Cursor::decode(&r.next_cursor).unwrap();
    assert_eq!(
        c.listing.unwrap().page_token.as_deref(),
        Some(format!("p{}", MAX_REQUESTS_PER_CALL - 1).as_str())
    );
    src.push(page(vec![single("z9999", 9)], None, Some("s")));
    let r2 = sync(&src, &req(&r.next_cursor, 50)).await.unwrap();
    assert_eq!(ids(&r2), vec!["z9999"]);
    assert!(r2.full_listing && !r2.more);
}

#[tokio::test]
async fn a_series_is_expanded_with_its_exceptions_in_any_order() {
    // Exception and cancellation before the master, on earlier pages.
    let src = Pages::new(vec![
        page(vec![moved_exception()], Some("p2"), None),
        page(vec![cancelled_instance(), series()], None, Some("s1")),
    ]);
    let r = sync(&src, &req("", 100)).await.unwrap();
    assert_eq!(
        ids(&r),
        vec![
            "weekly_20260112T090000Z",
            "weekly_20260105T090000Z",
            "weekly_20260126T090000Z"
        ]
    );
    assert_eq!(r.upserted[0].title, "Weekly (moved)");
    assert_eq!(r.upserted[0].version, "\"x-1\"");
    assert_eq!(r.upserted[1].version, "\"s-1\"");
    assert_eq!(r.deleted, vec!["weekly_20260119T090000Z"]);
    let c = Cursor::decode(&r.next_cursor).unwrap();
    assert!(c.series.contains(&id_hash("weekly")));
    assert!(c.listing.is_none());

    // Master first: the exception's upsert comes later and replaces
    // the rule's instance; the cancellation removes one.
    let src = Pages::new(vec![page(
        vec![series(), moved_exception(), cancelled_instance()],
        None,
        Some("s1"),
    )]);
    let r = sync(&src, &req("", 100)).await.unwrap();
    let last = r
        .upserted
        .iter()
        .rev()
        .find(|e| e.provider_event_id == "weekly_20260112T090000Z")
        .unwrap();
    assert_eq!(last.title, "Weekly (moved)");
    assert_eq!(r.deleted, vec!["weekly_20260119T090000Z"]);
}

#[tokio::test]
async fn a_page_larger_than_page_size_is_answered_in_parts() {
    let src = Pages::new(vec![
        page(
            vec![single("a1111", 5), single("b2222", 6), single("c3333", 7)],
            None,
            Some("s"),
        ),
        page(
            vec![single("a1111", 5), single("b2222", 6), single("c3333", 7)],
            None,
            Some("s"),
        ),
    ]);
    let r = sync(&src, &req("", 2)).await.unwrap();
    assert_eq!(ids(&r), vec!["a1111", "b2222"]);
    assert!(r.more && r.full_listing);
    let r2 = sync(&src, &req(&r.next_cursor, 2)).await.unwrap();
    assert_eq!(ids(&r2), vec!["c3333"]);
    assert!(!r2.more && r2.full_listing);
    let q = src.queries();
    assert_eq!(q[1].page_token, None, "the same first page is read again");
}

fn synced_cursor(series_ids: &[&str]) -> String {
    Cursor {
        sync_token: Some("tok-1".into()),
        max_results: 100,
        horizon: window().end.timestamp(),
        window_start: window().start.timestamp(),
        series: series_ids.iter().map(|s| id_hash(s)).collect(),
        listing: None,
    }
    .encode()
}

#[tokio::test]
async fn incremental_changes_become_upserts_and_deletions() {
    let mut out_of_window = single("o5555", 5);
    out_of_window["start"]["dateTime"] = json!("2027-06-01T10:00:00Z");
    out_of_window["end"]["dateTime"] = json!("2027-06-01T11:00:00Z");
    let src = Pages::new(vec![
        page(
            vec![
                single("a1111", 5),
                json!({"kind": "calendar#event", "etag": "\"d\"", "id": "gone1", "status": "cancelled"}),
                cancelled_instance(),
            ],
            Some("p2"),
            None,
        ),
        page(vec![], Some("p3"), None),
        page(vec![out_of_window, moved_exception()], None, Some("tok-2")),
    ]);
    let r = sync(&src, &req(&synced_cursor(&["weekly"]), 100))
        .await
        .unwrap();
    assert!(!r.full_listing && !r.more);
    assert_eq!(ids(&r), vec!["a1111", "weekly_20260112T090000Z"]);
    assert_eq!(r.deleted, vec!["gone1", "weekly_20260119T090000Z", "o5555"]);
    let q = src.queries();
    assert!(q.iter().all(|q| q.sync_token.as_deref() == Some("tok-1")));
    assert_eq!(q[2].page_token.as_deref(), Some("p3"));
    let c = Cursor::decode(&r.next_cursor).unwrap();
    assert_eq!(c.sync_token.as_deref(), Some("tok-2"));
    assert!(c.series.contains(&id_hash("weekly")), "kept");
}

#[tokio::test]
async fn a_changed_or_cancelled_master_falls_back_to_a_full_listing() {
    for change in [
        series(),
        json!({"kind": "calendar#event", "etag": "\"d\"", "id": "weekly", "status": "cancelled"}),
        single("weekly", 5),
    ] {
        let src = Pages::new(vec![
            page(vec![single("a1111", 5), change], None, Some("tok-2")),
            page(vec![single("a1111", 5), series()], None, Some("tok-3")),
        ]);
        let r = sync(&src, &req(&synced_cursor(&["weekly"]), 100))
            .await
            .unwrap();
        assert!(r.full_listing && !r.more);
        assert!(r.deleted.is_empty());
        assert_eq!(r.upserted.len(), 5);
        let q = src.queries();
        assert_eq!(q[1].sync_token, None);
        assert_eq!(q[1].time_min, Some(window().start));
        assert_eq!(
            Cursor::decode(&r.next_cursor)
                .unwrap()
                .sync_token
                .as_deref(),
            Some("tok-3")
        );
    }
}

#[tokio::test]
async fn a_new_series_in_an_incremental_listing_lists_again() {
    let src = Pages::new(vec![
        page(vec![series()], None, Some("tok-2")),
        page(vec![series()], None, Some("tok-3")),
    ]);
    let r = sync(&src, &req(&synced_cursor(&[]), 100)).await.unwrap();
    assert!(r.full_listing);
    assert_eq!(r.upserted.len(), 4);
}

#[tokio::test]
async fn a_window_moved_past_the_horizon_lists_again() {
    let src = Pages::new(vec![page(vec![], None, Some("tok-2"))]);
    let c = synced_cursor(&[]);
    let mut r = req(&c, 100);
    r.window.end = window().end + chrono::Duration::days(2);
    let resp = sync(&src, &r).await.unwrap();
    assert!(resp.full_listing);
    let q = src.queries();
    assert_eq!(q[0].time_max, Some(r.window.end));
    // Within a day of the horizon the sync stays incremental.
    let src = Pages::new(vec![page(vec![], None, Some("tok-2"))]);
    r.window.end = window().end + chrono::Duration::hours(12);
    assert!(!sync(&src, &r).await.unwrap().full_listing);
}

#[tokio::test]
async fn a_window_whose_start_or_end_moved_a_day_either_way_lists_again() {
    let c = synced_cursor(&[]);
    let day = chrono::Duration::days(1);
    let moves = [
        (day, chrono::Duration::zero()),
        (-day, chrono::Duration::zero()),
        (chrono::Duration::zero(), -day),
        (day, day),
    ];
    for (start, end) in moves {
        let src = Pages::new(vec![page(vec![single("a1111", 5)], None, Some("tok-2"))]);
        let mut r = req(&c, 100);
        r.window.start = window().start + start;
        r.window.end = window().end + end;
        let resp = sync(&src, &r).await.unwrap();
        assert!(resp.full_listing, "moved by {start} / {end}");
        let q = src.queries();
        assert_eq!(q[0].sync_token, None);
        assert_eq!(
            (q[0].time_min, q[0].time_max),
            (Some(r.window.start), Some(r.window.end))
        );
        // The new listing's window is the one the cursor keeps.
        let next = Cursor::decode(&resp.next_cursor).unwrap();
        assert_eq!(next.window_start, r.window.start.timestamp());
        assert_eq!(next.horizon, r.window.end.timestamp());
        let src = Pages::new(vec![page(vec![], None, Some("tok-3"))]);
        let again = sync(
            &src,
            &SyncRequest {
                cursor: &resp.next_cursor,
                ..r
            },
        )
        .await
        .unwrap();
        assert!(!again.full_listing);
    }
    // A cursor from before the window's start was kept lists again once.
    let mut old = Cursor::decode(&c).unwrap();
    old.window_start = 0;
    let src = Pages::new(vec![page(vec![], None, Some("tok-2"))]);
    let old = old.encode();
    assert!(sync(&src, &req(&old, 100)).await.unwrap().full_listing);
}

#[tokio::test]
async fn expired_tokens_and_foreign_cursors_are_out_of_range() {
    let src = Pages::new(vec![]);
    src.fail(GoogleError::SyncTokenExpired);
    assert_eq!(
        sync(&src, &req(&synced_cursor(&[]), 100))
            .await
            .unwrap_err(),
        GoogleError::SyncTokenExpired
    );
    assert_eq!(
        sync(&src, &req("v1|st|-||x", 100)).await.unwrap_err(),
        GoogleError::SyncTokenExpired
    );
}

#[tokio::test]
async fn busy_only_pages_carry_no_content_and_unreadable_items_are_skipped() {
    let src = Pages::new(vec![page(
        vec![
            single("a1111", 5),
            json!({"id": "broken1", "status": "confirmed", "start": {"dateTime": "yesterday"}}),
            json!({"id": 17}),
        ],
        None,
        Some("s"),
    )]);
    let mut r = req("", 100);
    r.busy_only = true;
    let resp = sync(&src, &r).await.unwrap();
    assert_eq!(ids(&resp), vec!["a1111"]);
    assert!(resp.upserted[0].title.is_empty());
    assert_eq!(resp.skipped.len(), 2);
    assert_eq!(resp.skipped[0].item_id, "broken1");
    assert!(!resp.skipped[0].reason.contains("yesterday"));
}
