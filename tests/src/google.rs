//! The Google stack for end-to-end tests: the fake Google (in the test
//! process, with its webhook trust limited to a CA made here), the real
//! `calbridge-adapter-google` process serving its push webhook over HTTPS
//! with a certificate from that CA, and the sandbox + scheduler processes
//! with the Google adapter registered and the OAuth callback endpoint on.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use calbridge::pb;
use calbridge_fake_google::control::{ChannelInfo, ClientRegistration, NewUser};
use calbridge_fake_google::{Control, FakeConfig, FakeHandle};

use crate::{eventually, free_port, wait_synced, Proc, SchedulerClient, Stack};

/// The OAuth client the adapter is configured with.
pub const CLIENT_ID: &str = "calbridge-e2e.apps.example";
/// Its secret (a test value; real ones come from mounted files).
pub const CLIENT_SECRET: &str = "e2e-client-secret-value";

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`;
/// returns the CA's PEM.
pub fn dev_tls(dir: &Path) -> Result<Vec<u8>> {
    let t = calbridge_fake_google::dev_tls()?;
    std::fs::write(dir.join("webhook.crt"), t.cert_pem)?;
    std::fs::write(dir.join("webhook.key"), t.key_pem)?;
    Ok(t.ca_pem.into_bytes())
}

/// An adapter's push webhook on a free loopback port, served over HTTPS
/// with the certificate [`dev_tls`] wrote to `dir`, forwarding only to the
/// scheduler on `scheduler_port`: its public URL (ending in `path`) and the
/// adapter's flags.
pub fn webhook_flags(dir: &Path, scheduler_port: u16, path: &str) -> (String, Vec<String>) {
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/{path}");
    let flags = vec![
        "--allowed-callback-endpoint".into(),
        format!("http://127.0.0.1:{scheduler_port}"),
        "--webhook-listen".into(),
        format!("127.0.0.1:{port}"),
        "--webhook-public-url".into(),
        url.clone(),
        "--webhook-tls-cert".into(),
        dir.join("webhook.crt").display().to_string(),
        "--webhook-tls-key".into(),
        dir.join("webhook.key").display().to_string(),
    ];
    (url, flags)
}

/// Fake Google + Google adapter + scheduler.
pub struct GoogleStack {
    /// The sandbox adapter and the scheduler.
    pub stack: Stack,
    /// The fake Google (in this process).
    pub fake: FakeHandle,
    /// Its control API.
    pub control: Control,
    /// The Google adapter process.
    pub adapter: Proc,
    /// The scheduler's OAuth callback URL (the registered redirect URI).
    pub callback_url: String,
    /// Client id/secret files and the webhook's TLS files.
    pub files: tempfile::TempDir,
    /// The adapter's public webhook URL (none without push).
    pub webhook_url: Option<String>,
    /// PEM of the CA that signed the webhook's certificate.
    pub ca_pem: Vec<u8>,
}

/// Knobs of [`GoogleStack::start`].
#[derive(Default)]
pub struct GoogleOptions {
    /// The fake's configuration (listen, CA and validation are set here).
    pub fake: Option<FakeConfig>,
    /// Extra adapter flags.
    pub adapter_flags: Vec<String>,
    /// Extra scheduler flags.
    pub scheduler_flags: Vec<String>,
    /// Serve no push webhook (polling only).
    pub no_push: bool,
}

impl GoogleStack {
    /// Starts everything.
    pub async fn start(opts: GoogleOptions) -> Result<GoogleStack> {
        let files = tempfile::tempdir()?;
        let ca = dev_tls(files.path())?;
        let mut fake_config = opts.fake.unwrap_or_default();
        fake_config.webhook_ca_pem = Some(ca.clone());
        fake_config.validate_responses = true;
        let fake = calbridge_fake_google::serve(fake_config).await?;
        let control = fake.control();
        let base = fake.base_url();

        std::fs::write(files.path().join("client_id"), CLIENT_ID)?;
        std::fs::write(files.path().join("client_secret"), CLIENT_SECRET)?;
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--client-id-file".into(),
            files.path().join("client_id").display().to_string(),
            "--client-secret-file".into(),
            files.path().join("client_secret").display().to_string(),
            "--auth-url".into(),
            format!("{base}/o/oauth2/v2/auth"),
            "--token-url".into(),
            format!("{base}/token"),
            "--revoke-url".into(),
            format!("{base}/revoke"),
            "--api-base-url".into(),
            format!("{base}/calendar/v3/"),
        ];
        let mut webhook_url = None;
        // The scheduler's port, known before the adapter starts: push
        // notifications may only be forwarded to it.
        let scheduler_port = free_port();
        if !opts.no_push {
            let (url, flags) = webhook_flags(files.path(), scheduler_port, "google/push");
            webhook_url = Some(url);
            args.extend(flags);
        }
        args.extend(opts.adapter_flags);
        let adapter = Proc::start("calbridge-adapter-google", &args).await?;

        let callback_listen = format!("127.0.0.1:{}", free_port());
        let callback_url = format!("http://{callback_listen}/oauth/callback");
        control
            .add_client(&ClientRegistration {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                redirect_uris: vec![callback_url.clone()],
            })
            .await?;
        let mut flags = vec![
            "--adapter".to_string(),
            format!("google={}", adapter.url()),
            "--oauth-callback-listen".into(),
            callback_listen,
        ];
        flags.extend(opts.scheduler_flags);
        let stack = Stack::start_with_scheduler_flags_on(scheduler_port, &flags).await?;
        Ok(GoogleStack {
            stack,
            fake,
            control,
            adapter,
            callback_url,
            files,
            webhook_url,
            ca_pem: ca,
        })
    }

    /// Adds a user at the fake (with a primary calendar named by the e-mail).
    pub async fn user(&self, email: &str) -> Result<()> {
        self.control
            .add_user_with(&NewUser {
                email: email.into(),
                time_zone: Some("Europe/London".into()),
            })
            .await?;
        Ok(())
    }

    /// Runs the browser's part of a consent (see [`browse_consent`]).
    pub async fn browse_consent(&self, url: &str) -> Result<String> {
        browse_consent(url, &self.callback_url).await
    }

    /// Connects `user` through BeginAuthorization and the HTTP callback and
    /// waits for the initial sync; returns the account.
    pub async fn connect(
        &self,
        c: &mut SchedulerClient,
        user: &str,
        level: pb::AccessLevel,
    ) -> Result<pb::Account> {
        connect(c, pb::Provider::Google, user, level, &self.callback_url).await
    }

    /// Lets syncs already asked for run out: twice, asks for a sync of the
    /// primary calendar and waits until one completes after the request.
    pub async fn settle(&self, c: &mut SchedulerClient, account_id: &str) -> Result<()> {
        for _ in 0..2 {
            crate::sync_now_and_wait(c, account_id, "primary").await?;
        }
        Ok(())
    }

    /// Waits until `user`'s calendar has a channel at the fake matching
    /// `pred`; returns it.
    pub async fn channel(
        &self,
        user: &str,
        what: &str,
        pred: impl Fn(&ChannelInfo) -> bool,
    ) -> Result<ChannelInfo> {
        eventually(Duration::from_secs(30), what, || {
            let pred = &pred;
            async move {
                self.control
                    .channels()
                    .await
                    .ok()?
                    .into_iter()
                    .find(|ch| ch.calendar == user && pred(ch))
            }
        })
        .await
    }

    /// Fails unless every channel the fake has for `user`'s calendar is
    /// stopped.
    pub async fn assert_channels_stopped(&self, user: &str) -> Result<()> {
        let channels = self.control.channels().await?;
        if channels.iter().any(|ch| ch.calendar == user && !ch.stopped) {
            bail!("a channel of {user} is still live: {channels:#?}");
        }
        Ok(())
    }

    /// Fails when any fake response did not validate against Google's
    /// discovery document.
    pub async fn assert_valid_responses(&self) -> Result<()> {
        let v = self.control.violations().await?;
        if !v.is_empty() {
            bail!("fake responses violating the discovery document: {v:#?}");
        }
        Ok(())
    }

    /// Waits until the fake holds an event matching `pred` in `calendar`.
    pub async fn fake_event(
        &self,
        calendar: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        eventually(Duration::from_secs(30), "an event at the fake", || {
            let control = self.control.clone();
            let calendar = calendar.to_string();
            let pred = &pred;
            async move {
                control
                    .events(&calendar)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|e| pred(e))
            }
        })
        .await
    }
}

/// Runs the browser's part of a consent: opens `url` at a fake provider
/// (which approves), follows the redirect to the scheduler's callback
/// (`callback_url`) and returns where the callback sent the browser (or
/// its page).
pub async fn browse_consent(url: &str, callback_url: &str) -> Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()?;
    let r = http.get(url).send().await?;
    let to = location(&r).context("the consent endpoint did not redirect")?;
    if !to.starts_with(callback_url) {
        bail!("consent redirected to {to}, not the callback");
    }
    let r = http.get(&to).send().await?;
    match location(&r) {
        Some(l) => Ok(l),
        None => Ok(r.text().await?),
    }
}

/// Connects `user` of `provider` through BeginAuthorization and the HTTP
/// callback at `callback_url`, and waits for the initial sync; returns the
/// account.
pub async fn connect(
    c: &mut SchedulerClient,
    provider: pb::Provider,
    user: &str,
    level: pb::AccessLevel,
    callback_url: &str,
) -> Result<pb::Account> {
    let begun = c
        .begin_authorization(pb::BeginAuthorizationRequest {
            provider: provider as i32,
            access_level: level as i32,
            redirect_uri: String::new(),
            login_hint: user.into(),
            account_id: String::new(),
        })
        .await?
        .into_inner();
    let page = browse_consent(&begun.authorization_url, callback_url).await?;
    let accounts = crate::accounts(c).await?;
    let account = accounts
        .into_iter()
        .find(|a| a.provider_account_id == user && a.provider == provider as i32)
        .ok_or_else(|| anyhow!("no account after the callback; it said: {page}"))?;
    wait_synced(c, &account.account_id).await?;
    Ok(account)
}

fn location(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
