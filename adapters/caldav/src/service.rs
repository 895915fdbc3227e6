//! The gRPC face of the CalDAV adapter: `CalendarAdapter` requests are
//! checked, translated into [`Account`] operations and answered. Nothing
//! here speaks WebDAV or iCalendar.

use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use calbridge::adapter;
use calbridge::checks::{check_calendar_id, required, writable};
use calbridge::pb::calendar_adapter_server::CalendarAdapter;
use calbridge::pb::provider_credentials::Secret;
use calbridge::pb::{self, AccessLevel};
use calbridge::{ErrorKind, Invalid};

use crate::account::{discover, parse_server_url, Account};
use crate::client::{http_client, DavClient, Limits};
use crate::config::Config;
use crate::error::DavError;
use crate::mapping::parse_object;

mod instances;
use crate::sync::{sync, ReadAhead, SyncRequest, MAX_PAGE_SIZE};

/// The `CalendarAdapter` service for CalDAV servers and iCloud.
#[derive(Clone)]
pub struct CaldavAdapter {
    http: reqwest::Client,
    limits: Limits,
    default_server_url: String,
    poll_interval_seconds: u32,
}

impl CaldavAdapter {
    /// The adapter configured by `config`.
    pub fn new(config: &Config) -> Self {
        let limits = config.limits();
        CaldavAdapter {
            http: http_client(config.http_timeout(), &limits.egress),
            limits,
            default_server_url: config.default_server_url.clone(),
            poll_interval_seconds: config.poll_interval_seconds,
        }
    }

    /// One SyncEvents page; `ahead` holds what earlier pages of the same
    /// stream read.
    async fn page(
        &self,
        r: &pb::SyncEventsRequest,
        ahead: &mut ReadAhead,
    ) -> Result<pb::SyncEventsResponse, Status> {
        check_calendar_id("calendar_id", &r.calendar_id)?;
        let window = adapter::window("window", r.window.as_ref())?;
        let account = self.account(r.credentials.as_ref())?;
        let page_size = match r.page_size {
            0 => MAX_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let resp = sync(
            &account,
            &SyncRequest {
                calendar_id: &r.calendar_id,
                cursor: &r.cursor,
                window,
                page_size,
                busy_only: r.busy_only,
                max_carried: crate::sync::MAX_CARRIED_HREFS,
            },
            ahead,
        )
        .await?;
        tracing::debug!(
            upserted = resp.upserted.len(),
            deleted = resp.deleted.len(),
            more = resp.more,
            full_listing = resp.full_listing,
            held = ahead.held(),
            "sync page"
        );
        Ok(resp)
    }

    /// The account named by password credentials (server URL = calendar
    /// home, as CheckPassword returned it).
    fn account(&self, c: Option<&pb::ProviderCredentials>) -> Result<Account, Status> {
        let p = password(c)?;
        let home = parse_server_url(&p.server_url)?;
        Ok(Account::new(
            DavClient::new(
                self.http.clone(),
                self.limits.clone(),
                home.clone(),
                &p.username,
                &p.password,
            ),
            home,
        ))
    }
}

fn password(c: Option<&pb::ProviderCredentials>) -> Result<&pb::PasswordCredentials, Status> {
    adapter::password_credentials(c).ok_or_else(|| {
        adapter::wrong_credentials(
            "CalDAV credentials must be a server URL, user name and password",
        )
    })
}

/// The resource name for an idempotency key: the key itself when URL- and
/// UID-safe, else a hash of it.
pub fn resource_name(key: &str) -> String {
    let safe = !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !key.starts_with('.');
    if safe {
        key.to_string()
    } else {
        format!("cb-{}", hex::encode(&Sha256::digest(key.as_bytes())[..16]))
    }
}

fn uses_passwords(what: &str) -> Status {
    adapter::not_supported(
        what,
        "CalDAV accounts connect with a user name and (app-specific) password (CheckPassword)",
    )
}

#[tonic::async_trait]
impl CalendarAdapter for CaldavAdapter {
    #[tracing::instrument(skip_all)]
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::AdapterCapabilities>, Status> {
        Ok(Response::new(pb::AdapterCapabilities {
            provider: pb::Provider::Caldav as i32,
            oauth: false,
            push: false,
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
        _request: Request<pb::BuildAuthorizationUrlRequest>,
    ) -> Result<Response<pb::BuildAuthorizationUrlResponse>, Status> {
        Err(uses_passwords("BuildAuthorizationUrl"))
    }

    #[tracing::instrument(skip_all)]
    async fn exchange_code(
        &self,
        _request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        Err(uses_passwords("ExchangeCode"))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_credentials(
        &self,
        _request: Request<pb::RefreshCredentialsRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        Err(uses_passwords("RefreshCredentials"))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_credentials(
        &self,
        _request: Request<pb::RevokeCredentialsRequest>,
    ) -> Result<Response<pb::RevokeCredentialsResponse>, Status> {
        // CalDAV has no revocation endpoint: the user removes the
        // app-specific password at the provider.
        Ok(Response::new(pb::RevokeCredentialsResponse {
            revoked_at_provider: false,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_password(
        &self,
        request: Request<pb::CheckPasswordRequest>,
    ) -> Result<Response<pb::ProviderCredentials>, Status> {
        let r = request.into_inner();
        let mut inv = Invalid::default();
        if r.access_level() == AccessLevel::Unspecified {
            inv.push("access_level", "must be set");
        }
        if r.username.is_empty() {
            inv.push("username", "must not be empty");
        }
        if r.password.is_empty() {
            inv.push("password", "must not be empty");
        }
        inv.into_result().map_err(ErrorKind::Invalid)?;
        let server = if r.server_url.trim().is_empty() {
            &self.default_server_url
        } else {
            &r.server_url
        };
        let server = parse_server_url(server)?;
        let client = DavClient::new(
            self.http.clone(),
            self.limits.clone(),
            server.clone(),
            &r.username,
            &r.password,
        );
        let found = discover(&client, &server).await?;
        // Whether the home answers too is the scheduler's ListCalendars,
        // which it asks before storing anything: a home that refuses fails
        // the connect there, without a second listing here.
        tracing::info!("caldav account discovered");
        Ok(Response::new(pb::ProviderCredentials {
            provider_account_id: found.principal.to_string(),
            secret: Some(Secret::Password(pb::PasswordCredentials {
                server_url: found.home.to_string(),
                username: r.username,
                password: r.password,
            })),
            access_level: r.access_level,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_calendars(
        &self,
        request: Request<pb::ListProviderCalendarsRequest>,
    ) -> Result<Response<pb::ListProviderCalendarsResponse>, Status> {
        let account = self.account(request.get_ref().credentials.as_ref())?;
        let calendars = account.calendars().await?;
        Ok(Response::new(pb::ListProviderCalendarsResponse {
            calendars,
        }))
    }

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn sync_events(
        &self,
        request: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<pb::SyncEventsResponse>, Status> {
        self.page(request.get_ref(), &mut ReadAhead::none())
            .await
            .map(Response::new)
    }

    type StreamSyncEventsStream = calbridge::paging::PageStream;

    /// Pages of one stream share a [`ReadAhead`]: a listing reads every
    /// object with one calendar-query and serves the later pages from it.
    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn stream_sync_events(
        &self,
        request: Request<pb::SyncEventsRequest>,
    ) -> Result<Response<Self::StreamSyncEventsStream>, Status> {
        let this = self.clone();
        let ahead = Arc::new(tokio::sync::Mutex::new(ReadAhead::for_stream()));
        calbridge::paging::stream_pages(request.into_inner(), move |r| {
            let (this, ahead) = (this.clone(), ahead.clone());
            async move { this.page(&r, &mut *ahead.lock().await).await }
        })
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
        let account = self.account(r.credentials.as_ref())?;
        let name = resource_name(&r.idempotency_key);
        let ics = crate::ics::event_to_ics(event, &format!("{name}@calbridge"), 0, Utc::now())
            .map_err(ErrorKind::Invalid)?;
        let (event, already_existed) = account.create(&r.calendar_id, &name, &ics).await?;
        tracing::debug!(already_existed, "event created");
        Ok(Response::new(pb::ProviderCreateEventResponse {
            event: Some(event),
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
        check_calendar_id("provider_event_id", &r.provider_event_id)?;
        let event = required("event", r.event.as_ref())?;
        let account = self.account(r.credentials.as_ref())?;
        if let Some((href, suffix)) = r.provider_event_id.split_once('#') {
            check_calendar_id("calendar_id", &r.calendar_id)?;
            let expected = (!r.expected_version.is_empty()).then_some(r.expected_version.as_str());
            let target = instances::Instance {
                calendar_id: &r.calendar_id,
                id: &r.provider_event_id,
                href,
                suffix,
            };
            let updated = instances::update_instance(&account, &target, event, expected).await?;
            return Ok(Response::new(updated));
        }
        let (data, etag) = account.current(&r.provider_event_id).await?;
        if !r.expected_version.is_empty() && r.expected_version != etag {
            return Err(DavError::VersionConflict {
                current: Some(etag),
            }
            .into());
        }
        let existing = parse_object(&data, None).ok();
        let series =
            existing.as_ref().is_some_and(|o| o.is_recurring()) || !event.recurrence.is_empty();
        let (uid, sequence) = existing
            .and_then(|o| o.master)
            .map(|m| (m.uid, m.sequence + 1))
            .filter(|(uid, _)| !uid.is_empty())
            .unwrap_or_else(|| {
                (
                    format!("{}@calbridge", resource_name(&r.provider_event_id)),
                    1,
                )
            });
        // Rewrite only what calbridge owns and what changed; what other
        // clients stored (alarms, X- properties, ...) stays.
        let now = Utc::now();
        let zone = if series {
            // A series' overrides are pruned by its rules, whose floating
            // times are read in the calendar's zone.
            check_calendar_id("calendar_id", &r.calendar_id)?;
            account
                .zone(&account.url("calendar_id", &r.calendar_id)?)
                .await?
        } else {
            None
        };
        // The server's object is parsed and, for a series, its overrides
        // checked against the rules (an expansion each, within one budget):
        // off the async workers.
        let merged = {
            let (event, uid) = (event.clone(), uid.clone());
            tokio::task::spawn_blocking(move || {
                if series {
                    crate::ics::replace_series(&data, &event, &uid, sequence, now, zone)
                } else {
                    crate::ics::merge_event(&data, &event, &uid, sequence, now)
                }
            })
            .await
            .map_err(|e| ErrorKind::Internal(format!("rewriting the event failed: {e}")))?
        };
        let ics = match merged.map_err(ErrorKind::Invalid)? {
            Some(merged) => merged,
            None => {
                crate::ics::event_to_ics(event, &uid, sequence, now).map_err(ErrorKind::Invalid)?
            }
        };
        let updated = account
            .replace(&r.calendar_id, &r.provider_event_id, &ics, &etag)
            .await?;
        Ok(Response::new(updated))
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
        check_calendar_id("provider_event_id", &r.provider_event_id)?;
        let account = self.account(r.credentials.as_ref())?;
        let expected = (!r.expected_version.is_empty()).then_some(r.expected_version.as_str());
        match r.provider_event_id.split_once('#') {
            Some((href, suffix)) => {
                check_calendar_id("calendar_id", &r.calendar_id)?;
                let target = instances::Instance {
                    calendar_id: &r.calendar_id,
                    id: &r.provider_event_id,
                    href,
                    suffix,
                };
                instances::delete_instance(&account, &target, expected).await?;
            }
            None => account.delete(&r.provider_event_id, expected).await?,
        }
        Ok(Response::new(pb::ProviderDeleteEventResponse {}))
    }

    #[tracing::instrument(skip_all, fields(calendars = request.get_ref().calendar_ids.len()))]
    async fn query_free_busy(
        &self,
        request: Request<pb::ProviderFreeBusyRequest>,
    ) -> Result<Response<pb::ProviderFreeBusyResponse>, Status> {
        let r = request.get_ref();
        let window = adapter::window("window", r.window.as_ref())?;
        let account = self.account(r.credentials.as_ref())?;
        let mut busy = Vec::new();
        for id in &r.calendar_ids {
            check_calendar_id("calendar_ids", id)?;
            busy.extend(account.free_busy(id, window).await?);
        }
        busy.sort_by_key(|b| b.start.map(|t| (t.seconds, t.nanos)));
        Ok(Response::new(pb::ProviderFreeBusyResponse { busy }))
    }

    #[tracing::instrument(skip_all)]
    async fn start_watch(
        &self,
        _request: Request<pb::StartWatchRequest>,
    ) -> Result<Response<pb::WatchChannel>, Status> {
        Err(DavError::Unsupported(
            "CalDAV servers offer no push to third parties; poll with SyncEvents".into(),
        )
        .into())
    }

    #[tracing::instrument(skip_all)]
    async fn stop_watch(
        &self,
        _request: Request<pb::StopWatchRequest>,
    ) -> Result<Response<pb::StopWatchResponse>, Status> {
        Ok(Response::new(pb::StopWatchResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_the_key_when_safe_and_a_hash_otherwise() {
        assert_eq!(resource_name("evt-123_a.b"), "evt-123_a.b");
        let hashed = resource_name("a/b c?#");
        assert!(hashed.starts_with("cb-") && hashed.len() == 35, "{hashed}");
        assert_eq!(hashed, resource_name("a/b c?#"));
        assert!(resource_name("../x").starts_with("cb-"));
    }
}
