//! The gRPC face of the sandbox: `CalendarAdapter` (what the scheduler
//! calls) and `SandboxControl` (outside edits), both translating requests
//! into calls on the shared in-memory [`Provider`] and firing push
//! notifications after every change. The provider's mutex is never held
//! across an await.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;
use tonic::{Request, Response, Status};

use calbridge::adapter;
use calbridge::checks::required;
use calbridge::pb::calendar_adapter_server::CalendarAdapter;
use calbridge::pb::provider_credentials::Secret;
use calbridge::pb::sandbox_control_server::SandboxControl;
use calbridge::pb::{self, AccessLevel};
use calbridge::{ErrorKind, Invalid};

use crate::error::ProviderError;
use crate::provider::{Provider, SyncQuery, MAX_PAGE_SIZE};
use crate::push::Notifier;

/// State shared by both services.
#[derive(Clone)]
pub struct Shared {
    provider: Arc<Mutex<Provider>>,
    notifier: Notifier,
}

impl Shared {
    /// Shares `provider` between the services.
    pub fn new(provider: Arc<Mutex<Provider>>) -> Self {
        Shared {
            notifier: Notifier::new(provider.clone()),
            provider,
        }
    }

    /// An empty provider.
    pub fn empty() -> Self {
        Shared::new(Arc::new(Mutex::new(Provider::new())))
    }

    /// Push notifications to `https://` callback endpoints use `tls`.
    pub fn with_callback_tls(mut self, tls: Option<calbridge_runtime::tls::ClientTls>) -> Self {
        self.notifier = self.notifier.with_tls(tls);
        self
    }

    /// The provider, locked; a panic elsewhere does not poison it for good.
    fn lock(&self) -> MutexGuard<'_, Provider> {
        self.provider.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a change under the lock, then notifies the calendar's watchers.
    fn change<T>(
        &self,
        calendar_id: &str,
        f: impl FnOnce(&mut Provider) -> Result<T, ProviderError>,
    ) -> Result<T, Status> {
        let (out, due) = {
            let mut p = self.lock();
            let out = f(&mut p)?;
            (out, p.notifications(calendar_id, Utc::now()))
        };
        self.notifier.send(due);
        Ok(out)
    }
}

/// The user name and password of sandbox credentials.
fn password(c: Option<&pb::ProviderCredentials>) -> Result<(&str, &str), Status> {
    adapter::password_credentials(c)
        .map(|p| (p.username.as_str(), p.password.as_str()))
        .ok_or_else(|| {
            adapter::wrong_credentials("sandbox credentials must be a user name and password")
        })
}

fn uses_passwords(what: &str) -> Status {
    adapter::not_supported(
        what,
        "the sandbox provider uses user names and passwords (CheckPassword), not OAuth",
    )
}

/// The `CalendarAdapter` service of the sandbox provider.
#[derive(Clone)]
pub struct SandboxAdapter {
    shared: Shared,
    poll_interval_seconds: u32,
}

impl SandboxAdapter {
    /// The adapter over `shared`, suggesting `poll_interval_seconds`.
    pub fn new(shared: Shared, poll_interval_seconds: u32) -> Self {
        SandboxAdapter {
            shared,
            poll_interval_seconds,
        }
    }

    /// Authenticates the credentials and runs a read under the lock.
    fn read<T>(
        &self,
        credentials: Option<&pb::ProviderCredentials>,
        f: impl FnOnce(&Provider, &str) -> Result<T, ProviderError>,
    ) -> Result<T, Status> {
        let (username, pw) = password(credentials)?;
        let p = self.shared.lock();
        p.authenticate(username, pw)?;
        Ok(f(&p, username)?)
    }

    /// Authenticates the credentials and runs a change of `calendar_id`.
    fn write<T>(
        &self,
        credentials: Option<&pb::ProviderCredentials>,
        calendar_id: &str,
        f: impl FnOnce(&mut Provider, &str) -> Result<T, ProviderError>,
    ) -> Result<T, Status> {
        let (username, pw) = password(credentials)?;
        self.shared.change(calendar_id, |p| {
            p.authenticate(username, pw)?;
            f(p, username)
        })
    }
}

#[tonic::async_trait]
impl CalendarAdapter for SandboxAdapter {
    #[tracing::instrument(skip_all)]
    async fn describe(
        &self,
        _request: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::AdapterCapabilities>, Status> {
        Ok(Response::new(pb::AdapterCapabilities {
            provider: pb::Provider::Sandbox as i32,
            oauth: false,
            push: true,
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
        // The sandbox has no revocation endpoint: a no-op, as the contract asks.
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
        if r.access_level() == AccessLevel::Unspecified {
            return Err(ErrorKind::Invalid(Invalid::field("access_level", "must be set")).into());
        }
        self.shared
            .lock()
            .check_password(&r.username, &r.password)?;
        tracing::debug!("sandbox sign-in accepted");
        Ok(Response::new(pb::ProviderCredentials {
            provider_account_id: r.username.clone(),
            secret: Some(Secret::Password(pb::PasswordCredentials {
                server_url: "sandbox://".into(),
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
        let r = request.get_ref();
        let calendars = self.read(r.credentials.as_ref(), |p, user| p.calendars(user))?;
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
        let window = adapter::window("window", r.window.as_ref())?;
        let query = SyncQuery {
            cursor: &r.cursor,
            window,
            page_size: r.page_size,
            busy_only: r.busy_only,
        };
        let resp = self.read(r.credentials.as_ref(), |p, user| {
            p.sync(user, &r.calendar_id, &query)
        })?;
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
        let r = request.into_inner();
        let event = required("event", r.event.as_ref())?.clone();
        let now = Utc::now();
        let created = self.write(r.credentials.as_ref(), &r.calendar_id, |p, user| {
            p.create_event(user, &r.calendar_id, event, &r.idempotency_key, now)
        })?;
        tracing::debug!(
            provider_event_id = %calbridge::redact::id(&created.event.provider_event_id),
            already_existed = created.already_existed,
            "event created"
        );
        Ok(Response::new(pb::ProviderCreateEventResponse {
            event: Some(created.event),
            already_existed: created.already_existed,
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
        let r = request.into_inner();
        let event = required("event", r.event.as_ref())?.clone();
        let now = Utc::now();
        let updated = self.write(r.credentials.as_ref(), &r.calendar_id, |p, user| {
            p.update_event(
                user,
                &r.calendar_id,
                &r.provider_event_id,
                event,
                &r.expected_version,
                now,
            )
        })?;
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
        self.write(r.credentials.as_ref(), &r.calendar_id, |p, user| {
            p.delete_event(
                user,
                &r.calendar_id,
                &r.provider_event_id,
                &r.expected_version,
            )
        })?;
        Ok(Response::new(pb::ProviderDeleteEventResponse {}))
    }

    #[tracing::instrument(skip_all, fields(calendars = request.get_ref().calendar_ids.len()))]
    async fn query_free_busy(
        &self,
        request: Request<pb::ProviderFreeBusyRequest>,
    ) -> Result<Response<pb::ProviderFreeBusyResponse>, Status> {
        let r = request.get_ref();
        let window = adapter::window("window", r.window.as_ref())?;
        let busy = self.read(r.credentials.as_ref(), |p, user| {
            p.free_busy(user, &r.calendar_ids, window)
        })?;
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
        let r = request.get_ref();
        let (username, pw) = password(r.credentials.as_ref())?;
        let mut p = self.shared.lock();
        p.authenticate(username, pw)?;
        let channel = p.start_watch(username, r, Utc::now())?;
        Ok(Response::new(channel))
    }

    #[tracing::instrument(skip_all, fields(channel_id = %request.get_ref().channel_id))]
    async fn stop_watch(
        &self,
        request: Request<pb::StopWatchRequest>,
    ) -> Result<Response<pb::StopWatchResponse>, Status> {
        let r = request.get_ref();
        let (username, pw) = password(r.credentials.as_ref())?;
        let mut p = self.shared.lock();
        p.authenticate(username, pw)?;
        p.stop_watch(username, &r.channel_id);
        Ok(Response::new(pb::StopWatchResponse {}))
    }
}

/// The `SandboxControl` service: outside edits to the sandbox's calendars.
#[derive(Clone)]
pub struct SandboxControlService {
    shared: Shared,
}

impl SandboxControlService {
    /// The control service over `shared`.
    pub fn new(shared: Shared) -> Self {
        SandboxControlService { shared }
    }
}

/// The calendar a control request names (empty: the primary one).
fn control_calendar(username: &str, calendar_id: &str) -> String {
    if calendar_id.is_empty() {
        format!("{username}/primary")
    } else {
        calendar_id.to_string()
    }
}

#[tonic::async_trait]
impl SandboxControl for SandboxControlService {
    #[tracing::instrument(skip_all)]
    async fn create_user(
        &self,
        request: Request<pb::CreateSandboxUserRequest>,
    ) -> Result<Response<pb::SandboxUser>, Status> {
        let r = request.get_ref();
        let calendar_ids = self.shared.lock().create_user(&r.username, &r.password)?;
        Ok(Response::new(pb::SandboxUser {
            username: r.username.clone(),
            calendar_ids,
        }))
    }

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn list_provider_events(
        &self,
        request: Request<pb::ListSandboxEventsRequest>,
    ) -> Result<Response<pb::ListSandboxEventsResponse>, Status> {
        let r = request.get_ref();
        let events = self
            .shared
            .lock()
            .list_provider_events(&r.username, &r.calendar_id)?;
        Ok(Response::new(pb::ListSandboxEventsResponse { events }))
    }

    #[tracing::instrument(skip_all, fields(calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id)))]
    async fn put_event(
        &self,
        request: Request<pb::PutSandboxEventRequest>,
    ) -> Result<Response<pb::Event>, Status> {
        let r = request.into_inner();
        let event = required("event", r.event.as_ref())?.clone();
        let calendar_id = control_calendar(&r.username, &r.calendar_id);
        let now = Utc::now();
        let stored = self.shared.change(&calendar_id, |p| {
            p.put_event(&r.username, &calendar_id, event, now)
        })?;
        Ok(Response::new(stored))
    }

    #[tracing::instrument(skip_all, fields(
        calendar_id = %calbridge::redact::id(&request.get_ref().calendar_id),
        provider_event_id = %calbridge::redact::id(&request.get_ref().provider_event_id),
    ))]
    async fn remove_event(
        &self,
        request: Request<pb::RemoveSandboxEventRequest>,
    ) -> Result<Response<pb::RemoveSandboxEventResponse>, Status> {
        let r = request.get_ref();
        let calendar_id = control_calendar(&r.username, &r.calendar_id);
        self.shared.change(&calendar_id, |p| {
            p.remove_event(&r.username, &calendar_id, &r.provider_event_id)
        })?;
        Ok(Response::new(pb::RemoveSandboxEventResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_user_access(
        &self,
        request: Request<pb::RevokeUserAccessRequest>,
    ) -> Result<Response<pb::RevokeUserAccessResponse>, Status> {
        self.shared
            .lock()
            .revoke_user_access(&request.get_ref().username)?;
        Ok(Response::new(pb::RevokeUserAccessResponse {}))
    }
}
