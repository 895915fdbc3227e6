use super::*;

/// The sample line of `name` whose labels include all of `labels`, if any.
fn sample<'a>(text: &'a str, name: &str, labels: &[&str]) -> Option<&'a str> {
    text.lines().find(|l| {
        l.starts_with(name)
            && l[name.len()..].starts_with('{')
            && labels.iter().all(|want| l.contains(want))
    })
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn only_the_contracts_methods_become_labels() {
    assert_eq!(
        rpc_names("/grpc.health.v1.Health/Check"),
        ("grpc.health.v1.Health", "Check")
    );
    assert_eq!(
        rpc_names("/calbridge.v1.CalendarAdapter/Describe"),
        ("calbridge.v1.CalendarAdapter", "Describe")
    );
    // Whatever a caller puts in the path is never a label.
    assert_eq!(
        rpc_names("/evil.Service/user@example.com"),
        ("other", "other")
    );
    assert_eq!(
        rpc_names("/grpc.health.v1.Health/Check2"),
        ("other", "other")
    );
}

/// One process-wide meter provider (instruments bind to it once), so the
/// gRPC and provider checks share this one test.
#[tokio::test]
async fn calls_and_provider_requests_are_recorded_with_bounded_labels_and_help() {
    let metrics = std::sync::Arc::new(Metrics::install("metrics-test", None));

    // A real server (crate::serve: health, reflection, the server layer)
    // and a client through the client layer.
    let bound = crate::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.addr;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // serve adds gRPC health itself.
        crate::serve(
            "metrics-test",
            bound,
            &[],
            tonic::service::Routes::default(),
            async move {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let channel = tower::ServiceBuilder::new()
        .layer(RpcLayer::client())
        .service(channel);
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    for _ in 0..3 {
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    let unknown = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // A provider request that was throttled, and one that never got an answer.
    let url = url::Url::parse("https://www.googleapis.com/calendar/v3/x?token=secret").unwrap();
    {
        let mut r = ProviderRequest::start("google", "events.list", &http::Method::GET, &url);
        r.status(429);
    }
    {
        let _r = ProviderRequest::start("google", "events.insert", &http::Method::POST, &url);
    }
    retry_after("google", Duration::from_secs(7));
    throttle_wait("google", "retry_after", Duration::from_secs(7));

    // The server records when the answer's body ends: wait for it.
    let mut text = String::new();
    for _ in 0..100 {
        text = metrics.render();
        let done = sample(
            &text,
            "rpc_server_duration_seconds_count",
            &["rpc_method=\"Check\"", "rpc_grpc_status_code=\"5\""],
        )
        .is_some();
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for side in [
        "rpc_server_duration_seconds_count",
        "rpc_client_duration_seconds_count",
    ] {
        let ok = sample(
            &text,
            side,
            &[
                "rpc_service=\"grpc.health.v1.Health\"",
                "rpc_method=\"Check\"",
                "rpc_grpc_status_code=\"0\"",
                "rpc_system=\"grpc\"",
            ],
        )
        .unwrap_or_else(|| panic!("no {side} for OK checks in:\n{text}"));
        assert_eq!(value(ok), 3.0, "{ok}");
        let not_found = sample(&text, side, &["rpc_grpc_status_code=\"5\""])
            .unwrap_or_else(|| panic!("no {side} for NOT_FOUND in:\n{text}"));
        assert_eq!(value(not_found), 1.0, "{not_found}");
    }
    let throttled = sample(
        &text,
        "http_client_request_duration_seconds_count",
        &[
            "calbridge_provider=\"google\"",
            "calbridge_operation=\"events.list\"",
            "http_request_method=\"GET\"",
            "http_response_status_code=\"429\"",
        ],
    )
    .unwrap_or_else(|| panic!("no provider request sample in:\n{text}"));
    assert_eq!(value(throttled), 1.0);
    assert!(
        sample(
            &text,
            "http_client_request_duration_seconds_count",
            &[
                "calbridge_operation=\"events.insert\"",
                "error_type=\"cancelled\""
            ],
        )
        .is_some(),
        "{text}"
    );
    let asked = sample(&text, "calbridge_provider_retry_after_seconds_sum", &[])
        .unwrap_or_else(|| panic!("no retry-after in:\n{text}"));
    assert_eq!(value(asked), 7.0);
    assert!(
        sample(
            &text,
            "calbridge_provider_throttle_wait_seconds_count",
            &["calbridge_wait_reason=\"retry_after\""]
        )
        .is_some(),
        "{text}"
    );
    // Nothing of the URL but the host: no path, no query.
    assert!(
        !text.contains("secret") && !text.contains("/calendar/v3"),
        "{text}"
    );
    // HELP on every metric family.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 8),
            "{name} has no HELP text:\n{text}"
        );
    }

    // And over HTTP, as Prometheus scrapes it.
    let served = metrics
        .serve("metrics-test", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let body = reqwest_free_get(served).await;
    assert!(
        body.contains("rpc_server_duration_seconds_bucket"),
        "{body}"
    );

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

/// `GET /metrics` over a plain TCP connection (HTTP/1.0, read to the end).
async fn reqwest_free_get(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(out.contains("text/plain; version=0.0.4"), "{out}");
    out
}
