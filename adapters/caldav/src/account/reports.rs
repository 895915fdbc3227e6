//! Reading a calendar's members: the depth-1 PROPFIND snapshot,
//! sync-collection, calendar-multiget in batches, the calendar-query that
//! reads every object at once, and single resources.

use super::*;

impl Account {
    /// The members of a calendar with their etags, the calendar's ctag and
    /// its zone, from one PROPFIND with depth 1.
    pub async fn snapshot(&self, calendar: &Url) -> Result<Snapshot, DavError> {
        let (base, ms) = self
            .client
            .propfind(
                "PROPFIND.members",
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
            let resp = self
                .client
                .report("REPORT.sync-collection", calendar, None, &body)
                .await?;
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
            let resp = match self
                .client
                .report("REPORT.calendar-multiget", calendar, None, &body)
                .await
            {
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
        let resp = match self
            .client
            .report("REPORT.calendar-query", calendar, Some(1), BODY)
            .await
        {
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
        match self
            .client
            .propfind("PROPFIND.etag", url, 0, "<D:getetag/>")
            .await
        {
            Ok((_, ms)) => Ok(ms
                .responses
                .first()
                .and_then(|r| r.prop_text(NS_DAV, "getetag"))
                .map(str::to_string)),
            Err(DavError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A resource holding one event, as the contract's event: a single event,
/// or a series' master with its recurrence lines.
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
    let event = EventParts {
        vevent: v,
        id: href.to_string(),
        etag,
        start: v.start,
        end: v.end,
        link: None,
        busy_only: false,
    }
    .build();
    // A series' master carries its rules.
    let recurrence = match &obj.master {
        Some(m) if m.is_recurring() => crate::ics::series_lines(data),
        _ => Vec::new(),
    };
    Ok(pb::Event {
        recurrence,
        ..event
    })
}
