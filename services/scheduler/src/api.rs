//! The gRPC services the scheduler serves: the public `Scheduler` API
//! (tenant-authenticated), the operator `Admin` API (admin-token
//! authenticated) and the `AdapterCallback` that adapters notify. Handlers
//! authenticate, validate (naming fields), call the domain modules and map
//! records to messages; errors become statuses in one place
//! (`calbridge::ErrorKind` → `tonic::Status`).

use std::sync::Arc;

use base64::Engine;
use calbridge::limits;
use calbridge::pb::{self, AccessLevel, AccountStatus, Provider, SyncState};
use calbridge::validate::{check_event, check_id, check_window};
use calbridge::{ErrorKind, Invalid};
use tonic::{Request, Response, Status};

use crate::quota::RequestQuota;
use crate::clock::{now_ms, ts_ms as ts};
use crate::crypto::{hash_hex, random_hex};
use crate::sealing::{event_aad, open_event};
use crate::state::Shared;
use crate::store::{ApiKeyRecord, TenantRecord};
use crate::{accounts, feed, meetings, writes};

type Reply<T> = Result<Response<T>, Status>;

fn bearer<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(calbridge::metadata::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|s| s.trim().to_string())
}

/// The public Scheduler service.
pub struct SchedulerApi {
    shared: Arc<Shared>,
    quota: RequestQuota,
}

impl SchedulerApi {
    /// A service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        let q = &shared.config.quotas;
        let quota = RequestQuota::new(q.requests_per_second, q.request_burst);
        SchedulerApi { shared, quota }
    }

    /// The tenant a request's API key authenticates, once the request fits
    /// the tenant's request rate quota (RESOURCE_EXHAUSTED with the delay
    /// to wait otherwise).
    fn tenant<T>(&self, req: &Request<T>) -> Result<String, ErrorKind> {
        let tenant = self.authenticate(req)?;
        if let Err(wait) = self.quota.check(&tenant) {
            return Err(ErrorKind::RateLimited {
                message: "the tenant's request rate quota (quotas.requests_per_second) is used up: retry after the delay given".into(),
                retry_after: Some(wait),
            });
        }
        Ok(tenant)
    }

    /// The tenant a request's API key authenticates.
    fn authenticate<T>(&self, req: &Request<T>) -> Result<String, ErrorKind> {
        let key = bearer(req).ok_or_else(|| {
            ErrorKind::Unauthenticated("missing API key: send `authorization: Bearer <key>`".into())
        })?;
        match self
            .shared
            .store
            .api_key(&hash_hex(&[&key]))?
        {
            Some(k) => Ok(k.tenant_id),
            None => Err(ErrorKind::Unauthenticated(
                "unknown or revoked API key".into(),
            )),
        }
    }
}

/// Checks a request's one id field.
fn require_id(field: &str, value: &str) -> Result<(), ErrorKind> {
    let mut inv = Invalid::default();
    check_id(&mut inv, field, value, limits::MAX_ID_BYTES);
    inv.into_result().map_err(ErrorKind::from)
}

fn account_id_field(inv: &mut Invalid, id: &str) {
    check_id(inv, "account_id", id, limits::MAX_ID_BYTES);
}

fn calendar_id_field(inv: &mut Invalid, id: &str) {
    check_id(inv, "calendar_id", id, limits::MAX_CALENDAR_ID_BYTES);
}

fn page_size(inv: &mut Invalid, n: u32, default: u32) -> usize {
    match n {
        0 => default as usize,
        1..=1000 => n as usize,
        _ => {
            inv.push("page_size", "must be at most 1000");
            default as usize
        }
    }
}

fn event_page_token(start_ms: i64, pid: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{start_ms}:{pid}"))
}

fn parse_event_page_token(t: &str) -> Option<(i64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.to_string()))
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    #[tracing::instrument(skip_all, fields(provider = req.get_ref().provider))]
    async fn connect_password_account(
        &self,
        req: Request<pb::ConnectPasswordAccountRequest>,
    ) -> Reply<pb::Account> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        match Provider::try_from(r.provider) {
            Ok(Provider::Icloud | Provider::Sandbox) => {}
            Ok(Provider::Caldav) => {
                if !(r.server_url.starts_with("https://") || r.server_url.starts_with("http://")) {
                    inv.push(
                        "server_url",
                        "is required for CalDAV: the server's http:// or https:// URL",
                    );
                }
            }
            Ok(Provider::Google | Provider::Microsoft) => inv.push(
                "provider",
                "connects through OAuth: call BeginAuthorization instead",
            ),
            _ => inv.push(
                "provider",
                "must be PROVIDER_ICLOUD, PROVIDER_CALDAV or PROVIDER_SANDBOX",
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
            crate::connections::connect_password(&self.shared, &tenant, r).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(provider = req.get_ref().provider))]
    async fn begin_authorization(
        &self,
        req: Request<pb::BeginAuthorizationRequest>,
    ) -> Reply<pb::BeginAuthorizationResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        if !r.account_id.is_empty() {
            require_id("account_id", &r.account_id)?;
        }
        Ok(Response::new(
            crate::connections::oauth::begin(&self.shared, &tenant, r).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn complete_authorization(
        &self,
        req: Request<pb::CompleteAuthorizationRequest>,
    ) -> Reply<pb::Account> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        Ok(Response::new(
            crate::connections::oauth::complete(
                &self.shared,
                Some(&tenant),
                &r.state,
                &r.code,
                &r.redirect_uri,
            )
            .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn get_account(&self, req: Request<pb::GetAccountRequest>) -> Reply<pb::Account> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        Ok(Response::new(accounts::account_pb(&self.shared, &a)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        req: Request<pb::ListAccountsRequest>,
    ) -> Reply<pb::ListAccountsResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        let n = page_size(&mut inv, r.page_size, 100);
        if r.page_token.len() > limits::MAX_ID_BYTES {
            inv.push("page_token", "is not a token returned by ListAccounts");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let list = self
            .shared
            .store
            .tenant_accounts(&tenant, after, n + 1)?;
        let more = list.len() > n;
        let accounts: Vec<pb::Account> = list
            .iter()
            .take(n)
            .map(|a| accounts::account_pb(&self.shared, a))
            .collect();
        let next = if more {
            accounts
                .last()
                .map(|a| a.account_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAccountsResponse {
            accounts,
            next_page_token: next,
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn revoke_account(&self, req: Request<pb::RevokeAccountRequest>) -> Reply<pb::Account> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            crate::connections::revoke(&self.shared, &tenant, &r.account_id).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn list_calendars(
        &self,
        req: Request<pb::ListCalendarsRequest>,
    ) -> Reply<pb::ListCalendarsResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        let key = self.shared.data_key(&a)?;
        let mut calendars: Vec<pb::Calendar> = self
            .shared
            .store
            .calendars(&a.account_id)?
            .iter()
            .map(|c| accounts::calendar_pb(key.as_ref(), &a.account_id, c))
            .collect();
        calendars.sort_by_key(|c| !c.primary);
        Ok(Response::new(pb::ListCalendarsResponse { calendars }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn set_calendar_sync(
        &self,
        req: Request<pb::SetCalendarSyncRequest>,
    ) -> Reply<pb::Calendar> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        let mut c = self
            .shared
            .store
            .calendar(&a.account_id, &r.calendar_id)?
            .ok_or_else(|| {
                ErrorKind::NotFound(format!("calendar {:?} not found", r.calendar_id))
            })?;
        if c.synced != r.synced {
            c.synced = r.synced;
            self.shared
                .store
                .put_calendar(&a.account_id, &c)?;
            let mut st = self
                .shared
                .store
                .sync_state(&a.account_id, &c.calendar_id)?
                .unwrap_or_default();
            st.disabled = !r.synced;
            st.next_due_ms = now_ms();
            if !r.synced {
                crate::watches::stop_watches(&self.shared, &a, Some(&c.calendar_id)).await;
                self.shared
                    .store
                    .clear_calendar_mirror(&a.account_id, &c.calendar_id)?;
                self.shared.mirror_changed(&a.account_id, &c.calendar_id);
                st.cursor.clear();
                st.last_success_ms = None;
            }
            self.shared
                .store
                .put_sync_state(&a.account_id, &c.calendar_id, &st)?;
            self.shared.store.flush().await?;
            if r.synced {
                crate::watches::start_watches(&self.shared, &a).await;
                self.shared.sync_soon(&a.account_id, &c.calendar_id);
            }
        }
        let key = self.shared.data_key(&a)?;
        Ok(Response::new(accounts::calendar_pb(
            key.as_ref(),
            &a.account_id,
            &c,
        )))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let tenant = self.tenant(&req)?;
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
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        self.shared
            .store
            .calendar(&a.account_id, &r.calendar_id)?
            .ok_or_else(|| {
                ErrorKind::NotFound(format!("calendar {:?} not found", r.calendar_id))
            })?;
        let key = self.shared.live_key(&a)?;
        let rows = self
            .shared
            .store
            .events_overlapping(
                &a.account_id,
                &r.calendar_id,
                start.timestamp_millis(),
                end.timestamp_millis(),
                after.as_ref().map(|(s, p)| (*s, p.as_str())),
                n + 1,
            )?;
        let more = rows.len() > n;
        let mut events = Vec::new();
        let mut last = None;
        for (s, pid, _) in rows.into_iter().take(n) {
            if let Some(rec) = self
                .shared
                .store
                .event(&a.account_id, &r.calendar_id, &pid)?
            {
                events.push(open_event(
                    &key,
                    &event_aad(&a.account_id, &r.calendar_id, &pid),
                    &rec.sealed,
                )?);
            }
            last = Some((s, pid));
        }
        let as_of = self
            .shared
            .store
            .sync_state(&a.account_id, &r.calendar_id)?
            .and_then(|s| s.last_success_ms)
            .and_then(ts);
        Ok(Response::new(pb::ListEventsResponse {
            events,
            next_page_token: match (more, last) {
                (true, Some((s, p))) => event_page_token(s, &p),
                _ => String::new(),
            },
            as_of,
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn get_event(&self, req: Request<pb::GetEventRequest>) -> Reply<pb::Event> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        one_id(&mut inv, &r.client_event_id, &r.provider_event_id);
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        let key = self.shared.live_key(&a)?;
        let pid = if r.client_event_id.is_empty() {
            Some(r.provider_event_id.clone())
        } else {
            self.shared
                .store
                .provider_id_for_client(&a.account_id, &r.calendar_id, &r.client_event_id)?
        };
        let not_found = || ErrorKind::NotFound("event not found in the mirror".into());
        let pid = pid.ok_or_else(not_found)?;
        let rec = self
            .shared
            .store
            .event(&a.account_id, &r.calendar_id, &pid)?
            .ok_or_else(not_found)?;
        Ok(Response::new(open_event(
            &key,
            &event_aad(&a.account_id, &r.calendar_id, &pid),
            &rec.sealed,
        )?))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn upsert_event(
        &self,
        req: Request<pb::UpsertEventRequest>,
    ) -> Reply<pb::UpsertEventResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        check_id(
            &mut inv,
            "client_event_id",
            &r.client_event_id,
            limits::MAX_ID_BYTES,
        );
        match &r.event {
            None => inv.push("event", "must be set"),
            Some(e) => check_event(&mut inv, "event", e),
        }
        check_version(&mut inv, &r.expected_version);
        if r.hold_id.len() > limits::MAX_ID_BYTES {
            inv.push("hold_id", "must be at most 256 bytes");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        let hold_id = r.hold_id.clone();
        if !hold_id.is_empty() {
            meetings::live_hold(&self.shared, &tenant, "hold_id", &hold_id)?;
        }
        let written = writes::upsert(&self.shared, &tenant, r).await?;
        if !hold_id.is_empty() {
            meetings::release_hold(&self.shared, &tenant, &hold_id).await?;
        }
        Ok(Response::new(written))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id, calendar_id = %calbridge::redact::id(&req.get_ref().calendar_id)))]
    async fn delete_event(
        &self,
        req: Request<pb::DeleteEventRequest>,
    ) -> Reply<pb::DeleteEventResult> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        calendar_id_field(&mut inv, &r.calendar_id);
        one_id(&mut inv, &r.client_event_id, &r.provider_event_id);
        check_version(&mut inv, &r.expected_version);
        inv.into_result().map_err(ErrorKind::from)?;
        Ok(Response::new(
            writes::delete(&self.shared, &tenant, r).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(accounts = req.get_ref().account_ids.len()))]
    async fn query_free_busy(
        &self,
        req: Request<pb::QueryFreeBusyRequest>,
    ) -> Reply<pb::QueryFreeBusyResponse> {
        let tenant = self.tenant(&req)?;
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
        let mut out = Vec::with_capacity(r.account_ids.len());
        for (i, id) in r.account_ids.iter().enumerate() {
            let a = accounts::tenant_account(&self.shared, &tenant, id)?;
            accounts::check_not_revoked(&a, &format!("account_ids[{i}]"))?;
            out.push(crate::freebusy::account_busy(
                &self.shared,
                &a,
                start.timestamp_millis(),
                end.timestamp_millis(),
            )?);
        }
        Ok(Response::new(pb::QueryFreeBusyResponse { accounts: out }))
    }

    #[tracing::instrument(skip_all, fields(groups = req.get_ref().groups.len()))]
    async fn query_availability(
        &self,
        req: Request<pb::QueryAvailabilityRequest>,
    ) -> Reply<pb::QueryAvailabilityResponse> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(meetings::query(
            &self.shared,
            &tenant,
            req.get_ref(),
        )?))
    }

    #[tracing::instrument(skip_all, fields(steps = req.get_ref().steps.len()))]
    async fn query_sequenced_availability(
        &self,
        req: Request<pb::QuerySequencedAvailabilityRequest>,
    ) -> Reply<pb::QuerySequencedAvailabilityResponse> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(meetings::sequences(
            &self.shared,
            &tenant,
            req.get_ref(),
        )?))
    }

    #[tracing::instrument(skip_all)]
    async fn explain_availability(
        &self,
        req: Request<pb::ExplainAvailabilityRequest>,
    ) -> Reply<pb::ExplainAvailabilityResponse> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(meetings::explain(
            &self.shared,
            &tenant,
            req.get_ref(),
        )?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_hold(&self, req: Request<pb::CreateHoldRequest>) -> Reply<pb::Hold> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            meetings::create_hold(&self.shared, &tenant, req.get_ref()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn release_hold(
        &self,
        req: Request<pb::ReleaseHoldRequest>,
    ) -> Reply<pb::ReleaseHoldResponse> {
        let tenant = self.tenant(&req)?;
        require_id("hold_id", &req.get_ref().hold_id)?;
        meetings::release_hold(&self.shared, &tenant, &req.get_ref().hold_id).await?;
        Ok(Response::new(pb::ReleaseHoldResponse {}))
    }

    async fn list_holds(&self, req: Request<pb::ListHoldsRequest>) -> Reply<pb::ListHoldsResponse> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: meetings::list_holds(&self.shared, &tenant)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn put_working_hours(
        &self,
        req: Request<pb::PutWorkingHoursRequest>,
    ) -> Reply<pb::StoredWorkingHours> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(
            meetings::put_working_hours(&self.shared, &tenant, req.get_ref()).await?,
        ))
    }

    async fn get_working_hours(
        &self,
        req: Request<pb::GetWorkingHoursRequest>,
    ) -> Reply<pb::StoredWorkingHours> {
        let tenant = self.tenant(&req)?;
        require_id("working_hours_id", &req.get_ref().working_hours_id)?;
        Ok(Response::new(meetings::get_working_hours(
            &self.shared,
            &tenant,
            &req.get_ref().working_hours_id,
        )?))
    }

    async fn list_working_hours(
        &self,
        req: Request<pb::ListWorkingHoursRequest>,
    ) -> Reply<pb::ListWorkingHoursResponse> {
        let tenant = self.tenant(&req)?;
        Ok(Response::new(pb::ListWorkingHoursResponse {
            working_hours: meetings::list_working_hours(&self.shared, &tenant)?,
        }))
    }

    async fn delete_working_hours(
        &self,
        req: Request<pb::DeleteWorkingHoursRequest>,
    ) -> Reply<pb::DeleteWorkingHoursResponse> {
        let tenant = self.tenant(&req)?;
        require_id("working_hours_id", &req.get_ref().working_hours_id)?;
        meetings::delete_working_hours(&self.shared, &tenant, &req.get_ref().working_hours_id)
            .await?;
        Ok(Response::new(pb::DeleteWorkingHoursResponse {}))
    }

    type WatchChangesStream = feed::ChangeStream;

    #[tracing::instrument(skip_all)]
    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Reply<Self::WatchChangesStream> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        check_cursor_len(&r.cursor)?;
        let after = feed::check_cursor(&self.shared, &tenant, "cursor", &r.cursor)?;
        Ok(Response::new(feed::watch(
            self.shared.clone(),
            tenant,
            after,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_changes(
        &self,
        req: Request<pb::ListChangesRequest>,
    ) -> Reply<pb::ListChangesResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        let n = page_size(&mut inv, r.page_size, 100);
        inv.into_result().map_err(ErrorKind::from)?;
        check_cursor_len(&r.cursor)?;
        let after = feed::check_cursor(&self.shared, &tenant, "cursor", &r.cursor)?;
        let changes = feed::page(&self.shared, &tenant, after, n)?;
        let next_cursor = changes
            .last()
            .map(|c| c.cursor.clone())
            .unwrap_or_else(|| feed::cursor_of(after));
        Ok(Response::new(pb::ListChangesResponse {
            changes,
            next_cursor,
        }))
    }

    async fn get_change_cursor(
        &self,
        req: Request<pb::GetChangeCursorRequest>,
    ) -> Reply<pb::GetChangeCursorResponse> {
        let tenant = self.tenant(&req)?;
        let head = self
            .shared
            .store
            .log_bounds(&tenant)?
            .head;
        Ok(Response::new(pb::GetChangeCursorResponse {
            cursor: feed::cursor_of(head),
        }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn get_sync_status(
        &self,
        req: Request<pb::GetSyncStatusRequest>,
    ) -> Reply<pb::GetSyncStatusResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        let mut out = Vec::new();
        for c in self
            .shared
            .store
            .calendars(&a.account_id)?
        {
            let st = self
                .shared
                .store
                .sync_state(&a.account_id, &c.calendar_id)?
                .unwrap_or_default();
            let state = if !c.synced || st.disabled {
                SyncState::Disabled
            } else if st.paused || a.status != AccountStatus::Active as i32 {
                SyncState::Paused
            } else if st.failures > 0 {
                SyncState::Backoff
            } else if st.last_success_ms.is_none() {
                SyncState::Initial
            } else {
                SyncState::Idle
            };
            out.push(pb::CalendarSyncStatus {
                calendar_id: c.calendar_id.clone(),
                state: state as i32,
                last_success: st.last_success_ms.and_then(ts),
                next_due: ts(st.next_due_ms),
                last_error: st.last_error.clone(),
                failures: st.failures,
                events: self.shared.store.event_count(&a.account_id, &c.calendar_id),
                skipped_items: st
                    .skipped
                    .iter()
                    .map(|(id, reason)| pb::SkippedItem {
                        item_id: id.clone(),
                        reason: reason.clone(),
                    })
                    .collect(),
            });
        }
        Ok(Response::new(pb::GetSyncStatusResponse { calendars: out }))
    }

    #[tracing::instrument(skip_all, fields(account_id = %req.get_ref().account_id))]
    async fn sync_now(&self, req: Request<pb::SyncNowRequest>) -> Reply<pb::SyncNowResponse> {
        let tenant = self.tenant(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        account_id_field(&mut inv, &r.account_id);
        if !r.calendar_id.is_empty() {
            calendar_id_field(&mut inv, &r.calendar_id);
        }
        inv.into_result().map_err(ErrorKind::from)?;
        let a = accounts::tenant_account(&self.shared, &tenant, &r.account_id)?;
        if a.status != AccountStatus::Active as i32 {
            return Err(ErrorKind::FailedPrecondition(
                "the account is not active: it needs re-authorisation or was revoked".into(),
            )
            .into());
        }
        if r.calendar_id.is_empty() {
            if let Err(e) = crate::connections::refresh_calendars(&self.shared, &a).await {
                tracing::warn!(error = %e, "calendar list not refreshed");
            }
        }
        let mut ids = Vec::new();
        for c in self
            .shared
            .store
            .calendars(&a.account_id)?
        {
            if c.synced && (r.calendar_id.is_empty() || r.calendar_id == c.calendar_id) {
                self.shared.sync_soon(&a.account_id, &c.calendar_id);
                ids.push(c.calendar_id);
            }
        }
        if ids.is_empty() && !r.calendar_id.is_empty() {
            return Err(ErrorKind::NotFound(format!(
                "synced calendar {:?} not found",
                r.calendar_id
            ))
            .into());
        }
        Ok(Response::new(pb::SyncNowResponse { calendar_ids: ids }))
    }
}

/// An optional `expected_version`: at most a version's length.
fn check_version(inv: &mut Invalid, version: &str) {
    if version.len() > limits::MAX_VERSION_BYTES {
        inv.push(
            "expected_version",
            format!("must be at most {} bytes", limits::MAX_VERSION_BYTES),
        );
    }
}

/// A change-feed cursor's length (its form is checked by the feed).
fn check_cursor_len(cursor: &str) -> Result<(), ErrorKind> {
    if cursor.len() > limits::MAX_TOKEN_BYTES {
        return Err(Invalid::field("cursor", "is not a cursor returned by calbridge").into());
    }
    Ok(())
}

fn one_id(inv: &mut Invalid, client: &str, provider: &str) {
    match (client.is_empty(), provider.is_empty()) {
        (true, true) => inv.push(
            "client_event_id",
            "set client_event_id or provider_event_id",
        ),
        (false, false) => inv.push(
            "provider_event_id",
            "set only one of client_event_id and provider_event_id",
        ),
        (false, true) => check_id(inv, "client_event_id", client, limits::MAX_ID_BYTES),
        (true, false) => check_id(
            inv,
            "provider_event_id",
            provider,
            limits::MAX_CALENDAR_ID_BYTES,
        ),
    }
}

/// The operator API.
pub struct AdminApi {
    shared: Arc<Shared>,
    admin_token_hash: String,
}

impl AdminApi {
    /// A service accepting the admin token whose hash is given.
    pub fn new(shared: Arc<Shared>, admin_token_hash: String) -> Self {
        AdminApi {
            shared,
            admin_token_hash,
        }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), ErrorKind> {
        match bearer(req) {
            Some(t)
                if constant_time_eq(
                    hash_hex(&[&t]).as_bytes(),
                    self.admin_token_hash.as_bytes(),
                ) =>
            {
                Ok(())
            }
            Some(_) => Err(ErrorKind::Unauthenticated("wrong admin token".into())),
            None => Err(ErrorKind::Unauthenticated(
                "missing admin token: send `authorization: Bearer <admin token>`".into(),
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    #[tracing::instrument(skip_all)]
    async fn create_tenant(&self, req: Request<pb::CreateTenantRequest>) -> Reply<pb::Tenant> {
        self.check(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        check_id(&mut inv, "name", &r.name, 128);
        inv.into_result().map_err(ErrorKind::from)?;
        let t = TenantRecord {
            tenant_id: format!("ten_{}", random_hex(8)),
            name: r.name,
            created_ms: now_ms(),
        };
        self.shared.store.put_tenant(&t)?;
        self.shared.store.flush().await?;
        Ok(Response::new(pb::Tenant {
            tenant_id: t.tenant_id,
            name: t.name,
            created_at: ts(t.created_ms),
        }))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Reply<pb::ListTenantsResponse> {
        self.check(&req)?;
        let tenants = self
            .shared
            .store
            .tenants()?
            .into_iter()
            .map(|t| pb::Tenant {
                tenant_id: t.tenant_id,
                name: t.name,
                created_at: ts(t.created_ms),
            })
            .collect();
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreateApiKeyResponse> {
        self.check(&req)?;
        let r = req.into_inner();
        let mut inv = Invalid::default();
        check_id(&mut inv, "tenant_id", &r.tenant_id, limits::MAX_ID_BYTES);
        if r.label.len() > 128 {
            inv.push("label", "must be at most 128 bytes");
        }
        inv.into_result().map_err(ErrorKind::from)?;
        if self
            .shared
            .store
            .tenant(&r.tenant_id)?
            .is_none()
        {
            return Err(ErrorKind::NotFound(format!("tenant {:?} not found", r.tenant_id)).into());
        }
        let key_id = format!("key_{}", random_hex(8));
        let api_key = format!("cbk_{}", random_hex(24));
        self.shared
            .store
            .put_api_key(
                &hash_hex(&[&api_key]),
                &ApiKeyRecord {
                    key_id: key_id.clone(),
                    tenant_id: r.tenant_id,
                    label: r.label,
                    created_ms: now_ms(),
                },
            )?;
        self.shared.store.flush().await?;
        Ok(Response::new(pb::CreateApiKeyResponse { key_id, api_key }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Reply<pb::RevokeApiKeyResponse> {
        self.check(&req)?;
        let r = req.into_inner();
        require_id("key_id", &r.key_id)?;
        if !self
            .shared
            .store
            .revoke_api_key(&r.key_id)?
        {
            return Err(ErrorKind::NotFound(format!("API key {:?} not found", r.key_id)).into());
        }
        self.shared.store.flush().await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_master_key(
        &self,
        req: Request<pb::RotateMasterKeyRequest>,
    ) -> Reply<pb::RotateMasterKeyResponse> {
        self.check(&req)?;
        let r = crate::secrets::rotate_master_key(&self.shared.config, &self.shared.vault).await?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            account_keys: u32::try_from(r.account_keys).unwrap_or(u32::MAX),
            rotated: r.rotated,
        }))
    }
}

/// Receives adapters' provider notifications.
pub struct CallbackApi {
    shared: Arc<Shared>,
}

impl CallbackApi {
    /// A service over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        CallbackApi { shared }
    }
}

#[tonic::async_trait]
impl pb::adapter_callback_server::AdapterCallback for CallbackApi {
    #[tracing::instrument(skip_all, fields(channel_id = %req.get_ref().channel_id))]
    async fn notify_provider_change(
        &self,
        req: Request<pb::ProviderNotification>,
    ) -> Reply<pb::ProviderNotificationAck> {
        let n = req.into_inner();
        let unknown = || ErrorKind::NotFound("unknown push channel".into());
        let ch = self
            .shared
            .store
            .channel(&n.channel_id)?
            .ok_or_else(unknown)?;
        if !constant_time_eq(
            hash_hex(&[&n.channel_token]).as_bytes(),
            ch.token_hash.as_bytes(),
        ) {
            tracing::warn!("push notification with a wrong channel token ignored");
            return Err(unknown().into());
        }
        self.shared.sync_soon(&ch.account_id, &ch.calendar_id);
        Ok(Response::new(pb::ProviderNotificationAck {}))
    }
}
