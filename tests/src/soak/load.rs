//! The soak's load: one writer per live account (UpsertEvent create and
//! update, DeleteEvent, each recorded in the ledger when sent and when
//! answered), outside editors at Radicale and at the fake Google (with push
//! notifications of their own), and revocation followed by reconnection.
//! Pauses between operations are the load's pacing (random, seeded), not
//! waits for a condition.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use calbridge::pb;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;

use crate::caldav::{timed_lines, vcalendar, DavServer};
use crate::invariants::{Effect, Ledger, Outcome};
use crate::proxied::Connector;
use crate::{channel, timed_event, Bearer, SchedulerClient};

/// Counters of what the load did.
#[derive(Default)]
pub struct Counters {
    /// Upserts acknowledged.
    pub upserts_acked: AtomicU64,
    /// Deletes acknowledged.
    pub deletes_acked: AtomicU64,
    /// Writes that failed or went unanswered.
    pub writes_in_doubt: AtomicU64,
    /// Outside creates, updates and deletes.
    pub outside_edits: AtomicU64,
    /// Push notifications asked of the fake without a change.
    pub notifies: AtomicU64,
    /// Revocations acknowledged.
    pub revocations: AtomicU64,
    /// Reconnections after a revocation.
    pub reconnections: AtomicU64,
}

impl Counters {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// An account slot: one tenant's account at one provider calendar, whose
/// account changes when it is revoked and connected again.
pub struct Slot {
    /// A short name (`alpha-dav`), the prefix of its client ids.
    pub name: String,
    /// Index of its tenant.
    pub tenant: usize,
    /// The Google user, or `None` for the CalDAV calendar.
    pub google_user: Option<String>,
    /// The ledger's key of its provider calendar.
    pub calendar_key: String,
    /// The live account: (account id, calendar id).
    pub account: Option<(String, String)>,
    /// Bumped at every reconnection (part of the client ids).
    pub generation: u32,
    /// Client ids of the live account that may exist at the provider.
    pub live: Vec<String>,
    /// The next client id number.
    pub next: u64,
}

/// A tenant.
#[derive(Clone)]
pub struct Tenant {
    /// Its id.
    pub id: String,
    /// Its API key.
    pub key: String,
}

/// What a writer needs.
pub struct WriterJob {
    /// The scheduler's URL.
    pub url: String,
    /// The tenant.
    pub tenant: Tenant,
    /// The slot's name and generation, for client ids.
    pub prefix: String,
    /// (account id, calendar id).
    pub account: (String, String),
    /// True for a CalDAV account (provider ids are hrefs).
    pub caldav: bool,
    /// Client ids that may exist.
    pub live: Vec<String>,
    /// The next client id number.
    pub next: u64,
    /// Most client ids alive at once.
    pub cap: usize,
    /// Set once the account's revocation is acknowledged.
    pub revoked: Arc<AtomicBool>,
    /// Whether the platform also asks for syncs (SyncNow) now and then.
    pub sync_now: bool,
}

/// Where events are placed: a day after the soak started, spread over 50
/// days on a 15-minute grid.
pub fn event_start(base: DateTime<Utc>, rng: &mut StdRng) -> DateTime<Utc> {
    base + chrono::Duration::minutes(15 * rng.gen_range(0..50 * 96))
}

/// A scheduler client with a tenant's key.
pub async fn connect(url: &str, key: &str) -> Result<SchedulerClient> {
    Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
        channel(url).await?,
        Bearer(Some(key.to_string())),
    ))
}

/// Writes until `stop` (or the account's revocation); returns the job with
/// its live client ids and next number updated.
pub async fn writer(
    mut job: WriterJob,
    ledger: Arc<Mutex<Ledger>>,
    counters: Arc<Counters>,
    mut rng: StdRng,
    base: DateTime<Utc>,
    stop: watch::Receiver<bool>,
) -> WriterJob {
    let mut client = connect(&job.url, &job.tenant.key).await.ok();
    let (account, calendar) = job.account.clone();
    while !*stop.borrow() && !job.revoked.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            tokio::time::sleep(Duration::from_millis(150)).await;
            client = connect(&job.url, &job.tenant.key).await.ok();
            continue;
        };
        let roll: f64 = rng.gen();
        if job.sync_now && roll < 0.05 {
            // The platform asks for a sync now and then (more sync pages
            // for the kills to land in).
            let _ = c
                .sync_now(pb::SyncNowRequest {
                    account_id: account.clone(),
                    calendar_id: String::new(),
                })
                .await;
            continue;
        }
        let create = job.live.is_empty() || (job.live.len() < job.cap && roll < 0.45);
        let (cid, delete) = if create {
            let cid = format!("{}c{}", job.prefix, job.next);
            job.next += 1;
            job.live.push(cid.clone());
            (cid, false)
        } else {
            let cid = job.live[rng.gen_range(0..job.live.len())].clone();
            (
                cid,
                roll >= 0.75 || job.live.len() >= job.cap && roll >= 0.6,
            )
        };
        let key = calbridge_scheduler::writes::idempotency_key(
            &calbridge_scheduler::ids::TenantId::from(&job.tenant.id),
            &calbridge_scheduler::ids::AccountId::from(&account),
            &calbridge_scheduler::ids::CalendarId::from(&calendar),
            &cid,
        );
        let pid = if job.caldav {
            format!("{calendar}{key}.ics")
        } else {
            key
        };
        let start = event_start(base, &mut rng);
        let (i, title) = {
            let mut l = ledger.lock().expect("ledger lock");
            let title = format!("P {cid} {}", l.writes_of(&cid) + 1);
            l.starts.insert(title.clone(), start);
            let effect = if delete {
                Effect::Absent
            } else {
                Effect::Present(title.clone())
            };
            (l.begin_write(&cid, &account, &pid, effect), title)
        };
        let call = async {
            if delete {
                c.delete_event(pb::DeleteEventRequest {
                    account_id: account.clone(),
                    calendar_id: calendar.clone(),
                    client_event_id: cid.clone(),
                    provider_event_id: String::new(),
                    expected_version: String::new(),
                })
                .await
                .map(|_| ())
            } else {
                c.upsert_event(pb::UpsertEventRequest {
                    provider_event_id: String::new(),
                    account_id: account.clone(),
                    calendar_id: calendar.clone(),
                    client_event_id: cid.clone(),
                    event: Some(timed_event(&title, start, 30)),
                    expected_version: String::new(),
                    hold_id: String::new(),
                })
                .await
                .map(|_| ())
            }
        };
        let acked = matches!(
            tokio::time::timeout(Duration::from_secs(60), call).await,
            Ok(Ok(()))
        );
        let outcome = if acked {
            Outcome::Acked
        } else {
            Outcome::InDoubt
        };
        ledger
            .lock()
            .expect("ledger lock")
            .end_write(&cid, i, outcome);
        match (acked, delete) {
            (true, true) => {
                Counters::bump(&counters.deletes_acked);
                job.live.retain(|c| *c != cid);
            }
            (true, false) => Counters::bump(&counters.upserts_acked),
            (false, _) => {
                Counters::bump(&counters.writes_in_doubt);
                // The scheduler may be down: reconnect after a pause.
                tokio::time::sleep(Duration::from_millis(150)).await;
                client = connect(&job.url, &job.tenant.key).await.ok();
                continue;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
    }
    job
}

/// An outside editor's events: (outside id, provider id, next n).
pub type OutsideLive = Vec<(String, String, u64)>;

/// Edits Radicale's calendar directly (another client) until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn dav_editor(
    dav: Arc<DavServer>,
    key: String,
    mut live: OutsideLive,
    mut next: u64,
    cap: usize,
    ledger: Arc<Mutex<Ledger>>,
    counters: Arc<Counters>,
    mut rng: StdRng,
    base: DateTime<Utc>,
    stop: watch::Receiver<bool>,
) -> Result<(OutsideLive, u64)> {
    while !*stop.borrow() {
        let roll: f64 = rng.gen();
        if live.is_empty() || (live.len() < cap && roll < 0.4) {
            let oid = format!("dav-o{next}");
            next += 1;
            let pid = dav.href(&format!("{oid}.ics"));
            live.push((oid, pid, 1));
        }
        let i = rng.gen_range(0..live.len());
        let (oid, pid, n) = live[i].clone();
        if n > 1 && roll >= 0.8 {
            dav.delete(&format!("{oid}.ics")).await?;
            live.remove(i);
            ledger
                .lock()
                .expect("ledger lock")
                .outside_edit(&oid, &key, &pid, Effect::Absent);
        } else {
            let title = format!("O {oid} {n}");
            let start = event_start(base, &mut rng);
            ledger
                .lock()
                .expect("ledger lock")
                .starts
                .insert(title.clone(), start);
            let ics = vcalendar(&[timed_lines(&oid, &title, start, 30)]);
            dav.put(&format!("{oid}.ics"), &ics).await?;
            live[i].2 += 1;
            ledger.lock().expect("ledger lock").outside_edit(
                &oid,
                &key,
                &pid,
                Effect::Present(title),
            );
        }
        Counters::bump(&counters.outside_edits);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
    }
    Ok((live, next))
}

fn google_body(title: &str, start: DateTime<Utc>) -> serde_json::Value {
    let t = |d: DateTime<Utc>| d.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    json!({
        "summary": title,
        "start": {"dateTime": t(start), "timeZone": "Europe/London"},
        "end": {"dateTime": t(start + chrono::Duration::minutes(30)), "timeZone": "Europe/London"},
    })
}

/// Edits a Google user's calendar through the fake's control API (another
/// client; each change pushes to the calendar's channels), and now and
/// then asks for a push without a change, until `stop`.
#[allow(clippy::too_many_arguments)]
pub async fn google_editor(
    control: calbridge_fake_google::Control,
    user: String,
    key: String,
    mut live: OutsideLive,
    mut next: u64,
    cap: usize,
    ledger: Arc<Mutex<Ledger>>,
    counters: Arc<Counters>,
    mut rng: StdRng,
    base: DateTime<Utc>,
    stop: watch::Receiver<bool>,
) -> Result<(OutsideLive, u64)> {
    let tag = user.split('@').next().unwrap_or("g").to_string();
    while !*stop.borrow() {
        let roll: f64 = rng.gen();
        if roll < 0.15 {
            control.notify(&user).await?;
            Counters::bump(&counters.notifies);
        } else if live.is_empty() || (live.len() < cap && roll < 0.45) {
            let oid = format!("{tag}-o{next}");
            next += 1;
            let title = format!("O {oid} 1");
            let start = event_start(base, &mut rng);
            ledger
                .lock()
                .expect("ledger lock")
                .starts
                .insert(title.clone(), start);
            let stored = control
                .insert_event(&user, &google_body(&title, start))
                .await?;
            let pid = stored["id"]
                .as_str()
                .ok_or_else(|| anyhow!("the fake answered no id: {stored}"))?
                .to_string();
            ledger.lock().expect("ledger lock").outside_edit(
                &oid,
                &key,
                &pid,
                Effect::Present(title),
            );
            live.push((oid, pid, 2));
            Counters::bump(&counters.outside_edits);
        } else {
            let i = rng.gen_range(0..live.len());
            let (oid, pid, n) = live[i].clone();
            if roll >= 0.85 {
                control.delete_event(&user, &pid).await?;
                live.remove(i);
                ledger
                    .lock()
                    .expect("ledger lock")
                    .outside_edit(&oid, &key, &pid, Effect::Absent);
            } else {
                let title = format!("O {oid} {n}");
                let start = event_start(base, &mut rng);
                ledger
                    .lock()
                    .expect("ledger lock")
                    .starts
                    .insert(title.clone(), start);
                control
                    .patch_event(&user, &pid, &google_body(&title, start))
                    .await?;
                live[i].2 += 1;
                ledger.lock().expect("ledger lock").outside_edit(
                    &oid,
                    &key,
                    &pid,
                    Effect::Present(title),
                );
            }
            Counters::bump(&counters.outside_edits);
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..120))).await;
    }
    Ok((live, next))
}

/// Revokes `account` (again and again until acknowledged: a kill may cut
/// the call off), then sets `revoked` and records it.
pub async fn revoke(
    url: &str,
    tenant: &Tenant,
    account: &str,
    revoked: &AtomicBool,
    ledger: &Mutex<Ledger>,
    counters: &Counters,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let result = async {
            let mut c = connect(url, &tenant.key).await?;
            let call = c.revoke_account(pb::RevokeAccountRequest {
                account_id: account.to_string(),
            });
            tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .map_err(|_| anyhow!("RevokeAccount timed out"))??;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                revoked.store(true, Ordering::SeqCst);
                ledger.lock().expect("ledger lock").revoked(account);
                Counters::bump(&counters.revocations);
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e.context(format!("revoking {account}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Connects the slot's provider account again (until it succeeds: a kill
/// may cut the call off); returns (account id, calendar id).
pub async fn reconnect(
    connector: &Connector,
    tenant: &Tenant,
    google_user: Option<&str>,
    counters: &Counters,
) -> Result<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let result = async {
            let mut c = connect(&connector.scheduler_url, &tenant.key).await?;
            let call = async {
                match google_user {
                    Some(user) => connector.google(&mut c, user).await,
                    None => connector.caldav(&mut c).await,
                }
            };
            tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .map_err(|_| anyhow!("connecting timed out"))?
        }
        .await;
        match result {
            Ok(a) => {
                Counters::bump(&counters.reconnections);
                return Ok(a);
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e.context("reconnecting"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
