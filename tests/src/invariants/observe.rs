//! Reading the world once: every provider calendar directly (Radicale by
//! a calendar-query REPORT, the fake Google through its control API), every
//! live account's mirror and every revoked account through the scheduler's
//! API, and every tenant's whole feed; and settling, which syncs until the
//! mirrors equal their providers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use calbridge::pb;
use chrono::Utc;

use super::{
    mirror_differences, AccountEntry, Ledger, MirrorEvent, Observed, ProviderCalendar, RevokedProbe,
};
use crate::{changes_after, sync_now_and_wait, SchedulerClient};

/// The window the mirrors are listed in.
pub fn mirror_window() -> pb::TimeWindow {
    let now = Utc::now();
    pb::TimeWindow {
        start: Some(calbridge::time::to_timestamp(
            now - chrono::Duration::days(2),
        )),
        end: Some(calbridge::time::to_timestamp(
            now + chrono::Duration::days(360),
        )),
    }
}

/// Reads every event of a provider calendar: provider event id → title.
pub async fn provider_events(
    http: &reqwest::Client,
    cal: &ProviderCalendar,
) -> Result<BTreeMap<String, String>> {
    match cal {
        ProviderCalendar::Caldav {
            base,
            username,
            password,
            href,
        } => caldav_events(http, base, username, password, href).await,
        ProviderCalendar::Google { control, calendar } => {
            let mut out = BTreeMap::new();
            for e in control.events(calendar).await? {
                if e["status"] == "cancelled" {
                    continue;
                }
                let id = e["id"].as_str().unwrap_or_default().to_string();
                let title = e["summary"].as_str().unwrap_or_default().to_string();
                out.insert(id, title);
            }
            Ok(out)
        }
    }
}

async fn caldav_events(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    href: &str,
) -> Result<BTreeMap<String, String>> {
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
        <C:calendar-query xmlns:D=\"DAV:\" xmlns:C=\"urn:ietf:params:xml:ns:caldav\">\
        <D:prop><D:getetag/><C:calendar-data/></D:prop>\
        <C:filter><C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\"/>\
        </C:comp-filter></C:filter></C:calendar-query>";
    let url = reqwest::Url::parse(base)?.join(href)?;
    let resp = http
        .request(reqwest::Method::from_bytes(b"REPORT")?, url)
        .basic_auth(username, Some(password))
        .header("Depth", "1")
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if status.as_u16() != 207 {
        bail!("REPORT {href}: {status}");
    }
    let doc = roxmltree::Document::parse(&text)?;
    let mut out = BTreeMap::new();
    for r in doc
        .descendants()
        .filter(|n| n.has_tag_name(("DAV:", "response")))
    {
        let Some(h) = r
            .children()
            .find(|n| n.has_tag_name(("DAV:", "href")))
            .and_then(|n| n.text())
        else {
            continue;
        };
        let Some(data) = r
            .descendants()
            .find(|n| n.has_tag_name(("urn:ietf:params:xml:ns:caldav", "calendar-data")))
            .and_then(|n| n.text())
        else {
            continue;
        };
        let path = reqwest::Url::parse(h)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| h.to_string());
        let data = crate::caldav::unfold(data);
        let title = data
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                (name == "SUMMARY" || name.starts_with("SUMMARY;"))
                    .then(|| value.trim_end_matches('\r').to_string())
            })
            .unwrap_or_default();
        out.insert(path, title);
    }
    Ok(out)
}

/// Every event of one account's calendar in the mirror.
async fn mirror_of(
    c: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
) -> Result<BTreeMap<String, MirrorEvent>> {
    let events = crate::caldav::list_events(c, account_id, calendar_id, mirror_window()).await?;
    Ok(events
        .into_iter()
        .map(|e| {
            let start = e.start.as_ref().and_then(|t| match &t.value {
                Some(pb::event_time::Value::Instant(ts)) => calbridge::time::from_timestamp(ts),
                _ => None,
            });
            (
                e.provider_event_id.clone(),
                MirrorEvent {
                    title: e.title,
                    start,
                    client_event_id: e.client_event_id,
                },
            )
        })
        .collect())
}

async fn probe_revoked(
    c: &mut SchedulerClient,
    account_id: &str,
    calendar_id: &str,
) -> RevokedProbe {
    let status = match c
        .get_account(pb::GetAccountRequest {
            account_id: account_id.to_string(),
        })
        .await
    {
        Ok(a) => format!("{:?}", a.into_inner().status()),
        Err(s) => format!("error {:?}", s.code()),
    };
    let (list_events_error, events) = match c
        .list_events(pb::ListEventsRequest {
            account_id: account_id.to_string(),
            calendar_id: calendar_id.to_string(),
            window: Some(mirror_window()),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
    {
        Ok(r) => (None, r.into_inner().events.len()),
        Err(s) => (Some(format!("{:?}", s.code())), 0),
    };
    RevokedProbe {
        status,
        list_events_error,
        events,
    }
}

/// Reads providers, mirrors, feeds and revoked accounts once. `clients`
/// holds one scheduler client per tenant.
pub async fn observe(
    ledger: &Ledger,
    clients: &BTreeMap<String, SchedulerClient>,
    http: &reqwest::Client,
) -> Result<Observed> {
    let mut o = Observed::default();
    for (key, cal) in &ledger.calendars {
        let events = provider_events(http, cal)
            .await
            .with_context(|| format!("reading provider calendar {key}"))?;
        o.provider.insert(key.clone(), events);
    }
    for (id, a) in &ledger.accounts {
        let mut c = clients
            .get(&a.tenant_id)
            .cloned()
            .ok_or_else(|| anyhow!("no client for tenant {}", a.tenant_id))?;
        if a.revoked {
            o.revoked
                .insert(id.clone(), probe_revoked(&mut c, id, &a.calendar_id).await);
        } else {
            let m = mirror_of(&mut c, id, &a.calendar_id)
                .await
                .with_context(|| format!("listing the mirror of {id}"))?;
            o.mirrors.insert(id.clone(), m);
        }
    }
    for (tenant, c) in clients {
        let mut c = c.clone();
        o.feeds
            .insert(tenant.clone(), changes_after(&mut c, "").await?);
    }
    Ok(o)
}

/// Syncs every live account until its mirror equals its provider calendar,
/// or `timeout` passes; returns the last observation.
pub async fn settle(
    ledger: &Ledger,
    clients: &BTreeMap<String, SchedulerClient>,
    http: &reqwest::Client,
    timeout: Duration,
) -> Result<Observed> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let live: Vec<(&String, &AccountEntry)> =
            ledger.accounts.iter().filter(|(_, a)| !a.revoked).collect();
        let syncs = live.iter().map(|(id, a)| async move {
            let mut c = clients.get(&a.tenant_id).cloned()?;
            sync_now_and_wait(&mut c, id, "").await.ok()
        });
        futures::future::join_all(syncs).await;
        let o = observe(ledger, clients, http).await;
        if let Ok(o) = &o {
            if mirror_differences(ledger, o).is_empty() {
                return Ok(o.clone());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return o;
        }
    }
}
