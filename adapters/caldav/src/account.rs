//! One CalDAV account's operations, built from [`DavClient`] requests and
//! the pure conversions of [`crate::mapping`]: RFC 6764 discovery, the
//! calendar list, change detection (sync-collection, getctag, etag
//! listings), calendar-multiget in bounded batches, conditional writes and
//! free/busy. Provider vocabulary stays here and in the client.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use reqwest::Url;

use calbridge::pb::{self, BusyStatus, EventStatus, Transparency};
use calbridge::Invalid;

use crate::client::{
    percent_decode, same_resource, xml_escape, DavClient, DavResponse, PutCondition, NS_APPLE,
    NS_CALDAV, NS_CS, NS_DAV,
};
use crate::egress::{same_origin, same_site};
use crate::error::DavError;
use crate::mapping::{parse_calendar, parse_object, EventParts, IcalError};
use crate::recurrence::Window;

/// The most hrefs one calendar-multiget asks for. Radicale and Xandikos
/// answer 500 objects in a few hundred milliseconds (about 0.3 ms and
/// 0.8 ms per object there) and typical objects of 1-4 KiB keep the answer
/// within a few MiB; servers that cap multiget (none of the tested ones
/// does) would need a smaller bound. Sync pages ask for fewer when they need
/// fewer events.
pub const MULTIGET_BATCH: usize = 500;

/// The most hrefs one calendar-multiget asks of iCloud (`*.icloud.com`):
/// clients report iCloud throttling or failing large multigets, and the
/// advice is batches of 10-50 hrefs.
pub const ICLOUD_MULTIGET_BATCH: usize = 50;

/// How many discovery attempts may come back without a
/// `calendar-home-set` before the principal is taken as the home: iCloud
/// occasionally leaves it out of an answer, and a retry finds it.
const HOME_SET_ATTEMPTS: usize = 3;

/// How many truncated (507) sync-collection answers one sync follows.
const MAX_SYNC_ROUNDS: usize = 100;

/// The most members one sync-collection may name.
const MAX_SYNC_MEMBERS: usize = 500_000;

/// True for iCloud's hosts (`icloud.com` and its subdomains, such as the
/// partition hosts `pNN-caldav.icloud.com`).
pub fn is_icloud_host(url: &Url) -> bool {
    url.host_str().is_some_and(|h| {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        h == "icloud.com" || h.ends_with(".icloud.com")
    })
}

/// The multiget bound for calendars at `url`: [`ICLOUD_MULTIGET_BATCH`] on
/// iCloud, [`MULTIGET_BATCH`] elsewhere.
pub fn multiget_batch_for(url: &Url) -> usize {
    if is_icloud_host(url) {
        ICLOUD_MULTIGET_BATCH
    } else {
        MULTIGET_BATCH
    }
}

/// The `C:calendar-home-set` of a principal PROPFIND answer, resolved
/// against `base`. A principal may answer under another href (iCloud's
/// `/principal/`): the single response is accepted whatever its href.
fn home_set(base: &Url, ms: &crate::client::Multistatus) -> Option<Url> {
    ms.responses
        .iter()
        .find_map(|r| {
            r.prop(NS_CALDAV, "calendar-home-set")?
                .href()
                .filter(|h| !h.is_empty())
                .map(str::to_string)
        })
        .and_then(|h| base.join(&h).ok())
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The principal URL (`D:current-user-principal`).
    pub principal: Url,
    /// The calendar home URL (`C:calendar-home-set`), possibly on another
    /// host.
    pub home: Url,
}

/// One member of a calendar collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The href, as the server wrote it.
    pub href: String,
    /// Its etag.
    pub etag: String,
}

/// The answer to a sync-collection report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncDelta {
    /// Members created or changed.
    pub changed: Vec<Member>,
    /// Hrefs of removed members.
    pub removed: Vec<String>,
    /// The new sync token.
    pub token: String,
}

/// What one depth-1 PROPFIND says about a calendar and its members: the
/// snapshot a full listing starts from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// `CS:getctag` of the collection, read in the same answer as the
    /// members (so never newer than they are).
    pub ctag: Option<String>,
    /// The calendar's zone from `C:calendar-timezone`.
    pub zone: Option<Tz>,
    /// The members (not sub-collections) with their etags.
    pub members: Vec<Member>,
}

/// Which depth-0 properties of a calendar to ask for. Each is asked only
/// when wanted: servers such as Radicale compute the ctag, and a first sync
/// token, over every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// `CS:getctag`.
    pub ctag: bool,
    /// `C:calendar-timezone`.
    pub zone: bool,
    /// `D:sync-token`.
    pub token: bool,
    /// `D:supported-report-set` (whether sync-collection is supported).
    pub reports: bool,
}

impl Ask {
    /// `CS:getctag` alone.
    pub const CTAG: Ask = Ask {
        ctag: true,
        zone: false,
        token: false,
        reports: false,
    };
    /// `C:calendar-timezone` alone.
    pub const ZONE: Ask = Ask {
        ctag: false,
        zone: true,
        token: false,
        reports: false,
    };
    /// `D:sync-token` alone.
    pub const TOKEN: Ask = Ask {
        ctag: false,
        zone: false,
        token: true,
        reports: false,
    };
    /// `D:supported-report-set` alone.
    pub const REPORTS: Ask = Ask {
        ctag: false,
        zone: false,
        token: false,
        reports: true,
    };
}

impl std::ops::BitOr for Ask {
    type Output = Ask;

    /// Both sets of properties.
    fn bitor(self, o: Ask) -> Ask {
        Ask {
            ctag: self.ctag || o.ctag,
            zone: self.zone || o.zone,
            token: self.token || o.token,
            reports: self.reports || o.reports,
        }
    }
}

/// What one depth-0 PROPFIND says about a calendar; what was not asked for
/// stays empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CalendarProps {
    /// `CS:getctag`.
    pub ctag: Option<String>,
    /// The calendar's zone from `C:calendar-timezone`.
    pub zone: Option<Tz>,
    /// `D:sync-token`, when the server has one.
    pub token: Option<String>,
    /// True when `D:sync-collection` is in the supported-report-set.
    pub supports_sync: bool,
}

/// The object a REPORT response carries (its etag and calendar-data, under
/// the href the server wrote), if it carries both.
fn fetched(r: DavResponse) -> Option<Fetched> {
    let etag = r.prop_text(NS_DAV, "getetag")?.to_string();
    let data = r
        .props
        .into_iter()
        .find(|p| p.is(NS_CALDAV, "calendar-data"))?
        .text;
    Some(Fetched {
        href: r.href,
        etag,
        data,
        oversize: false,
    })
}

/// One fetched calendar object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The href, as listed.
    pub href: String,
    /// Its etag.
    pub etag: String,
    /// Its iCalendar data.
    pub data: String,
    /// True when the object alone makes an answer larger than the body
    /// cap: it has no data and is reported as skipped.
    pub oversize: bool,
}

/// One account at its calendar home.
pub struct Account {
    client: DavClient,
    home: Url,
}

/// Parses a server URL given by a user or stored in credentials.
pub fn parse_server_url(s: &str) -> Result<Url, DavError> {
    let s = s.trim();
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|_| Invalid::field("server_url", "must be an http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Invalid::field("server_url", "must be an http(s) URL").into());
    }
    Ok(url)
}

/// Finds the principal and calendar home of the account (RFC 6764: the
/// given URL, then `/.well-known/caldav`, then the root).
pub async fn discover(client: &DavClient, server: &Url) -> Result<Discovered, DavError> {
    let mut candidates = Vec::new();
    if server.path() != "/" {
        candidates.push(server.clone());
    }
    for p in ["/.well-known/caldav", "/"] {
        if let Ok(u) = server.join(p) {
            candidates.push(u);
        }
    }
    let mut principal = None;
    for url in candidates {
        match client
            .propfind(&url, 0, "<D:current-user-principal/>")
            .await
        {
            Ok((base, ms)) => {
                if let Some(href) = ms.responses.iter().find_map(|r| {
                    r.prop(NS_DAV, "current-user-principal")?
                        .href()
                        .map(str::to_string)
                }) {
                    principal = base.join(&href).ok();
                    break;
                }
            }
            Err(e @ (DavError::WrongCredentials | DavError::Refused(_))) => return Err(e),
            Err(e) => tracing::debug!(error = %e, "no principal at this candidate"),
        }
    }
    let principal =
        principal.ok_or_else(|| DavError::NotFound("a CalDAV principal for this user".into()))?;
    if !same_site(client.anchor(), &principal) {
        return Err(DavError::Refused(
            "the server named a principal on another site".into(),
        ));
    }
    let mut home = None;
    for attempt in 1..=HOME_SET_ATTEMPTS {
        let (base, ms) = client
            .propfind(&principal, 0, "<C:calendar-home-set/>")
            .await?;
        home = home_set(&base, &ms);
        if home.is_some() {
            break;
        }
        tracing::debug!(attempt, "no calendar-home-set in the answer; asking again");
    }
    let home = home.unwrap_or_else(|| principal.clone());
    if !same_site(client.anchor(), &home) {
        return Err(DavError::Refused(
            "the server named a calendar home on another site".into(),
        ));
    }
    Ok(Discovered { principal, home })
}

const CALENDAR_PROPS: &str = "<D:resourcetype/><D:displayname/><C:supported-calendar-component-set/><C:calendar-timezone/><D:current-user-privilege-set/><A:calendar-color/>";

impl Account {
    /// The account whose calendar home is `home`.
    pub fn new(client: DavClient, home: Url) -> Self {
        Account { client, home }
    }

    /// The most hrefs one calendar-multiget asks for at this account's
    /// server (see [`multiget_batch_for`]).
    pub fn multiget_batch(&self) -> usize {
        multiget_batch_for(&self.home)
    }

    /// The URL of a calendar or event id (an href, resolved against the
    /// home). It must stay on the home's origin: an absolute or
    /// scheme-relative href naming another host (or port, or scheme) is
    /// refused before any request, so a caller cannot send the account's
    /// credentials anywhere else. `field` names the request field the href
    /// came from, for the error.
    pub fn url(&self, field: &str, href: &str) -> Result<Url, DavError> {
        let url = self
            .home
            .join(href)
            .map_err(|_| Invalid::field(field, "is not a valid CalDAV href"))?;
        if !same_origin(&self.home, &url) {
            return Err(Invalid::field(
                field,
                "must be a path on the account's CalDAV server (hrefs naming another host are refused)",
            )
            .into());
        }
        Ok(url)
    }

    /// The account's calendars that can hold events.
    pub async fn calendars(&self) -> Result<Vec<pb::Calendar>, DavError> {
        let (base, ms) = self.client.propfind(&self.home, 1, CALENDAR_PROPS).await?;
        let mut out: Vec<pb::Calendar> = ms
            .responses
            .iter()
            .filter(|r| !same_resource(&base, &r.href, base.as_str()))
            // A calendar the server places on another host would send the
            // credentials there: not listed.
            .filter(|r| {
                self.home
                    .join(&r.href)
                    .is_ok_and(|u| same_origin(&self.home, &u))
            })
            .filter_map(calendar_of)
            .collect();
        if let Some(first) = out.iter_mut().find(|c| !c.read_only) {
            first.primary = true;
        }
        Ok(out)
    }

    /// The properties `ask` names of a calendar, from one PROPFIND with
    /// depth 0.
    pub async fn calendar_props(
        &self,
        calendar: &Url,
        ask: Ask,
    ) -> Result<CalendarProps, DavError> {
        let props: String = [
            (ask.ctag, "<CS:getctag/>"),
            (ask.zone, "<C:calendar-timezone/>"),
            (ask.token, "<D:sync-token/>"),
            (ask.reports, "<D:supported-report-set/>"),
        ]
        .iter()
        .filter(|(wanted, _)| *wanted)
        .map(|(_, p)| *p)
        .collect();
        let (_, ms) = self.client.propfind(calendar, 0, &props).await?;
        let Some(r) = ms.responses.first() else {
            return Ok(CalendarProps::default());
        };
        Ok(CalendarProps {
            ctag: r.prop_text(NS_CS, "getctag").map(str::to_string),
            zone: r
                .prop_text(NS_CALDAV, "calendar-timezone")
                .and_then(crate::zones::calendar_zone),
            token: r
                .prop_text(NS_DAV, "sync-token")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            supports_sync: r
                .prop(NS_DAV, "supported-report-set")
                .is_some_and(|s| s.contains(NS_DAV, "sync-collection")),
        })
    }

    /// The calendar's zone alone (see [`Account::calendar_props`]).
    pub async fn zone(&self, calendar: &Url) -> Result<Option<Tz>, DavError> {
        Ok(self.calendar_props(calendar, Ask::ZONE).await?.zone)
    }

    /// The members of a calendar with their etags, the calendar's ctag and
    /// its zone, from one PROPFIND with depth 1.
    pub async fn snapshot(&self, calendar: &Url) -> Result<Snapshot, DavError> {
        let (base, ms) = self
            .client
            .propfind(
                calendar,
                1,
                "<D:getetag/><D:resourcetype/><CS:getctag/><C:calendar-timezone/>",
            )
            .await?;
        let mut snap = Snapshot::default();
        for r in &ms.responses {
            if same_resource(&base, &r.href, base.as_str()) {
                snap.ctag = r.prop_text(NS_CS, "getctag").map(str::to_string);
                snap.zone = r
                    .prop_text(NS_CALDAV, "calendar-timezone")
                    .and_then(crate::zones::calendar_zone);
                continue;
            }
            if r.prop(NS_DAV, "resourcetype")
                .is_some_and(|t| t.child(NS_DAV, "collection").is_some())
            {
                continue;
            }
            if let Some(etag) = r.prop_text(NS_DAV, "getetag") {
                snap.members.push(Member {
                    href: r.href.clone(),
                    etag: etag.to_string(),
                });
            }
        }
        Ok(snap)
    }

    /// RFC 6578 sync-collection from `token` (empty: everything), repeated
    /// while the server truncates (507). `limit` is never sent.
    pub async fn sync_collection(
        &self,
        calendar: &Url,
        token: &str,
    ) -> Result<SyncDelta, DavError> {
        let mut delta = SyncDelta {
            token: token.to_string(),
            ..Default::default()
        };
        let mut seen: std::collections::BTreeMap<String, Option<String>> =
            std::collections::BTreeMap::new();
        // A truncated answer (507) is continued a bounded number of times,
        // and the members it names are bounded too: a server that never
        // finishes costs one error.
        for _ in 0..MAX_SYNC_ROUNDS {
            if seen.len() > MAX_SYNC_MEMBERS {
                return Err(DavError::Protocol(format!(
                    "sync-collection named more than {MAX_SYNC_MEMBERS} members"
                )));
            }
            let body = format!(
                r#"<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:"><D:sync-token>{}</D:sync-token><D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>"#,
                xml_escape(&delta.token)
            );
            let resp = self.client.report(calendar, None, &body).await?;
            let status = resp.status.as_u16();
            if !delta.token.is_empty()
                && (matches!(status, 409 | 412)
                    || (status == 403 && resp.names_condition("valid-sync-token")))
            {
                return Err(DavError::SyncTokenExpired);
            }
            match status {
                207 => {}
                404 | 410 => return Err(DavError::NotFound("the calendar".into())),
                403 => return Err(DavError::Forbidden("sync-collection refused".into())),
                s => return Err(DavError::Protocol(format!("sync-collection answered {s}"))),
            }
            let ms = crate::client::parse_multistatus(&resp.body)?;
            let mut truncated = false;
            for r in &ms.responses {
                if same_resource(calendar, &r.href, calendar.as_str()) {
                    truncated |= r.status == Some(507);
                    continue;
                }
                // The latest answer about an href wins (a truncated
                // report's continuation may name it again).
                match (r.status, r.prop_text(NS_DAV, "getetag")) {
                    (Some(404), _) | (Some(410), _) => {
                        seen.insert(r.href.clone(), None);
                    }
                    (_, Some(etag)) => {
                        seen.insert(r.href.clone(), Some(etag.to_string()));
                    }
                    _ => {}
                }
            }
            let new_token = ms
                .sync_token
                .ok_or_else(|| DavError::Protocol("sync-collection without a sync-token".into()))?;
            let same = new_token == delta.token;
            delta.token = new_token;
            if !truncated || same {
                for (href, etag) in seen {
                    match etag {
                        Some(etag) => delta.changed.push(Member { href, etag }),
                        None => delta.removed.push(href),
                    }
                }
                return Ok(delta);
            }
        }
        Err(DavError::Protocol("sync-collection never finished".into()))
    }

    /// Fetches objects with calendar-multiget, at most
    /// [`Account::multiget_batch`] hrefs per report, in the order asked. Objects gone meanwhile are left
    /// out; each fetched object carries the href as asked (servers may
    /// answer with another spelling of it).
    pub async fn multiget(
        &self,
        calendar: &Url,
        hrefs: &[String],
    ) -> Result<Vec<Fetched>, DavError> {
        let key = |h: &str| {
            calendar
                .join(h)
                .map(|u| percent_decode(u.path()))
                .unwrap_or_else(|_| percent_decode(h))
        };
        let mut out = Vec::with_capacity(hrefs.len());
        // Batches whose answer exceeds the body cap are halved; an object
        // too large alone is returned without data, marked oversize.
        let mut todo: Vec<&[String]> = hrefs.chunks(self.multiget_batch()).rev().collect();
        while let Some(batch) = todo.pop() {
            let body = format!(
                r#"<?xml version="1.0" encoding="utf-8"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop>{}</C:calendar-multiget>"#,
                batch
                    .iter()
                    .map(|h| format!("<D:href>{}</D:href>", xml_escape(h)))
                    .collect::<String>()
            );
            let resp = match self.client.report(calendar, None, &body).await {
                Err(DavError::TooLarge(_)) if batch.len() > 1 => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    todo.push(b);
                    todo.push(a);
                    continue;
                }
                Err(DavError::TooLarge(_)) => {
                    tracing::warn!("a calendar object is larger than the answer cap; skipping it");
                    out.push(Fetched {
                        href: batch[0].clone(),
                        etag: String::new(),
                        data: String::new(),
                        oversize: true,
                    });
                    continue;
                }
                r => r?,
            };
            match resp.status.as_u16() {
                207 => {}
                404 | 410 => return Err(DavError::NotFound("the calendar".into())),
                403 => return Err(DavError::Forbidden("calendar-multiget refused".into())),
                s => {
                    return Err(DavError::Protocol(format!(
                        "calendar-multiget answered {s}"
                    )))
                }
            }
            let ms = crate::client::parse_multistatus(&resp.body)?;
            let mut found: HashMap<String, (String, String)> = HashMap::new();
            for r in ms.responses {
                if let Some(f) = fetched(r) {
                    found.insert(key(&f.href), (f.etag, f.data));
                }
            }
            for href in batch {
                if let Some((etag, data)) = found.remove(&key(href)) {
                    out.push(Fetched {
                        href: href.clone(),
                        etag,
                        data,
                        oversize: false,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every object of a calendar that holds an event, with its etag and
    /// data, from one calendar-query REPORT (depth 1, a VEVENT comp-filter
    /// and no time-range: the server filters nothing it would have to
    /// expand). `None` when the server refuses the report (any answer but
    /// 207 apart from a missing calendar, authentication failures, rate
    /// limits and outages; a 5xx is an outage here too, which the caller
    /// may also answer by listing the other way, since some servers fail a
    /// whole query over one object they cannot parse): the caller lists
    /// with PROPFIND and multigets instead.
    pub async fn query_all(&self, calendar: &Url) -> Result<Option<Vec<Fetched>>, DavError> {
        const BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#;
        let resp = match self.client.report(calendar, Some(1), BODY).await {
            Err(DavError::TooLarge(_)) => {
                tracing::info!("calendar-query answer over the cap; listing in batches");
                return Ok(None);
            }
            r => r?,
        };
        match resp.status.as_u16() {
            207 => {}
            404 | 410 => return Err(DavError::NotFound("the calendar".into())),
            s => {
                tracing::info!(status = s, "calendar-query refused; listing by PROPFIND");
                return Ok(None);
            }
        }
        let ms = crate::client::parse_multistatus(&resp.body)?;
        let mut out = Vec::with_capacity(ms.responses.len());
        for r in ms.responses {
            // iCloud may answer for the collection itself too.
            if !same_resource(calendar, &r.href, calendar.as_str()) {
                out.extend(fetched(r));
            }
        }
        Ok(Some(out))
    }

    /// Reads one event resource as a single event (writes' answers).
    pub async fn event(&self, href: &str, zone: Option<Tz>) -> Result<pb::Event, DavError> {
        let url = self.url("provider_event_id", href)?;
        let (data, etag) = self
            .client
            .get(&url)
            .await?
            .ok_or_else(|| DavError::NotFound("the event".into()))?;
        let etag = match etag {
            Some(e) => e,
            None => self.etag(&url).await?.unwrap_or_default(),
        };
        single_event(href, &etag, &data, zone)
    }

    /// The current etag of a resource, `None` when it is gone.
    pub async fn etag(&self, url: &Url) -> Result<Option<String>, DavError> {
        match self.client.propfind(url, 0, "<D:getetag/>").await {
            Ok((_, ms)) => Ok(ms
                .responses
                .first()
                .and_then(|r| r.prop_text(NS_DAV, "getetag"))
                .map(str::to_string)),
            Err(DavError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `<calendar><name>.ics` unless it exists; answers the stored
    /// event and whether it already existed.
    pub async fn create(
        &self,
        calendar_id: &str,
        name: &str,
        ics: &str,
    ) -> Result<(pb::Event, bool), DavError> {
        let calendar = self.url("calendar_id", calendar_id)?;
        let url = calendar
            .join(&format!("{name}.ics"))
            .map_err(|_| Invalid::field("idempotency_key", "cannot name a CalDAV resource"))?;
        let resp = self.client.put(&url, ics, &PutCondition::Create).await?;
        let existed = match resp.status.as_u16() {
            200 | 201 | 204 => false,
            412 if !resp.names_condition("valid-calendar-data") => true,
            s => return Err(put_error(s, &resp.body)),
        };
        let zone = self.zone(&calendar).await.ok().flatten();
        let event = self.event(url.path(), zone).await?;
        Ok((event, existed))
    }

    /// Reads the data and etag of an event resource for a rewrite.
    pub async fn current(&self, href: &str) -> Result<(String, String), DavError> {
        let url = self.url("provider_event_id", href)?;
        let (data, etag) = self
            .client
            .get(&url)
            .await?
            .ok_or_else(|| DavError::NotFound("the event".into()))?;
        let etag = match etag {
            Some(e) => e,
            None => self
                .etag(&url)
                .await?
                .ok_or_else(|| DavError::NotFound("the event".into()))?,
        };
        Ok((data, etag))
    }

    /// Replaces an event resource if its etag is still `etag`.
    pub async fn replace(
        &self,
        calendar_id: &str,
        href: &str,
        ics: &str,
        etag: &str,
    ) -> Result<pb::Event, DavError> {
        self.put_matching(href, ics, etag).await?;
        let zone = self
            .zone(&self.url("calendar_id", calendar_id)?)
            .await
            .ok()
            .flatten();
        self.event(href, zone).await
    }

    /// Rewrites a resource, conditional on `etag` (412 → a version
    /// conflict carrying the current etag).
    pub async fn put_matching(&self, href: &str, ics: &str, etag: &str) -> Result<(), DavError> {
        let url = self.url("provider_event_id", href)?;
        let resp = self
            .client
            .put(&url, ics, &PutCondition::Match(etag.to_string()))
            .await?;
        match resp.status.as_u16() {
            200 | 201 | 204 => Ok(()),
            412 if !resp.names_condition("valid-calendar-data") => Err(DavError::VersionConflict {
                current: self.etag(&url).await.ok().flatten(),
            }),
            s => Err(put_error(s, &resp.body)),
        }
    }

    /// Deletes an event resource, conditional on `etag` when given.
    pub async fn delete(&self, href: &str, etag: Option<&str>) -> Result<(), DavError> {
        let url = self.url("provider_event_id", href)?;
        let resp = self.client.delete(&url, etag).await?;
        match resp.status.as_u16() {
            200 | 202 | 204 => Ok(()),
            404 | 410 => Err(DavError::NotFound("the event".into())),
            412 => Err(DavError::VersionConflict {
                current: self.etag(&url).await.ok().flatten(),
            }),
            403 => Err(DavError::Forbidden(
                "deleting the event was refused (read-only calendar?)".into(),
            )),
            s => Err(DavError::Protocol(format!("DELETE answered {s}"))),
        }
    }

    /// Busy intervals of one calendar in `window`: the server's
    /// free-busy-query where it answers one, else derived from the events.
    pub async fn free_busy(
        &self,
        calendar_id: &str,
        window: Window,
    ) -> Result<Vec<pb::BusyInterval>, DavError> {
        let calendar = self.url("calendar_id", calendar_id)?;
        let body = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><C:free-busy-query xmlns:C="urn:ietf:params:xml:ns:caldav"><C:time-range start="{}" end="{}"/></C:free-busy-query>"#,
            window.start.format("%Y%m%dT%H%M%SZ"),
            window.end.format("%Y%m%dT%H%M%SZ")
        );
        let resp = self.client.report(&calendar, Some(1), &body).await?;
        match resp.status.as_u16() {
            200 => {
                if let Ok(periods) = parse_free_busy(&resp.body) {
                    return Ok(periods
                        .into_iter()
                        .filter_map(|(s, e, status)| {
                            clip(s, e, window).map(|(s, e)| (s, e, status))
                        })
                        .map(|(s, e, status)| interval(s, e, status, calendar_id))
                        .collect());
                }
                tracing::warn!("unreadable free-busy answer; deriving from events");
            }
            404 | 410 => return Err(DavError::NotFound("the calendar".into())),
            s => tracing::debug!(
                status = s,
                "free-busy-query unsupported; deriving from events"
            ),
        }
        self.free_busy_from_events(&calendar, calendar_id, window)
            .await
    }

    async fn free_busy_from_events(
        &self,
        calendar: &Url,
        calendar_id: &str,
        window: Window,
    ) -> Result<Vec<pb::BusyInterval>, DavError> {
        let snap = self.snapshot(calendar).await?;
        let zone = snap.zone;
        let hrefs: Vec<String> = snap.members.into_iter().map(|m| m.href).collect();
        let fetched = self.multiget(calendar, &hrefs).await?;
        let calendar_id = calendar_id.to_string();
        // CPU work, off the async workers, within a budget of a few pages'
        // worth (see `crate::mapping::bounds`).
        let _cpu = crate::recurrence::expansion_permit().await;
        tokio::task::spawn_blocking(move || busy_of(fetched, zone, &calendar_id, window))
            .await
            .map_err(|_| DavError::Protocol("reading the calendar objects failed".into()))?
    }
}

/// The busy intervals of fetched objects in `window`, within a work budget
/// of four sync pages.
fn busy_of(
    fetched: Vec<Fetched>,
    zone: Option<Tz>,
    calendar_id: &str,
    window: Window,
) -> Result<Vec<pb::BusyInterval>, DavError> {
    use crate::mapping::bounds::{MAX_STEPS, PAGE_STEPS};
    let mut out = Vec::new();
    let mut spent = 0usize;
    for f in fetched {
        if spent > 4 * PAGE_STEPS {
            return Err(DavError::Unsupported(
                "the calendar is too costly to derive free/busy from; its server answers no free-busy-query".into(),
            ));
        }
        spent += f.data.len() / 256;
        let events = match parse_object(&f.data, zone)
            .and_then(|o| crate::recurrence::expand_bounded(&o, &f.href, &f.etag, window, true))
        {
            Ok(x) => {
                spent += x.steps;
                x.events
            }
            Err(e) => {
                if matches!(e, IcalError::TooCostly(_)) {
                    spent += MAX_STEPS;
                }
                tracing::warn!(error = %e, "skipping an unreadable calendar object");
                continue;
            }
        };
        let tz = zone.unwrap_or(Tz::UTC);
        for e in events {
            if e.transparency() == Transparency::Transparent || e.status() == EventStatus::Cancelled
            {
                continue;
            }
            let bound = |t: Option<&pb::EventTime>| {
                t.and_then(|t| calbridge::time::parse_event_time(t).ok())
                    .map(|b| calbridge::time::boundary_utc(b, Some(tz)))
            };
            let (Some(s), Some(en)) = (bound(e.start.as_ref()), bound(e.end.as_ref())) else {
                continue;
            };
            let status = if e.status() == EventStatus::Tentative {
                BusyStatus::Tentative
            } else {
                BusyStatus::Busy
            };
            if let Some((s, en)) = clip(s, en, window) {
                out.push(interval(s, en, status, calendar_id));
            }
        }
    }
    Ok(out)
}

fn clip(s: DateTime<Utc>, e: DateTime<Utc>, w: Window) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (s, e) = (s.max(w.start), e.min(w.end));
    (e > s).then_some((s, e))
}

fn interval(
    s: DateTime<Utc>,
    e: DateTime<Utc>,
    status: BusyStatus,
    calendar_id: &str,
) -> pb::BusyInterval {
    pb::BusyInterval {
        start: Some(calbridge::time::to_timestamp(s)),
        end: Some(calbridge::time::to_timestamp(e)),
        status: status as i32,
        calendar_id: calendar_id.to_string(),
    }
}

/// What a refused PUT means.
fn put_error(status: u16, body: &str) -> DavError {
    let invalid_data = [
        "valid-calendar-data",
        "valid-calendar-object-resource",
        "supported-calendar",
    ]
    .iter()
    .any(|c| body.contains(c));
    match status {
        400 | 415 | 422 => Invalid::field(
            "event",
            "the CalDAV server refused the event's iCalendar data",
        )
        .into(),
        412 | 403 | 409 if invalid_data => Invalid::field(
            "event",
            "the CalDAV server refused the event's iCalendar data",
        )
        .into(),
        403 if body.contains("no-uid-conflict") => DavError::Invalid(Invalid::field(
            "idempotency_key",
            "another event in the calendar uses this UID",
        )),
        403 => DavError::Forbidden("writing the event was refused (read-only calendar?)".into()),
        404 | 409 => DavError::NotFound("the calendar".into()),
        s => DavError::Protocol(format!("PUT answered {s}")),
    }
}

/// A calendar from a PROPFIND response, `None` for collections that are no
/// event calendars.
fn calendar_of(r: &DavResponse) -> Option<pb::Calendar> {
    let rt = r.prop(NS_DAV, "resourcetype")?;
    rt.child(NS_CALDAV, "calendar")?;
    if let Some(set) = r.prop(NS_CALDAV, "supported-calendar-component-set") {
        let has_event = set.children_named(NS_CALDAV, "comp").any(|c| {
            c.attr("name")
                .is_some_and(|n| n.eq_ignore_ascii_case("VEVENT"))
        });
        if !has_event {
            return None;
        }
    }
    let read_only = r
        .prop(NS_DAV, "current-user-privilege-set")
        .is_some_and(|p| {
            !["write", "write-content", "all"]
                .iter()
                .any(|w| p.contains(NS_DAV, w))
        });
    let name = r
        .prop_text(NS_DAV, "displayname")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            crate::client::percent_decode(
                r.href
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or(""),
            )
        });
    Some(pb::Calendar {
        calendar_id: r.href.clone(),
        name,
        read_only,
        time_zone: r
            .prop_text(NS_CALDAV, "calendar-timezone")
            .and_then(crate::zones::calendar_zone)
            .map(|z| z.name().to_string())
            .unwrap_or_default(),
        color: r
            .prop_text(NS_APPLE, "calendar-color")
            .and_then(css_color)
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// `#RRGGBB` from Apple's `#RRGGBBAA` (or `#RRGGBB`).
fn css_color(c: &str) -> Option<String> {
    let hex = c.trim().strip_prefix('#')?;
    let rgb = hex.get(..6)?;
    rgb.chars()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| format!("#{}", rgb.to_ascii_lowercase()))
}

/// A resource holding one non-recurring event, as the contract's event.
pub fn single_event(
    href: &str,
    etag: &str,
    data: &str,
    zone: Option<Tz>,
) -> Result<pb::Event, DavError> {
    let obj = parse_object(data, zone).map_err(|e: IcalError| DavError::Protocol(e.to_string()))?;
    let v = obj
        .master
        .as_ref()
        .or(obj.overrides.first())
        .ok_or_else(|| DavError::Protocol("the stored object holds no event".into()))?;
    Ok(EventParts {
        vevent: v,
        id: href.to_string(),
        etag,
        start: v.start,
        end: v.end,
        link: None,
        busy_only: false,
    }
    .build())
}

/// A busy period: start, end and how busy.
pub type BusyPeriod = (DateTime<Utc>, DateTime<Utc>, BusyStatus);

/// The most busy periods read from one free-busy answer (a year of
/// back-to-back half-hour meetings in working hours is under 5,000).
pub const MAX_BUSY_PERIODS: usize = 20_000;

/// The busy periods of a VFREEBUSY answer, at most [`MAX_BUSY_PERIODS`].
pub fn parse_free_busy(data: &str) -> Result<Vec<BusyPeriod>, IcalError> {
    use calcard::icalendar::{
        ICalendarComponentType, ICalendarParameterName, ICalendarPeriod, ICalendarProperty,
        ICalendarValue,
    };
    let ical = parse_calendar(data)?;
    let mut out = Vec::new();
    let utc = |p: &calcard::common::PartialDateTime| -> Option<DateTime<Utc>> {
        let r = p.to_date_time()?;
        let off = r.offset.map(|o| o.local_minus_utc()).unwrap_or(0);
        Some(DateTime::<Utc>::from_naive_utc_and_offset(
            r.date_time
                .checked_sub_signed(chrono::Duration::seconds(i64::from(off)))?,
            Utc,
        ))
    };
    for c in ical
        .components
        .iter()
        .filter(|c| c.component_type == ICalendarComponentType::VFreebusy)
    {
        for e in c
            .entries
            .iter()
            .filter(|e| e.name == ICalendarProperty::Freebusy)
        {
            let status = match e
                .parameter(&ICalendarParameterName::Fbtype)
                .and_then(|v| v.as_text())
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                Some("FREE") => continue,
                Some("BUSY-TENTATIVE") => BusyStatus::Tentative,
                Some("BUSY-UNAVAILABLE") => BusyStatus::OutOfOffice,
                _ => BusyStatus::Busy,
            };
            for v in &e.values {
                let (s, en) = match v {
                    ICalendarValue::Period(ICalendarPeriod::Range { start, end }) => {
                        (utc(start), utc(end))
                    }
                    ICalendarValue::Period(ICalendarPeriod::Duration { start, duration }) => {
                        let s = utc(start);
                        (
                            s,
                            s.and_then(|s| s.checked_add_signed(duration.to_time_delta()?)),
                        )
                    }
                    _ => (None, None),
                };
                if let (Some(s), Some(en)) = (s, en) {
                    if out.len() == MAX_BUSY_PERIODS {
                        return Err(IcalError::TooLarge(format!(
                            "more than {MAX_BUSY_PERIODS} busy periods"
                        )));
                    }
                    out.push((s, en, status));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::parse_multistatus;

    #[test]
    fn calendars_keep_event_collections_with_their_properties() {
        let xml = r#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:A="http://apple.com/ns/ical/">
<response><href>/1/calendars/</href><propstat><prop><resourcetype><collection/></resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/1/calendars/work/</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype><displayname>Work</displayname><A:calendar-color>#1E88E5FF</A:calendar-color>
<C:supported-calendar-component-set><C:comp name="VEVENT"/></C:supported-calendar-component-set>
<current-user-privilege-set><privilege><read/></privilege></current-user-privilege-set>
<C:calendar-timezone>BEGIN:VCALENDAR&#13;
VERSION:2.0&#13;
PRODID:x&#13;
BEGIN:VTIMEZONE&#13;
TZID:Europe/London&#13;
END:VTIMEZONE&#13;
END:VCALENDAR&#13;
</C:calendar-timezone></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/1/calendars/tasks/</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype><C:supported-calendar-component-set><C:comp name="VTODO"/></C:supported-calendar-component-set></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/1/calendars/my%20cal/</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype><current-user-privilege-set><privilege><all/></privilege></current-user-privilege-set></prop><status>HTTP/1.1 200 OK</status></propstat></response>
</multistatus>"#;
        let ms = parse_multistatus(xml).unwrap();
        let cals: Vec<pb::Calendar> = ms.responses.iter().filter_map(calendar_of).collect();
        assert_eq!(cals.len(), 2, "{cals:?}");
        assert_eq!(cals[0].calendar_id, "/1/calendars/work/");
        assert_eq!(cals[0].name, "Work");
        assert_eq!(cals[0].color, "#1e88e5");
        assert!(cals[0].read_only);
        assert_eq!(cals[0].time_zone, "Europe/London");
        assert_eq!(cals[1].name, "my cal");
        assert!(!cals[1].read_only);
    }

    #[test]
    fn a_vfreebusy_answer_gives_busy_periods() {
        let ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VFREEBUSY\r\nDTSTAMP:20260101T000000Z\r\n\
FREEBUSY:20260105T090000Z/20260105T100000Z,20260106T090000Z/PT30M\r\n\
FREEBUSY;FBTYPE=BUSY-TENTATIVE:20260107T090000Z/20260107T100000Z\r\n\
FREEBUSY;FBTYPE=FREE:20260108T090000Z/20260108T100000Z\r\nEND:VFREEBUSY\r\nEND:VCALENDAR\r\n";
        let p = parse_free_busy(ics).unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[1].1 - p[1].0, chrono::Duration::minutes(30));
        assert_eq!(p[2].2, BusyStatus::Tentative);
    }

    #[test]
    fn icloud_hosts_get_small_multiget_batches() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            multiget_batch_for(&url("https://p12-caldav.icloud.com:443/1/calendars/")),
            ICLOUD_MULTIGET_BATCH
        );
        assert_eq!(
            multiget_batch_for(&url("https://CALDAV.iCloud.com./")),
            ICLOUD_MULTIGET_BATCH
        );
        assert_eq!(
            multiget_batch_for(&url("https://evilicloud.com/")),
            MULTIGET_BATCH
        );
        assert_eq!(
            multiget_batch_for(&url("http://127.0.0.1:5232/user/")),
            MULTIGET_BATCH
        );
        const { assert!(ICLOUD_MULTIGET_BATCH <= 50 && ICLOUD_MULTIGET_BATCH >= 10) };
    }

    #[test]
    fn the_home_set_is_read_whatever_href_the_principal_answers_under() {
        let base = Url::parse("https://caldav.icloud.com/123/principal/").unwrap();
        let xml = r#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/principal/</href><propstat><prop><C:calendar-home-set><href>https://p12-caldav.icloud.com:443/123/calendars/</href></C:calendar-home-set></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        let home = home_set(&base, &parse_multistatus(xml).unwrap()).unwrap();
        assert_eq!(
            home.as_str(),
            "https://p12-caldav.icloud.com/123/calendars/"
        );
        // An answer without the property (iCloud, now and then) is no home.
        let without = r#"<multistatus xmlns="DAV:"><response><href>/123/principal/</href><propstat><prop/><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        assert_eq!(home_set(&base, &parse_multistatus(without).unwrap()), None);
    }

    #[test]
    fn server_urls_get_a_scheme_and_must_have_a_host() {
        assert_eq!(
            parse_server_url("caldav.icloud.com").unwrap().as_str(),
            "https://caldav.icloud.com/"
        );
        assert!(parse_server_url("ftp://x/").is_err());
    }
}
