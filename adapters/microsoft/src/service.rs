//! The gRPC face of the Microsoft adapter: `CalendarAdapter` requests are
//! checked, translated into Graph and identity-platform calls, and
//! answered. Nothing here parses Graph's JSON; [`crate::mapping`] and
//! [`crate::sync`] do.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tonic::{Request, Response, Status};

use calbridge::adapter;
use calbridge::checks::{check_calendar_id, required, writable};
use calbridge::pb;
use calbridge::pb::calendar_adapter_server::CalendarAdapter;
use calbridge::pb::provider_credentials::Secret;
use calbridge::time::to_timestamp;
use calbridge::{ErrorKind, Invalid};

use crate::client::{http_client, Api, Session};
use crate::config::{Config, Validated};
use crate::error::{meaning, GraphError};
use crate::mapping::{self, KEY_PROPERTY};
use crate::model;
use crate::oauth::{missing_scopes, scopes_for, OAuth};
use crate::push;
use crate::retry::RetryPolicy;
use crate::sync::{sync, SyncRequest, MAX_PAGE_SIZE};

/// The `CalendarAdapter` service for Microsoft 365 / Outlook.
#[derive(Clone)]
pub struct MicrosoftAdapter {
    api: Arc<Api>,
    oauth: Arc<OAuth>,
    poll_interval_seconds: u32,
    push: Option<Push>,
}

/// What StartWatch needs when push is offered.
#[derive(Clone)]
struct Push {
    public_url: reqwest::Url,
    allowed_callbacks: Arc<Vec<String>>,
}

impl MicrosoftAdapter {
    /// The adapter configured by `config` (already validated as `v`).
    pub fn new(config: &Config, v: Validated) -> Self {
        let http = http_client(config.http_timeout());
        let oauth = Arc::new(OAuth::new(&v, http.clone()));
        let base = Duration::from_millis(config.retry_base_delay_ms.max(1));
        let retry = RetryPolicy {
            max_attempts: config.retry_max_attempts.max(1),
            budget: Duration::from_millis(config.retry_budget_ms),
            base,
            max_delay: base * 16,
        };
        let api = Arc::new(
            Api::new(
                http,
                v.graph_base_url.clone(),
                retry,
                oauth.clone(),
                config.max_concurrent_per_mailbox as usize,
                crate::limiter::Limiter::new(config.requests_per_minute_per_mailbox),
            )
            .with_batching(!config.no_batch),
        );
        MicrosoftAdapter {
            api,
            oauth,
            poll_interval_seconds: config.poll_interval(),
            push: v.webhook_public_url.clone().map(|public_url| Push {
                public_url,
                allowed_callbacks: Arc::new(config.allowed_callback_endpoints.clone()),
            }),
        }
    }

    fn session(&self, c: Option<&pb::ProviderCredentials>) -> Result<Session<'_>, Status> {
        let (account, t) = oauth_tokens(c)?;
        Ok(self.api.session(account, &t.access_token, &t.refresh_token))
    }
}

fn oauth_tokens(c: Option<&pb::ProviderCredentials>) -> Result<(&str, &pb::OAuthTokens), Status> {
    adapter::oauth_tokens(c)
        .ok_or_else(|| adapter::wrong_credentials("Microsoft credentials must be OAuth tokens"))
}

fn map_event(e: &model::Event, calendar_id: &str) -> Result<pb::Event, GraphError> {
    mapping::event(e, calendar_id).map_err(|why| {
        GraphError::Protocol(format!("Microsoft answered an unreadable event: {why}"))
    })
}

/// `result` of a conditional write, with a version conflict carrying the
/// event's current version (read again).
async fn with_current_version<T>(
    session: &Session<'_>,
    id: &str,
    result: Result<T, GraphError>,
) -> Result<T, GraphError> {
    match result {
        Err(GraphError::VersionConflict { current: None }) => {
            let current = session.get_event(id).await.ok().and_then(|e| {
                e.etag
                    .or_else(|| e.change_key.map(|k| format!("W/\"{k}\"")))
            });
            Err(GraphError::VersionConflict { current })
        }
        other => other,
    }
}

fn if_match(expected: &str) -> Option<&str> {
    (!expected.is_empty()).then_some(expected)
}

#[tonic::async_trait]
impl CalendarAdapter for MicrosoftAdapter {
    #[tracing::instrument(skip_all)]
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::AdapterCapabilities>, Status> {
        Ok(Response::new(pb::AdapterCapabilities {
            provider: pb::Provider::Microsoft as i32,
            oauth: true,
            push: self.push.is_some(),
            incremental_sync: true,
            native_free_busy: true,
            recurrence_writes: true,
            poll_interval_seconds: self.poll_interval_seconds,
            max_page_size: MAX_PAGE_SIZE,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn build_authorization_url(
        &self,
        request: Request<pb::BuildAuthorizationUrlRequest>,
    ) -> Result<Response<pb::BuildAuthorizationUrlResponse>, Status> {
        let r = request.get_ref();
        let url = self
            .oauth
            .authorization_url(
                r.access_level(),
                &r.redirect_uri,
                &r.state,
                &r.code_challenge,
                &r.login_hint,
            )
            .map_err(ErrorKind::Invalid)?;
        Ok(Response::new(pb::BuildAuthorizationUrlResponse {
            authorization_url: url,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn exchange_code(
        &self,
        request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        let r = request.get_ref();
        let level = r.access_level();
        let Some(needed) = scopes_for(level) else {
            return Err(ErrorKind::Invalid(Invalid::field("access_level", "must be set")).into());
        };
        let tokens = self
            .oauth
            .exchange(&r.code, &r.code_verifier, &r.redirect_uri)
            .await?;
        let granted = tokens
            .scopes
            .clone()
            .unwrap_or_else(|| needed.iter().map(|s| s.to_string()).collect());
        let missing = missing_scopes(level, &granted);
        if !missing.is_empty() {
            return Err(GraphError::Forbidden(format!(
                "Microsoft granted too little access: missing scope {}",
                missing.join(", ")
            ))
            .into());
        }
        let refresh = tokens
            .refresh_token
            .as_ref()
            .map(|t| t.expose().to_string())
            .unwrap_or_default();
        if refresh.is_empty() {
            tracing::warn!("microsoft issued no refresh token; the account will need re-authorisation when the access token expires");
        }
        let account = self
            .api
            .session("", tokens.access_token.expose(), &refresh)
            .me()
            .await?;
        tracing::info!("microsoft account connected");
        Ok(Response::new(pb::ProviderCredentials {
            provider_account_id: account,
            secret: Some(Secret::Oauth(pb::OAuthTokens {
                access_token: tokens.access_token.expose().to_string(),
                refresh_token: refresh,
                expires_at: Some(to_timestamp(tokens.expires_at)),
                scopes: granted,
            })),
            access_level: r.access_level,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_credentials(
        &self,
        request: Request<pb::RefreshCredentialsRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        let r = request.get_ref();
        let (account, old) = oauth_tokens(r.credentials.as_ref())?;
        let tokens = self.oauth.refresh(&old.refresh_token).await?;
        let level = r
            .credentials
            .as_ref()
            .map(|c| c.access_level)
            .unwrap_or_default();
        Ok(Response::new(pb::ProviderCredentials {
            provider_account_id: account.to_string(),
            secret: Some(Secret::Oauth(pb::OAuthTokens {
                access_token: tokens.access_token.expose().to_string(),
                // Microsoft rotates refresh tokens on every use.
                refresh_token: tokens
                    .refresh_token
                    .map(|t| t.expose().to_string())
                    .unwrap_or_else(|| old.refresh_token.clone()),
                expires_at: Some(to_timestamp(tokens.expires_at)),
                scopes: tokens.scopes.unwrap_or_else(|| old.scopes.clone()),
            })),
            access_level: level,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_credentials(
        &self,
        request: Request<pb::RevokeCredentialsRequest>,
    ) -> Result<Response<pb::RevokeCredentialsResponse>, Status> {
        oauth_tokens(request.get_ref().credentials.as_ref())?;
        // The identity platform cannot revoke one grant: its only switch,
        // revokeSignInSessions, signs the user out of every application.
        // The scheduler deletes the tokens; they lapse on their own.
        Ok(Response::new(pb::RevokeCredentialsResponse {
            revoked_at_provider: false,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_password(
        &self,
        _request: Request<pb::CheckPasswordRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        Err(adapter::not_supported(
            "CheckPassword",
            "Microsoft accounts connect through OAuth (BuildAuthorizationUrl, ExchangeCode)",
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_calendars(
        &self,
        request: Request<pb::ListProviderCalendarsRequest>,
    ) -> Result<Response<pb::ListProviderCalendarsResponse>, Status> {
        let credentials = request.get_ref().credentials.as_ref();
        let session = self.session(credentials)?;
        let listed = session.calendars().await?;
        let zone = session
            .mailbox_time_zone()
            .await
            .as_deref()
            .and_then(mapping::zone);
        // Outlook publishes free/busy from the default calendar only
        // (getSchedule), so a FREE_BUSY account has that one calendar.
        let free_busy_only =
            credentials.is_some_and(|c| c.access_level() == pb::AccessLevel::FreeBusy);
        let calendars: Vec<pb::Calendar> = listed
            .iter()
            .filter_map(|c| mapping::calendar(c, zone))
            .filter(|c| !free_busy_only || c.primary)
            .collect();
        tracing::debug!(calendars = calendars.len(), "calendars listed");
        Ok(Response::new(pb::ListProviderCalendarsResponse {
            calendars,
        }))
    }

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn sync_events(
        &self,
        request: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<pb::SyncEventsResponse>, Status> {
        let r = request.get_ref();
        check_calendar_id("calendar_id", &r.calendar_id)?;
        let window = adapter::window("window", r.window.as_ref())?;
        let session = self.session(r.credentials.as_ref())?;
        let page_size = match r.page_size {
            0 => MAX_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let resp = sync(
            &session,
            &SyncRequest {
                calendar_id: &r.calendar_id,
                cursor: &r.cursor,
                window,
                page_size,
                busy_only: r.busy_only,
            },
        )
        .await?;
        calbridge::paging::log_page(&resp);
        Ok(Response::new(resp))
    }

    type StreamSyncEventsStream = calbridge::paging::PageStream;

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn stream_sync_events(
        &self,
        request: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<Self::StreamSyncEventsStream>, Status> {
        calbridge::paging::stream_sync_events(self, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn create_event(
        &self,
        request: Request<pb::ProviderCreateEventRequest>,
    ) -> Result<Response<pb::ProviderCreateEventResponse>, Status> {
        let r = request.get_ref();
        writable(r.credentials.as_ref())?;
        check_calendar_id("calendar_id", &r.calendar_id)?;
        check_calendar_id("idempotency_key", &r.idempotency_key)?;
        let event = required("event", r.event.as_ref())?;
        let body = mapping::create_body(event, &r.idempotency_key).map_err(ErrorKind::Invalid)?;
        let session = self.session(r.credentials.as_ref())?;
        let cal = r.calendar_id.as_str();
        // A replay finds the event its first attempt made by the key it
        // holds; the transactionId covers a replay racing the first.
        if let Some(existing) = session
            .find_by_property(cal, KEY_PROPERTY, &r.idempotency_key)
            .await?
        {
            tracing::debug!("replayed create; the event exists");
            return Ok(Response::new(pb::ProviderCreateEventResponse {
                event: Some(with_caller_id(map_event(&existing, cal)?, event)),
                already_existed: true,
            }));
        }
        let stored: model::Event = match session
            .create_event(cal, serde_json::Value::Object(body))
            .await
        {
            Ok(answer) => answer.json()?,
            // Graph may refuse a known transactionId rather than answer
            // the existing event: then it is there to be found.
            Err(Ok(f)) if f.status == 409 => {
                let existing = session
                    .find_by_property(cal, KEY_PROPERTY, &r.idempotency_key)
                    .await?
                    .ok_or_else(|| {
                        GraphError::Protocol("a duplicate create names no event".into())
                    })?;
                return Ok(Response::new(pb::ProviderCreateEventResponse {
                    event: Some(with_caller_id(map_event(&existing, cal)?, event)),
                    already_existed: true,
                }));
            }
            Err(Ok(f)) => return Err(meaning(f.status, &f.code, "the calendar").into()),
            Err(Err(e)) => return Err(e.into()),
        };
        Ok(Response::new(pb::ProviderCreateEventResponse {
            event: Some(with_caller_id(map_event(&stored, cal)?, event)),
            already_existed: false,
        }))
    }

    #[tracing::instrument(skip_all, fields(
        calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id),
        provider_event_id = %calbridge::redact::id(&request.get_ref().provider_event_id),
    ))]
    async fn update_event(
        &self,
        request: Request<pb::ProviderUpdateEventRequest>,
    ) -> Result<Response<pb::Event>, Status> {
        let r = request.get_ref();
        writable(r.credentials.as_ref())?;
        check_calendar_id("calendar_id", &r.calendar_id)?;
        check_calendar_id("provider_event_id", &r.provider_event_id)?;
        let event = required("event", r.event.as_ref())?;
        let body = mapping::event_body(event).map_err(ErrorKind::Invalid)?;
        let session = self.session(r.credentials.as_ref())?;
        let id = r.provider_event_id.as_str();
        let result = session
            .patch_event(
                id,
                serde_json::Value::Object(body),
                if_match(&r.expected_version),
            )
            .await;
        let stored = with_current_version(&session, id, result).await?;
        Ok(Response::new(map_event(&stored, &r.calendar_id)?))
    }

    #[tracing::instrument(skip_all, fields(
        calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id),
        provider_event_id = %calbridge::redact::id(&request.get_ref().provider_event_id),
    ))]
    async fn delete_event(
        &self,
        request: Request<pb::ProviderDeleteEventRequest>,
    ) -> Result<Response<pb::ProviderDeleteEventResponse>, Status> {
        let r = request.get_ref();
        writable(r.credentials.as_ref())?;
        check_calendar_id("calendar_id", &r.calendar_id)?;
        check_calendar_id("provider_event_id", &r.provider_event_id)?;
        let session = self.session(r.credentials.as_ref())?;
        let id = r.provider_event_id.as_str();
        let result = session
            .delete_event(id, if_match(&r.expected_version))
            .await;
        with_current_version(&session, id, result).await?;
        Ok(Response::new(pb::ProviderDeleteEventResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn query_free_busy(
        &self,
        request: Request<pb::ProviderFreeBusyRequest>,
    ) -> Result<Response<pb::ProviderFreeBusyResponse>, Status> {
        let r = request.get_ref();
        let window = adapter::window("window", r.window.as_ref())?;
        for (i, id) in r.calendar_ids.iter().enumerate() {
            check_calendar_id(&format!("calendar_ids[{i}]"), id)?;
        }
        let session = self.session(r.credentials.as_ref())?;
        let busy = crate::freebusy::query(&session, &r.calendar_ids, window).await?;
        Ok(Response::new(pb::ProviderFreeBusyResponse { busy }))
    }

    #[tracing::instrument(skip_all, fields(
        calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id),
        channel_id = %request.get_ref().channel_id,
    ))]
    async fn start_watch(
        &self,
        request: Request<pb::StartWatchRequest>,
    ) -> Result<Response<pb::WatchChannel>, Status> {
        let Some(push) = &self.push else {
            return Err(GraphError::Unsupported(
                "push is not configured on this adapter (no --webhook-public-url); poll with SyncEvents".into(),
            )
            .into());
        };
        let r = request.get_ref();
        check_calendar_id("calendar_id", &r.calendar_id)?;
        let mut inv = Invalid::default();
        if r.channel_id.is_empty() || r.channel_id.len() > push::MAX_CLIENT_STATE / 2 {
            inv.push("channel_id", "must be 1 to 64 characters");
        }
        if r.channel_token.is_empty() {
            inv.push("channel_token", "must not be empty");
        }
        if r.callback_endpoint.is_empty() {
            inv.push("callback_endpoint", "must not be empty");
        } else if !push.allowed_callbacks.contains(&r.callback_endpoint) {
            inv.push(
                "callback_endpoint",
                "is not one of this adapter's allowed callback endpoints",
            );
        }
        inv.into_result().map_err(ErrorKind::Invalid)?;
        let client_state = push::encode_client_state(&push::ChannelState {
            channel_id: r.channel_id.clone(),
            channel_token: r.channel_token.clone(),
        })
        .map_err(ErrorKind::Invalid)?;
        let session = self.session(r.credentials.as_ref())?;
        let url = push::notification_url(&push.public_url, &r.callback_endpoint);
        let expires = push::expiration(Utc::now(), r.ttl_seconds);
        let body = serde_json::json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": url.as_str(),
            "lifecycleNotificationUrl": url.as_str(),
            "resource": session.resource_path(&["me", "calendars", &r.calendar_id, "events"]),
            "expirationDateTime": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "clientState": client_state,
            "latestSupportedTlsVersion": "v1_2",
        });
        let sub = match session.create_subscription(body).await {
            Ok(s) => s,
            Err(GraphError::Invalid(_)) => {
                return Err(ErrorKind::FailedPrecondition(
                    "Microsoft refused the subscription: the webhook did not pass Graph's validation, or the calendar cannot be watched".into(),
                )
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        let granted = sub
            .expiration_date_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(expires);
        Ok(Response::new(pb::WatchChannel {
            channel_id: r.channel_id.clone(),
            resource_id: sub.id,
            expires_at: Some(to_timestamp(granted)),
        }))
    }

    #[tracing::instrument(skip_all, fields(channel_id = %request.get_ref().channel_id))]
    async fn stop_watch(
        &self,
        request: Request<pb::StopWatchRequest>,
    ) -> Result<Response<pb::StopWatchResponse>, Status> {
        let r = request.get_ref();
        if r.resource_id.is_empty() || r.resource_id.len() > 256 {
            return Err(ErrorKind::Invalid(Invalid::field(
                "resource_id",
                "must be the subscription id StartWatch returned",
            ))
            .into());
        }
        let session = self.session(r.credentials.as_ref())?;
        session.delete_subscription(&r.resource_id).await?;
        Ok(Response::new(pb::StopWatchResponse {}))
    }
}

/// `e` with the caller's id of the request that wrote it (Graph returns
/// extended properties only when asked).
fn with_caller_id(mut e: pb::Event, written: &pb::Event) -> pb::Event {
    if e.client_event_id.is_empty() && !written.client_event_id.is_empty() {
        e.client_event_id = written.client_event_id.clone();
        e.managed = true;
    }
    e
}
