//! One trace shows the whole path: a caller's W3C trace context travels
//! through the scheduler into the adapter, and both export their spans
//! (and their metrics) over OTLP to a receiver started here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::{eventually, timed_event, Stack};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One received span in full.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
    name: String,
    /// Attributes with their values as text.
    attributes: Vec<(String, String)>,
}

/// Every span received, in full.
type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP trace receiver that keeps every span in full.
struct Receiver(Spans);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let text = |v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match v
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(Value::StringValue(s)) => s.clone(),
            Some(Value::IntValue(i)) => i.to_string(),
            Some(Value::BoolValue(b)) => b.to_string(),
            Some(Value::DoubleValue(d)) => d.to_string(),
            _ => String::new(),
        };
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .map(|a| text(&a.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Span {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        service: service.clone(),
                        name: span.name,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(&a.value)))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Every metric received: (service.name, metric name).
type Metrics = Arc<Mutex<HashSet<(String, String)>>>;

/// An OTLP metrics receiver that keeps the names of what each service sent.
struct MetricsReceiver(Metrics);

#[tonic::async_trait]
impl MetricsService for MetricsReceiver {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            let service = rm
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    got.insert((service.clone(), m.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts an OTLP receiver on a loopback port: its spans and its URL.
async fn receiver() -> Result<(Spans, String)> {
    let (spans, _, url) = receiver_with_metrics().await?;
    Ok((spans, url))
}

/// Starts an OTLP receiver of spans and metrics on a loopback port.
async fn receiver_with_metrics() -> Result<(Spans, Metrics, String)> {
    let spans: Spans = Arc::default();
    let metrics: Metrics = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(spans.clone())))
        .add_service(MetricsServiceServer::new(MetricsReceiver(metrics.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    Ok((spans, metrics, format!("http://{addr}")))
}

/// An upsert of a new event carrying the caller's trace `trace_id`.
fn traced_upsert(
    trace_id: &str,
    account_id: &str,
    calendar_id: &str,
    client_event_id: &str,
) -> Result<tonic::Request<pb::UpsertEventRequest>> {
    let mut req = tonic::Request::new(pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: account_id.into(),
        calendar_id: calendar_id.into(),
        client_event_id: client_event_id.into(),
        event: Some(timed_event(
            "Traced",
            chrono::Utc::now() + chrono::Duration::days(1),
            30,
        )),
        expected_version: String::new(),
        hold_id: String::new(),
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01").parse()?,
    );
    Ok(req)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_trace_continues_through_the_scheduler_into_the_adapter() -> Result<()> {
    let (received, metrics, otlp) = receiver_with_metrics().await?;
    let stack = Stack::start_with(
        &["--otlp-endpoint".into(), otlp],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
    )
    .await?;
    let (_, key) = stack.tenant("traced").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "trace@example.com", "pw-trace-1")
        .await?;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    c.upsert_event(traced_upsert(trace_id, &account, &calendar, "traced-1")?)
        .await?;

    let services = eventually(
        Duration::from_secs(30),
        "spans of both processes in the caller's trace",
        || async {
            let got = received.lock().unwrap();
            let services: HashSet<String> = got
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| s.service.clone())
                .collect();
            (services.contains("calbridge-scheduler")
                && services.contains("calbridge-adapter-sandbox"))
            .then_some(services)
        },
    )
    .await?;
    assert_eq!(services.len(), 2);
    let names: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.trace_id == trace_id && s.service == "calbridge-scheduler")
        .map(|s| s.name.clone())
        .collect();
    assert!(names.iter().any(|n| n == "upsert_event"), "{names:?}");

    // Metrics go the same way: both processes export their call
    // durations, the scheduler its calls to the adapter and its gauges.
    let want = [
        ("calbridge-scheduler", "rpc.server.duration"),
        ("calbridge-scheduler", "rpc.client.duration"),
        ("calbridge-scheduler", "calbridge.outbox.depth"),
        ("calbridge-adapter-sandbox", "rpc.server.duration"),
    ];
    eventually(
        Duration::from_secs(30),
        "metrics of both processes over OTLP",
        || async {
            let got = metrics.lock().unwrap();
            want.iter()
                .all(|(s, m)| got.contains(&(s.to_string(), m.to_string())))
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_trace_reaches_the_caldav_servers_http_request_without_ids_in_it() -> Result<()> {
    use calbridge_e2e::caldav::{connect, CaldavStack, DavServer, ServerKind};
    let (spans, otlp) = receiver().await?;

    let dav = DavServer::start(ServerKind::Radicale).await?;
    let stack = CaldavStack::start_with(
        3600,
        Some(&format!("otlp_endpoint = \"{otlp}\"\n")),
        &["--otlp-endpoint".into(), otlp.clone()],
    )
    .await?;
    let (_, key) = stack.tenant("traced-caldav").await?;
    let mut c = stack.client(Some(&key)).await?;
    let account = connect(&mut c, &dav, &dav.password).await?;
    calbridge_e2e::wait_synced(&mut c, &account.account_id).await?;

    let trace_id = "5cf92f3577b34da6a3ce929d0e0e4737";
    c.upsert_event(traced_upsert(
        trace_id,
        &account.account_id,
        &dav.calendar,
        "traced-dav-1",
    )?)
    .await?;

    // The PUT that created the event at the server: a client span of the
    // adapter in the caller's trace, under the adapter's own span.
    let put = eventually(Duration::from_secs(30), "the PUT's span", || async {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.trace_id == trace_id && s.service == "calbridge-adapter-caldav" && s.name == "PUT"
            })
            .cloned()
    })
    .await?;
    let attr = |k: &str| {
        put.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attr("http.request.method").as_deref(), Some("PUT"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("201"));
    assert_eq!(attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr("calbridge.provider").as_deref(), Some("caldav"));
    assert_eq!(
        attr("calbridge.process").as_deref(),
        Some("calbridge-adapter-caldav")
    );
    let all = spans.lock().unwrap().clone();
    let parent = all
        .iter()
        .find(|s| s.span_id == put.parent_span_id)
        .expect("the PUT's parent span was exported");
    assert_eq!(parent.service, "calbridge-adapter-caldav");
    eventually(
        Duration::from_secs(30),
        "the scheduler's spans in the trace",
        || async {
            spans
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.trace_id == trace_id && s.service == "calbridge-scheduler")
                .then_some(())
        },
    )
    .await?;
    // No provider request span names the calendar or the event: paths
    // and queries (hrefs, ids, tokens) stay out of them.
    let requests: Vec<&Span> = all
        .iter()
        .filter(|s| s.attributes.iter().any(|(k, _)| k == "calbridge.provider"))
        .collect();
    assert!(requests.len() > 1, "{requests:?}");
    for s in requests {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains(&dav.calendar) && !v.contains(".ics") && !v.contains('?'),
                "{k}={v} in span {}",
                s.name
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_trace_reaches_googles_http_request() -> Result<()> {
    use calbridge_e2e::google::{GoogleOptions, GoogleStack};
    let (spans, otlp) = receiver().await?;
    let g = GoogleStack::start(GoogleOptions {
        adapter_flags: vec!["--otlp-endpoint".into(), otlp.clone()],
        scheduler_flags: vec!["--otlp-endpoint".into(), otlp],
        ..Default::default()
    })
    .await?;
    let user = "traced@gmail.example";
    g.user(user).await?;
    let (_, key) = g.stack.tenant("traced-google").await?;
    let mut c = g.stack.client(Some(&key)).await?;
    let account = g.connect(&mut c, user, pb::AccessLevel::ReadWrite).await?;

    let trace_id = "6df92f3577b34da6a3ce929d0e0e4738";
    c.upsert_event(traced_upsert(
        trace_id,
        &account.account_id,
        "primary",
        "traced-google-1",
    )?)
    .await?;

    // The events.insert POST: a client span of the adapter in the caller's
    // trace, under one of the adapter's own spans.
    let post = eventually(Duration::from_secs(30), "the POST's span", || async {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| {
                s.trace_id == trace_id
                    && s.service == "calbridge-adapter-google"
                    && s.name == "POST"
            })
            .cloned()
    })
    .await?;
    let attr = |k: &str| {
        post.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr("calbridge.provider").as_deref(), Some("google"));
    let all = spans.lock().unwrap().clone();
    assert!(
        all.iter()
            .any(|s| s.span_id == post.parent_span_id && s.service == "calbridge-adapter-google"),
        "the POST's parent is the adapter's span"
    );
    for s in all
        .iter()
        .filter(|s| s.attributes.iter().any(|(k, _)| k == "calbridge.provider"))
    {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains(user) && !v.contains('?') && !v.contains("Bearer"),
                "{k}={v} in span {}",
                s.name
            );
        }
    }
    Ok(())
}
