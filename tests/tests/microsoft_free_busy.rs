//! A Microsoft account connected at FREE_BUSY through a real scheduler:
//! the scheduler sees native free/busy in the adapter's capabilities and
//! syncs the account from getSchedule alone. Real processes (the fake
//! Graph, the Microsoft adapter, the scheduler in local mode), real ports,
//! a real store on disk. Needs the binaries (`cargo build --workspace
//! --bins`; `scripts/test` builds them).

use anyhow::{anyhow, bail, Context as _, Result};
use calbridge::pb;
use calbridge_e2e::conformance::Scheduler;
use calbridge_e2e::{dir_contains, free_port, wait_synced, Proc};
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use serde_json::{json, Value};

const USER: &str = "busy@contoso.example";
const CLIENT_ID: &str = "0f6c1a52-8d3e-4b7a-9c21-5e4d3b2a1f00";
const CLIENT_SECRET: &str = "free-busy-secret";
/// The redirect URI registered at the fake; the consent's redirect is read,
/// never followed.
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";

/// Percent-encodes everything but unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The fake Graph's control API.
struct Control {
    base: String,
    http: reqwest::Client,
}

impl Control {
    async fn call(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let answer = r.send().await.context("calling the fake Graph")?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("the fake Graph answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates an event in the user's default calendar, as Outlook would.
    async fn insert(&self, body: Value) -> Result<()> {
        let url = format!("{}/fake/v1/users/{}/events", self.base, enc(USER));
        self.call(self.http.post(url).json(&body)).await.map(drop)
    }

    /// Every Graph request served so far (`METHOD route`).
    async fn requests(&self) -> Result<Vec<String>> {
        let stats = self
            .call(self.http.get(format!("{}/fake/v1/stats", self.base)))
            .await?;
        Ok(stats["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect())
    }

    async fn violations(&self) -> Result<Vec<Value>> {
        let found = self
            .call(self.http.get(format!("{}/fake/v1/violations", self.base)))
            .await?;
        Ok(found["value"].as_array().cloned().unwrap_or_default())
    }
}

fn graph_time(t: DateTime<Utc>) -> Value {
    json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
}

fn outlook(subject: &str, start: DateTime<Utc>, minutes: i64, show_as: &str) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "text", "content": "Secret agenda"},
        "location": {"displayName": "Boardroom"},
        "start": graph_time(start),
        "end": graph_time(start + Duration::minutes(minutes)),
        "showAs": show_as,
    })
}

/// The code and state of the redirect the fake's consent at `url` answers.
async fn consent(url: &str) -> Result<(String, String)> {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let answer = browser.get(url).send().await?;
    let location = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            anyhow!(
                "the consent answered {} without a redirect",
                answer.status()
            )
        })?;
    let back = reqwest::Url::parse(location)?;
    let param = |k: &str| {
        back.query_pairs()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| anyhow!("no {k} in the redirect {location}"))
    };
    Ok((param("code")?, param("state")?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_microsoft_free_busy_account_is_synced_from_getschedule_and_stores_no_content(
) -> Result<()> {
    let fake = Proc::start(
        "calbridge-fake-graph",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--client".into(),
            format!("{CLIENT_ID}:{CLIENT_SECRET}:{REDIRECT_URI}"),
            "--user".into(),
            USER.into(),
        ],
    )
    .await?;
    let control = Control {
        base: fake.url(),
        http: reqwest::Client::builder().no_proxy().build()?,
    };
    let day = Utc.from_utc_datetime(
        &Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    ) + Duration::days(2);
    let mut standup = outlook("Secret standup", day + Duration::hours(9), 15, "busy");
    standup["recurrence"] = json!({
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "numbered", "startDate": day.format("%Y-%m-%d").to_string(), "numberOfOccurrences": 2},
    });
    for e in [
        outlook("Secret interview", day + Duration::hours(11), 60, "busy"),
        outlook("Secret maybe", day + Duration::hours(14), 30, "tentative"),
        outlook(
            "Secret leave",
            day + Duration::days(3) + Duration::hours(8),
            8 * 60,
            "oof",
        ),
        outlook("Secret focus", day + Duration::hours(16), 60, "free"),
        standup,
    ] {
        control.insert(e).await?;
    }

    let files = tempfile::tempdir()?;
    std::fs::write(files.path().join("client_id"), CLIENT_ID)?;
    std::fs::write(files.path().join("client_secret"), CLIENT_SECRET)?;
    let file = |name: &str| files.path().join(name).display().to_string();
    let adapter = Proc::start(
        "calbridge-adapter-microsoft",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--client-id-file".into(),
            file("client_id"),
            "--client-secret-file".into(),
            file("client_secret"),
            "--tenant".into(),
            "organizations".into(),
            "--authority-url".into(),
            fake.url(),
            "--graph-base-url".into(),
            format!("{}/v1.0/", fake.url()),
        ],
    )
    .await?;
    let mut scheduler = Scheduler::start(
        free_port(),
        &["--adapter".into(), format!("microsoft={}", adapter.url())],
    )
    .await?;
    let mut client = scheduler.tenant_client("microsoft-free-busy").await?;

    let begun = client
        .begin_authorization(pb::BeginAuthorizationRequest {
            provider: pb::Provider::Microsoft as i32,
            access_level: pb::AccessLevel::FreeBusy as i32,
            redirect_uri: REDIRECT_URI.into(),
            login_hint: USER.into(),
            account_id: String::new(),
        })
        .await?
        .into_inner();
    let (code, state) = consent(&begun.authorization_url).await?;
    let account = client
        .complete_authorization(pb::CompleteAuthorizationRequest {
            state,
            code,
            redirect_uri: REDIRECT_URI.into(),
        })
        .await?
        .into_inner();
    wait_synced(&mut client, &account.account_id).await?;

    let fb = client
        .query_free_busy(pb::QueryFreeBusyRequest {
            account_ids: vec![account.account_id.clone()],
            window: Some(pb::TimeWindow {
                start: Some(calbridge::time::to_timestamp(day)),
                end: Some(calbridge::time::to_timestamp(day + Duration::days(7))),
            }),
        })
        .await?
        .into_inner();
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>, pb::BusyStatus)> = fb
        .accounts
        .iter()
        .flat_map(|a| &a.busy)
        .filter_map(|b| {
            Some((
                calbridge::time::from_timestamp(b.start.as_ref()?)?,
                calbridge::time::from_timestamp(b.end.as_ref()?)?,
                b.status(),
            ))
        })
        .collect();
    let at = |days: i64, hours: i64, minutes: i64| {
        day + Duration::days(days) + Duration::hours(hours) + Duration::minutes(minutes)
    };
    use pb::BusyStatus::*;
    assert_eq!(
        busy,
        vec![
            (at(0, 9, 0), at(0, 9, 15), Busy),
            (at(0, 11, 0), at(0, 12, 0), Busy),
            (at(0, 14, 0), at(0, 14, 30), Tentative),
            (at(1, 9, 0), at(1, 9, 15), Busy),
            (at(3, 8, 0), at(3, 16, 0), OutOfOffice),
        ],
        "{fb:#?}"
    );

    let requests = control.requests().await?;
    assert!(
        requests
            .iter()
            .any(|r| r == "POST /me/calendar/getSchedule"),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("events") || r.contains("calendarView")),
        "a FREE_BUSY account never has an event read: {requests:?}"
    );
    let violations = control.violations().await?;
    assert!(violations.is_empty(), "{violations:#?}");
    scheduler.proc.kill9().await;
    assert!(!dir_contains(scheduler.dir.path(), b"Secret")?);
    Ok(())
}
