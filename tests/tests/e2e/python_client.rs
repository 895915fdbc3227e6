//! A Python grpcio client generated from `proto/` (and grpcio-reflection)
//! talks to the scheduler: generated clients in another language work.
//! `scripts/test` prepares the Python environment and sets
//! `CALBRIDGE_TEST_PYTHON`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use calbridge_e2e::Stack;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_python_client_generated_from_the_protos_calls_the_scheduler() -> Result<()> {
    let python = std::env::var("CALBRIDGE_TEST_PYTHON").context(
        "CALBRIDGE_TEST_PYTHON is not set: run the tests with scripts/test, which installs grpcio-tools into a venv",
    )?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let stack = Stack::start().await?;
    let (_, key) = stack.tenant("python").await?;
    let out = tokio::process::Command::new(python)
        .arg(root.join("tests/python/scheduler_client.py"))
        .arg(root.join("proto"))
        .arg(stack.scheduler.addr.to_string())
        .arg(&key)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "python client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let services: Vec<&str> = v["services"]
        .as_array()
        .context("services")?
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for s in [
        "calbridge.v1.Scheduler",
        "calbridge.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&s),
            "{s} missing from reflection: {services:?}"
        );
    }
    assert_eq!(v["health"], "SERVING");
    assert_eq!(v["account_status"], "ACCOUNT_STATUS_ACTIVE");
    assert_eq!(v["accounts"][0], v["account_id"]);
    assert_eq!(v["bad_key"], "UNAUTHENTICATED");
    assert_eq!(v["bad_input"], "INVALID_ARGUMENT");
    assert!(v["bad_input_message"]
        .as_str()
        .unwrap_or_default()
        .contains("client_event_id"));
    Ok(())
}
