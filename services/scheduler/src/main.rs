//! `calbridge-scheduler`: telemetry, configuration, then the scheduler runs
//! until SIGTERM or Ctrl-C.

use std::collections::HashMap;

use clap::Parser;

/// mimalloc instead of the system allocator: availability requests and
/// sync pages allocate many small objects (protobuf strings, decoded
/// records), and glibc's allocator slows down markedly once the heap of a
/// long-running scheduler is fragmented.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = calbridge_scheduler::Flags::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match calbridge_scheduler::Config::load(flags, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calbridge-scheduler: {e}");
            std::process::exit(2);
        }
    };
    let telemetry =
        calbridge_runtime::init_telemetry("calbridge-scheduler", config.otlp_endpoint.as_deref());
    if let Err(e) = telemetry.serve_metrics(config.metrics_listen).await {
        eprintln!("calbridge-scheduler: {e}");
        std::process::exit(1);
    }
    let result = calbridge_scheduler::run(config, calbridge_runtime::shutdown_signal()).await;
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("calbridge-scheduler: {e}");
        std::process::exit(1);
    }
    Ok(())
}
