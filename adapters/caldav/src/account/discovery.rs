//! Finding an account and its calendars: RFC 6764 discovery of the
//! principal and calendar home, server URLs, and the calendar list with
//! each calendar's properties (zone, ctag, sync token).

use super::*;

/// The `C:calendar-home-set` of a principal PROPFIND answer, resolved
/// against `base`. A principal may answer under another href (iCloud's
/// `/principal/`): the single response is accepted whatever its href.
pub(super) fn home_set(base: &Url, ms: &crate::client::Multistatus) -> Option<Url> {
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
            .propfind("PROPFIND.principal", &url, 0, "<D:current-user-principal/>")
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
            .propfind("PROPFIND.home-set", &principal, 0, "<C:calendar-home-set/>")
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
    /// The account's calendars that can hold events.
    pub async fn calendars(&self) -> Result<Vec<pb::Calendar>, DavError> {
        let (base, ms) = self
            .client
            .propfind("PROPFIND.calendars", &self.home, 1, CALENDAR_PROPS)
            .await?;
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
        let (_, ms) = self
            .client
            .propfind("PROPFIND.calendar", calendar, 0, &props)
            .await?;
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
}

/// A calendar from a PROPFIND response, `None` for collections that are no
/// event calendars.
pub(super) fn calendar_of(r: &DavResponse) -> Option<pb::Calendar> {
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
