//! The scheduler's side of OAuth against a scripted OAuth adapter served by
//! the test (a real gRPC server the real scheduler process calls): states
//! are single-use and bound to the exact redirect URI and the tenant, the
//! PKCE verifier reaches the exchange, access tokens are refreshed ahead of
//! expiry and rotated refresh tokens are persisted (across a restart),
//! `invalid_grant` makes the account REAUTH_REQUIRED with the mirror kept
//! until it is authorised again, and the HTTP callback endpoint completes
//! the flow and sends the browser on. Tokens never reach the disk in clear.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use base64::Engine;
use calbridge::pb::{self, ChangeKind};
use calbridge_e2e::{dir_contains, eventually, free_port, wait_synced, SchedulerClient, Stack};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

/// What the scripted provider knows.
#[derive(Default)]
struct Provider {
    /// state → (code challenge, redirect URI) from BuildAuthorizationUrl.
    consents: HashMap<String, (String, String)>,
    /// Issued, unused codes → (challenge, redirect URI).
    codes: HashMap<String, (String, String)>,
    /// Access tokens that work.
    live_access: Vec<String>,
    /// The refresh token that works now.
    live_refresh: String,
    /// Rotate the refresh token on every refresh.
    rotate: bool,
    /// Refuse refreshes with invalid_grant.
    refuse_refresh: bool,
    /// Seconds an access token lives.
    lifetime_s: i64,
    refreshes: u32,
    serial: u32,
}

impl Provider {
    fn token(&mut self, kind: &str) -> String {
        self.serial += 1;
        format!("{kind}-{}-{}", self.serial, "s3cr3t-token-value")
    }

    fn credentials(&mut self, refresh: Option<String>) -> pb::ProviderCredentials {
        let access = self.token("at");
        self.live_access.push(access.clone());
        pb::ProviderCredentials {
            provider_account_id: "ada@oauth.example".into(),
            secret: Some(pb::provider_credentials::Secret::Oauth(pb::OAuthTokens {
                access_token: access,
                refresh_token: refresh.unwrap_or_default(),
                expires_at: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() + self.lifetime_s,
                    nanos: 0,
                }),
                scopes: vec!["calendar".into()],
            })),
            access_level: pb::AccessLevel::ReadWrite as i32,
        }
    }

    /// The user consents: a code bound to the state's challenge and URI.
    fn consent(&mut self, state: &str) -> Result<String> {
        let c = self
            .consents
            .get(state)
            .cloned()
            .ok_or_else(|| anyhow!("no consent URL was built for this state"))?;
        let code = self.token("code");
        self.codes.insert(code.clone(), c);
        Ok(code)
    }
}

#[derive(Clone)]
struct Scripted(Arc<Mutex<Provider>>);

impl Scripted {
    fn p(&self) -> std::sync::MutexGuard<'_, Provider> {
        self.0.lock().expect("provider lock")
    }

    fn check_access(&self, c: Option<&pb::ProviderCredentials>) -> Result<(), Status> {
        let token = match c.and_then(|c| c.secret.as_ref()) {
            Some(pb::provider_credentials::Secret::Oauth(t)) => t.access_token.clone(),
            _ => String::new(),
        };
        if self.p().live_access.contains(&token) {
            Ok(())
        } else {
            Err(Status::unauthenticated("access token rejected"))
        }
    }
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

const CALENDAR: &str = "ada@oauth.example";

#[tonic::async_trait]
impl pb::calendar_adapter_server::CalendarAdapter for Scripted {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::AdapterCapabilities>, Status> {
        Ok(Response::new(pb::AdapterCapabilities {
            provider: pb::Provider::Google as i32,
            oauth: true,
            push: false,
            incremental_sync: true,
            native_free_busy: false,
            recurrence_writes: false,
            poll_interval_seconds: 1,
            max_page_size: 100,
        }))
    }

    async fn build_authorization_url(
        &self,
        req: Request<pb::BuildAuthorizationUrlRequest>,
    ) -> Result<Response<pb::BuildAuthorizationUrlResponse>, Status> {
        let r = req.into_inner();
        self.p().consents.insert(
            r.state.clone(),
            (r.code_challenge.clone(), r.redirect_uri.clone()),
        );
        Ok(Response::new(pb::BuildAuthorizationUrlResponse {
            authorization_url: format!(
                "https://consent.oauth.example/auth?state={}&code_challenge={}",
                r.state, r.code_challenge
            ),
        }))
    }

    async fn exchange_code(
        &self,
        req: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        let r = req.into_inner();
        let mut p = self.p();
        let Some((chal, uri)) = p.codes.remove(&r.code) else {
            return Err(Status::unauthenticated(
                "invalid_grant: unknown or used code",
            ));
        };
        if uri != r.redirect_uri {
            return Err(Status::unauthenticated(
                "invalid_grant: redirect_uri mismatch",
            ));
        }
        if challenge(&r.code_verifier) != chal {
            return Err(Status::unauthenticated(
                "invalid_grant: PKCE verifier mismatch",
            ));
        }
        let refresh = p.token("rt");
        p.live_refresh = refresh.clone();
        Ok(Response::new(p.credentials(Some(refresh))))
    }

    async fn refresh_credentials(
        &self,
        req: Request<pb::RefreshCredentialsRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        let r = req.into_inner();
        let given = match r.credentials.and_then(|c| c.secret) {
            Some(pb::provider_credentials::Secret::Oauth(t)) => t.refresh_token,
            _ => String::new(),
        };
        let mut p = self.p();
        if p.refuse_refresh || given != p.live_refresh {
            return Err(Status::unauthenticated("invalid_grant"));
        }
        p.refreshes += 1;
        let rotated = if p.rotate {
            let t = p.token("rt");
            p.live_refresh = t.clone();
            Some(t)
        } else {
            None
        };
        Ok(Response::new(p.credentials(rotated)))
    }

    async fn revoke_credentials(
        &self,
        _: Request<pb::RevokeCredentialsRequest>,
    ) -> Result<Response<pb::RevokeCredentialsResponse>, Status> {
        let mut p = self.p();
        p.live_refresh.clear();
        p.live_access.clear();
        Ok(Response::new(pb::RevokeCredentialsResponse {
            revoked_at_provider: true,
        }))
    }

    async fn check_password(
        &self,
        _: Request<pb::CheckPasswordRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        Err(Status::unimplemented("OAuth provider"))
    }

    async fn list_calendars(
        &self,
        req: Request<pb::ListProviderCalendarsRequest>,
    ) -> Result<Response<pb::ListProviderCalendarsResponse>, Status> {
        self.check_access(req.get_ref().credentials.as_ref())?;
        Ok(Response::new(pb::ListProviderCalendarsResponse {
            calendars: vec![pb::Calendar {
                calendar_id: CALENDAR.into(),
                name: "Ada".into(),
                primary: true,
                time_zone: "Europe/London".into(),
                ..Default::default()
            }],
        }))
    }

    async fn sync_events(
        &self,
        req: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<pb::SyncEventsResponse>, Status> {
        self.check_access(req.get_ref().credentials.as_ref())?;
        let r = req.into_inner();
        if !r.cursor.is_empty() {
            return Ok(Response::new(pb::SyncEventsResponse {
                next_cursor: r.cursor,
                ..Default::default()
            }));
        }
        let start = chrono::Utc::now() + chrono::Duration::days(1);
        let mut e = calbridge_e2e::timed_event("Kept through reauth", start, 30);
        e.provider_event_id = "evt1".into();
        e.version = "v1".into();
        Ok(Response::new(pb::SyncEventsResponse {
            upserted: vec![e],
            next_cursor: "c1".into(),
            full_listing: true,
            ..Default::default()
        }))
    }

    async fn create_event(
        &self,
        _: Request<pb::ProviderCreateEventRequest>,
    ) -> Result<Response<pb::ProviderCreateEventResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn update_event(
        &self,
        _: Request<pb::ProviderUpdateEventRequest>,
    ) -> Result<Response<pb::Event>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn delete_event(
        &self,
        _: Request<pb::ProviderDeleteEventRequest>,
    ) -> Result<Response<pb::ProviderDeleteEventResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn query_free_busy(
        &self,
        _: Request<pb::ProviderFreeBusyRequest>,
    ) -> Result<Response<pb::ProviderFreeBusyResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn start_watch(
        &self,
        _: Request<pb::StartWatchRequest>,
    ) -> Result<Response<pb::WatchChannel>, Status> {
        Err(Status::unimplemented("no push"))
    }

    async fn stop_watch(
        &self,
        _: Request<pb::StopWatchRequest>,
    ) -> Result<Response<pb::StopWatchResponse>, Status> {
        Ok(Response::new(pb::StopWatchResponse {}))
    }
}

/// Serves the scripted adapter on a free port.
async fn serve(provider: Provider) -> Result<(Scripted, SocketAddr)> {
    let s = Scripted(Arc::new(Mutex::new(provider)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let svc = pb::calendar_adapter_server::CalendarAdapterServer::new(s.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    Ok((s, addr))
}

/// A stack whose scheduler also knows the scripted Google adapter.
async fn stack(provider: Provider, extra: &[&str]) -> Result<(Stack, Scripted)> {
    let (scripted, addr) = serve(provider).await?;
    let mut flags = vec!["--adapter".to_string(), format!("google=http://{addr}")];
    flags.extend(extra.iter().map(|s| s.to_string()));
    Ok((Stack::start_with_scheduler_flags(&flags).await?, scripted))
}

fn violation_field(s: &Status) -> Option<String> {
    tonic_types::StatusExt::get_details_bad_request(s)
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
}

async fn begin(c: &mut SchedulerClient, redirect: &str, account: &str) -> Result<String> {
    Ok(c.begin_authorization(pb::BeginAuthorizationRequest {
        provider: pb::Provider::Google as i32,
        access_level: pb::AccessLevel::ReadWrite as i32,
        redirect_uri: redirect.into(),
        login_hint: String::new(),
        account_id: account.into(),
    })
    .await?
    .into_inner()
    .state)
}

async fn complete(
    c: &mut SchedulerClient,
    state: &str,
    code: &str,
    redirect: &str,
) -> Result<pb::Account, Status> {
    c.complete_authorization(pb::CompleteAuthorizationRequest {
        state: state.into(),
        code: code.into(),
        redirect_uri: redirect.into(),
    })
    .await
    .map(|r| r.into_inner())
}

const REDIRECT: &str = "https://platform.example/oauth/done";

fn provider(lifetime_s: i64, rotate: bool) -> Provider {
    Provider {
        lifetime_s,
        rotate,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn states_are_single_use_and_bound_to_redirect_uri_and_tenant() -> Result<()> {
    let (mut stack, scripted) = stack(provider(3600, false), &[]).await?;
    let (_, key) = stack.tenant("oauth-a").await?;
    let (_, other_key) = stack.tenant("oauth-b").await?;
    let mut c = stack.client(Some(&key)).await?;
    let mut other = stack.client(Some(&other_key)).await?;

    // Bad requests name the field.
    for (provider, redirect, field) in [
        (pb::Provider::Caldav, REDIRECT, "provider"),
        (pb::Provider::Google, "", "redirect_uri"),
        (pb::Provider::Google, "/relative", "redirect_uri"),
    ] {
        let e = c
            .begin_authorization(pb::BeginAuthorizationRequest {
                provider: provider as i32,
                access_level: pb::AccessLevel::ReadWrite as i32,
                redirect_uri: redirect.into(),
                ..Default::default()
            })
            .await
            .expect_err("bad request accepted");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(violation_field(&e).as_deref(), Some(field), "{e:?}");
    }

    // A wrong redirect URI is refused and uses the state up.
    let state = begin(&mut c, REDIRECT, "").await?;
    let code = scripted.p().consent(&state)?;
    let e = complete(&mut c, &state, &code, "https://evil.example/cb")
        .await
        .expect_err("wrong redirect accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("redirect_uri"));
    let e = complete(&mut c, &state, &code, REDIRECT)
        .await
        .expect_err("used state accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));

    // Another tenant cannot complete this tenant's state.
    let state = begin(&mut c, REDIRECT, "").await?;
    let code = scripted.p().consent(&state)?;
    let e = complete(&mut other, &state, &code, REDIRECT)
        .await
        .expect_err("other tenant accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));

    // The right one works once: the adapter checked the PKCE verifier.
    let state = begin(&mut c, REDIRECT, "").await?;
    let code = scripted.p().consent(&state)?;
    let a = complete(&mut c, &state, &code, REDIRECT).await?;
    assert_eq!(a.status, pb::AccountStatus::Active as i32);
    assert_eq!(a.provider_account_id, "ada@oauth.example");
    let e = complete(&mut c, &state, &code, REDIRECT)
        .await
        .expect_err("replayed state accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));
    wait_synced(&mut c, &a.account_id).await?;

    // Tokens and the verifier are sealed on disk.
    stack.scheduler.kill9().await;
    assert!(!dir_contains(stack.dir.path(), b"s3cr3t-token-value")?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refreshed_ahead_of_expiry_and_rotations_survive_a_restart() -> Result<()> {
    // Tokens live 60 s and are refreshed 300 s ahead: every use refreshes,
    // and every refresh rotates the refresh token (old ones stop working).
    let (mut stack, scripted) = stack(provider(60, true), &[]).await?;
    let (_, key) = stack.tenant("oauth-refresh").await?;
    let mut c = stack.client(Some(&key)).await?;
    let state = begin(&mut c, REDIRECT, "").await?;
    let code = scripted.p().consent(&state)?;
    let a = complete(&mut c, &state, &code, REDIRECT).await?;
    wait_synced(&mut c, &a.account_id).await?;
    eventually(Duration::from_secs(30), "three refreshes", || async {
        (scripted.p().refreshes >= 3).then_some(())
    })
    .await?;

    stack.scheduler.kill9().await;
    stack.restart_scheduler().await?;
    let mut c = stack.client(Some(&key)).await?;
    let before = scripted.p().refreshes;
    eventually(
        Duration::from_secs(30),
        "refreshes after restart",
        || async { (scripted.p().refreshes >= before + 2).then_some(()) },
    )
    .await?;
    let acc = c
        .get_account(pb::GetAccountRequest {
            account_id: a.account_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(acc.status, pb::AccountStatus::Active as i32, "{acc:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_grant_needs_reauthorisation_and_keeps_the_mirror() -> Result<()> {
    let (stack, scripted) = stack(provider(60, false), &[]).await?;
    let (_, key) = stack.tenant("oauth-reauth").await?;
    let mut c = stack.client(Some(&key)).await?;
    let state = begin(&mut c, REDIRECT, "").await?;
    let code = scripted.p().consent(&state)?;
    let a = complete(&mut c, &state, &code, REDIRECT).await?;
    wait_synced(&mut c, &a.account_id).await?;
    let cursor = c
        .get_change_cursor(pb::GetChangeCursorRequest {})
        .await?
        .into_inner()
        .cursor;

    scripted.p().refuse_refresh = true;
    let change = eventually(Duration::from_secs(30), "REAUTH_REQUIRED", || {
        let mut c = c.clone();
        let cursor = cursor.clone();
        async move {
            c.list_changes(pb::ListChangesRequest {
                cursor,
                page_size: 100,
            })
            .await
            .ok()?
            .into_inner()
            .changes
            .into_iter()
            .find(|ch| ch.kind == ChangeKind::AccountStatus as i32)
        }
    })
    .await?;
    assert_eq!(
        change.account_status,
        pb::AccountStatus::ReauthRequired as i32
    );
    let events = |c: &mut SchedulerClient| {
        let mut c = c.clone();
        let account_id = a.account_id.clone();
        async move {
            Ok::<_, anyhow::Error>(
                c.list_events(pb::ListEventsRequest {
                    account_id,
                    calendar_id: CALENDAR.into(),
                    window: Some(pb::TimeWindow {
                        start: Some(calbridge::time::to_timestamp(chrono::Utc::now())),
                        end: Some(calbridge::time::to_timestamp(
                            chrono::Utc::now() + chrono::Duration::days(7),
                        )),
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .events,
            )
        }
    };
    assert_eq!(events(&mut c).await?.len(), 1, "the mirror is kept");

    // A re-authorisation of the same account brings it back.
    scripted.p().refuse_refresh = false;
    let state = begin(&mut c, REDIRECT, &a.account_id).await?;
    let code = scripted.p().consent(&state)?;
    let again = complete(&mut c, &state, &code, REDIRECT).await?;
    assert_eq!(again.account_id, a.account_id);
    assert_eq!(again.status, pb::AccountStatus::Active as i32);
    assert_eq!(events(&mut c).await?.len(), 1);
    let refreshes = scripted.p().refreshes;
    eventually(Duration::from_secs(30), "sync resumes", || async {
        (scripted.p().refreshes > refreshes).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_callback_completes_and_sends_the_browser_on() -> Result<()> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (stack, scripted) = stack(
        provider(3600, false),
        &[
            "--oauth-callback-listen",
            &listen,
            "--oauth-return-url",
            "https://platform.example/connected",
        ],
    )
    .await?;
    let (_, key) = stack.tenant("oauth-http").await?;
    let mut c = stack.client(Some(&key)).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let callback = format!("http://{listen}/oauth/callback");

    // No redirect URI given: the callback endpoint is the redirect.
    let state = begin(&mut c, "", "").await?;
    assert_eq!(scripted.p().consents[&state].1, callback);
    let code = scripted.p().consent(&state)?;
    let r = http
        .get(&callback)
        .query(&[("state", &state), ("code", &code)])
        .send()
        .await?;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str()?.to_string();
    let account_id = location
        .strip_prefix("https://platform.example/connected?account_id=")
        .ok_or_else(|| anyhow!("unexpected location {location}"))?;
    let a = c
        .get_account(pb::GetAccountRequest {
            account_id: account_id.into(),
        })
        .await?
        .into_inner();
    assert_eq!(a.status, pb::AccountStatus::Active as i32);

    // The same redirect again: the state is used up.
    let r = http
        .get(&callback)
        .query(&[("state", &state), ("code", &code)])
        .send()
        .await?;
    assert_eq!(
        r.headers()["location"].to_str()?,
        "https://platform.example/connected?error=invalid_request"
    );

    // A declined consent uses the state up too.
    let state = begin(&mut c, "", "").await?;
    let code = scripted.p().consent(&state)?;
    let r = http
        .get(&callback)
        .query(&[("state", state.as_str()), ("error", "access_denied")])
        .send()
        .await?;
    assert!(r.headers()["location"]
        .to_str()?
        .ends_with("?error=access_denied_or_failed"));
    let e = complete(&mut c, &state, &code, &callback)
        .await
        .expect_err("declined state accepted");
    assert_eq!(violation_field(&e).as_deref(), Some("state"));
    Ok(())
}
