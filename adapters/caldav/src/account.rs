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

mod discovery;
mod free_busy;
mod reports;
mod writes;

pub use discovery::{discover, parse_server_url};
pub use free_busy::{parse_free_busy, BusyPeriod, MAX_BUSY_PERIODS};
pub use reports::single_event;

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
}

#[cfg(test)]
mod tests;
