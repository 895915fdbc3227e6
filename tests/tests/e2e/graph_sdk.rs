//! Microsoft's own Python SDK for Graph (PyPI `msgraph-sdk`) as a client of
//! the fake Graph: `tests/python/graph_sdk_check.py` signs in at the fake's
//! identity platform, walks delta rounds page by page, waits out a 429,
//! writes events and manages a subscription (answering the validation
//! handshake on an HTTPS endpoint of its own), and fails on any answer
//! that does not parse into the SDK's models. `scripts/test` prepares the
//! Python environment and sets `CALBRIDGE_TEST_PYTHON`.
//!
//! And the other Microsoft artefact the Graph tests lean on, Prism with
//! Microsoft's OpenAPI description ([`calbridge_e2e::prism`]), shown to
//! refuse what breaks it: without that, a Prism that checked nothing would
//! pass the adapter's tests just the same.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use calbridge_e2e::prism::Prism;
use calbridge_fake_graph::FakeConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "0f4e7a52-3b8d-4c1e-9a6f-2d5b8c7e1a90";
const SECRET: &str = "sdk-secret";
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
const USER: &str = "sdk@contoso.example";

#[tokio::test(flavor = "multi_thread")]
async fn microsofts_python_sdk_syncs_writes_and_subscribes_against_the_fake_graph() -> Result<()> {
    let python = std::env::var("CALBRIDGE_TEST_PYTHON").context(
        "CALBRIDGE_TEST_PYTHON is not set: run the tests with scripts/test, which installs msgraph-sdk into a venv",
    )?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tls = calbridge_fake_google::dev_tls()?;
    let files = tempfile::tempdir()?;
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    std::fs::write(&cert, &tls.cert_pem)?;
    std::fs::write(&key, &tls.key_pem)?;
    let fake = calbridge_fake_graph::serve(FakeConfig {
        webhook_ca_pem: Some(tls.ca_pem.clone()),
        ..FakeConfig::default()
    })
    .await?;
    let control = fake.control();
    control.add_client(CLIENT_ID, SECRET, REDIRECT).await?;
    control.add_user(USER, "W. Europe Standard Time").await?;

    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/python/graph_sdk_check.py"))
        .args(["--base", &fake.base_url()])
        .args(["--client-id", CLIENT_ID, "--client-secret", SECRET])
        .args(["--redirect-uri", REDIRECT, "--user", USER])
        .arg("--webhook-cert")
        .arg(&cert)
        .arg("--webhook-key")
        .arg(&key)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "msgraph-sdk against the fake Graph failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seen: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{}", String::from_utf8_lossy(&out.stdout)))?;
    assert!(seen["first_round_pages"].as_u64() >= Some(3), "{seen}");
    assert!(
        seen["first_round_empty_pages"].as_u64() >= Some(1),
        "{seen}"
    );
    assert_eq!(seen["removed"], 1, "{seen}");
    assert!(seen["retry_waited_s"].as_f64() >= Some(2.0), "{seen}");
    assert_eq!(seen["crud"], "ok", "{seen}");
    assert_eq!(seen["subscriptions"], "ok", "{seen}");

    let violations = control.violations().await?;
    assert!(
        violations.is_empty(),
        "the fake's answers to the SDK break Microsoft's schemas: {violations:#?}"
    );
    Ok(())
}

/// An upstream that answers every request with an event whose id is a
/// number and whose subject is a list.
async fn broken_graph() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let _ = conn.read(&mut buf).await;
                let body = r#"{"id": 5, "subject": ["not", "a", "string"]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(format!("http://{addr}/v1.0"))
}

#[tokio::test(flavor = "multi_thread")]
async fn prism_refuses_a_graph_answer_and_an_event_body_that_break_microsofts_description(
) -> Result<()> {
    let prism = Prism::start(&broken_graph().await?).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let answer = http
        .get(format!("{}me/events/AAMkAGI2", prism.url()))
        .bearer_auth("token")
        .send()
        .await?;
    assert_eq!(answer.status(), 500, "{}", answer.text().await?);
    let problem: Value = answer.json().await?;
    assert!(problem.to_string().contains("subject"), "{problem}");
    let refused = http
        .post(format!("{}me/events", prism.url()))
        .bearer_auth("token")
        .json(&json!({"subject": 5, "start": "tomorrow"}))
        .send()
        .await?;
    assert_eq!(refused.status(), 422, "{}", refused.text().await?);
    let found = prism.violations().await?;
    assert!(
        found.iter().any(|l| l.contains("VIOLATIONS"))
            && found.iter().any(|l| l.contains("UNPROCESSABLE_ENTITY")),
        "Prism's log: {}",
        prism.log()
    );
    assert!(prism.verify().await.is_err());
    Ok(())
}
