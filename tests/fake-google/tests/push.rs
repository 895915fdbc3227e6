//! Push channels delivered to an HTTPS receiver that trusts its own CA.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use calbridge_fake_google::{FakeConfig, NewCalendar, PushBehaviour};
use common::*;
use serde_json::{json, Value};

async fn fake_for(receiver: &Receiver) -> Fake {
    start(FakeConfig {
        webhook_ca_pem: Some(receiver.pki.ca_pem.clone().into_bytes()),
        push_retry_base: Duration::from_millis(1),
        push_reorder_hold: Duration::from_secs(5),
        ..quiet()
    })
    .await
}

async fn watch(api: &Api, cal: &str, body: Value) -> common::Answer {
    api.post(&format!("{}/watch", events_path(cal)), body).await
}

fn channel(id: &str, address: &str) -> Value {
    json!({"id": id, "type": "web_hook", "address": address, "token": "route=alice"})
}

async fn change(api: &Api, n: u32) {
    api.insert(
        "primary",
        timed(
            &format!("c{n}"),
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
        ),
    )
    .await;
}

#[tokio::test]
async fn watch_validates_id_token_type_and_https_address() {
    let receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    let api = fake.api(&["calendar.events.readonly"]).await;
    let a = watch(&api, "primary", channel(&"x".repeat(65), &receiver.url)).await;
    assert_eq!(a.status, 400, "id over 64");
    let mut c = channel("ok-id", &receiver.url);
    c["token"] = json!("t".repeat(257));
    assert_eq!(
        watch(&api, "primary", c).await.status,
        400,
        "token over 256"
    );
    let a = watch(
        &api,
        "primary",
        channel("ok-id", &receiver.url.replace("https:", "http:")),
    )
    .await;
    assert_eq!(a.status, 400, "plain http");
    let mut c = channel("ok-id", &receiver.url);
    c["type"] = json!("carrier_pigeon");
    assert_eq!(watch(&api, "primary", c).await.status, 400);
    assert_eq!(
        watch(&api, "primary", channel("ok-id", &receiver.url))
            .await
            .status,
        200
    );
    assert_eq!(
        watch(&api, "primary", channel("ok-id", &receiver.url))
            .await
            .status,
        400,
        "ids are unique"
    );
}

#[tokio::test]
async fn a_channel_gets_sync_then_exists_messages_with_growing_gapped_numbers_and_no_body() {
    let mut receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    let api = fake.api(&["calendar"]).await;
    let before = chrono::Utc::now().timestamp_millis();
    let w = watch(&api, "primary", channel("chan-1", &receiver.url)).await;
    assert_eq!(w.status, 200, "{}", w.body);
    assert_eq!(w.body["kind"], "api#channel");
    let resource_id = w.body["resourceId"].as_str().unwrap().to_string();
    assert!(w.body["resourceUri"]
        .as_str()
        .unwrap()
        .contains("/calendars/"));
    let expiration: i64 = w.body["expiration"].as_str().unwrap().parse().unwrap();
    assert!(
        (expiration - before - 604_800_000).abs() < 60_000,
        "default ttl 7 days"
    );
    let sync = receiver.next().await;
    assert_eq!((sync.state(), sync.number()), ("sync", 1));
    assert_eq!(sync.header("x-goog-channel-id"), "chan-1");
    assert_eq!(sync.header("x-goog-channel-token"), "route=alice");
    assert_eq!(sync.header("x-goog-resource-id"), resource_id);
    assert!(sync.header("x-goog-resource-uri").contains("/events"));
    assert!(sync.header("x-goog-channel-expiration").ends_with(" GMT"));
    assert_eq!(sync.header("user-agent"), "APIs-Google");
    assert_eq!(sync.header("content-length"), "0");
    assert_eq!(sync.body_len, 0);
    let mut last = 1;
    for n in 0..3 {
        change(&api, n).await;
        let m = receiver.next().await;
        assert_eq!(m.state(), "exists");
        assert!(
            m.number() > last + 1,
            "numbers grow, not consecutively: {} after {last}",
            m.number()
        );
        last = m.number();
    }
    // Changes by another client notify too.
    fake.control
        .insert_event(
            USER,
            &timed("other", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await
        .unwrap();
    assert_eq!(receiver.next().await.state(), "exists");
    fake.assert_no_violations().await;
}

#[tokio::test]
async fn server_errors_are_retried_and_other_failures_dropped() {
    let mut receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    let api = fake.api(&["calendar"]).await;
    watch(&api, "primary", channel("chan-2", &receiver.url)).await;
    assert_eq!(receiver.next().await.number(), 1);
    receiver.answer_next_with(&[503, 500]);
    change(&api, 1).await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    let third = receiver.next().await;
    assert_eq!(
        (first.answered, second.answered, third.answered),
        (503, 500, 200)
    );
    assert_eq!(first.number(), third.number(), "the same message, retried");
    receiver.answer_next_with(&[404]);
    change(&api, 2).await;
    let refused = receiver.next().await;
    assert_eq!(refused.answered, 404);
    change(&api, 3).await;
    change(&api, 4).await;
    let a = receiver.next().await;
    let b = receiver.next().await;
    assert!(
        a.number() > refused.number() && b.number() > a.number(),
        "the refused one is not retried"
    );
}

#[tokio::test]
async fn deliveries_can_be_dropped_duplicated_and_reordered() {
    let mut receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    let api = fake.api(&["calendar"]).await;
    watch(&api, "primary", channel("chan-3", &receiver.url)).await;
    receiver.next().await;
    fake.control
        .set_push(&PushBehaviour {
            duplicate: true,
            ..Default::default()
        })
        .await
        .unwrap();
    change(&api, 1).await;
    let (a, b) = (receiver.next().await, receiver.next().await);
    assert_eq!(a.number(), b.number());
    fake.control
        .set_push(&PushBehaviour {
            drop: true,
            ..Default::default()
        })
        .await
        .unwrap();
    change(&api, 2).await;
    let dropped_number = fake.control.channels().await.unwrap()[0].last_message_number;
    fake.control
        .set_push(&PushBehaviour {
            reorder: true,
            ..Default::default()
        })
        .await
        .unwrap();
    change(&api, 3).await;
    change(&api, 4).await;
    let (x, y) = (receiver.next().await, receiver.next().await);
    assert!(
        x.number() > y.number(),
        "swapped: {} then {}",
        x.number(),
        y.number()
    );
    assert!(
        y.number() > dropped_number,
        "the dropped message never came"
    );
    fake.control
        .set_push(&PushBehaviour {
            duplicate_percent: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    change(&api, 5).await;
    let (a, b) = (receiver.next().await, receiver.next().await);
    assert_eq!(a.number(), b.number(), "random duplicates, at 100 %");
}

#[tokio::test]
async fn stop_needs_the_same_client_user_and_resource_id() {
    let mut receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    fake.control.add_user("bob@example.com").await.unwrap();
    fake.control
        .add_calendar(&NewCalendar {
            user: "bob@example.com".into(),
            id: USER.into(),
            summary: None,
            time_zone: None,
            access_role: Some("reader".into()),
        })
        .await
        .unwrap();
    let api = fake.api(&["calendar"]).await;
    let w = watch(&api, "primary", channel("chan-4", &receiver.url)).await;
    receiver.next().await;
    let resource_id = w.body["resourceId"].as_str().unwrap();
    let stop = |id: &str, rid: &str| json!({"id": id, "resourceId": rid});
    assert_eq!(
        api.post("/calendar/v3/channels/stop", stop("chan-4", "wrong"))
            .await
            .status,
        404
    );
    assert_eq!(
        api.post("/calendar/v3/channels/stop", json!({"id": "chan-4"}))
            .await
            .status,
        400
    );
    let bob = Api {
        token: fake.token_for("bob@example.com", &["calendar"]).await,
        ..fake.api(&["calendar"]).await
    };
    assert_eq!(
        bob.post("/calendar/v3/channels/stop", stop("chan-4", resource_id))
            .await
            .status,
        404
    );
    let a = api
        .post("/calendar/v3/channels/stop", stop("chan-4", resource_id))
        .await;
    assert_eq!((a.status, a.body.clone()), (204, Value::Null));
    let before = fake.control.channels().await.unwrap()[0].clone();
    assert!(before.stopped);
    change(&api, 1).await;
    let after = fake.control.channels().await.unwrap()[0].clone();
    assert_eq!(
        after.last_message_number, before.last_message_number,
        "no message after stop"
    );
}

#[tokio::test]
async fn an_expired_channel_delivers_nothing_more() {
    let mut receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    let api = fake.api(&["calendar"]).await;
    let mut c = channel("chan-5", &receiver.url);
    c["params"] = json!({"ttl": "60"});
    let w = watch(&api, "primary", c).await;
    let expiration: i64 = w.body["expiration"].as_str().unwrap().parse().unwrap();
    assert!(expiration - chrono::Utc::now().timestamp_millis() <= 61_000);
    receiver.next().await;
    fake.control.advance_clock(61).await.unwrap();
    change(&api, 1).await;
    assert_eq!(
        fake.control.channels().await.unwrap()[0].last_message_number,
        1
    );
}

#[tokio::test]
async fn deleting_the_calendar_sends_not_exists() {
    let mut receiver = receiver().await;
    let fake = fake_for(&receiver).await;
    fake.control
        .add_calendar(&NewCalendar {
            user: USER.into(),
            id: "side@example.com".into(),
            summary: None,
            time_zone: None,
            access_role: None,
        })
        .await
        .unwrap();
    let api = fake.api(&["calendar"]).await;
    watch(&api, "side@example.com", channel("chan-6", &receiver.url)).await;
    receiver.next().await;
    fake.control
        .delete_calendar("side@example.com")
        .await
        .unwrap();
    assert_eq!(receiver.next().await.state(), "not_exists");
}

#[tokio::test]
async fn receivers_with_an_untrusted_certificate_get_nothing() {
    let receiver = receiver().await;
    let other = pki();
    let fake = start(FakeConfig {
        webhook_ca_pem: Some(other.ca_pem.into_bytes()),
        ..quiet()
    })
    .await;
    let api = fake.api(&["calendar"]).await;
    assert_eq!(
        watch(&api, "primary", channel("chan-7", &receiver.url))
            .await
            .status,
        200
    );
    let failures = receiver.handshake_failures.clone();
    eventually("the fake refuses the receiver's certificate", || {
        let failures = failures.clone();
        async move { failures.load(Ordering::SeqCst) >= 1 }
    })
    .await;
    assert_eq!(fake.control.channels().await.unwrap()[0].delivered, 0);
}
