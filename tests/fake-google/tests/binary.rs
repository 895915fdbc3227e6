//! The binary prints its listening line and serves until terminated.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn the_binary_announces_its_address_and_serves_the_control_api() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calbridge-fake-google"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--validate-responses",
            "--seed",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("one line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "listening");
    assert_eq!(v["service"], "fake-google");
    let addr = v["addr"].as_str().unwrap();
    let control = calbridge_fake_google::Control::new(format!("http://{addr}"));
    assert_eq!(control.requests().await.unwrap().total, 0);
    assert!(control.violations().await.unwrap().is_empty());
    child.start_kill().unwrap();
    let _ = child.wait().await;
}
