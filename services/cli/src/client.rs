//! Connections to the scheduler (Scheduler and Admin services) and to the
//! sandbox adapter, with the bearer credential and trace context every call
//! carries.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use calbridge::pb;
use calbridge_runtime::tls::ClientTls;
use calbridge_runtime::TracePropagation;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Api, Unreachable};

/// Adds `authorization: Bearer <credential>` (when there is one) and the
/// current trace context to every request.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Auth {
    /// Bearer `credential`; `flag` names where it came from, for errors.
    pub(crate) fn bearer(credential: Option<&str>, flag: &str) -> Result<Self> {
        let bearer = credential
            .map(|c| {
                MetadataValue::try_from(format!("Bearer {}", c.trim()))
                    .map_err(|_| anyhow!("{flag}: contains characters that cannot be sent"))
            })
            .transpose()?;
        Ok(Auth { bearer })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let mut req = TracePropagation.call(req)?;
        if let Some(b) = &self.bearer {
            req.metadata_mut()
                .insert(calbridge::metadata::AUTHORIZATION, b.clone());
        }
        Ok(req)
    }
}

/// A channel with the credential applied.
pub(crate) type Authed = InterceptedService<Channel, Auth>;
/// The public API client.
pub(crate) type Scheduler = pb::scheduler_client::SchedulerClient<Authed>;
/// The operator API client.
pub(crate) type Admin = pb::admin_client::AdminClient<Authed>;
/// The sandbox control client.
pub(crate) type Sandbox = pb::sandbox_control_client::SandboxControlClient<Authed>;

/// The TLS of `https://` URLs: the CA file in `CALBRIDGE_CA_FILE` and,
/// when the server asks for one, the client certificate and key in
/// `CALBRIDGE_CLIENT_CERT_FILE` and `CALBRIDGE_CLIENT_KEY_FILE`.
fn client_tls() -> Result<ClientTls> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let ca = var("CALBRIDGE_CA_FILE").ok_or_else(|| {
        anyhow!("an https:// URL needs CALBRIDGE_CA_FILE: the CA of the server's certificate")
    })?;
    let (cert, key) = (
        var("CALBRIDGE_CLIENT_CERT_FILE"),
        var("CALBRIDGE_CLIENT_KEY_FILE"),
    );
    Ok(ClientTls::new(&ca, cert.as_deref().zip(key.as_deref()))?)
}

/// Connects to `url`, failing with [`Unreachable`] when nothing answers;
/// `https://` over TLS ([`client_tls`]).
pub(crate) async fn channel(api: Api, url: &str) -> Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{}: not a valid URL: {url:?}", api.url_flag()))?
        .connect_timeout(Duration::from_secs(5));
    if endpoint.uri().scheme_str() == Some("https") {
        let tls = client_tls()?;
        return Ok(calbridge_runtime::tls::channel(url, Some(&tls), |e| {
            e.connect_timeout(Duration::from_secs(5))
        })?);
    }
    endpoint.connect().await.map_err(|source| {
        anyhow::Error::new(Unreachable {
            api,
            url: url.to_string(),
            source,
        })
    })
}

/// The Scheduler client at `url`, authenticated with the tenant API key.
pub(crate) async fn scheduler(url: &str, api_key: Option<&str>) -> Result<Scheduler> {
    let auth = Auth::bearer(api_key, "--api-key")?;
    let ch = channel(Api::Scheduler, url).await?;
    Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
        ch, auth,
    ))
}

/// The Admin client at `url`, authenticated with the admin token.
pub(crate) async fn admin(url: &str, token: &str) -> Result<Admin> {
    let auth = Auth::bearer(Some(token), "--admin-token")?;
    let ch = channel(Api::Admin, url).await?;
    Ok(pb::admin_client::AdminClient::with_interceptor(ch, auth))
}

/// The SandboxControl client at `url`.
pub(crate) async fn sandbox(url: &str) -> Result<Sandbox> {
    let ch = channel(Api::Sandbox, url).await?;
    Ok(
        pb::sandbox_control_client::SandboxControlClient::with_interceptor(
            ch,
            Auth { bearer: None },
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_credential_is_sent_as_authorization() {
        let mut auth = Auth::bearer(Some("k-123\n"), "--api-key").unwrap();
        let req = auth.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer k-123");
    }

    #[test]
    fn without_a_credential_no_authorization_is_sent() {
        let mut auth = Auth::bearer(None, "--api-key").unwrap();
        let req = auth.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }
}
