//! The cases: each a function generic over [`Fixture`], instantiated for
//! every adapter by `main.rs`. Most speak the adapter contract
//! (`proto/calbridge/v1/adapter.proto`) straight to the adapter process;
//! `feed` goes through a real scheduler, because what it checks is the
//! scheduler's behaviour with that adapter.

mod capabilities;
mod edits;
mod feed;
mod series;
mod sync;
mod writes;

pub(crate) use capabilities::{
    describe_matches_what_the_adapter_answers, series_writes_follow_the_recurrence_capability,
};
pub(crate) use edits::an_outside_event_is_edited_by_its_provider_id_never_duplicated;
pub(crate) use feed::outside_changes_reach_the_feed_and_own_writes_do_not_echo;
pub(crate) use series::a_series_and_its_instances_written_through_the_scheduler_never_echo;
pub(crate) use sync::{
    an_expired_or_invalid_cursor_is_out_of_range, every_page_cursor_resumes_on_its_own,
    free_busy_pages_carry_no_event_content, outside_changes_show_up_in_the_next_sync,
};
pub(crate) use writes::{
    a_stale_version_is_aborted_carrying_the_current_one,
    creating_twice_with_one_key_reports_the_existing_event,
    deleting_goes_by_provider_id_and_a_missing_event_is_not_found,
};

use anyhow::{anyhow, Context, Result};
use calbridge::pb;
use calbridge::time::to_timestamp;
use calbridge_e2e::conformance::{idempotency_key, sync_to_end, AdapterClient};
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::fixtures::Fixture;

/// A started fixture, a client of its adapter and read-write credentials.
pub(crate) struct Case<F: Fixture> {
    /// The fixture.
    pub(crate) f: F,
    /// A client of the adapter.
    pub(crate) adapter: AdapterClient,
    /// READ_WRITE credentials of the test user.
    pub(crate) creds: pb::ProviderCredentials,
    /// The calendar the case uses.
    pub(crate) calendar: String,
}

impl<F: Fixture> Case<F> {
    /// Starts the fixture and signs the test user in for READ_WRITE.
    pub(crate) async fn start() -> Result<Case<F>> {
        let f = F::start().await?;
        let adapter = f.adapter().await?;
        let creds = f.credentials(pb::AccessLevel::ReadWrite).await?;
        let calendar = f.calendar();
        Ok(Case {
            f,
            adapter,
            creds,
            calendar,
        })
    }

    /// A SyncEvents request over [`window`] with the case's credentials.
    pub(crate) fn sync_request(&self, cursor: &str, page_size: u32) -> pb::SyncEventsRequest {
        pb::SyncEventsRequest {
            credentials: Some(self.creds.clone()),
            calendar_id: self.calendar.clone(),
            cursor: cursor.into(),
            window: Some(window()),
            page_size,
            busy_only: false,
        }
    }

    /// Every page of one sync from `cursor` in pages of `page_size`.
    pub(crate) async fn sync(
        &mut self,
        cursor: &str,
        page_size: u32,
    ) -> Result<Vec<pb::SyncEventsResponse>> {
        let request = self.sync_request(cursor, page_size);
        sync_to_end(&mut self.adapter, request)
            .await
            .with_context(|| format!("syncing from {cursor:?}"))
    }

    /// A listing from scratch, then one more sync from its last cursor
    /// (which settles the cursor, see the CalDAV adapter's pending
    /// tokens); returns the listing and the settled cursor.
    pub(crate) async fn listing_and_settled_cursor(
        &mut self,
    ) -> Result<(Vec<pb::SyncEventsResponse>, String)> {
        let listing = self.sync("", 0).await?;
        let settled = self.sync(&last_cursor(&listing)?, 0).await?;
        Ok((listing, last_cursor(&settled)?))
    }

    /// Creates `event` with the idempotency key of `client_event_id`;
    /// returns the event as the provider stored it.
    pub(crate) async fn create(
        &mut self,
        client_event_id: &str,
        event: pb::Event,
    ) -> Result<pb::Event> {
        let request = self.create_request(client_event_id, event);
        self.adapter
            .create_event(request)
            .await
            .with_context(|| format!("creating {client_event_id}"))?
            .into_inner()
            .event
            .ok_or_else(|| anyhow!("CreateEvent answered no event"))
    }

    /// The CreateEvent request for `event` keyed by `client_event_id`.
    pub(crate) fn create_request(
        &self,
        client_event_id: &str,
        mut event: pb::Event,
    ) -> pb::ProviderCreateEventRequest {
        event.client_event_id = client_event_id.into();
        pb::ProviderCreateEventRequest {
            credentials: Some(self.creds.clone()),
            calendar_id: self.calendar.clone(),
            event: Some(event),
            idempotency_key: idempotency_key(client_event_id),
        }
    }

    /// A DeleteEvent request for `id`.
    pub(crate) fn delete_request(
        &self,
        id: &str,
        expected_version: &str,
    ) -> pb::ProviderDeleteEventRequest {
        pb::ProviderDeleteEventRequest {
            credentials: Some(self.creds.clone()),
            calendar_id: self.calendar.clone(),
            provider_event_id: id.into(),
            expected_version: expected_version.into(),
        }
    }

    /// The fixture's checks of the provider's records, at the end of a case.
    pub(crate) async fn finish(self) -> Result<()> {
        self.f.verify().await
    }
}

/// The sync window of every case: from a day ago to 60 days ahead.
pub(crate) fn window() -> pb::TimeWindow {
    let today = today();
    pb::TimeWindow {
        start: Some(to_timestamp(today - Duration::days(1))),
        end: Some(to_timestamp(today + Duration::days(60))),
    }
}

/// Midnight UTC today.
fn today() -> DateTime<Utc> {
    Utc.from_utc_datetime(
        &Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight"),
    )
}

/// `hour` o'clock UTC, `days` days from today (inside [`window`]).
pub(crate) fn at(days: i64, hour: i64) -> DateTime<Utc> {
    today() + Duration::days(days) + Duration::hours(hour)
}

/// The `next_cursor` of the last page.
pub(crate) fn last_cursor(pages: &[pb::SyncEventsResponse]) -> Result<String> {
    pages
        .last()
        .map(|p| p.next_cursor.clone())
        .ok_or_else(|| anyhow!("a sync answered no page"))
}

/// The event with provider id `id` among the upserted events of `pages`
/// (the last one when it comes more than once).
pub(crate) fn find<'a>(pages: &'a [pb::SyncEventsResponse], id: &str) -> Option<&'a pb::Event> {
    pages
        .iter()
        .flat_map(|p| &p.upserted)
        .rfind(|e| e.provider_event_id == id)
}

/// True when `pages` say that `id` was deleted: named in `deleted`, or
/// left out of a listing from scratch (where the scheduler diffs against
/// its mirror).
pub(crate) fn says_deleted(pages: &[pb::SyncEventsResponse], id: &str) -> bool {
    let named = pages.iter().any(|p| p.deleted.iter().any(|d| d == id));
    let relisted_without = pages.iter().any(|p| p.full_listing) && find(pages, id).is_none();
    named || relisted_without
}

/// The gRPC code of a call's result, `Ok` for success.
pub(crate) fn code<T>(result: &Result<T, tonic::Status>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// The current-version trailer of an ABORTED status, if any.
pub(crate) fn current_version(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(calbridge::metadata::CURRENT_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
