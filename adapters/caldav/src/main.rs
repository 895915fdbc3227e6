//! The `calbridge-adapter-caldav` binary: telemetry (and the Prometheus
//! endpoint with `--metrics-listen`), configuration, then
//! [`calbridge_adapter_caldav::run`] until SIGTERM or Ctrl-C.

use anyhow::Context as _;
use clap::Parser;

use calbridge_adapter_caldav::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = calbridge_runtime::init_telemetry(
        "calbridge-adapter-caldav",
        config.otlp_endpoint.as_deref(),
    );
    let result = match telemetry
        .serve_metrics(config.metrics_listen)
        .await
        .context("cannot serve metrics (--metrics-listen)")
    {
        Ok(_) => calbridge_adapter_caldav::run(config, calbridge_runtime::shutdown_signal()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "caldav adapter failed");
    }
    telemetry.shutdown();
    result
}
