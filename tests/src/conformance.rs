//! Adapter-agnostic pieces of the adapter conformance suite
//! (`tests/tests/conformance`): a gRPC client of any adapter process, a
//! scheduler process wired to whichever adapters a fixture brings, and the
//! contract's paging loop. Nothing here knows a provider; what differs per
//! provider lives in the suite's fixtures.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use calbridge::pb;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::{channel, Bearer, Proc, SchedulerClient};

/// A client of one adapter's `CalendarAdapter` service.
pub type AdapterClient = pb::calendar_adapter_client::CalendarAdapterClient<Channel>;

/// Connects a `CalendarAdapter` client to the adapter at `url`.
pub async fn adapter_client(url: &str) -> Result<AdapterClient> {
    Ok(AdapterClient::new(channel(url).await?))
}

/// The idempotency key the scheduler derives from a client event id: 40
/// lowercase hex digits (a valid Google event id and CalDAV resource name
/// alike). Derived here from `client_event_id` alone, which is enough for
/// tests that use one account and calendar.
pub fn idempotency_key(client_event_id: &str) -> String {
    let digest = Sha256::digest(client_event_id.as_bytes());
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..40]
        .to_string()
}

/// The most pages [`sync_to_end`] follows before it calls the paging
/// endless.
const MAX_PAGES: usize = 200;

/// Every page of one sync, the way the scheduler reads them: `request`,
/// then each page's `next_cursor` in a fresh SyncEvents call, until a page
/// with `more` false. Fails on the first error status (returned as is, so
/// a case can check its code) or when the pages never end.
pub async fn sync_to_end(
    client: &mut AdapterClient,
    mut request: pb::SyncEventsRequest,
) -> Result<Vec<pb::SyncEventsResponse>, tonic::Status> {
    let mut pages = Vec::new();
    loop {
        let page = client.sync_events(request.clone()).await?.into_inner();
        request.cursor = page.next_cursor.clone();
        let more = page.more;
        pages.push(page);
        if !more {
            return Ok(pages);
        }
        if pages.len() >= MAX_PAGES {
            return Err(tonic::Status::internal(format!(
                "the pages never end: {MAX_PAGES} pages with `more` set"
            )));
        }
    }
}

/// The provider event ids of every upserted event of `pages`, in order.
pub fn upserted_ids(pages: &[pb::SyncEventsResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.upserted.iter().map(|e| e.provider_event_id.clone()))
        .collect()
}

/// The instant a timed event time names (`None` for dates and unset times).
pub fn instant_of(t: Option<&pb::EventTime>) -> Option<DateTime<Utc>> {
    match t?.value.as_ref()? {
        pb::event_time::Value::Instant(ts) => calbridge::time::from_timestamp(ts),
        pb::event_time::Value::Date(_) => None,
    }
}

/// A scheduler process in local mode over a temporary data directory,
/// calling the adapters it was started with.
pub struct Scheduler {
    /// Data directory (store, dev master key, admin token).
    pub dir: tempfile::TempDir,
    /// The process.
    pub proc: Proc,
}

impl Scheduler {
    /// Starts the scheduler on `127.0.0.1:port` with `extra` flags (one
    /// `--adapter KEY=URL` per adapter, and anything a provider needs).
    pub async fn start(port: u16, extra: &[String]) -> Result<Scheduler> {
        let dir = tempfile::tempdir()?;
        let mut args = vec![
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--mode".into(),
            "local".into(),
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start("calbridge-scheduler", &args).await?;
        Ok(Scheduler { dir, proc })
    }

    /// A client of a new tenant named `name`, authenticated with its API key.
    pub async fn tenant_client(&self, name: &str) -> Result<SchedulerClient> {
        let token = admin_token(self.dir.path())?;
        let mut admin = pb::admin_client::AdminClient::with_interceptor(
            channel(&self.proc.url()).await?,
            Bearer(Some(token)),
        );
        let tenant = admin
            .create_tenant(pb::CreateTenantRequest { name: name.into() })
            .await?
            .into_inner();
        let key = admin
            .create_api_key(pb::CreateApiKeyRequest {
                tenant_id: tenant.tenant_id,
                label: "conformance".into(),
            })
            .await?
            .into_inner()
            .api_key;
        Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
            channel(&self.proc.url()).await?,
            Bearer(Some(key)),
        ))
    }
}

fn admin_token(dir: &Path) -> Result<String> {
    let path = dir.join("admin.token");
    Ok(std::fs::read_to_string(&path)
        .map_err(|e| anyhow!("reading {}: {e}", path.display()))?
        .trim()
        .to_string())
}

/// Waits until the scheduler knows the account's calendar `calendar_id`
/// and syncs it, then until its initial sync is done.
pub async fn wait_calendar_synced(
    client: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
) -> Result<()> {
    let calendars = client
        .list_calendars(pb::ListCalendarsRequest {
            account_id: account_id.to_string(),
        })
        .await?
        .into_inner()
        .calendars;
    match calendars.iter().find(|c| c.calendar_id == calendar_id) {
        Some(c) if c.synced => {}
        Some(_) => bail!("calendar {calendar_id} is not synced by default"),
        None => bail!("calendar {calendar_id} is not listed: {calendars:?}"),
    }
    crate::wait_initial_sync(
        client,
        account_id,
        Duration::from_secs(30),
        Duration::from_millis(20),
    )
    .await
}
