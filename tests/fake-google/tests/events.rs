//! events.list paging and sync, recurrence, writes and conditional requests.

mod common;

use calbridge_fake_google::{FakeConfig, PagingQuirks};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn seed(api: &Api, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let start = format!("2024-01-{:02}T10:00:00Z", i % 28 + 1);
        let end = format!("2024-01-{:02}T11:00:00Z", i % 28 + 1);
        out.push(
            api.insert("primary", timed(&format!("e{i}"), &start, &end))
                .await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    out
}

#[tokio::test]
async fn pages_can_be_short_or_empty_while_a_next_page_token_is_present() {
    let fake = start(FakeConfig {
        paging: PagingQuirks {
            empty_page_every: 2,
            short_page_every: 3,
        },
        ..quiet()
    })
    .await;
    let api = fake.api(&["calendar"]).await;
    let inserted = seed(&api, 7).await;
    let mut seen = Vec::new();
    let mut empty_with_next = 0;
    let mut short_with_next = 0;
    let mut token: Option<String> = None;
    loop {
        let mut q = vec![("maxResults", "3")];
        if let Some(t) = &token {
            q.push(("pageToken", t.as_str()));
        }
        let a = api.get(&events_path("primary"), &q).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let items = a.body["items"].as_array().unwrap();
        let next = a.body.get("nextPageToken").and_then(Value::as_str);
        assert!(next.is_some() != a.body.get("nextSyncToken").is_some());
        if next.is_some() && items.is_empty() {
            empty_with_next += 1;
        }
        if next.is_some() && !items.is_empty() && items.len() < 3 {
            short_with_next += 1;
        }
        seen.extend(ids(items));
        match next {
            Some(n) => token = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, inserted);
    assert!(empty_with_next >= 1, "an empty page with a nextPageToken");
    assert!(short_with_next >= 1, "a short page with a nextPageToken");
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn page_size_defaults_to_250_and_is_capped_at_2500() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    seed(&api, 260).await;
    let a = api.get(&events_path("primary"), &[]).await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 250);
    let a = api
        .get(&events_path("primary"), &[("maxResults", "9999")])
        .await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 260);
    assert!(a.body["nextSyncToken"].is_string());
}

#[tokio::test]
async fn a_page_token_with_other_parameters_is_refused() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    seed(&api, 3).await;
    let a = api
        .get(&events_path("primary"), &[("maxResults", "1")])
        .await;
    let next = a.body["nextPageToken"].as_str().unwrap();
    let b = api
        .get(
            &events_path("primary"),
            &[
                ("maxResults", "1"),
                ("pageToken", next),
                ("showDeleted", "true"),
            ],
        )
        .await;
    assert_eq!(b.status, 400);
    let c = api
        .get(
            &events_path("primary"),
            &[("maxResults", "1"), ("pageToken", next)],
        )
        .await;
    assert_eq!(c.status, 200);
}

#[tokio::test]
async fn incremental_sync_returns_changes_and_minimal_deletions() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let ids0 = seed(&api, 3).await;
    let (_, _, sync) = api.list_all("primary", &[]).await;
    // Nothing changed: an empty page with a new sync token.
    let a = api
        .get(&events_path("primary"), &[("syncToken", &sync)])
        .await;
    assert_eq!(a.body["items"], json!([]));
    let sync = a.body["nextSyncToken"].as_str().unwrap().to_string();
    // A change by the user, one by another client, a deletion.
    let a = api
        .call(
            Method::PATCH,
            &format!("{}/{}", events_path("primary"), ids0[0]),
            &[],
            Some(json!({"summary": "changed"})),
            &[],
        )
        .await;
    assert_eq!(a.status, 200);
    fake.control
        .insert_event(
            USER,
            &timed("other", "2024-02-01T10:00:00Z", "2024-02-01T11:00:00Z"),
        )
        .await
        .unwrap();
    let d = api
        .call(
            Method::DELETE,
            &format!("{}/{}", events_path("primary"), ids0[1]),
            &[],
            None,
            &[],
        )
        .await;
    assert_eq!((d.status, d.body.clone()), (204, Value::Null));
    let (items, _, next_sync) = api.list_all("primary", &[("syncToken", &sync)]).await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["summary"], "changed");
    assert_eq!(items[1]["summary"], "other");
    let deleted = &items[2];
    assert_eq!(deleted["id"], ids0[1].as_str());
    assert_eq!(deleted["status"], "cancelled");
    assert!(
        deleted.get("summary").is_none(),
        "deletions are minimal: {deleted}"
    );
    // Paged incremental results reuse the same sync token.
    let (items, pages, _) = api
        .list_all("primary", &[("syncToken", &sync), ("maxResults", "1")])
        .await;
    assert_eq!((items.len(), pages), (3, 3));
    // The later token sees nothing new.
    let (items, _, _) = api.list_all("primary", &[("syncToken", &next_sync)]).await;
    assert!(items.is_empty());
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn expired_sync_tokens_answer_410_full_sync_required() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    seed(&api, 1).await;
    let (_, _, sync) = api.list_all("primary", &[]).await;
    fake.control.expire_sync_tokens(USER).await.unwrap();
    let a = api
        .get(&events_path("primary"), &[("syncToken", &sync)])
        .await;
    assert_eq!((a.status, a.reason()), (410, "fullSyncRequired"));
    assert_eq!(a.body["error"]["code"], 410);
    let a = api
        .get(&events_path("primary"), &[("syncToken", "made-up")])
        .await;
    assert_eq!(a.status, 410);
    // A full sync gives a working token again.
    let (_, _, sync) = api.list_all("primary", &[]).await;
    assert_eq!(
        api.get(&events_path("primary"), &[("syncToken", &sync)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn list_parameters_are_validated() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let (_, _, sync) = api.list_all("primary", &[]).await;
    for bad in [
        "iCalUID",
        "orderBy",
        "privateExtendedProperty",
        "q",
        "sharedExtendedProperty",
        "timeMin",
        "timeMax",
        "updatedMin",
    ] {
        let value = match bad {
            "timeMin" | "timeMax" | "updatedMin" => "2024-01-01T00:00:00Z",
            "orderBy" => "updated",
            "privateExtendedProperty" | "sharedExtendedProperty" => "k=v",
            _ => "x",
        };
        let a = api
            .get(
                &events_path("primary"),
                &[("syncToken", &sync), (bad, value)],
            )
            .await;
        assert_eq!(a.status, 400, "syncToken with {bad}");
    }
    let a = api
        .get(&events_path("primary"), &[("orderBy", "startTime")])
        .await;
    assert_eq!(a.status, 400, "orderBy=startTime needs singleEvents");
    assert_eq!(
        api.get(
            &events_path("primary"),
            &[("orderBy", "startTime"), ("singleEvents", "true")]
        )
        .await
        .status,
        200
    );
    let a = api
        .get(
            &events_path("primary"),
            &[
                ("timeMin", "2024-01-02T00:00:00Z"),
                ("timeMax", "2024-01-02T00:00:00Z"),
            ],
        )
        .await;
    assert_eq!((a.status, a.reason()), (400, "timeRangeEmpty"));
    let a = api
        .get(
            &events_path("primary"),
            &[("timeMin", "2024-01-02T00:00:00")],
        )
        .await;
    assert_eq!(a.status, 400, "no offset");
    let a = api
        .get(&events_path("primary"), &[("orderBy", "title")])
        .await;
    assert_eq!((a.status, a.reason()), (400, "invalidParameter"));
    let a = api
        .get(&events_path("primary"), &[("singleEvents", "yes")])
        .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn the_range_keeps_events_ending_after_time_min_and_starting_before_time_max() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let ends_at_min = api
        .insert(
            "primary",
            timed("a", "2024-01-01T09:00:00Z", "2024-01-01T10:00:00Z"),
        )
        .await;
    let overlaps = api
        .insert(
            "primary",
            timed("b", "2024-01-01T09:30:00Z", "2024-01-01T10:30:00Z"),
        )
        .await;
    let starts_at_max = api
        .insert(
            "primary",
            timed("c", "2024-01-01T12:00:00Z", "2024-01-01T13:00:00Z"),
        )
        .await;
    let all_day = api
        .insert(
            "primary",
            json!({"summary": "d", "start": {"date": "2024-01-01"}, "end": {"date": "2024-01-02"}}),
        )
        .await;
    let (items, _, _) = api
        .list_all(
            "primary",
            &[
                ("timeMin", "2024-01-01T10:00:00Z"),
                ("timeMax", "2024-01-01T12:00:00+00:00"),
            ],
        )
        .await;
    let got = ids(&items);
    assert!(!got.contains(&ends_at_min["id"].as_str().unwrap().to_string()));
    assert!(got.contains(&overlaps["id"].as_str().unwrap().to_string()));
    assert!(!got.contains(&starts_at_max["id"].as_str().unwrap().to_string()));
    assert!(got.contains(&all_day["id"].as_str().unwrap().to_string()));
    // All-day ends are exclusive.
    let (items, _, _) = api
        .list_all("primary", &[("timeMin", "2024-01-02T00:00:00Z")])
        .await;
    assert!(!ids(&items).contains(&all_day["id"].as_str().unwrap().to_string()));
}

fn weekly(id: &str) -> Value {
    json!({
        "id": id,
        "summary": "standup",
        "start": {"dateTime": "2024-03-25T09:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2024-03-25T09:30:00+01:00", "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"],
    })
}

#[tokio::test]
async fn single_events_expand_series_in_the_start_zone_with_google_instance_ids() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    api.insert("primary", weekly("series1")).await;
    let (items, _, _) = api
        .list_all(
            "primary",
            &[("singleEvents", "true"), ("orderBy", "startTime")],
        )
        .await;
    // Berlin switches to summer time on 2024-03-31: 08:00Z then 07:00Z.
    assert_eq!(
        ids(&items),
        [
            "series1_20240325T080000Z",
            "series1_20240401T070000Z",
            "series1_20240408T070000Z",
            "series1_20240415T070000Z"
        ]
    );
    assert_eq!(items[1]["recurringEventId"], "series1");
    assert!(items[1].get("recurrence").is_none());
    assert_eq!(items[1]["originalStartTime"]["timeZone"], "Europe/Berlin");
    // Without singleEvents: just the master.
    let (items, _, _) = api.list_all("primary", &[]).await;
    assert_eq!(ids(&items), ["series1"]);
    assert!(items[0]["recurrence"].is_array());
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn instance_changes_become_exceptions_and_cancelled_instances_follow_show_deleted() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    api.insert("primary", weekly("series2")).await;
    let path = events_path("primary");
    let moved = api
        .call(
            Method::PATCH,
            &format!("{path}/series2_20240401T070000Z"),
            &[],
            Some(json!({"start": {"dateTime": "2024-04-01T10:00:00+02:00", "timeZone": "Europe/Berlin"},
                        "end": {"dateTime": "2024-04-01T10:30:00+02:00", "timeZone": "Europe/Berlin"}})),
            &[],
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["recurringEventId"], "series2");
    assert_eq!(
        moved.body["originalStartTime"]["dateTime"],
        "2024-04-01T07:00:00Z"
    );
    let d = api
        .call(
            Method::DELETE,
            &format!("{path}/series2_20240408T070000Z"),
            &[],
            None,
            &[],
        )
        .await;
    assert_eq!(d.status, 204);
    let (items, _, _) = api.list_all("primary", &[("singleEvents", "true")]).await;
    assert_eq!(items.len(), 3);
    assert_eq!(items[1]["start"]["dateTime"], "2024-04-01T08:00:00Z");
    let (items, _, _) = api
        .list_all(
            "primary",
            &[("singleEvents", "true"), ("showDeleted", "true")],
        )
        .await;
    assert_eq!(items.len(), 4);
    let cancelled = items.iter().find(|i| i["status"] == "cancelled").unwrap();
    assert_eq!(cancelled["recurringEventId"], "series2");
    assert!(cancelled["originalStartTime"].is_object());
    // singleEvents=false: master + exceptions; the cancelled instance of a
    // live series shows even without showDeleted.
    let (items, _, _) = api.list_all("primary", &[]).await;
    assert_eq!(
        ids(&items),
        [
            "series2",
            "series2_20240401T070000Z",
            "series2_20240408T070000Z"
        ]
    );
    // Deleting the master: gone (with its instances) unless showDeleted.
    api.call(Method::DELETE, &format!("{path}/series2"), &[], None, &[])
        .await;
    let (items, _, _) = api.list_all("primary", &[]).await;
    assert!(items.is_empty(), "{items:?}");
    let (items, _, _) = api
        .list_all(
            "primary",
            &[("singleEvents", "true"), ("showDeleted", "true")],
        )
        .await;
    assert!(items
        .iter()
        .all(|i| i["status"] == "cancelled" && i["id"] != "series2"));
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn instances_lists_one_series() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    api.insert("primary", weekly("series3")).await;
    let a = api
        .get(
            &format!("{}/series3/instances", events_path("primary")),
            &[("maxResults", "2")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["items"].as_array().unwrap().len(), 2);
    assert!(a.body["nextPageToken"].is_string());
    let g = api
        .get(
            &format!("{}/series3_20240408T070000Z", events_path("primary")),
            &[],
        )
        .await;
    assert_eq!(
        (g.status, g.body["recurringEventId"].as_str()),
        (200, Some("series3"))
    );
    assert_eq!(
        api.get(
            &format!("{}/series3_20240409T070000Z", events_path("primary")),
            &[]
        )
        .await
        .status,
        404
    );
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn insert_validates_ids_and_refuses_duplicates_even_of_deleted_events() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let path = events_path("primary");
    let base = timed("x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
    for bad in ["abc", "ABCDEF", "abcdwxyz", "has_underscore"] {
        let mut e = base.clone();
        e["id"] = json!(bad);
        let a = api.post(&path, e).await;
        assert_eq!(a.status, 400, "id {bad}");
    }
    let mut e = base.clone();
    e["id"] = json!("0123456789abcdef");
    assert_eq!(api.post(&path, e.clone()).await.status, 200);
    let a = api.post(&path, e.clone()).await;
    assert_eq!((a.status, a.reason()), (409, "duplicate"));
    api.call(
        Method::DELETE,
        &format!("{path}/0123456789abcdef"),
        &[],
        None,
        &[],
    )
    .await;
    let a = api.post(&path, e).await;
    assert_eq!(
        (a.status, a.reason()),
        (409, "duplicate"),
        "a tombstone keeps its id"
    );
    let a = api.post(&path, json!({"summary": "no times"})).await;
    assert_eq!(a.status, 400);
    let a = api.post(&path, json!({"summary": "bad", "start": {"dateTime": "2024-01-01T10:00:00"}, "end": {"dateTime": "2024-01-01T11:00:00"}})).await;
    assert_eq!(a.status, 400, "no offset and no zone");
    let a = api.post(&path, json!({"summery": "typo", "start": {"date": "2024-01-01"}, "end": {"date": "2024-01-02"}})).await;
    assert_eq!(a.status, 400, "unknown field");
}

#[tokio::test]
async fn conditional_requests_use_the_etag() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let e = api
        .insert(
            "primary",
            timed("x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    let path = format!("{}/{}", events_path("primary"), e["id"].as_str().unwrap());
    let etag = e["etag"].as_str().unwrap().to_string();
    let g = api
        .call(Method::GET, &path, &[], None, &[("If-None-Match", &etag)])
        .await;
    assert_eq!(g.status, 304);
    let p = api
        .call(
            Method::PATCH,
            &path,
            &[],
            Some(json!({"summary": "y"})),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(p.status, 200);
    let new_etag = p.body["etag"].as_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    let stale = api
        .call(
            Method::PATCH,
            &path,
            &[],
            Some(json!({"summary": "z"})),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!((stale.status, stale.reason()), (412, "conditionNotMet"));
    assert_eq!(stale.body["error"]["errors"][0]["location"], "If-Match");
    let stale = api
        .call(Method::DELETE, &path, &[], None, &[("If-Match", &etag)])
        .await;
    assert_eq!(stale.status, 412);
    let g = api
        .call(Method::GET, &path, &[], None, &[("If-None-Match", &etag)])
        .await;
    assert_eq!(g.status, 200);
    // update replaces: the summary is gone.
    let u = api
        .call(
            Method::PUT,
            &path,
            &[],
            Some(json!({"start": e["start"], "end": e["end"]})),
            &[("If-Match", &new_etag)],
        )
        .await;
    assert_eq!(u.status, 200, "{}", u.body);
    assert!(u.body.get("summary").is_none());
    assert_eq!(
        api.call(Method::DELETE, &path, &[], None, &[]).await.status,
        204
    );
    let again = api.call(Method::DELETE, &path, &[], None, &[]).await;
    assert_eq!((again.status, again.reason()), (410, "deleted"));
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn private_extended_properties_filter_and_patch() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let mut e = timed("mine", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z");
    e["extendedProperties"] = json!({"private": {"calbridge_id": "42", "other": "1"}});
    let mine = api.insert("primary", e).await;
    api.insert(
        "primary",
        timed("theirs", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
    )
    .await;
    let (items, _, _) = api
        .list_all("primary", &[("privateExtendedProperty", "calbridge_id=42")])
        .await;
    assert_eq!(ids(&items), [mine["id"].as_str().unwrap()]);
    let (items, _, _) = api
        .list_all(
            "primary",
            &[
                ("privateExtendedProperty", "calbridge_id=42"),
                ("privateExtendedProperty", "other=2"),
            ],
        )
        .await;
    assert!(items.is_empty(), "repeated filters must all match");
    let path = format!(
        "{}/{}",
        events_path("primary"),
        mine["id"].as_str().unwrap()
    );
    let p = api
        .call(
            Method::PATCH,
            &path,
            &[],
            Some(json!({"extendedProperties": {"private": {"other": null}}})),
            &[],
        )
        .await;
    assert_eq!(
        p.body["extendedProperties"]["private"],
        json!({"calbridge_id": "42"})
    );
    let stored = fake.control.events(USER).await.unwrap();
    assert_eq!(
        stored[0]["extendedProperties"]["private"]["calbridge_id"],
        "42"
    );
}

#[tokio::test]
async fn readers_cannot_write_and_unknown_calendars_are_not_found() {
    let fake = start(quiet()).await;
    fake.control
        .add_calendar(&calbridge_fake_google::NewCalendar {
            user: USER.into(),
            id: "team#shared@group.calendar.google.com".into(),
            summary: Some("Team".into()),
            time_zone: Some("Europe/Paris".into()),
            access_role: Some("reader".into()),
        })
        .await
        .unwrap();
    let api = fake.api(&["calendar"]).await;
    let cal = "team#shared@group.calendar.google.com";
    fake.control
        .insert_event(
            cal,
            &timed("t", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await
        .unwrap();
    let a = api.get(&events_path(cal), &[]).await;
    assert_eq!(
        (a.status, a.body["accessRole"].as_str()),
        (200, Some("reader"))
    );
    assert_eq!(
        a.body["items"][0]["start"]["dateTime"], "2024-01-01T11:00:00+01:00",
        "calendar zone"
    );
    let w = api
        .post(
            &events_path(cal),
            timed("x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    assert_eq!(w.status, 403);
    assert_eq!(
        api.get(&events_path("nobody@example.com"), &[])
            .await
            .status,
        404
    );
    let list = api
        .get("/calendar/v3/users/me/calendarList", &[("maxResults", "1")])
        .await;
    assert_eq!(list.body["items"][0]["primary"], true);
    assert!(list.body["nextPageToken"].is_string());
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn updated_min_returns_recent_changes_with_deletions_and_refuses_old_values() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let old = api
        .insert(
            "primary",
            timed("old", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    let gone = api
        .insert(
            "primary",
            timed("gone", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    fake.control.advance_clock(600).await.unwrap();
    let since = (chrono::Utc::now() + chrono::Duration::seconds(590))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    api.call(
        Method::DELETE,
        &format!(
            "{}/{}",
            events_path("primary"),
            gone["id"].as_str().unwrap()
        ),
        &[],
        None,
        &[],
    )
    .await;
    let fresh = api
        .insert(
            "primary",
            timed("fresh", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    let (items, _, _) = api.list_all("primary", &[("updatedMin", &since)]).await;
    let got = ids(&items);
    assert!(!got.contains(&old["id"].as_str().unwrap().to_string()));
    assert!(
        got.contains(&gone["id"].as_str().unwrap().to_string()),
        "deletions since then are included"
    );
    assert!(got.contains(&fresh["id"].as_str().unwrap().to_string()));
    let a = api
        .get(
            &events_path("primary"),
            &[("updatedMin", "2020-01-01T00:00:00Z")],
        )
        .await;
    assert_eq!((a.status, a.reason()), (410, "updatedMinTooLongAgo"));
}
