//! The public Scheduler service: each handler checks its request, naming
//! the fields it finds wrong, and calls one domain function. The tenant
//! comes authenticated from [`super::auth::TenantAuth`].

use std::sync::Arc;

use calbridge::limits;
use calbridge::pb::{self, AccessLevel};
use calbridge::validate::{check_event, check_id, check_window};
use calbridge::{ErrorKind, Invalid};
use tonic::{Request, Response};

use super::auth::Tenant;
use super::checks::*;
use super::Reply;
use crate::clock::ts_ms as ts;
use crate::ids::{AccountId, CalendarId};
use crate::providers::{self, SignIn};
use crate::state::Shared;
use crate::{accounts, calendars, feed, freebusy, meetings, writes};

/// The public Scheduler service.
pub struct SchedulerApi {
    shared: Arc<Shared>,
}

impl SchedulerApi {
    /// A service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        SchedulerApi { shared }
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    #[tracing::instrument(skip_all, fields(provider = req.get_ref().provider))]
    async fn connect_password_account(
        &self,
        req: Request<pb::ConnectPasswordAccountRequest>,
    ) -> Reply<pb::Account> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        match providers::info(providers::from_request(r.provider)).map(|p| p.sign_in) {
            Some(SignIn::Password { server_url }) => {
                if server_url
                    && !(r.server_url.starts_with("https://")
                        || r.server_url.starts_with("http://"))
                {
                    inv.push(
                        "server_url",
                        "is required for CalDAV: the server's http:// or https:// URL",
                    );
                }
            }
            Some(SignIn::OAuth) => inv.push(
                "provider",
                "connects through OAuth: call BeginAuthorization instead",
            ),
            None => inv.push(
                "provider",
                format!(
                    "must be {}",
                    providers::names_signing_in(|s| matches!(s, SignIn::Password { .. }))
                ),
            ),
        }
        check_id(&mut inv, "username", &r.username, limits::MAX_EMAIL_BYTES);
        if r.password.is_empty() {
            inv.push("password", "must not be empty");
        } else if r.password.len() > 1024 {
            inv.push("password", "must be at most 1024 bytes");
        }
        if r.server_url.len() > 2048 {
            inv.push("server_url", "must be at most 2048 bytes");
        }
        if AccessLevel::try_from(r.access_level).unwrap_or(AccessLevel::Unspecified)
            == AccessLevel::Unspecified
        {
            inv.push("access_level", "must be FREE_BUSY, READ or READ_WRITE");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            crate::connections::connect_password(&self.shared, tenant.id(), r).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(provider = req.get_ref().provider))]
    async fn begin_authorization(
        &self,
        req: Request<pb::BeginAuthorizationRequest>,
    ) -> Reply<pb::BeginAuthorizationResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        if !r.account_id.is_empty() {
            require_id("account_id", &r.account_id)?;
        }
        Ok(Response::new(
            crate::connections::oauth::begin(&self.shared, tenant.id(), r).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_authorization(
        &self,
        req: Request<pb::CompleteAuthorizationRequest>,
    ) -> Reply<pb::Account> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        Ok(Response::new(
            crate::connections::oauth::complete(
                &self.shared,
                Some(tenant.id()),
                &r.state,
                &r.code,
                &r.redirect_uri,
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn get_account(&self, req: Request<pb::GetAccountRequest>) -> Reply<pb::Account> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(
            &self.shared,
            tenant.id(),
            &AccountId::from(r.account_id.as_str()),
        )?;
        Ok(Response::new(accounts::account_pb(&self.shared, &a)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Reply<pb::ListAccountsResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        let n = page_size(&mut inv, r.page_size, 100);
        if r.page_token.len() > limits::MAX_ID_BYTES {
            inv.push("page_token", "is not a token returned by ListAccounts");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let (accounts, next_page_token) = accounts::list_page(&self.shared, tenant.id(), after, n)?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn revoke_account(&self, req: Request<pb::RevokeAccountRequest>) -> Reply<pb::Account> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            crate::connections::revoke(
                &self.shared,
                tenant.id(),
                &AccountId::from(r.account_id.as_str()),
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn list_calendars(
        &self,
        req: Request<pb::ListCalendarsRequest>,
    ) -> Reply<pb::ListCalendarsResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(pb::ListCalendarsResponse {
            calendars: calendars::list(
                &self.shared,
                tenant.id(),
                &AccountId::from(r.account_id.as_str()),
            )?,
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn set_calendar_sync(
        &self,
        req: Request<pb::SetCalendarSyncRequest>,
    ) -> Reply<pb::Calendar> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            calendars::set_sync(
                &self.shared,
                tenant.id(),
                &AccountId::from(&r.account_id),
                &CalendarId::from(&r.calendar_id),
                r.synced,
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        let window = check_window(&mut inv, "window", r.window.as_ref());
        let n = page_size(&mut inv, r.page_size, 250);
        let after = if r.page_token.is_empty() {
            None
        } else if r.page_token.len() > limits::MAX_TOKEN_BYTES {
            inv.push("page_token", "is not a token returned by ListEvents");
            None
        } else {
            let t = parse_event_page_token(&r.page_token);
            if t.is_none() {
                inv.push("page_token", "is not a token returned by ListEvents");
            }
            t
        };
        inv.into_result().map_err(ErrorKind::from)?;
        let (start, end) = window.expect("validated");
        let page = calendars::list_events(
            &self.shared,
            tenant.id(),
            &AccountId::from(&r.account_id),
            &CalendarId::from(&r.calendar_id),
            (start.timestamp_millis(), end.timestamp_millis()),
            after.as_ref().map(|(s, p)| (*s, p.as_str())),
            n,
        )?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page.events,
            next_page_token: page
                .next
                .map(|(s, p)| event_page_token(s, &p))
                .unwrap_or_default(),
            as_of: page.as_of_ms.and_then(ts),
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn get_event(&self, req: Request<pb::GetEventRequest>) -> Reply<pb::Event> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        one_id(&mut inv, &r.client_event_id, &r.provider_event_id);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(calendars::get_event(
            &self.shared,
            tenant.id(),
            &AccountId::from(&r.account_id),
            &CalendarId::from(&r.calendar_id),
            &r.client_event_id,
            &r.provider_event_id,
        )?))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn upsert_event(
        &self,
        req: Request<pb::UpsertEventRequest>,
    ) -> Reply<pb::UpsertEventResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        at_least_one_id(&mut inv, &r.client_event_id, &r.provider_event_id);
        match &r.event {
            None => inv.push("event", "must be set"),
            Some(e) => check_event(&mut inv, "event", e),
        }
        check_version(&mut inv, &r.expected_version);
        if r.hold_id.len() > limits::MAX_ID_BYTES {
            inv.push("hold_id", "must be at most 256 bytes");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            writes::upsert_event(&self.shared, tenant.id(), r).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn delete_event(
        &self,
        req: Request<pb::DeleteEventRequest>,
    ) -> Reply<pb::DeleteEventResult> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        one_id(&mut inv, &r.client_event_id, &r.provider_event_id);
        check_version(&mut inv, &r.expected_version);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            writes::delete(&self.shared, tenant.id(), r).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(accounts = req.get_ref().account_ids.len()))]
    async fn query_free_busy(
        &self,
        req: Request<pb::QueryFreeBusyRequest>,
    ) -> Reply<pb::QueryFreeBusyResponse> {
        let _timer = crate::metrics::AvailabilityTimer::start("QueryFreeBusy");
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        if r.account_ids.is_empty() {
            inv.push("account_ids", "must name at least one account");
        } else if r.account_ids.len() > limits::MAX_FREE_BUSY_ACCOUNTS {
            inv.push(
                "account_ids",
                format!(
                    "must name at most {} accounts",
                    limits::MAX_FREE_BUSY_ACCOUNTS
                ),
            );
        }
        // Ids of an oversized list are not looked at one by one.
        for (i, id) in r
            .account_ids
            .iter()
            .enumerate()
            .take(limits::MAX_FREE_BUSY_ACCOUNTS)
        {
            check_id(
                &mut inv,
                &format!("account_ids[{i}]"),
                id,
                limits::MAX_ID_BYTES,
            );
        }
        let window = check_window(&mut inv, "window", r.window.as_ref());
        if let Some((s, e)) = window {
            if e - s > chrono::Duration::days(limits::MAX_FREE_BUSY_DAYS) {
                inv.push(
                    "window",
                    format!("must be at most {} days long", limits::MAX_FREE_BUSY_DAYS),
                );
            }
        }
        inv.into_result().map_err(ErrorKind::from)?;
        let (start, end) = window.expect("validated");
        Ok(Response::new(pb::QueryFreeBusyResponse {
            accounts: freebusy::query(
                &self.shared,
                tenant.id(),
                &r.account_ids,
                start.timestamp_millis(),
                end.timestamp_millis(),
            )?,
        }))
    }

    #[tracing::instrument(skip_all, fields(groups = req.get_ref().groups.len()))]
    async fn query_availability(
        &self,
        req: Request<pb::QueryAvailabilityRequest>,
    ) -> Reply<pb::QueryAvailabilityResponse> {
        let _timer = crate::metrics::AvailabilityTimer::start("QueryAvailability");
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(meetings::query(
            &self.shared,
            tenant.id(),
            req.get_ref(),
        )?))
    }

    #[tracing::instrument(skip_all, fields(steps = req.get_ref().steps.len()))]
    async fn query_sequenced_availability(
        &self,
        req: Request<pb::QuerySequencedAvailabilityRequest>,
    ) -> Reply<pb::QuerySequencedAvailabilityResponse> {
        let _timer = crate::metrics::AvailabilityTimer::start("QuerySequencedAvailability");
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(meetings::sequences(
            &self.shared,
            tenant.id(),
            req.get_ref(),
        )?))
    }

    #[tracing::instrument(skip_all)]
    async fn explain_availability(
        &self,
        req: Request<pb::ExplainAvailabilityRequest>,
    ) -> Reply<pb::ExplainAvailabilityResponse> {
        let _timer = crate::metrics::AvailabilityTimer::start("ExplainAvailability");
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(meetings::explain(
            &self.shared,
            tenant.id(),
            req.get_ref(),
        )?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_hold(&self, req: Request<pb::CreateHoldRequest>) -> Reply<pb::Hold> {
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(
            meetings::create_hold(&self.shared, tenant.id(), req.get_ref()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn release_hold(
        &self,
        req: Request<pb::ReleaseHoldRequest>,
    ) -> Reply<pb::ReleaseHoldResponse> {
        let tenant = Tenant::of(&req)?;
        require_id("hold_id", &req.get_ref().hold_id)?;
        meetings::release_hold(&self.shared, tenant.id(), &req.get_ref().hold_id).await?;
        Ok(Response::new(pb::ReleaseHoldResponse {}))
    }

    async fn list_holds(&self, req: Request<pb::ListHoldsRequest>) -> Reply<pb::ListHoldsResponse> {
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: meetings::list_holds(&self.shared, tenant.id())?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn put_working_hours(
        &self,
        req: Request<pb::PutWorkingHoursRequest>,
    ) -> Reply<pb::StoredWorkingHours> {
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(
            meetings::put_working_hours(&self.shared, tenant.id(), req.get_ref()).await?,
        ))
    }

    async fn get_working_hours(
        &self,
        req: Request<pb::GetWorkingHoursRequest>,
    ) -> Reply<pb::StoredWorkingHours> {
        let tenant = Tenant::of(&req)?;
        require_id("working_hours_id", &req.get_ref().working_hours_id)?;
        Ok(Response::new(meetings::get_working_hours(
            &self.shared,
            tenant.id(),
            &req.get_ref().working_hours_id,
        )?))
    }

    async fn list_working_hours(
        &self,
        req: Request<pb::ListWorkingHoursRequest>,
    ) -> Reply<pb::ListWorkingHoursResponse> {
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(pb::ListWorkingHoursResponse {
            working_hours: meetings::list_working_hours(&self.shared, tenant.id())?,
        }))
    }

    async fn delete_working_hours(
        &self,
        req: Request<pb::DeleteWorkingHoursRequest>,
    ) -> Reply<pb::DeleteWorkingHoursResponse> {
        let tenant = Tenant::of(&req)?;
        require_id("working_hours_id", &req.get_ref().working_hours_id)?;
        meetings::delete_working_hours(&self.shared, tenant.id(), &req.get_ref().working_hours_id)
            .await?;
        Ok(Response::new(pb::DeleteWorkingHoursResponse {}))
    }

    type WatchChangesStream = feed::ChangeStream;

    #[tracing::instrument(skip_all)]
    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Reply<Self::WatchChangesStream> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        check_cursor_len(&r.cursor)?;
        let after = feed::check_cursor(&self.shared, tenant.id(), "cursor", &r.cursor)?;
        Ok(Response::new(feed::watch(
            self.shared.clone(),
            tenant.into_id().into_string(),
            after,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_changes(
        &self,
        req: Request<pb::ListChangesRequest>,
    ) -> Reply<pb::ListChangesResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        let n = page_size(&mut inv, r.page_size, 100);
        inv.into_result().map_err(ErrorKind::from)?;
        check_cursor_len(&r.cursor)?;
        let (changes, next_cursor) = feed::list(&self.shared, tenant.id(), &r.cursor, n)?;
        Ok(Response::new(pb::ListChangesResponse {
            changes,
            next_cursor,
        }))
    }

    async fn get_change_cursor(
        &self,
        req: Request<pb::GetChangeCursorRequest>,
    ) -> Reply<pb::GetChangeCursorResponse> {
        let tenant = Tenant::of(&req)?;
        Ok(Response::new(pb::GetChangeCursorResponse {
            cursor: feed::head_cursor(&self.shared, tenant.id())?,
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn get_sync_status(
        &self,
        req: Request<pb::GetSyncStatusRequest>,
    ) -> Reply<pb::GetSyncStatusResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(pb::GetSyncStatusResponse {
            calendars: calendars::sync_status(
                &self.shared,
                tenant.id(),
                &AccountId::from(r.account_id.as_str()),
            )?,
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn sync_now(&self, req: Request<pb::SyncNowRequest>) -> Reply<pb::SyncNowResponse> {
        let tenant = Tenant::of(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        if !r.calendar_id.is_empty() {
            calendar_id_field(&mut inv, &r.calendar_id);
        }
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(pb::SyncNowResponse {
            calendar_ids: calendars::sync_now(
                &self.shared,
                tenant.id(),
                &AccountId::from(&r.account_id),
                &CalendarId::from(&r.calendar_id),
            )
            .await?
            .into_iter()
            .map(CalendarId::into_string)
            .collect(),
        }))
    }
}
