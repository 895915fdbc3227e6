//! The gRPC face of the Google adapter: `CalendarAdapter` requests are
//! checked, translated into Calendar API and OAuth calls, and answered.
//! Nothing here parses Google's JSON; [`crate::mapping`] and
//! [`crate::sync`] do.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tonic::{Request, Response, Status};

use calbridge::adapter;
use calbridge::checks::{check_calendar_id, required, writable};
use calbridge::pb;
use calbridge::pb::calendar_adapter_server::CalendarAdapter;
use calbridge::pb::provider_credentials::Secret;
use calbridge::time::to_timestamp;
use calbridge::{ErrorKind, Invalid};

use crate::client::{http_client, Api, Session};
use crate::config::{Config, SendUpdates, Validated};
use crate::error::GoogleError;
use crate::instances::{precondition, with_current_version};
use crate::limiter::Limiter;
use crate::mapping::{
    event_body, event_from_google, event_id_for_key, parse_instance_id, BodyOptions, Context,
};
use crate::model;
use crate::oauth::{full_scope, missing_scopes, scopes_for, OAuth};
use crate::push::{encode_token, Route, MAX_CHANNEL_ID};
use crate::retry::RetryPolicy;
use crate::sync::{sync, EventSource, ListQuery, SyncRequest, MAX_PAGE_SIZE};

/// Google's free/busy calendars per query.
pub const FREE_BUSY_MAX_CALENDARS: usize = 50;
/// The longest free/busy range asked in one query, in days.
pub const FREE_BUSY_MAX_DAYS: i64 = 90;
/// Assumed lifetime of an access token Google gave no expiry for.
const DEFAULT_TOKEN_LIFETIME: chrono::Duration = chrono::Duration::seconds(3600);

/// The `CalendarAdapter` service for Google Calendar.
#[derive(Clone)]
pub struct GoogleAdapter {
    api: Arc<Api>,
    oauth: Arc<OAuth>,
    send_updates: SendUpdates,
    webhook_url: Option<Url>,
    allowed_callbacks: Arc<Vec<String>>,
    poll_interval_seconds: u32,
}

impl GoogleAdapter {
    /// The adapter configured by `config` (already validated as `v`).
    pub fn new(config: &Config, v: &Validated) -> Self {
        let http = http_client(config.http_timeout());
        let oauth = Arc::new(OAuth::new(v, http.clone()));
        let retry = RetryPolicy {
            max_attempts: config.retry_max_attempts.max(1),
            budget: Duration::from_millis(config.retry_budget_ms),
            base: Duration::from_millis(config.retry_base_delay_ms.max(1)),
            max_delay: Duration::from_millis(config.retry_base_delay_ms.max(1) * 8),
        };
        let api = Arc::new(Api::new(
            http,
            v.api_base_url.clone(),
            retry,
            Limiter::new(config.requests_per_minute_per_user),
            oauth.clone(),
        ));
        GoogleAdapter {
            api,
            oauth,
            send_updates: config.send_updates,
            webhook_url: v.webhook_public_url.clone(),
            allowed_callbacks: Arc::new(config.allowed_callback_endpoints.clone()),
            poll_interval_seconds: config.poll_interval(),
        }
    }

    fn session(&self, c: Option<&pb::ProviderCredentials>) -> Result<Session<'_>, Status> {
        let (account, t) = oauth_tokens(c)?;
        Ok(self.api.session(account, &t.access_token, &t.refresh_token))
    }
}

fn oauth_tokens(c: Option<&pb::ProviderCredentials>) -> Result<(&str, &pb::OAuthTokens), Status> {
    adapter::oauth_tokens(c)
        .ok_or_else(|| adapter::wrong_credentials("Google credentials must be OAuth tokens"))
}

fn map_event(g: &model::Event) -> Result<pb::Event, GoogleError> {
    event_from_google(g, &Context::default())
        .map_err(|e| GoogleError::Protocol(format!("Google answered an unreadable event: {e}")))
}

/// Reads `events.watch`'s `expiration` (milliseconds, a string or number).
fn expiration(v: Option<&serde_json::Value>) -> Option<DateTime<Utc>> {
    let ms = match v? {
        serde_json::Value::String(s) => s.parse::<i64>().ok()?,
        serde_json::Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    DateTime::from_timestamp_millis(ms)
}

/// Event pages of one calendar from Google.
struct GoogleEvents<'a> {
    session: &'a Session<'a>,
    calendar_id: &'a str,
}

impl EventSource for GoogleEvents<'_> {
    fn page(
        &self,
        q: &ListQuery,
    ) -> impl std::future::Future<Output = Result<model::EventsPage, GoogleError>> + Send {
        self.session.events_page(self.calendar_id, q)
    }
}

/// Splits `[start, end)` into ranges of at most `days` days.
pub fn split_window(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    days: i64,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut s = start;
    while s < end {
        let e = (s + chrono::Duration::days(days)).min(end);
        out.push((s, e));
        s = e;
    }
    out
}

/// Sorts busy intervals by start and joins, per calendar, intervals that
/// touch or overlap (a busy period cut at a range boundary comes back
/// whole).
pub fn merge_busy(mut busy: Vec<pb::BusyInterval>) -> Vec<pb::BusyInterval> {
    let key = |b: &pb::BusyInterval| {
        (
            b.calendar_id.clone(),
            b.start.map(|t| (t.seconds, t.nanos)),
            b.end.map(|t| (t.seconds, t.nanos)),
        )
    };
    busy.sort_by_key(key);
    let mut merged: Vec<pb::BusyInterval> = Vec::new();
    for b in busy {
        if let Some(last) = merged.last_mut() {
            let ts = |t: Option<prost_types::Timestamp>| t.map(|t| (t.seconds, t.nanos));
            if last.calendar_id == b.calendar_id && ts(b.start) <= ts(last.end) {
                if ts(b.end) > ts(last.end) {
                    last.end = b.end;
                }
                continue;
            }
        }
        merged.push(b);
    }
    merged.sort_by_key(|b| (b.start.map(|t| (t.seconds, t.nanos)), b.calendar_id.clone()));
    merged
}

#[tonic::async_trait]
impl CalendarAdapter for GoogleAdapter {
    #[tracing::instrument(skip_all)]
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::AdapterCapabilities>, Status> {
        Ok(Response::new(pb::AdapterCapabilities {
            provider: pb::Provider::Google as i32,
            oauth: true,
            push: self.webhook_url.is_some(),
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
        let url = self.oauth.authorization_url(
            r.access_level(),
            &r.redirect_uri,
            &r.state,
            &r.code_challenge,
            &r.login_hint,
        )?;
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
        // Without a `scope` in the answer, the grant is what was asked.
        let granted = tokens
            .scopes
            .clone()
            .unwrap_or_else(|| needed.iter().map(|s| full_scope(s)).collect());
        let missing = missing_scopes(level, &granted);
        if !missing.is_empty() {
            tracing::info!(missing = missing.len(), "the user granted too few scopes");
            return Err(GoogleError::MissingScopes(missing).into());
        }
        let refresh = tokens
            .refresh_token
            .as_ref()
            .map(|t| t.expose().to_string())
            .unwrap_or_default();
        if refresh.is_empty() {
            tracing::warn!("google issued no refresh token; the account will need re-authorisation when the access token expires");
        }
        let session = self.api.session("", tokens.access_token.expose(), &refresh);
        let account = session.primary_calendar_id().await?;
        tracing::info!("google account connected");
        Ok(Response::new(pb::ProviderCredentials {
            provider_account_id: account,
            secret: Some(Secret::Oauth(pb::OAuthTokens {
                access_token: tokens.access_token.expose().to_string(),
                refresh_token: refresh,
                expires_at: Some(to_timestamp(
                    tokens
                        .expires_at
                        .unwrap_or_else(|| Utc::now() + DEFAULT_TOKEN_LIFETIME),
                )),
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
        let credentials = r.credentials.as_ref().expect("checked above");
        Ok(Response::new(pb::ProviderCredentials {
            provider_account_id: account.to_string(),
            secret: Some(Secret::Oauth(pb::OAuthTokens {
                access_token: tokens.access_token.expose().to_string(),
                // Google rarely rotates refresh tokens: keep the old one
                // unless a new one came.
                refresh_token: tokens
                    .refresh_token
                    .map(|t| t.expose().to_string())
                    .unwrap_or_else(|| old.refresh_token.clone()),
                expires_at: Some(to_timestamp(
                    tokens
                        .expires_at
                        .unwrap_or_else(|| Utc::now() + DEFAULT_TOKEN_LIFETIME),
                )),
                scopes: tokens.scopes.unwrap_or_else(|| old.scopes.clone()),
            })),
            access_level: credentials.access_level,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_credentials(
        &self,
        request: Request<pb::RevokeCredentialsRequest>,
    ) -> Result<Response<pb::RevokeCredentialsResponse>, Status> {
        let (_, t) = oauth_tokens(request.get_ref().credentials.as_ref())?;
        // A refresh token revokes the whole grant; an access token also
        // revokes the refresh token it came with.
        let revoked = if !t.refresh_token.is_empty() {
            self.oauth.revoke(&t.refresh_token).await?
        } else if !t.access_token.is_empty() {
            self.oauth.revoke(&t.access_token).await?
        } else {
            false
        };
        Ok(Response::new(pb::RevokeCredentialsResponse {
            revoked_at_provider: revoked,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_password(
        &self,
        _request: Request<pb::CheckPasswordRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        Err(adapter::not_supported(
            "CheckPassword",
            "Google accounts connect through OAuth (BuildAuthorizationUrl, ExchangeCode)",
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_calendars(
        &self,
        request: Request<pb::ListProviderCalendarsRequest>,
    ) -> Result<Response<pb::ListProviderCalendarsResponse>, Status> {
        let session = self.session(request.get_ref().credentials.as_ref())?;
        let entries = session.calendar_list().await?;
        let calendars: Vec<pb::Calendar> = entries
            .iter()
            .filter_map(crate::mapping::calendar_from_entry)
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
        } as usize;
        let source = GoogleEvents {
            session: &session,
            calendar_id: &r.calendar_id,
        };
        let resp = sync(
            &source,
            &SyncRequest {
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
        let session = self.session(r.credentials.as_ref())?;
        let id = event_id_for_key(&r.idempotency_key);
        let body = event_body(
            event,
            BodyOptions {
                id: Some(&id),
                ..Default::default()
            },
        )
        .map_err(ErrorKind::Invalid)?;
        let send_updates = self.send_updates.as_str();
        let (stored, already_existed) = match session
            .insert_event(&r.calendar_id, body, send_updates)
            .await
        {
            Ok(g) => (g, false),
            Err(GoogleError::Duplicate) => {
                let existing = session.get_event(&r.calendar_id, &id).await?;
                if existing.is_cancelled() {
                    // A deleted event's tombstone holds the id: the caller
                    // creates it anew, so bring it back with the new fields.
                    let body = event_body(
                        event,
                        BodyOptions {
                            patch: true,
                            ..Default::default()
                        },
                    )
                    .map_err(ErrorKind::Invalid)?;
                    let revived = session
                        .patch_event(
                            &r.calendar_id,
                            &id,
                            body,
                            existing.etag.as_deref(),
                            send_updates,
                        )
                        .await?;
                    (revived, false)
                } else {
                    (existing, true)
                }
            }
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(already_existed, "event created");
        Ok(Response::new(pb::ProviderCreateEventResponse {
            event: Some(map_event(&stored)?),
            already_existed,
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
        let instance =
            parse_instance_id(&r.provider_event_id).is_some() || event.recurrence_link.is_some();
        let body = event_body(
            event,
            BodyOptions {
                patch: true,
                instance,
                ..Default::default()
            },
        )
        .map_err(ErrorKind::Invalid)?;
        let session = self.session(r.credentials.as_ref())?;
        let (cal, id) = (r.calendar_id.as_str(), r.provider_event_id.as_str());
        let if_match = precondition(&session, cal, id, &r.expected_version).await?;
        let result = session
            .patch_event(
                cal,
                id,
                body,
                if_match.as_deref(),
                self.send_updates.as_str(),
            )
            .await;
        let stored = with_current_version(&session, cal, id, result).await?;
        Ok(Response::new(map_event(&stored)?))
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
        let (cal, id) = (r.calendar_id.as_str(), r.provider_event_id.as_str());
        let if_match = precondition(&session, cal, id, &r.expected_version).await?;
        let result = session
            .delete_event(cal, id, if_match.as_deref(), self.send_updates.as_str())
            .await;
        with_current_version(&session, cal, id, result).await?;
        Ok(Response::new(pb::ProviderDeleteEventResponse {}))
    }

    #[tracing::instrument(skip_all, fields(calendars = request.get_ref().calendar_ids.len()))]
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
        let mut busy = Vec::new();
        for ids in r.calendar_ids.chunks(FREE_BUSY_MAX_CALENDARS) {
            for (start, end) in split_window(window.start, window.end, FREE_BUSY_MAX_DAYS) {
                let answer = session.free_busy(ids, start, end).await?;
                for (calendar_id, cal) in answer.calendars.unwrap_or_default() {
                    let reasons: Vec<String> = cal
                        .errors
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|e| e.reason)
                        .collect();
                    if reasons.iter().any(|r| r == "notFound") {
                        return Err(GoogleError::NotFound("a calendar asked about".into()).into());
                    }
                    if let Some(reason) = reasons.first() {
                        return Err(GoogleError::Unavailable(
                            format!("free/busy of a calendar failed ({reason:.40})"),
                            None,
                        )
                        .into());
                    }
                    for period in cal.busy.unwrap_or_default() {
                        let parse = |s: Option<&str>| {
                            s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                                .map(|t| t.with_timezone(&Utc))
                        };
                        let (Some(s), Some(e)) =
                            (parse(period.start.as_deref()), parse(period.end.as_deref()))
                        else {
                            return Err(GoogleError::Protocol(
                                "a busy period has no valid times".into(),
                            )
                            .into());
                        };
                        busy.push(pb::BusyInterval {
                            start: Some(to_timestamp(s.max(window.start))),
                            end: Some(to_timestamp(e.min(window.end))),
                            status: pb::BusyStatus::Busy as i32,
                            calendar_id: calendar_id.clone(),
                        });
                    }
                }
            }
        }
        Ok(Response::new(pb::ProviderFreeBusyResponse {
            busy: merge_busy(busy),
        }))
    }

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn start_watch(
        &self,
        request: Request<pb::StartWatchRequest>,
    ) -> Result<Response<pb::WatchChannel>, Status> {
        let Some(address) = &self.webhook_url else {
            return Err(GoogleError::Unsupported(
                "push is not configured on this adapter (no --webhook-public-url); poll with SyncEvents".into(),
            )
            .into());
        };
        let r = request.get_ref();
        check_calendar_id("calendar_id", &r.calendar_id)?;
        let mut inv = Invalid::default();
        if r.channel_id.is_empty() || r.channel_id.len() > MAX_CHANNEL_ID {
            inv.push(
                "channel_id",
                format!("must be 1 to {MAX_CHANNEL_ID} characters"),
            );
        }
        if r.channel_token.is_empty() {
            inv.push("channel_token", "must not be empty");
        }
        if r.callback_endpoint.is_empty() {
            inv.push("callback_endpoint", "must not be empty");
        } else if !self.allowed_callbacks.contains(&r.callback_endpoint) {
            inv.push(
                "callback_endpoint",
                "is not one of this adapter's allowed callback endpoints",
            );
        }
        inv.into_result().map_err(ErrorKind::Invalid)?;
        let token = encode_token(&Route {
            callback_endpoint: r.callback_endpoint.clone(),
            channel_token: r.channel_token.clone(),
        })
        .map_err(ErrorKind::Invalid)?;
        let session = self.session(r.credentials.as_ref())?;
        let channel = session
            .watch(
                &r.calendar_id,
                &r.channel_id,
                address.as_str(),
                &token,
                r.ttl_seconds,
            )
            .await?;
        let expires = expiration(channel.expiration.as_ref()).unwrap_or_else(|| {
            let ttl = if r.ttl_seconds == 0 {
                604_800
            } else {
                r.ttl_seconds
            };
            Utc::now() + chrono::Duration::seconds(i64::from(ttl))
        });
        Ok(Response::new(pb::WatchChannel {
            channel_id: channel.id.unwrap_or_else(|| r.channel_id.clone()),
            resource_id: channel.resource_id.unwrap_or_default(),
            expires_at: Some(to_timestamp(expires)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn stop_watch(
        &self,
        request: Request<pb::StopWatchRequest>,
    ) -> Result<Response<pb::StopWatchResponse>, Status> {
        let r = request.get_ref();
        let mut inv = Invalid::default();
        if r.channel_id.is_empty() {
            inv.push("channel_id", "must not be empty");
        }
        if r.resource_id.is_empty() {
            inv.push("resource_id", "must not be empty");
        }
        inv.into_result().map_err(ErrorKind::Invalid)?;
        let session = self.session(r.credentials.as_ref())?;
        session.stop_channel(&r.channel_id, &r.resource_id).await?;
        Ok(Response::new(pb::StopWatchResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn free_busy_windows_are_split_into_ninety_day_ranges() {
        let parts = split_window(at("2026-01-01T00:00:00Z"), at("2026-12-01T00:00:00Z"), 90);
        assert_eq!(parts.len(), 4);
        assert_eq!(
            parts[0],
            (at("2026-01-01T00:00:00Z"), at("2026-04-01T00:00:00Z"))
        );
        assert_eq!(parts[3].1, at("2026-12-01T00:00:00Z"));
        assert!(parts.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(
            split_window(at("2026-01-01T00:00:00Z"), at("2026-01-02T00:00:00Z"), 90).len(),
            1
        );
    }

    fn busy(cal: &str, s: &str, e: &str) -> pb::BusyInterval {
        pb::BusyInterval {
            start: Some(to_timestamp(at(s))),
            end: Some(to_timestamp(at(e))),
            status: pb::BusyStatus::Busy as i32,
            calendar_id: cal.into(),
        }
    }

    #[test]
    fn busy_periods_cut_at_range_boundaries_come_back_whole_and_sorted() {
        let merged = merge_busy(vec![
            busy("b", "2026-04-01T00:00:00Z", "2026-04-01T02:00:00Z"),
            busy("a", "2026-03-31T23:00:00Z", "2026-04-01T00:00:00Z"),
            busy("a", "2026-04-01T00:00:00Z", "2026-04-01T01:00:00Z"),
            busy("a", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"),
        ]);
        assert_eq!(
            merged,
            vec![
                busy("a", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"),
                busy("a", "2026-03-31T23:00:00Z", "2026-04-01T01:00:00Z"),
                busy("b", "2026-04-01T00:00:00Z", "2026-04-01T02:00:00Z"),
            ]
        );
    }

    #[test]
    fn watch_expirations_are_read_as_milliseconds() {
        let t = expiration(Some(&serde_json::json!("1767225600000"))).unwrap();
        assert_eq!(t, at("2026-01-01T00:00:00Z"));
        assert_eq!(
            expiration(Some(&serde_json::json!(1767225600000i64))),
            Some(t)
        );
        assert_eq!(expiration(Some(&serde_json::json!("soon"))), None);
        assert_eq!(expiration(None), None);
    }
}
