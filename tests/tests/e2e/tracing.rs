//! One trace shows the whole path: a caller's W3C trace context travels
//! through the scheduler into the adapter, and both export their spans over
//! OTLP to a receiver started here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use calbridge::pb;
use calbridge_e2e::{eventually, timed_event, Stack};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// (trace id hex, service name, span name) of every span received.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

struct Receiver(Received);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
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
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push((hex(&span.trace_id), service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_trace_continues_through_the_scheduler_into_the_adapter() -> Result<()> {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(received.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let stack = Stack::start_with(
        &["--otlp-endpoint".into(), format!("http://{addr}")],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await?;
    let (_, key) = stack.tenant("traced").await?;
    let mut c = stack.client(Some(&key)).await?;
    let (account, calendar) = stack
        .sandbox_account(&mut c, "trace@example.com", "pw-trace-1")
        .await?;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut req = tonic::Request::new(pb::UpsertEventRequest {
        provider_event_id: String::new(),
        account_id: account,
        calendar_id: calendar,
        client_event_id: "traced-1".into(),
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
    c.upsert_event(req).await?;

    let services = eventually(
        Duration::from_secs(30),
        "spans of both processes in the caller's trace",
        || async {
            let got = received.lock().unwrap();
            let services: HashSet<String> = got
                .iter()
                .filter(|(t, _, _)| t == trace_id)
                .map(|(_, s, _)| s.clone())
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
        .filter(|(t, s, _)| t == trace_id && s == "calbridge-scheduler")
        .map(|(_, _, n)| n.clone())
        .collect();
    assert!(names.iter().any(|n| n == "upsert_event"), "{names:?}");
    Ok(())
}
