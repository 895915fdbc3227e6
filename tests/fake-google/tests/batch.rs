//! Batch requests: multipart in, multipart out, in order, each part counted.

mod common;

use calbridge_fake_google::QuotaLimits;
use common::*;

fn part(id: &str, request: &str) -> String {
    format!(
        "--BOUNDARY\r\nContent-Type: application/http\r\nContent-ID: <{id}>\r\n\r\n{request}\r\n"
    )
}

async fn send(fake: &Fake, api: &Api, body: String) -> (u16, String, String) {
    let r = fake
        .http
        .post(format!("{}/batch/calendar/v3", fake.base()))
        .bearer_auth(&api.token)
        .header("Content-Type", "multipart/mixed; boundary=BOUNDARY")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn a_batch_answers_every_part_in_order_with_response_content_ids() {
    let fake = start(quiet()).await;
    let api = fake.api(&["calendar"]).await;
    let insert = "POST /calendar/v3/calendars/primary/events\r\nContent-Type: application/json\r\n\r\n\
        {\"id\":\"batch0001\",\"start\":{\"date\":\"2024-01-01\"},\"end\":{\"date\":\"2024-01-02\"}}";
    let body = [
        part("a", insert),
        part(
            "b",
            "GET /calendar/v3/calendars/primary/events/nope00000 HTTP/1.1\r\n",
        ),
        part(
            "c",
            "GET /calendar/v3/calendars/primary/events/batch0001\r\n",
        ),
        "--BOUNDARY--\r\n".to_string(),
    ]
    .concat();
    let (status, ct, text) = send(&fake, &api, body).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("multipart/mixed; boundary="));
    let a = text.find("Content-ID: <response-a>").unwrap();
    let b = text.find("Content-ID: <response-b>").unwrap();
    let c = text.find("Content-ID: <response-c>").unwrap();
    assert!(a < b && b < c);
    assert!(text[a..b].contains("HTTP/1.1 200 OK"));
    assert!(text[b..c].contains("HTTP/1.1 404 Not Found"));
    assert!(text[c..].contains("\"id\":\"batch0001\""));
    let counts = fake.control.requests().await.unwrap();
    assert_eq!(counts.by_method["calendar.events.get"], 2);
    assert_eq!(counts.by_method["calendar.events.insert"], 1);
}

#[tokio::test]
async fn each_part_counts_against_quota_and_batches_are_capped_at_1000() {
    let fake = start(quiet()).await;
    fake.control
        .set_quotas(&QuotaLimits {
            per_user_per_minute: Some(2),
            per_project_per_minute: None,
        })
        .await
        .unwrap();
    let api = fake.api(&["calendar"]).await;
    let get = "GET /calendar/v3/calendars/primary/events\r\n";
    let body = [
        part("1", get),
        part("2", get),
        part("3", get),
        "--BOUNDARY--\r\n".into(),
    ]
    .concat();
    let (_, _, text) = send(&fake, &api, body).await;
    let third = &text[text.find("<response-3>").unwrap()..];
    assert!(
        third.contains("HTTP/1.1 403") || third.contains("HTTP/1.1 429"),
        "{third}"
    );
    let many: String = (0..1001)
        .map(|i| part(&i.to_string(), get))
        .collect::<String>()
        + "--BOUNDARY--\r\n";
    assert_eq!(send(&fake, &api, many).await.0, 400);
}
