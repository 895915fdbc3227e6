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
    /// Serve Prometheus metrics on http://ADDR/metrics (plain HTTP; port 0
    /// picks one).
    #[arg(long, env = "CALBRIDGE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// The poll interval suggested to the scheduler in Describe, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub poll_interval_seconds: u32,
    /// The server used when CheckPassword names none (the iCloud preset).
    #[arg(long, env = "CALBRIDGE_CALDAV_DEFAULT_SERVER", default_value = ICLOUD_URL)]
    pub default_server_url: String,
    /// Timeout of one HTTP request to a CalDAV server, in seconds (reading
    /// the answer's body included).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_timeout_seconds: u64,
    /// Networks (CIDR, e.g. `10.20.0.0/16` or `127.0.0.1/32`) of self-hosted
    /// CalDAV servers the adapter may reach although they are not public.
    /// Loopback, private, link-local (metadata), shared and reserved
    /// addresses are refused otherwise. Repeatable; comma-separated in the
    /// environment.
    #[arg(
        long = "allow-private-network",
        env = "CALBRIDGE_CALDAV_ALLOW_PRIVATE_NETWORKS",
        value_delimiter = ','
    )]
    pub allow_private_networks: Vec<ipnet::IpNet>,
    /// The largest answer body read from a CalDAV server, in bytes; a
    /// larger one fails that request (a whole-calendar query then lists in
    /// batches instead, and an object too large alone is reported as
    /// skipped).
    #[arg(long, default_value_t = crate::client::DEFAULT_MAX_RESPONSE_BYTES, value_parser = parse_body_cap)]
    pub max_response_bytes: usize,
    /// TLS of the gRPC server (mutual with `--tls-client-ca`) and of push
    /// callbacks to an `https://` scheduler.
    #[command(flatten)]
    pub tls: calbridge_runtime::tls::TlsArgs,
}

impl Config {
    /// A configuration listening on `listen`, with the defaults otherwise
    /// (no span export, 30-second poll interval, iCloud preset). For tests
    /// and embedding.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            otlp_endpoint: None,
            metrics_listen: None,
            poll_interval_seconds: 30,
            default_server_url: ICLOUD_URL.to_string(),
            http_timeout_seconds: 30,
            allow_private_networks: Vec::new(),
            max_response_bytes: crate::client::DEFAULT_MAX_RESPONSE_BYTES,
            tls: Default::default(),
        }
    }

    /// The bounds of the adapter's HTTP requests: the egress policy with the
    /// allow-listed networks, and the body cap.
    pub fn limits(&self) -> crate::client::Limits {
        crate::client::Limits {
            egress: crate::egress::Egress::new(self.allow_private_networks.clone()),
            max_body: self.max_response_bytes,
        }
    }

    /// The per-request HTTP timeout.
    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_seconds)
    }
}

/// A body cap of at least 64 KiB.
fn parse_body_cap(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of bytes"))?;
    if n < 65_536 {
        return Err("must be at least 65536 bytes".into());
    }
    Ok(n)
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
            "--allow-private-network",
            "127.0.0.0/8",
            "--allow-private-network",
            "10.1.0.0/16,fd00::/8",
        ])
        .unwrap();
        assert_eq!(c.allow_private_networks.len(), 3);
        assert!(c.limits().egress.permits("10.1.2.3".parse().unwrap()));
        assert!(!c.limits().egress.permits("10.2.2.3".parse().unwrap()));
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
