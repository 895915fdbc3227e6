//! What every calbridge process runs the same way: logging and OpenTelemetry
//! export, W3C trace-context propagation through gRPC metadata, the gRPC
//! health and reflection services, binding and announcing the listening
//! address, graceful shutdown on SIGTERM / Ctrl-C, and [`serve`], which
//! puts these together around a process's own gRPC services; [`webhook`]
//! is what the adapters' push webhooks share.

use std::net::SocketAddr;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub mod metrics;
pub mod tls;
pub mod webhook;

/// Keeps the tracer and meter providers alive; [`Telemetry::shutdown`]
/// flushes pending spans and metrics.
pub struct Telemetry {
    provider: SdkTracerProvider,
    metrics: std::sync::Arc<metrics::Metrics>,
    service_name: String,
}

impl Telemetry {
    /// Serves the process's metrics on `http://ADDR/metrics` when `addr`
    /// is given ([`metrics::Metrics::serve`]); returns the bound address.
    pub async fn serve_metrics(
        &self,
        addr: Option<SocketAddr>,
    ) -> std::io::Result<Option<SocketAddr>> {
        match addr {
            Some(addr) => self
                .metrics
                .serve(&self.service_name, addr)
                .await
                .map(Some)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--metrics-listen {addr}: {e}"))
                }),
            None => Ok(None),
        }
    }

    /// The process's metrics (their Prometheus exposition).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Flushes and stops span and metric export.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {e}");
        }
        self.metrics.shutdown();
    }
}

/// Puts the process's name on every span as `calbridge.process` (besides
/// the resource's `service.name`), for backends that show span attributes
/// only.
#[derive(Debug)]
struct ProcessName(String);

impl opentelemetry_sdk::trace::SpanProcessor for ProcessName {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {
        use opentelemetry::trace::Span as _;
        span.set_attribute(opentelemetry::KeyValue::new(
            "calbridge.process",
            self.0.clone(),
        ));
    }

    fn on_end(&self, _span: opentelemetry_sdk::trace::SpanData) {}

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(
        &self,
        _timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// Installs logging to stderr (filtered by `RUST_LOG`, default `info`), the
/// OpenTelemetry layer and the metrics ([`metrics::Metrics::install`]).
/// Spans and metrics are exported over OTLP/gRPC to `otlp_endpoint` when one
/// is given; trace context is propagated either way.
pub fn init_telemetry(service_name: &str, otlp_endpoint: Option<&str>) -> Telemetry {
    let metrics = std::sync::Arc::new(metrics::Metrics::install(service_name, otlp_endpoint));
    let mut builder = SdkTracerProvider::builder()
        .with_resource(
            opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .with_span_processor(ProcessName(service_name.to_string()));
    if let Some(endpoint) = otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("otlp exporter to {endpoint} not started: {e}"),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service_name.to_string());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    Telemetry {
        provider,
        metrics,
        service_name: service_name.to_string(),
    }
}

fn propagator() -> &'static TraceContextPropagator {
    static P: OnceLock<TraceContextPropagator> = OnceLock::new();
    P.get_or_init(TraceContextPropagator::new)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The span every incoming gRPC request runs in, a child of the caller's W3C
/// `traceparent` when there is one. For `tonic::transport::Server::trace_fn`.
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    let parent = propagator().extract(&HeaderExtractor(req.headers()));
    let span = tracing::info_span!("grpc.server", rpc.path = %req.uri().path());
    let _ = span.set_parent(parent);
    span
}

/// The span of one HTTP request an adapter sends to its provider, at the
/// default level, named by the method with the OpenTelemetry HTTP client
/// attributes: method, scheme, server address and port, then (recorded by
/// the caller) the response status or the error type, and the resend count
/// for a retry. Never the path or the query (calendar and event ids, which
/// may hold e-mail addresses, and tokens live there) nor any header.
pub fn provider_request_span(
    provider: &'static str,
    method: &http::Method,
    scheme: &str,
    host: &str,
    port: Option<u16>,
) -> tracing::Span {
    tracing::info_span!(
        "provider.request",
        otel.name = %method,
        otel.kind = "client",
        http.request.method = %method,
        url.scheme = scheme,
        server.address = host,
        server.port = port,
        calbridge.provider = provider,
        http.response.status_code = tracing::field::Empty,
        http.request.resend_count = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Writes the current span's trace context into outgoing request metadata.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    propagator().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// A client interceptor that carries the current trace context to the callee.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracePropagation;

impl tonic::service::Interceptor for TracePropagation {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_trace_context(req.metadata_mut());
        Ok(req)
    }
}

/// The gRPC reflection services (v1 and v1alpha, for grpcurl and
/// grpcio-reflection) over the calbridge contract and gRPC health.
pub fn reflection_services() -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(calbridge::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the contract's descriptor set is valid");
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(calbridge::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the contract's descriptor set is valid");
    (v1, v1alpha)
}

/// Marks the named services SERVING (and the whole server, "").
pub async fn set_serving(reporter: &tonic_health::server::HealthReporter, services: &[&str]) {
    use tonic_health::ServingStatus;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    for s in services {
        reporter
            .set_service_status(*s, ServingStatus::Serving)
            .await;
    }
}

/// Marks the named services NOT_SERVING, for draining before shutdown.
pub async fn set_not_serving(reporter: &tonic_health::server::HealthReporter, services: &[&str]) {
    use tonic_health::ServingStatus;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for s in services {
        reporter
            .set_service_status(*s, ServingStatus::NotServing)
            .await;
    }
}

/// Accepted connections, with TCP_NODELAY set.
pub type Incoming = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send>,
>;

/// A bound listener and its actual address (port 0 resolved).
pub struct Bound {
    /// The accepted-connection stream for `serve_with_incoming_shutdown`.
    pub incoming: Incoming,
    /// The address actually bound.
    pub addr: SocketAddr,
    tls: Option<tls::ServerTls>,
    health: Option<TcpListener>,
}

impl Bound {
    /// Serves TLS (and, when `tls` verifies clients, mutual TLS) on this
    /// listener through [`serve`]; plain HTTP/2 with `None`.
    pub fn with_tls(mut self, tls: Option<tls::ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Also serves gRPC health alone, plaintext, on `listener` (kubelet's
    /// gRPC probes cannot speak TLS; health says nothing secret).
    pub fn with_health_listener(mut self, listener: Option<TcpListener>) -> Self {
        self.health = listener;
        self
    }
}

/// Serves `routes` (gRPC health alone) plaintext on `listener` until
/// `shutdown` resolves. Logged, not announced: launchers take the first
/// announced address as the process's gRPC port.
pub async fn serve_health(
    name: &str,
    listener: TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "{name}: plaintext gRPC health listening");
    }
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    // Small gRPC frames must not wait for delayed ACKs (Nagle adds ~40 ms
    // per response otherwise).
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        conn.and_then(|c| c.set_nodelay(true).map(|()| c))
    });
    Ok(Bound {
        incoming: Box::pin(incoming),
        addr,
        tls: None,
        health: None,
    })
}

/// The line a process prints on stdout once it accepts connections, so
/// launchers and tests learn the port without polling:
/// `{"event":"listening","service":"...","addr":"127.0.0.1:PORT"}`.
pub fn announce(service: &str, addr: SocketAddr) {
    use std::io::Write;
    let line =
        serde_json::json!({"event": "listening", "service": service, "addr": addr.to_string()});
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Serves `routes` on `bound` the way every calbridge gRPC server runs:
/// gRPC health (the whole server and each of `health_names` SERVING),
/// reflection v1 and v1alpha, one span per request that continues the
/// caller's trace ([`server_span`]), and the bound address announced on
/// stdout under `name` ([`announce`]); over TLS when the listener has it
/// ([`Bound::with_tls`]). When `shutdown` resolves, health turns
/// NOT_SERVING and the server drains its connections and returns.
pub async fn serve(
    name: &str,
    bound: Bound,
    health_names: &[&str],
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_serving(&reporter, health_names).await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let health_task = bound.health.map(|listener| {
        let routes = tonic::service::Routes::new(health.clone());
        let name = name.to_string();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            };
            if let Err(error) = serve_health(&name, listener, routes, stopped).await {
                tracing::error!(%error, "plaintext health listener failed");
            }
        })
    });
    let (reflection_v1, reflection_v1alpha) = reflection_services();
    let routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    announce(name, bound.addr);
    tracing::info!(addr = %bound.addr, tls = bound.tls.is_some(), mutual_tls = bound.tls.as_ref().is_some_and(tls::ServerTls::verifies_clients), "{name} listening");
    let signal = async {
        shutdown.await;
        set_not_serving(&reporter, health_names).await;
        tracing::info!("{name} stopping");
        let _ = stop_tx.send(true);
    };
    let mut server = tonic::transport::Server::builder()
        .trace_fn(server_span)
        .layer(metrics::RpcLayer::server());
    let router = server.add_routes(routes);
    let result = match bound.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls::tls_incoming(bound.incoming, tls), signal)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(bound.incoming, signal)
                .await
        }
    };
    if let Some(task) = health_task {
        task.abort();
    }
    result
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}

/// A secret string whose `Debug` and `Display` never print it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; use only where it is sent or hashed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn trace_context_round_trips_through_metadata() {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("t");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("caller");
            let _g = span.enter();
            let mut md = MetadataMap::new();
            inject_trace_context(&mut md);
            let tp = md.get("traceparent").expect("traceparent injected");
            let trace_id = {
                use opentelemetry::trace::TraceContextExt;
                span.context().span().span_context().trace_id().to_string()
            };
            assert!(tp.to_str().unwrap().contains(&trace_id));
            let mut req = http::Request::new(());
            req.headers_mut()
                .insert("traceparent", tp.to_str().unwrap().parse().unwrap());
            let server = server_span(&req);
            use opentelemetry::trace::TraceContextExt;
            assert_eq!(
                server
                    .context()
                    .span()
                    .span_context()
                    .trace_id()
                    .to_string(),
                trace_id
            );
        });
    }
}
