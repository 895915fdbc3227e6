//! How failures reach people: a gRPC status becomes `error: <message>` with
//! what the status details and the code say to do next (field violations,
//! retry delays, which credential to pass, how to start the stack).

use std::fmt;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Which server a call went to, for hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// The public Scheduler service.
    Scheduler,
    /// The operator Admin service (on the scheduler).
    Admin,
    /// The sandbox adapter's control service.
    Sandbox,
}

impl Api {
    /// The flag that sets this server's URL.
    pub(crate) fn url_flag(self) -> &'static str {
        match self {
            Api::Scheduler | Api::Admin => "--server",
            Api::Sandbox => "--sandbox",
        }
    }

    fn server_name(self) -> &'static str {
        match self {
            Api::Scheduler | Api::Admin => "the scheduler",
            Api::Sandbox => "the sandbox adapter",
        }
    }
}

/// Nothing answered at a server's URL.
#[derive(Debug)]
pub(crate) struct Unreachable {
    /// Which server.
    pub api: Api,
    /// Where we looked.
    pub url: String,
    /// Why connecting failed.
    pub source: tonic::transport::Error,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not reachable at {}",
            self.api.server_name(),
            self.url
        )
    }
}

impl std::error::Error for Unreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A call answered with an error status.
#[derive(Debug)]
pub(crate) struct RpcError {
    /// Which server answered.
    pub api: Api,
    /// The status.
    pub status: Status,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status.message().is_empty() {
            write!(f, "{}", self.status.code().description())
        } else {
            f.write_str(self.status.message())
        }
    }
}

impl std::error::Error for RpcError {}

/// Turns a call's result into its message or an [`RpcError`].
pub(crate) trait RpcResultExt<T> {
    /// The response message, or the status as an error tagged with `api`.
    fn rpc(self, api: Api) -> anyhow::Result<T>;
}

impl<T> RpcResultExt<T> for Result<tonic::Response<T>, Status> {
    fn rpc(self, api: Api) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| anyhow::Error::new(RpcError { api, status }))
    }
}

/// Everything to print on stderr for `e`: the `error:` line and indented
/// details and hints.
pub(crate) fn render(e: &anyhow::Error) -> String {
    if let Some(u) = e.downcast_ref::<Unreachable>() {
        let mut s = format!("error: {u}\n");
        if matches!(u.api, Api::Sandbox) {
            s.push_str(
                "  start it with `calbridge up`, or pass --sandbox / set CALBRIDGE_SANDBOX\n",
            );
        } else {
            s.push_str("  start it with `calbridge up`, or pass --server / set CALBRIDGE_SERVER\n");
        }
        return s;
    }
    if let Some(r) = e.downcast_ref::<RpcError>() {
        return render_status(r);
    }
    format!("error: {e:#}\n")
}

fn render_status(r: &RpcError) -> String {
    let status = &r.status;
    let mut s = format!("error: {r}\n");
    let details = status.get_error_details();
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            s.push_str(&format!("  {}: {}\n", v.field, v.description));
        }
    }
    if let Some(delay) = details.retry_info().and_then(|ri| ri.retry_delay) {
        s.push_str(&format!("  retry after {:.1}s\n", delay.as_secs_f64()));
    }
    let hint = match (status.code(), r.api) {
        (Code::Unauthenticated, Api::Scheduler) => {
            Some("if the API key is missing or wrong: pass --api-key or set CALBRIDGE_API_KEY (create one with `calbridge admin create-key`)")
        }
        (Code::Unauthenticated, Api::Admin) => Some(
            "pass --admin-token / set CALBRIDGE_ADMIN_TOKEN, or --admin-token-file (default .calbridge/admin.token, written by `calbridge up`)",
        ),
        (Code::OutOfRange, Api::Scheduler) => Some(
            "the cursor is older than the retained change log: resync with `calbridge events list`, then continue with `calbridge changes watch --from-now`",
        ),
        (Code::Aborted, _) => {
            Some("the event changed since that version: read it again (`calbridge events get`) and retry")
        }
        (Code::Unavailable, _) if r.api == Api::Sandbox => Some("is `calbridge up` running?"),
        _ => None,
    };
    if let Some(h) = hint {
        s.push_str(&format!("  {h}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, FieldViolation};

    #[test]
    fn invalid_argument_lists_every_field_violation() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid request",
            ErrorDetails::with_bad_request(vec![
                FieldViolation::new("window.end", "must be after window.start"),
                FieldViolation::new("account_ids", "must not be empty"),
            ]),
        );
        let e = anyhow::Error::new(RpcError {
            api: Api::Scheduler,
            status,
        });
        assert_eq!(
            render(&e),
            "error: invalid request\n  window.end: must be after window.start\n  account_ids: must not be empty\n"
        );
    }

    #[test]
    fn unauthenticated_says_how_to_pass_the_api_key() {
        let e = anyhow::Error::new(RpcError {
            api: Api::Scheduler,
            status: Status::unauthenticated("missing API key"),
        });
        let s = render(&e);
        assert!(s.starts_with("error: missing API key\n"));
        assert!(s.contains("--api-key") && s.contains("CALBRIDGE_API_KEY"));
    }

    #[test]
    fn other_errors_print_their_chain() {
        let e = anyhow::anyhow!("disk full").context("writing the token");
        assert_eq!(render(&e), "error: writing the token: disk full\n");
    }
}
