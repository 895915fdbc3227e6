//! StreamSyncEvents for adapters: the pages of SyncEvents, computed one
//! after another on a task of their own and streamed to the caller.

use std::future::Future;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::pb;

/// The stream StreamSyncEvents answers with.
pub type PageStream = ReceiverStream<Result<pb::SyncEventsResponse, Status>>;

/// How many computed pages may wait for the caller: one, so the next page
/// is computed while the caller stores the last, and a slow caller holds
/// back the adapter rather than its memory.
const PAGES_AHEAD: usize = 1;

/// Streams the pages `page` computes: first for `request`'s cursor, then
/// for each page's `next_cursor`, until a page with `more` false, an error
/// (sent, then the stream ends) or the caller going away. The first page is
/// computed before answering, so a request SyncEvents would refuse (an
/// invalid field, wrong credentials) fails the call itself with the same
/// status. Later pages are computed on a spawned task inside the caller's
/// tracing span; state `page` shares between pages lives in what it
/// captures.
pub async fn stream_pages<F, Fut>(
    request: pb::SyncEventsRequest,
    mut page: F,
) -> Result<PageStream, Status>
where
    F: FnMut(pb::SyncEventsRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<pb::SyncEventsResponse, Status>> + Send,
{
    let first = page(request.clone()).await?;
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    let pages = async move {
        let mut request = request;
        let mut result = Ok(first);
        loop {
            let next = match &result {
                Ok(p) if p.more => Some(p.next_cursor.clone()),
                _ => None,
            };
            if tx.send(result).await.is_err() {
                return;
            }
            match next {
                Some(cursor) => request.cursor = cursor,
                None => return,
            }
            result = page(request.clone()).await;
        }
    };
    tokio::spawn(pages.instrument(tracing::Span::current()));
    Ok(ReceiverStream::new(rx))
}

/// StreamSyncEvents for an adapter whose pages need nothing from one
/// another: each page is the adapter's own SyncEvents answer.
pub async fn stream_sync_events<A>(
    adapter: &A,
    request: pb::SyncEventsRequest,
) -> Result<PageStream, Status>
where
    A: pb::calendar_adapter_server::CalendarAdapter + Clone,
{
    let adapter = adapter.clone();
    stream_pages(request, move |r| {
        let adapter = adapter.clone();
        async move {
            adapter
                .sync_events(tonic::Request::new(r))
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
}

/// Logs a sync page's counts at debug level (never its content).
pub fn log_page(resp: &pb::SyncEventsResponse) {
    tracing::debug!(
        upserted = resp.upserted.len(),
        deleted = resp.deleted.len(),
        skipped = resp.skipped.len(),
        more = resp.more,
        full_listing = resp.full_listing,
        "sync page"
    );
}

/// A sync page stops growing past about this many bytes of events, so it
/// stays well inside the default 4 MiB gRPC message limit however large
/// the events are.
pub const MAX_PAGE_BYTES: usize = 2 << 20;

/// Roughly how many bytes an event takes on the wire.
pub fn approx_size(e: &pb::Event) -> usize {
    128 + e.provider_event_id.len()
        + e.version.len()
        + e.ical_uid.len()
        + e.title.len()
        + e.description.len()
        + e.location.len()
        + e.attendees
            .iter()
            .map(|a| 16 + a.email.len() + a.display_name.len())
            .sum::<usize>()
        + e.recurrence.iter().map(String::len).sum::<usize>()
}

/// How many of `events`, in order, fit in `room` more events and `bytes`
/// more bytes of a page.
pub fn fitting(events: &[pb::Event], room: usize, bytes: usize) -> usize {
    let mut used = 0usize;
    for (i, e) in events.iter().enumerate() {
        used += approx_size(e);
        if i >= room || used > bytes {
            return i;
        }
    }
    events.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio_stream::StreamExt;

    fn page(n: usize, more: bool) -> pb::SyncEventsResponse {
        pb::SyncEventsResponse {
            next_cursor: format!("after-{n}"),
            more,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn pages_follow_their_cursors_until_the_last_one() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let stream = stream_pages(
            pb::SyncEventsRequest {
                cursor: "start".into(),
                ..Default::default()
            },
            move |r| {
                let s = s.clone();
                async move {
                    let mut s = s.lock().unwrap();
                    s.push(r.cursor.clone());
                    let n = s.len();
                    Ok(page(n, n < 3))
                }
            },
        )
        .await
        .unwrap();
        let got: Vec<_> = stream.collect::<Vec<_>>().await;
        assert_eq!(got.len(), 3);
        assert!(!got[2].as_ref().unwrap().more);
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["start", "after-1", "after-2"],
            "each page asked for with the cursor of the one before"
        );
    }

    #[tokio::test]
    async fn an_error_is_sent_and_ends_the_stream() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let stream = stream_pages(pb::SyncEventsRequest::default(), move |_| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 1 {
                    Err(Status::unavailable("outage"))
                } else {
                    Ok(page(n, true))
                }
            }
        })
        .await
        .unwrap();
        let got: Vec<_> = stream.collect::<Vec<_>>().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert_eq!(
            got[1].as_ref().unwrap_err().code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "nothing computed after the error"
        );
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_stops_the_pages() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        // Dropped with the closure, that is when the task ends.
        let (alive, ended) = tokio::sync::oneshot::channel::<()>();
        let mut stream = stream_pages(pb::SyncEventsRequest::default(), move |_| {
            let _alive = &alive;
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move { Ok(page(n, true)) }
        })
        .await
        .unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        drop(stream);
        tokio::time::timeout(std::time::Duration::from_secs(10), ended)
            .await
            .expect("the task ended")
            .expect_err("nothing is sent on it");
        // The first page, the one waiting in the channel, the one whose
        // send failed.
        assert!(calls.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test]
    async fn a_refused_first_page_fails_the_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let result = stream_pages(pb::SyncEventsRequest::default(), move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Err(Status::invalid_argument("window: is required")) }
        })
        .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
