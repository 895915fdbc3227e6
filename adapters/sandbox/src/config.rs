//! The sandbox adapter's configuration: command-line flags, each with an
//! environment-variable fallback, parsed straight into types.

use std::net::SocketAddr;

/// How the sandbox adapter process runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "calbridge-adapter-sandbox",
    version,
    about = "The calbridge sandbox adapter: an in-memory calendar provider behind the adapter contract."
)]
pub struct Config {
    /// The address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "CALBRIDGE_LISTEN", default_value = "127.0.0.1:50061")]
    pub listen: SocketAddr,
    /// The OTLP/gRPC endpoint to export spans to; none when unset.
    #[arg(long, env = "CALBRIDGE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP; port 0
    /// picks one).
    #[arg(long, env = "CALBRIDGE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The poll interval suggested to the scheduler in Describe, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub poll_interval_seconds: u32,
    /// TLS of the gRPC server (mutual with `--tls-client-ca`) and of push
    /// callbacks to an `https://` scheduler.
    #[command(flatten)]
    pub tls: calbridge_runtime::tls::TlsArgs,
}

impl Config {
    /// A configuration listening on `listen`, with the defaults otherwise
    /// (no span export, 30-second poll interval). For tests and embedding.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            otlp_endpoint: None,
            metrics_listen: None,
            poll_interval_seconds: 30,
            tls: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_override_the_defaults() {
        let c = Config::try_parse_from([
            "calbridge-adapter-sandbox",
            "--listen",
            "127.0.0.1:0",
            "--poll-interval-seconds",
            "5",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.poll_interval_seconds, 5);
    }

    #[test]
    fn a_bad_listen_address_is_refused() {
        assert!(Config::try_parse_from([
            "calbridge-adapter-sandbox",
            "--listen",
            "not-an-address"
        ])
        .is_err());
    }
}
