//! Metrics every calbridge process exports: over OTLP (when an endpoint is
//! configured) and on a Prometheus `/metrics` endpoint
//! (`--metrics-listen`), from one OpenTelemetry meter provider.
//!
//! Names and attributes follow the OpenTelemetry semantic conventions where
//! they exist (`rpc.server.duration`, `http.client.request.duration`, ...)
//! and are `calbridge.*` otherwise; the Prometheus exposition converts them
//! the usual way (`rpc_server_duration_seconds`, label `rpc_method`). No
//! attribute ever names a user, an account, a calendar or an event, and no
//! value comes from a caller unchecked: a gRPC method that is not part of
//! the contract is recorded as `other`.
//!
//! What this module records itself: gRPC calls, server side ([`RpcLayer::server`]
//! in [`crate::serve`]) and client side ([`RpcLayer::client`]); provider
//! HTTP requests ([`ProviderRequest`]); throttling waits and Retry-After
//! ([`throttle_wait`], [`retry_after`]); push webhook notifications
//! ([`webhook_notification`]). The scheduler adds its own instruments
//! through [`meter`].

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// The instrumentation scope of every calbridge instrument.
const SCOPE: &str = "calbridge";

/// Histogram bucket bounds for durations, seconds: a millisecond to a minute.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram bucket bounds for waits and ages, seconds: 10 ms to a day.
pub const AGE_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0,
    86400.0,
];

/// The process's metrics: the meter provider (with the OTLP exporter when
/// configured) and the Prometheus registry `/metrics` renders.
pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
}

impl Metrics {
    /// A meter provider for `service_name` that feeds a Prometheus registry
    /// and, with `otlp_endpoint`, exports over OTLP/gRPC every 15 s (or
    /// every `OTEL_METRIC_EXPORT_INTERVAL` ms). It
    /// becomes the global provider, so [`meter`] and the instruments here
    /// record into it.
    pub fn install(service_name: &str, otlp_endpoint: Option<&str>) -> Metrics {
        let registry = prometheus::Registry::new();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(service_name.to_string())
            .build();
        let mut builder = SdkMeterProvider::builder().with_resource(resource);
        match opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // One process, one scope: the scope labels say nothing.
            .scope_info_enabled(false)
            .build()
        {
            Ok(exporter) => builder = builder.with_reader(exporter),
            Err(e) => eprintln!("prometheus exporter not started: {e}"),
        }
        if let Some(endpoint) = otlp_endpoint {
            use opentelemetry_otlp::WithExportConfig;
            match opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
            {
                Ok(exporter) => {
                    let mut reader = opentelemetry_sdk::metrics::PeriodicReader::builder(exporter);
                    // Every 15 s unless OTEL_METRIC_EXPORT_INTERVAL (ms) says.
                    if std::env::var_os("OTEL_METRIC_EXPORT_INTERVAL").is_none() {
                        reader = reader.with_interval(Duration::from_secs(15));
                    }
                    builder = builder.with_reader(reader.build());
                }
                Err(e) => eprintln!("otlp metric exporter to {endpoint} not started: {e}"),
            }
        }
        let provider = builder.build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Metrics { provider, registry }
    }

    /// The Prometheus text exposition of every instrument.
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics exposition failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Serves `GET /metrics` (plain HTTP) on `addr` until the process ends,
    /// and announces the bound address on stdout
    /// (`{"event":"metrics","service":...,"addr":...}`). Returns the bound
    /// address.
    pub async fn serve(
        self: &std::sync::Arc<Self>,
        service: &str,
        addr: SocketAddr,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let metrics = self.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
        announce_metrics(service, bound);
        tracing::info!(addr = %bound, "{service}: metrics on http://{bound}/metrics");
        Ok(bound)
    }

    /// Flushes the OTLP export and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("metrics shutdown: {e}");
        }
    }
}

/// The line a process prints once its metrics endpoint listens:
/// `{"event":"metrics","service":"...","addr":"127.0.0.1:PORT"}`.
fn announce_metrics(service: &str, addr: SocketAddr) {
    use std::io::Write;
    let line =
        serde_json::json!({"event": "metrics", "service": service, "addr": addr.to_string()});
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The meter calbridge's instruments come from (the global provider's, so
/// a no-op before [`Metrics::install`], as in unit tests).
pub fn meter() -> Meter {
    opentelemetry::global::meter_provider().meter(SCOPE)
}

/// A histogram of seconds with the given bucket bounds.
pub fn seconds_histogram(
    name: &'static str,
    description: &'static str,
    buckets: &[f64],
) -> Histogram<f64> {
    meter()
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(buckets.to_vec())
        .build()
}

// ---------------------------------------------------------------------------
// gRPC

/// Every `/package.Service/Method` path the contract, gRPC health and
/// reflection define: only these become a `rpc.method` label.
fn known_methods() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        use prost::Message as _;
        let mut known = HashSet::new();
        for set in [
            calbridge::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    for method in service.method {
                        known.insert(format!(
                            "/{package}.{name}/{}",
                            method.name.unwrap_or_default()
                        ));
                    }
                }
            }
        }
        for v in ["v1", "v1alpha"] {
            known.insert(format!(
                "/grpc.reflection.{v}.ServerReflection/ServerReflectionInfo"
            ));
        }
        known
    })
}

/// `(rpc.service, rpc.method)` of a request path, `("other", "other")` for
/// a path the contract does not define (a caller's path is never a label).
fn rpc_names(path: &str) -> (&'static str, &'static str) {
    static NAMES: OnceLock<std::collections::HashMap<String, (&'static str, &'static str)>> =
        OnceLock::new();
    let names = NAMES.get_or_init(|| {
        known_methods()
            .iter()
            .filter_map(|p| {
                let (service, method) = p.trim_start_matches('/').split_once('/')?;
                let service: &'static str = Box::leak(service.to_string().into_boxed_str());
                let method: &'static str = Box::leak(method.to_string().into_boxed_str());
                Some((p.clone(), (service, method)))
            })
            .collect()
    });
    names.get(path).copied().unwrap_or(("other", "other"))
}

/// Records the duration of gRPC calls by service, method and status
/// (`rpc.server.duration` or `rpc.client.duration`, seconds), from the
/// request until the last byte of the answer (a stream's end).
#[derive(Clone)]
pub struct RpcLayer {
    histogram: Histogram<f64>,
}

impl RpcLayer {
    /// The server side: every call a process answers.
    pub fn server() -> Self {
        static H: OnceLock<Histogram<f64>> = OnceLock::new();
        let histogram = H.get_or_init(|| {
            seconds_histogram(
                "rpc.server.duration",
                "Duration of the gRPC calls this process answered, by service, method and status code.",
                DURATION_BUCKETS,
            )
        });
        RpcLayer {
            histogram: histogram.clone(),
        }
    }

    /// The client side: every call this process makes to another one.
    pub fn client() -> Self {
        static H: OnceLock<Histogram<f64>> = OnceLock::new();
        let histogram = H.get_or_init(|| {
            seconds_histogram(
                "rpc.client.duration",
                "Duration of the gRPC calls this process made to another calbridge process, by service, method and status code.",
                DURATION_BUCKETS,
            )
        });
        RpcLayer {
            histogram: histogram.clone(),
        }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;
    fn layer(&self, inner: S) -> Rpc<S> {
        Rpc {
            inner,
            histogram: self.histogram.clone(),
        }
    }
}

/// A gRPC service (server or channel) whose calls are timed ([`RpcLayer`]).
#[derive(Clone)]
pub struct Rpc<S> {
    inner: S,
    histogram: Histogram<f64>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Rpc<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TimedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = rpc_names(req.uri().path());
        let call = CallTimer {
            histogram: self.histogram.clone(),
            service,
            method,
            start: Instant::now(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    // A trailers-only answer (every error) has its status in
                    // the headers; otherwise it comes in the trailers.
                    let status = grpc_status(resp.headers());
                    let (parts, body) = resp.into_parts();
                    let timed = TimedBody {
                        inner: body,
                        call: Some(call),
                    };
                    let timed = match status {
                        Some(code) => timed.finish(code),
                        None => timed,
                    };
                    Ok(http::Response::from_parts(parts, timed))
                }
                Err(e) => {
                    // The call never got an answer: the transport failed.
                    call.record(tonic::Code::Unavailable as i32);
                    Err(e)
                }
            }
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

struct CallTimer {
    histogram: Histogram<f64>,
    service: &'static str,
    method: &'static str,
    start: Instant,
}

impl CallTimer {
    fn record(self, code: i32) {
        self.histogram.record(
            self.start.elapsed().as_secs_f64(),
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", self.service),
                KeyValue::new("rpc.method", self.method),
                KeyValue::new("rpc.grpc.status_code", i64::from(code)),
            ],
        );
    }
}

pin_project_lite::pin_project! {
    /// An answer body that records its call when its status is known: in
    /// the trailers, at the end of the body, or CANCELLED when dropped
    /// before either.
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        call: Option<CallTimer>,
    }

    impl<B> PinnedDrop for TimedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(call) = this.project().call.take() {
                call.record(tonic::Code::Cancelled as i32);
            }
        }
    }
}

impl<B: Default> Default for TimedBody<B> {
    /// An empty body that records nothing (tonic builds one for its own
    /// error answers).
    fn default() -> Self {
        TimedBody {
            inner: B::default(),
            call: None,
        }
    }
}

impl<B> TimedBody<B> {
    fn finish(mut self, code: i32) -> Self {
        if let Some(call) = self.call.take() {
            call.record(code);
        }
        self
    }
}

impl<B: http_body::Body> http_body::Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(call) = this.call.take() {
                        call.record(grpc_status(trailers).unwrap_or(tonic::Code::Unknown as i32));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.record(tonic::Code::Unavailable as i32);
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    // Ended with no status at all: a broken answer.
                    call.record(tonic::Code::Unknown as i32);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------------------
// Providers

fn provider_histogram() -> &'static Histogram<f64> {
    static H: OnceLock<Histogram<f64>> = OnceLock::new();
    H.get_or_init(|| {
        seconds_histogram(
            "http.client.request.duration",
            "Duration of the HTTP requests adapters sent to calendar providers, by provider, operation, method and status (or error type).",
            DURATION_BUCKETS,
        )
    })
}

/// One HTTP request an adapter sends to its provider: its span
/// ([`crate::provider_request_span`]) and its `http.client.request.duration`
/// sample, recorded when the request is dropped, with the status or error
/// type given by [`ProviderRequest::status`] / [`ProviderRequest::error`].
pub struct ProviderRequest {
    span: tracing::Span,
    provider: &'static str,
    operation: &'static str,
    method: http::Method,
    start: Instant,
    outcome: Option<KeyValue>,
}

impl ProviderRequest {
    /// Starts the request's span and clock. `operation` is the adapter's
    /// fixed name for what the request does (`events.list`,
    /// `calendarView.delta`, `REPORT`): never a path or an id.
    pub fn start(
        provider: &'static str,
        operation: &'static str,
        method: &http::Method,
        url: &url::Url,
    ) -> Self {
        let span = crate::provider_request_span(
            provider,
            method,
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port_or_known_default(),
        );
        ProviderRequest {
            span,
            provider,
            operation,
            method: method.clone(),
            start: Instant::now(),
            outcome: None,
        }
    }

    /// The request's span (to instrument the send with).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Restarts the clock: the request is sent now (after waiting for a
    /// budget, which [`throttle_wait`] counts instead).
    pub fn sending(&mut self) {
        self.start = Instant::now();
    }

    /// Marks a resend (retry number `n`).
    pub fn resend(&self, n: u32) {
        self.span.record("http.request.resend_count", n);
    }

    /// The provider answered with `status`.
    pub fn status(&mut self, status: u16) {
        self.span.record("http.response.status_code", status);
        self.outcome = Some(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }

    /// The request failed without an answer; `error_type` is a fixed name
    /// (`timeout`, `connect`, `body`, ...).
    pub fn error(&mut self, error_type: &'static str) {
        self.span.record("error.type", error_type);
        self.outcome = Some(KeyValue::new("error.type", error_type));
    }
}

impl Drop for ProviderRequest {
    fn drop(&mut self) {
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| KeyValue::new("error.type", "cancelled"));
        provider_histogram().record(
            self.start.elapsed().as_secs_f64(),
            &[
                KeyValue::new("calbridge.provider", self.provider),
                KeyValue::new("calbridge.operation", self.operation),
                KeyValue::new("http.request.method", self.method.as_str().to_string()),
                outcome,
            ],
        );
    }
}

/// The fixed name of an HTTP request's failure without an answer, for
/// spans and metrics (`error.type`): `timeout`, `connect`, `redirect`,
/// `body` or `request`.
pub fn error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_redirect() {
        "redirect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// The value of the first sample of `name` in a Prometheus exposition
/// whose labels include each of `labels` (`key="value"` text), for tests
/// and tools reading [`Metrics::render`] or a scrape.
pub fn sample_value(exposition: &str, name: &str, labels: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && labels.iter().all(|want| l.contains(want))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Records time an adapter spent waiting before sending to `provider`:
/// `reason` is `budget` (its own request budget or concurrency limit),
/// `retry_after` (a provider's Retry-After) or `backoff` (a retry's delay).
pub fn throttle_wait(provider: &'static str, reason: &'static str, waited: Duration) {
    static H: OnceLock<Histogram<f64>> = OnceLock::new();
    H.get_or_init(|| {
        seconds_histogram(
            "calbridge.provider.throttle_wait",
            "Time adapters waited before sending to a provider: on their own request budgets, a provider's Retry-After, or a retry's backoff.",
            AGE_BUCKETS,
        )
    })
    .record(
        waited.as_secs_f64(),
        &[
            KeyValue::new("calbridge.provider", provider),
            KeyValue::new("calbridge.wait_reason", reason),
        ],
    );
}

/// Records a Retry-After a provider asked for.
pub fn retry_after(provider: &'static str, asked: Duration) {
    static H: OnceLock<Histogram<f64>> = OnceLock::new();
    H.get_or_init(|| {
        seconds_histogram(
            "calbridge.provider.retry_after",
            "Retry-After delays providers asked for in throttling and outage answers.",
            AGE_BUCKETS,
        )
    })
    .record(
        asked.as_secs_f64(),
        &[KeyValue::new("calbridge.provider", provider)],
    );
}

/// Counts a push notification an adapter's webhook received, by outcome
/// (`forwarded`, `forged`, `refused`, `unreachable`, `validation`, ...).
pub fn webhook_notification(provider: &'static str, outcome: &'static str) {
    static C: OnceLock<Counter<u64>> = OnceLock::new();
    C.get_or_init(|| {
        meter()
            .u64_counter("calbridge.webhook.notifications")
            .with_description(
                "Push notifications the adapters' webhooks received, by provider and outcome.",
            )
            .build()
    })
    .add(
        1,
        &[
            KeyValue::new("calbridge.provider", provider),
            KeyValue::new("outcome", outcome),
        ],
    );
}

#[cfg(test)]
mod tests;
