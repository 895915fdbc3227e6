//! Mutual TLS between the scheduler and its adapters, over real processes:
//! an adapter answers only clients its CA signed, the scheduler refuses an
//! adapter whose certificate names another host, and a rotated certificate
//! is served to new connections while calls carry on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use calbridge::pb;
use calbridge_e2e::tls::{adapter_client, mtls_stack, server_certificate, Links, TestCa};
use calbridge_e2e::{eventually, free_port, timed_event, Proc};
use calbridge_runtime::tls::ClientTls;

#[tokio::test]
async fn an_adapter_answers_only_clients_whose_certificate_its_ca_signed() -> Result<()> {
    let links = Links::new(&["127.0.0.1", "localhost"])?;
    let health_port = free_port();
    let mut args = vec![
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--health-listen".to_string(),
        format!("127.0.0.1:{health_port}"),
    ];
    args.extend(links.adapter_flags());
    let adapter = Proc::start("calbridge-adapter-sandbox", &args).await?;
    let url = format!("https://{}", adapter.addr);

    // Health alone answers plaintext on its own port (for kubelet).
    let health = tonic_health::pb::health_client::HealthClient::new(
        calbridge_e2e::channel(&format!("http://127.0.0.1:{health_port}")).await?,
    )
    .check(tonic_health::pb::HealthCheckRequest {
        service: "calbridge.v1.CalendarAdapter".into(),
    })
    .await?
    .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Plaintext: not even a TLS client.
    let plain = adapter_client(&format!("http://{}", adapter.addr), None)?
        .describe(pb::DescribeRequest {})
        .await;
    assert!(plain.is_err(), "a plaintext client was answered");

    // TLS without a client certificate.
    let anonymous = links.client_tls(false)?;
    let status = adapter_client(&url, Some(&anonymous))?
        .describe(pb::DescribeRequest {})
        .await
        .expect_err("a client without a certificate was answered");
    // (TLS 1.3: the refusal arrives after the client's side of the
    // handshake, as an alert or a closed connection.)
    assert_ne!(status.code(), tonic::Code::Ok);

    // A certificate from another CA.
    let other = TestCa::new("another CA")?;
    let foreign = other.leaf(&["scheduler"], 9)?;
    let (fc, fk) = (
        links.dir.path().join("foreign.crt"),
        links.dir.path().join("foreign.key"),
    );
    foreign.write(&fc, &fk)?;
    let foreign_tls = ClientTls::new(&links.ca_file, Some((&fc, &fk)))?;
    let status = adapter_client(&url, Some(&foreign_tls))?
        .describe(pb::DescribeRequest {})
        .await
        .expect_err("a client with a foreign certificate was answered");
    // (TLS 1.3: the refusal arrives after the client's side of the
    // handshake, as an alert or a closed connection.)
    assert_ne!(status.code(), tonic::Code::Ok);

    // A certificate its CA signed.
    let signed = links.client_tls(true)?;
    adapter_client(&url, Some(&signed))?
        .describe(pb::DescribeRequest {})
        .await?;
    // The three refusals are the adapter's.
    eventually(Duration::from_secs(10), "three refused handshakes", || {
        let n = adapter
            .log
            .lock()
            .unwrap()
            .matches("TLS handshake refused")
            .count();
        async move { (n >= 3).then_some(()) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_scheduler_refuses_an_adapter_whose_certificate_names_another_host() -> Result<()> {
    // The adapter is dialled as 127.0.0.1; its certificate names others.
    let links = Links::new(&["adapter.elsewhere.example"])?;
    let stack = mtls_stack(&links, false, &[]).await?;
    let (_, key) = stack.tenant("t").await?;
    let mut c = stack.client(Some(&key)).await?;
    let connect = pb::ConnectPasswordAccountRequest {
        provider: pb::Provider::Sandbox as i32,
        server_url: String::new(),
        username: "ada@example.com".into(),
        password: "pw".into(),
        access_level: pb::AccessLevel::ReadWrite as i32,
    };
    let status = c
        .connect_password_account(connect.clone())
        .await
        .expect_err("an adapter with a certificate for another name was used");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("TLS handshake failed"),
        "{status:?}"
    );
    let log = stack.scheduler.log.lock().unwrap().clone();
    assert!(log.contains("TLS link to an adapter refused"), "{log}");

    // The same adapter with a certificate for its address (a rotation):
    // the next connection is accepted.
    links
        .ca
        .leaf(&["127.0.0.1", "localhost"], 7)?
        .write(&links.adapter_cert, &links.adapter_key)?;
    let account = eventually(Duration::from_secs(20), "the adapter is accepted", || {
        let mut c = c.clone();
        let req = connect.clone();
        async move { c.connect_password_account(req).await.ok() }
    })
    .await?;
    assert!(!account.into_inner().account_id.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_rotated_adapter_certificate_is_picked_up_while_calls_continue() -> Result<()> {
    let links = Links::new(&["127.0.0.1", "localhost"])?;
    let stack = mtls_stack(&links, false, &[]).await?;
    let (_, key) = stack.tenant("t").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "ada@example.com", "pw")
        .await?;
    let probe = links.client_tls(true)?;
    let before = server_certificate(stack.sandbox.addr, "127.0.0.1", &probe).await?;

    // Calls through the scheduler to the adapter, without a pause.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let base = chrono::Utc::now() + chrono::Duration::days(2);
    let calls = {
        let (stop, done, mut c) = (stop.clone(), done.clone(), c.clone());
        tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                c.upsert_event(pb::UpsertEventRequest {
                    provider_event_id: String::new(),
                    account_id: account.clone(),
                    calendar_id: calendar.clone(),
                    client_event_id: format!("rot-{i}"),
                    event: Some(timed_event(
                        "Rotation",
                        base + chrono::Duration::minutes(i),
                        30,
                    )),
                    expected_version: String::new(),
                    hold_id: String::new(),
                })
                .await
                .map_err(|s| anyhow!("call {i} failed during the rotation: {s:?}"))?;
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    eventually(Duration::from_secs(20), "calls running", || {
        let n = done.load(Ordering::Relaxed);
        async move { (n >= 5).then_some(()) }
    })
    .await?;

    // cert-manager style: the files are replaced in place (certificate
    // first, then the key: for a moment they do not match).
    let rotated = links.ca.leaf(&["127.0.0.1", "localhost"], 4242)?;
    rotated.write(&links.adapter_cert, &links.adapter_key)?;
    let seen = eventually(Duration::from_secs(20), "the rotated certificate", || {
        let probe = probe.clone();
        let addr = stack.sandbox.addr;
        let before = before.clone();
        async move {
            let der = server_certificate(addr, "127.0.0.1", &probe).await.ok()?;
            (der != before).then_some(der)
        }
    })
    .await?;
    assert_eq!(
        seen, rotated.cert_der,
        "a fresh client sees the new certificate"
    );
    let at_rotation = done.load(Ordering::Relaxed);
    eventually(Duration::from_secs(20), "calls after the rotation", || {
        let n = done.load(Ordering::Relaxed);
        async move { (n >= at_rotation + 5).then_some(()) }
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    calls.await??;
    let log = stack.sandbox.log.lock().unwrap().clone();
    assert!(log.contains("TLS material reloaded"), "{log}");
    Ok(())
}

#[tokio::test]
async fn the_api_over_tls_asks_for_a_client_certificate_and_still_an_api_key() -> Result<()> {
    let links = Links::new(&["127.0.0.1", "localhost"])?;
    let stack = mtls_stack(&links, true, &[]).await?;
    let url = format!("https://{}", stack.scheduler.addr);

    // The CLI, with the CA and a client certificate from the environment.
    let out = tokio::process::Command::new(calbridge_e2e::bin("calbridge"))
        .args(["admin", "create-tenant", "--name", "over-tls", "--json"])
        .env("CALBRIDGE_SERVER", &url)
        .env(
            "CALBRIDGE_ADMIN_TOKEN_FILE",
            stack.dir.path().join("admin.token"),
        )
        .env("CALBRIDGE_CA_FILE", &links.ca_file)
        .env("CALBRIDGE_CLIENT_CERT_FILE", &links.client_cert)
        .env("CALBRIDGE_CLIENT_KEY_FILE", &links.client_key)
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a client certificate: refused.
    let anonymous = calbridge_e2e::tls::tls_channel(&url, Some(&links.client_tls(false)?))?;
    let refused = pb::scheduler_client::SchedulerClient::new(anonymous)
        .list_accounts(pb::ListAccountsRequest::default())
        .await;
    assert!(refused.is_err(), "answered a client without a certificate");

    // With one but no API key: still unauthenticated.
    let mut admin = calbridge_e2e::tls::tls_admin(&stack, &links)?;
    calbridge_e2e::tls::tenant_with(&mut admin, "t").await?;
    let keyless = calbridge_e2e::tls::tls_channel(&url, Some(&links.client_tls(true)?))?;
    let status = pb::scheduler_client::SchedulerClient::new(keyless)
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect_err("answered without an API key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    Ok(())
}

#[tokio::test]
async fn an_adapter_pushes_to_a_scheduler_over_tls() -> Result<()> {
    let links = Links::new(&["127.0.0.1", "localhost"])?;
    let stack = mtls_stack(&links, true, &[]).await?;
    let mut admin = calbridge_e2e::tls::tls_admin(&stack, &links)?;
    let (_, key) = calbridge_e2e::tls::tenant_with(&mut admin, "t").await?;
    let mut c = calbridge_e2e::tls::tls_client(&stack, &links, &key)?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "ada@example.com", "pw")
        .await?;
    let mut sandbox =
        pb::sandbox_control_client::SandboxControlClient::new(calbridge_e2e::tls::tls_channel(
            &format!("https://{}", stack.sandbox.addr),
            Some(&links.client_tls(true)?),
        )?);
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    sandbox
        .put_event(pb::PutSandboxEventRequest {
            username: "ada@example.com".into(),
            calendar_id: String::new(),
            event: Some(timed_event("Outside, pushed", start, 30)),
        })
        .await?;
    // The sandbox suggests a 30-second poll: well within it, only the
    // notification (over TLS, with the adapter's certificate) explains it.
    let seen = eventually(Duration::from_secs(10), "the pushed change", || {
        let mut c = c.clone();
        let (account, calendar) = (account.clone(), calendar.clone());
        async move {
            let events = c
                .list_events(pb::ListEventsRequest {
                    account_id: account,
                    calendar_id: calendar,
                    window: Some(pb::TimeWindow {
                        start: Some(calbridge::time::to_timestamp(
                            start - chrono::Duration::hours(1),
                        )),
                        end: Some(calbridge::time::to_timestamp(
                            start + chrono::Duration::hours(2),
                        )),
                    }),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .events;
            events
                .iter()
                .any(|e| e.title == "Outside, pushed")
                .then_some(())
        }
    })
    .await;
    if seen.is_err() {
        let logs = (
            stack.sandbox.log.lock().unwrap().clone(),
            stack.scheduler.log.lock().unwrap().clone(),
        );
        panic!(
            "no push: sandbox log:\n{}\nscheduler log:\n{}",
            logs.0, logs.1
        );
    }
    Ok(())
}
