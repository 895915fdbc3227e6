//! The Microsoft stack for end-to-end tests: the fake Graph (in the test
//! process, checking its answers against Microsoft's OpenAPI schemas and
//! trusting only a webhook CA made here) behind Stoplight Prism with
//! Microsoft's OpenAPI description ([`crate::prism`]), the real
//! `calbridge-adapter-microsoft` process serving its push webhook over
//! HTTPS with a certificate from that CA, and the sandbox + scheduler
//! processes with the Microsoft adapter registered and the OAuth callback
//! endpoint on.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use calbridge::pb;
use calbridge_fake_graph::{Control, FakeConfig, FakeHandle, SubscriptionInfo};

use crate::google::{browse_consent, connect, dev_tls, webhook_flags};
use crate::prism::Prism;
use crate::{eventually, free_port, Proc, SchedulerClient, Stack};

/// The OAuth client the adapter is configured with.
pub const CLIENT_ID: &str = "0b6f8a52-3c1d-4e7f-9a2b-5c8d1e4f7a90";
/// Its secret (a test value; real ones come from mounted files).
pub const CLIENT_SECRET: &str = "e2e-graph-client-secret";

/// Fake Graph + Microsoft adapter + scheduler.
pub struct MicrosoftStack {
    /// The sandbox adapter and the scheduler.
    pub stack: Stack,
    /// The fake Graph (in this process).
    pub fake: FakeHandle,
    /// Prism between the adapter and the fake's Graph (none when
    /// [`MicrosoftOptions::no_prism`]).
    pub prism: Option<Prism>,
    /// Its control API.
    pub control: Control,
    /// The Microsoft adapter process.
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

/// Knobs of [`MicrosoftStack::start`].
#[derive(Default)]
pub struct MicrosoftOptions {
    /// The fake's configuration (the webhook CA is set here).
    pub fake: Option<FakeConfig>,
    /// Extra adapter flags.
    pub adapter_flags: Vec<String>,
    /// Extra scheduler flags.
    pub scheduler_flags: Vec<String>,
    /// Serve no push webhook (polling only).
    pub no_push: bool,
    /// The adapter talks to the fake directly, without Prism (benchmarks:
    /// Prism adds some 15 ms per request).
    pub no_prism: bool,
}

impl MicrosoftStack {
    /// Starts everything.
    pub async fn start(opts: MicrosoftOptions) -> Result<MicrosoftStack> {
        let files = tempfile::tempdir()?;
        let ca = dev_tls(files.path())?;
        let mut fake_config = opts.fake.unwrap_or_default();
        fake_config.webhook_ca_pem = Some(String::from_utf8(ca.clone())?);
        let fake = calbridge_fake_graph::serve(fake_config).await?;
        let control = fake.control();
        let base = fake.base_url();
        let prism = if opts.no_prism {
            None
        } else {
            let prism = Prism::start(&format!("{base}/v1.0")).await?;
            // The fake's next and delta links go through Prism too.
            control.set_graph_url(prism.url()).await?;
            Some(prism)
        };
        let graph_base = prism
            .as_ref()
            .map_or_else(|| format!("{base}/v1.0/"), |p| p.url().to_string());

        std::fs::write(files.path().join("client_id"), CLIENT_ID)?;
        std::fs::write(files.path().join("client_secret"), CLIENT_SECRET)?;
        let mut args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--client-id-file".into(),
            files.path().join("client_id").display().to_string(),
            "--client-secret-file".into(),
            files.path().join("client_secret").display().to_string(),
            "--authority-url".into(),
            base.clone(),
            "--graph-base-url".into(),
            graph_base,
            "--retry-base-delay-ms".into(),
            "50".into(),
        ];
        let mut webhook_url = None;
        // The scheduler's port, known before the adapter starts: push
        // notifications may only be forwarded to it.
        let scheduler_port = free_port();
        if !opts.no_push {
            let (url, flags) = webhook_flags(files.path(), scheduler_port, "microsoft/push");
            webhook_url = Some(url);
            args.extend(flags);
        }
        args.extend(opts.adapter_flags);
        let adapter = Proc::start("calbridge-adapter-microsoft", &args).await?;

        let callback_listen = format!("127.0.0.1:{}", free_port());
        let callback_url = format!("http://{callback_listen}/oauth/callback");
        control
            .add_client(CLIENT_ID, CLIENT_SECRET, &callback_url)
            .await?;
        let mut flags = vec![
            "--adapter".to_string(),
            format!("microsoft={}", adapter.url()),
            "--oauth-callback-listen".into(),
            callback_listen,
        ];
        flags.extend(opts.scheduler_flags);
        let stack = Stack::start_with_scheduler_flags_on(scheduler_port, &flags).await?;
        Ok(MicrosoftStack {
            stack,
            fake,
            prism,
            control,
            adapter,
            callback_url,
            files,
            webhook_url,
            ca_pem: ca,
        })
    }

    /// Adds a user at the fake (a default calendar "Calendar" and a
    /// read-only holiday calendar), in the W. Europe zone.
    pub async fn user(&self, email: &str) -> Result<()> {
        self.control
            .add_user(email, "W. Europe Standard Time")
            .await
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
        connect(c, pb::Provider::Microsoft, user, level, &self.callback_url).await
    }

    /// The account's default calendar, as calbridge names it.
    pub async fn primary(&self, c: &mut SchedulerClient, account_id: &str) -> Result<String> {
        let calendars = c
            .list_calendars(pb::ListCalendarsRequest {
                account_id: account_id.into(),
            })
            .await?
            .into_inner()
            .calendars;
        calendars
            .into_iter()
            .find(|c| c.primary)
            .map(|c| c.calendar_id)
            .context("no primary calendar")
    }

    /// Waits until the fake holds a live subscription of `user` matching
    /// `pred`; returns it.
    pub async fn subscription(
        &self,
        user: &str,
        what: &str,
        pred: impl Fn(&SubscriptionInfo) -> bool,
    ) -> Result<SubscriptionInfo> {
        eventually(Duration::from_secs(30), what, || {
            let pred = &pred;
            async move {
                self.control
                    .subscriptions()
                    .await
                    .ok()?
                    .into_iter()
                    .find(|s| s.user == user && pred(s))
            }
        })
        .await
    }

    /// Fails when any fake answer (or event body sent to it) broke
    /// Microsoft's OpenAPI schemas, by the fake's own checks or Prism's.
    pub async fn assert_valid(&self) -> Result<()> {
        let v = self.control.violations().await?;
        if !v.is_empty() {
            bail!("fake answers or requests violating Graph's schemas: {v:#?}");
        }
        match &self.prism {
            Some(p) => p.verify().await,
            None => Ok(()),
        }
    }
}
