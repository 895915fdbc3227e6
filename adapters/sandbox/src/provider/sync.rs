//! Sync cursors (positions in a calendar's journal, see the module docs of
//! [`super`]) and the pages of a listing from scratch or of the changes
//! since a cursor.

use super::*;

/// Where a sync is in a calendar's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cursor {
    /// List from scratch.
    Start,
    /// Inside a listing from scratch taken at `head`, after unit `after`.
    Listing { head: u64, after: Option<String> },
    /// Up to date at `seq`.
    Current(u64),
    /// Inside the changes `(from, to]`, after unit `after`.
    CatchUp {
        from: u64,
        to: u64,
        after: Option<String>,
    },
}

impl Cursor {
    pub(super) fn parse(s: &str) -> Option<Cursor> {
        if s.is_empty() {
            return Some(Cursor::Start);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let key = |k: &str| -> Option<Option<String>> {
            if k.is_empty() {
                Some(None)
            } else {
                String::from_utf8(hex::decode(k).ok()?).ok().map(Some)
            }
        };
        match parts.as_slice() {
            ["s1", seq] => Some(Cursor::Current(seq.parse().ok()?)),
            ["f1", head, after] => Some(Cursor::Listing {
                head: head.parse().ok()?,
                after: key(after)?,
            }),
            ["c1", from, to, after] => Some(Cursor::CatchUp {
                from: from.parse().ok()?,
                to: to.parse().ok()?,
                after: key(after)?,
            }),
            _ => None,
        }
    }

    pub(super) fn encode(&self) -> String {
        let key = |k: &Option<String>| k.as_deref().map(hex::encode).unwrap_or_default();
        match self {
            Cursor::Start => String::new(),
            Cursor::Listing { head, after } => format!("f1:{head}:{}", key(after)),
            Cursor::Current(seq) => format!("s1:{seq}"),
            Cursor::CatchUp { from, to, after } => format!("c1:{from}:{to}:{}", key(after)),
        }
    }
}

impl Calendar {
    pub(super) fn check_cursor(&self, seq: u64) -> Result<()> {
        if seq >= self.retained_from && seq <= self.head {
            Ok(())
        } else {
            Err(ProviderError::CursorExpired)
        }
    }

    pub(super) fn sync(&self, q: &SyncQuery<'_>) -> Result<SyncEventsResponse> {
        let page = match q.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let mut resp = match Cursor::parse(q.cursor).ok_or(ProviderError::CursorExpired)? {
            Cursor::Start => self.listing_page(self.head, None, q.window, page),
            Cursor::Listing { head, after } => {
                self.check_cursor(head)?;
                self.listing_page(head, after.as_deref(), q.window, page)
            }
            Cursor::Current(seq) => {
                self.check_cursor(seq)?;
                self.changes_page(seq, self.head, None, q.window, page)
            }
            Cursor::CatchUp { from, to, after } => {
                self.check_cursor(from)?;
                self.check_cursor(to)?;
                if from > to {
                    return Err(ProviderError::CursorExpired);
                }
                self.changes_page(from, to, after.as_deref(), q.window, page)
            }
        };
        if q.busy_only {
            resp.upserted = std::mem::take(&mut resp.upserted)
                .into_iter()
                .map(calbridge::adapter::free_busy_view)
                .collect();
        }
        Ok(resp)
    }

    /// One page of the listing from scratch taken at `head`.
    pub(super) fn listing_page(
        &self,
        head: u64,
        after: Option<&str>,
        w: Window,
        page: usize,
    ) -> SyncEventsResponse {
        let zone = self.zone();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut resp = SyncEventsResponse {
            full_listing: true,
            ..Default::default()
        };
        let mut last: Option<&str> = None;
        for (key, unit) in self.units.range::<str, _>((lower, Bound::Unbounded)) {
            let events = expand(unit, zone, w);
            if events.is_empty() {
                continue;
            }
            // A unit's instances are never split across pages.
            if !resp.upserted.is_empty() && resp.upserted.len() + events.len() > page {
                resp.more = true;
                break;
            }
            resp.upserted.extend(events);
            last = Some(key);
        }
        resp.next_cursor = if resp.more {
            Cursor::Listing {
                head,
                after: last.map(str::to_string),
            }
        } else {
            Cursor::Current(head)
        }
        .encode();
        resp
    }

    /// One page of the changes in `(from, to]`.
    pub(super) fn changes_page(
        &self,
        from: u64,
        to: u64,
        after: Option<&str>,
        w: Window,
        page: usize,
    ) -> SyncEventsResponse {
        let zone = self.zone();
        // Every state a changed unit had since `from`: whatever the caller's
        // mirror holds of it is among them.
        let mut states: BTreeMap<&str, Vec<&Unit>> = BTreeMap::new();
        let mut changed: BTreeSet<&str> = BTreeSet::new();
        for e in self.journal.iter().filter(|e| e.seq > from) {
            let s = states.entry(e.key.as_str()).or_default();
            if let Some(b) = &e.before {
                s.push(b);
            }
            if e.seq <= to {
                changed.insert(e.key.as_str());
            }
        }
        let mut resp = SyncEventsResponse::default();
        let mut count = 0usize;
        let mut last: Option<&str> = None;
        for key in changed.into_iter().filter(|k| after.is_none_or(|a| *k > a)) {
            let current = self
                .units
                .get(key)
                .map(|u| expand(u, zone, w))
                .unwrap_or_default();
            let current_ids: HashSet<&str> = current
                .iter()
                .map(|e| e.provider_event_id.as_str())
                .collect();
            let mut gone: BTreeSet<String> = BTreeSet::new();
            gone.insert(key.to_string());
            for state in states.get(key).into_iter().flatten() {
                gone.extend(
                    expand(state, zone, w)
                        .into_iter()
                        .map(|e| e.provider_event_id),
                );
            }
            gone.retain(|id| !current_ids.contains(id.as_str()));
            let cost = current.len() + gone.len();
            if count > 0 && count + cost > page {
                resp.more = true;
                break;
            }
            count += cost;
            resp.upserted.extend(current);
            resp.deleted.extend(gone);
            last = Some(key);
        }
        resp.next_cursor = if resp.more {
            Cursor::CatchUp {
                from,
                to,
                after: last.map(str::to_string),
            }
        } else {
            Cursor::Current(to)
        }
        .encode();
        resp
    }
}
