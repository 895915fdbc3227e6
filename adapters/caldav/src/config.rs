//! The CalDAV adapter's configuration: command-line flags, each with an
//! environment-variable fallback, parsed straight into types.

use std::net::SocketAddr;
use std::time::Duration;

/// The iCloud CalDAV endpoint used when CheckPassword names no server.
pub const ICLOUD_URL: &str = "https://caldav.icloud.com";

/// How the CalDAV adapter process runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
#[command(
    name = "calbridge-adapter-caldav",
    version,
    about = "The calbridge CalDAV adapter: CalDAV servers and Apple iCloud behind the adapter contract."
)]
pub struct Config {
    /// The address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "CALBRIDGE_LISTEN", default_value = "127.0.0.1:50062")]
    pub listen: SocketAddr,
    /// The OTLP/gRPC endpoint to export spans to; none when unset.
    #[arg(long, env = "CALBRIDGE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The poll interval suggested to the scheduler in Describe, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub poll_interval_seconds: u32,
    /// The server used when CheckPassword names none (the iCloud preset).
    #[arg(long, env = "CALBRIDGE_CALDAV_DEFAULT_SERVER", default_value = ICLOUD_URL)]
    pub default_server_url: String,
    /// Timeout of one HTTP request to a CalDAV server, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_timeout_seconds: u64,
}

impl Config {
    /// A configuration listening on `listen`, with the defaults otherwise
    /// (no span export, 30-second poll interval, iCloud preset). For tests
    /// and embedding.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            otlp_endpoint: None,
            poll_interval_seconds: 30,
            default_server_url: ICLOUD_URL.to_string(),
            http_timeout_seconds: 30,
        }
    }

    /// The per-request HTTP timeout.
    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_override_the_defaults() {
        let c = Config::try_parse_from([
            "calbridge-adapter-caldav",
            "--listen",
            "127.0.0.1:0",
            "--poll-interval-seconds",
            "5",
            "--default-server-url",
            "http://127.0.0.1:1/",
        ])
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.poll_interval_seconds, 5);
        assert_eq!(c.default_server_url, "http://127.0.0.1:1/");
    }

    #[test]
    fn the_defaults_match_the_documented_ones() {
        let c = Config::try_parse_from(["calbridge-adapter-caldav"]).unwrap();
        assert_eq!(c, Config::new("127.0.0.1:50062".parse().unwrap()));
    }
}
