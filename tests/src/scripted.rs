//! A scripted OAuth adapter served by the test process: a real gRPC
//! CalendarAdapter whose provider side is a few fields the test controls
//! (consents, token lifetimes and rotation, refusals, the user's identity,
//! a paged listing with an outage on a chosen page, a page or a create held
//! until the test releases it, idempotent creates that later listings
//! include, extra calendars, listings that answer slowly or only when the
//! test lets them). For testing the scheduler's own logic against exact
//! provider behaviour and timing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use base64::Engine;
use calbridge::pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::Stack;

/// What the scripted provider knows.
#[derive(Default)]
pub struct Provider {
    /// state → (code challenge, redirect URI) from BuildAuthorizationUrl.
    pub consents: HashMap<String, (String, String)>,
    /// Issued, unused codes → (challenge, redirect URI).
    pub codes: HashMap<String, (String, String)>,
    /// Access tokens that work.
    pub live_access: Vec<String>,
    /// The refresh token that works now.
    pub live_refresh: String,
    /// The refresh token `live_refresh` replaced: it keeps working until
    /// `live_refresh` is used, so a refresh whose answer was lost (the
    /// caller killed mid-call) can be repeated, as providers whose rotated
    /// refresh tokens outlive their successors allow.
    pub previous_refresh: String,
    /// Rotate the refresh token on every refresh.
    pub rotate: bool,
    /// Refuse refreshes with invalid_grant.
    pub refuse_refresh: bool,
    /// Seconds an access token lives.
    pub lifetime_s: i64,
    /// Events in the calendar's listing (at least one).
    pub listing: usize,
    /// Fail (UNAVAILABLE) the listing page with this index, once.
    pub fail_page_once: Option<usize>,
    /// SyncEvents calls so far.
    pub sync_calls: u32,
    /// Listings started from an empty cursor.
    pub listings_started: u32,
    /// Refreshes answered so far.
    pub refreshes: u32,
    /// Token serial numbers.
    pub serial: u32,
    /// The provider account id the provider confirms for the user who
    /// consents next ("ada@oauth.example" when empty).
    pub identity: String,
    /// Hold the listing page with this index (once) until [`Scripted::release`].
    pub hold_page: Option<usize>,
    /// True while a held page waits.
    pub page_held: bool,
    /// Hold every create, after it is applied, until [`Scripted::release`]
    /// (the provider has the event; its answer is late).
    pub hold_creates: bool,
    /// Creates held so far.
    pub creates_held: u32,
    /// Fail (UNAVAILABLE) creates, before applying them, while set.
    pub fail_creates: bool,
    /// Creates failed so far.
    pub creates_failed: u32,
    /// Apply this many creates, then answer each UNAVAILABLE with a retry
    /// delay of [`LOST_ANSWER_RETRY`]: the provider has the event, its
    /// answer was lost on the way.
    pub lose_create_answers: u32,
    /// Create answers lost so far.
    pub creates_lost: u32,
    /// Created events by idempotency key, in creation order; listings
    /// include them after the scripted ones.
    pub created: Vec<(String, pb::Event)>,
    /// What [`Scripted::release`] wakes.
    pub gate: Arc<tokio::sync::Notify>,
    /// Calendars listed besides [`CALENDAR`] (`cal-N@oauth.example`).
    pub extra_calendars: usize,
    /// While set and open, every SyncEvents call waits for the semaphore to
    /// be closed ([`Scripted::release_held`]) before it answers.
    pub hold: Option<Arc<tokio::sync::Semaphore>>,
    /// SyncEvents calls held back now (at `hold` or in `delay`).
    pub held: usize,
    /// How long every SyncEvents call takes (a slow provider).
    pub delay: Option<std::time::Duration>,
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
            provider_account_id: if self.identity.is_empty() {
                "ada@oauth.example".into()
            } else {
                self.identity.clone()
            },
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
    pub fn consent(&mut self, state: &str) -> Result<String> {
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

/// The scripted adapter: a CalendarAdapter gRPC service over a shared [`Provider`].
#[derive(Clone)]
pub struct Scripted(pub Arc<Mutex<Provider>>);

impl Scripted {
    /// Connects (or, with `account_id`, re-authorises) an account the
    /// whole way: BeginAuthorization with [`REDIRECT`], the user's consent,
    /// CompleteAuthorization.
    pub async fn connect(
        &self,
        c: &mut crate::SchedulerClient,
        account_id: &str,
    ) -> Result<pb::Account> {
        let state = c
            .begin_authorization(pb::BeginAuthorizationRequest {
                provider: pb::Provider::Google as i32,
                access_level: pb::AccessLevel::ReadWrite as i32,
                redirect_uri: REDIRECT.into(),
                login_hint: String::new(),
                account_id: account_id.into(),
            })
            .await?
            .into_inner()
            .state;
        let code = self.p().consent(&state)?;
        Ok(c.complete_authorization(pb::CompleteAuthorizationRequest {
            state,
            code,
            redirect_uri: REDIRECT.into(),
        })
        .await?
        .into_inner())
    }

    /// Makes every SyncEvents call wait until [`Scripted::release_held`].
    pub fn hold_syncs(&self) {
        self.p().hold = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Lets the held SyncEvents calls (and every later one) answer.
    pub fn release_held(&self) {
        if let Some(h) = self.p().hold.take() {
            h.close();
        }
    }

    /// The provider's state.
    pub fn p(&self) -> std::sync::MutexGuard<'_, Provider> {
        self.0.lock().expect("provider lock")
    }

    /// Lets one held page or create answer.
    pub fn release(&self) {
        let gate = self.p().gate.clone();
        gate.notify_one();
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

/// The redirect URI the scripted consents use.
pub const REDIRECT: &str = "https://platform.example/oauth/done";

/// The one calendar's id.
pub const CALENDAR: &str = "ada@oauth.example";

/// The retry delay of a create answer lost on purpose
/// ([`Provider::lose_create_answers`]).
pub const LOST_ANSWER_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

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
        p.previous_refresh.clear();
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
        let usable = given == p.live_refresh
            || (!p.previous_refresh.is_empty() && given == p.previous_refresh);
        if p.refuse_refresh || given.is_empty() || !usable {
            return Err(Status::unauthenticated("invalid_grant"));
        }
        p.refreshes += 1;
        let rotated = if p.rotate {
            let t = p.token("rt");
            p.live_refresh = t.clone();
            p.previous_refresh = given;
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
        p.previous_refresh.clear();
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
        let extra = self.p().extra_calendars;
        let mut calendars = vec![pb::Calendar {
            calendar_id: CALENDAR.into(),
            name: "Ada".into(),
            primary: true,
            time_zone: "Europe/London".into(),
            ..Default::default()
        }];
        calendars.extend((0..extra).map(|i| pb::Calendar {
            calendar_id: format!("cal-{i}@oauth.example"),
            name: format!("Team {i}"),
            time_zone: "Europe/London".into(),
            ..Default::default()
        }));
        Ok(Response::new(pb::ListProviderCalendarsResponse {
            calendars,
        }))
    }

    async fn sync_events(
        &self,
        req: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<pb::SyncEventsResponse>, Status> {
        self.check_access(req.get_ref().credentials.as_ref())?;
        let (hold, delay) = {
            let p = self.p();
            (p.hold.clone(), p.delay)
        };
        if hold.is_some() || delay.is_some() {
            self.p().held += 1;
            if let Some(hold) = hold {
                // Closed (released) is the only way past: no permit is
                // ever added.
                let _ = hold.acquire().await;
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            self.p().held -= 1;
        }
        let r = req.into_inner();
        let held = {
            let mut p = self.p();
            p.sync_calls += 1;
            let page = match r.cursor.as_str() {
                "" => Some(0),
                c => c
                    .strip_prefix("page:")
                    .and_then(|n| n.parse::<usize>().ok()),
            };
            (page.is_some() && page == p.hold_page).then(|| {
                p.hold_page = None;
                p.page_held = true;
                p.gate.clone()
            })
        };
        if let Some(gate) = held {
            gate.notified().await;
            self.p().page_held = false;
        }
        let mut p = self.p();
        // A listing of `listing` events, `page_size` at a time, then the
        // created ones; cursor `page:N` while it runs, `done:K` after (K
        // created events seen: the next call answers the ones created
        // since).
        let page = match r.cursor.as_str() {
            "" => 0,
            c if c.starts_with("done") => {
                let seen = c
                    .strip_prefix("done:")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(p.created.len());
                return Ok(Response::new(pb::SyncEventsResponse {
                    upserted: p.created[seen..].iter().map(|(_, e)| e.clone()).collect(),
                    next_cursor: format!("done:{}", p.created.len()),
                    ..Default::default()
                }));
            }
            c => c
                .strip_prefix("page:")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Status::out_of_range("unknown cursor"))?,
        };
        if p.fail_page_once == Some(page) {
            p.fail_page_once = None;
            return Err(Status::unavailable("scripted outage"));
        }
        if page == 0 {
            p.listings_started += 1;
        }
        let size = (r.page_size as usize).max(1);
        let start = chrono::Utc::now() + chrono::Duration::days(1);
        let n = p.listing.max(1);
        let mut events: Vec<pb::Event> = (page * size..((page + 1) * size).min(n))
            .map(|i| {
                let mut e = crate::timed_event(
                    if i == 0 {
                        "Kept through reauth"
                    } else {
                        "Listed"
                    },
                    start + chrono::Duration::minutes(30 * i as i64),
                    30,
                );
                e.provider_event_id = format!("evt{}", i + 1);
                e.version = "v1".into();
                e
            })
            .collect();
        let more = (page + 1) * size < n;
        if !more {
            events.extend(p.created.iter().map(|(_, e)| e.clone()));
        }
        Ok(Response::new(pb::SyncEventsResponse {
            upserted: events,
            next_cursor: if more {
                format!("page:{}", page + 1)
            } else {
                format!("done:{}", p.created.len())
            },
            more,
            full_listing: true,
            ..Default::default()
        }))
    }

    type StreamSyncEventsStream = calbridge::paging::PageStream;

    async fn stream_sync_events(
        &self,
        req: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<Self::StreamSyncEventsStream>, Status> {
        calbridge::paging::stream_sync_events(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_event(
        &self,
        req: Request<pb::ProviderCreateEventRequest>,
    ) -> Result<Response<pb::ProviderCreateEventResponse>, Status> {
        self.check_access(req.get_ref().credentials.as_ref())?;
        let r = req.into_inner();
        let (answer, held) = {
            let mut p = self.p();
            if p.fail_creates {
                p.creates_failed += 1;
                return Err(Status::unavailable("scripted outage"));
            }
            let answer = match p.created.iter().find(|(k, _)| *k == r.idempotency_key) {
                Some((_, e)) => pb::ProviderCreateEventResponse {
                    event: Some(e.clone()),
                    already_existed: true,
                },
                None => {
                    let mut e = r.event.unwrap_or_default();
                    e.provider_event_id = format!("made-{}", r.idempotency_key);
                    e.version = "v1".into();
                    p.created.push((r.idempotency_key.clone(), e.clone()));
                    pb::ProviderCreateEventResponse {
                        event: Some(e),
                        already_existed: false,
                    }
                }
            };
            if p.lose_create_answers > 0 {
                p.lose_create_answers -= 1;
                p.creates_lost += 1;
                return Err(Status::from(calbridge::ErrorKind::Unavailable {
                    message: "scripted: the answer was lost".into(),
                    retry_after: Some(LOST_ANSWER_RETRY),
                }));
            }
            let held = p.hold_creates.then(|| {
                p.creates_held += 1;
                p.gate.clone()
            });
            (answer, held)
        };
        if let Some(gate) = held {
            gate.notified().await;
        }
        Ok(Response::new(answer))
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
pub async fn serve(provider: Provider) -> Result<(Scripted, SocketAddr)> {
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
pub async fn stack(provider: Provider, extra: &[&str]) -> Result<(Stack, Scripted)> {
    let (scripted, addr) = serve(provider).await?;
    let mut flags = vec!["--adapter".to_string(), format!("google=http://{addr}")];
    flags.extend(extra.iter().map(|s| s.to_string()));
    Ok((Stack::start_with_scheduler_flags(&flags).await?, scripted))
}
