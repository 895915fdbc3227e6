//! Sync cursors (positions in a calendar's journal and the window the last
//! listing covered, see the module docs of [`super`]) and the pages of a
//! listing from scratch or of the changes since a cursor. A cursor whose
//! listing covered a window a day or more away from the requested one
//! (the scheduler slides the window with the clock) is answered with a new
//! listing of the requested window instead of changes.

use super::*;

/// How far the requested window's start or end may drift from the window
/// the last listing covered before the calendar is listed again: instances
/// of an unchanged series entering the window are no change in the
/// journal, so only a new listing brings them.
pub(super) const WINDOW_SLACK: Duration = Duration::days(1);

/// The window a listing covered, as kept in cursors (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Covered {
    pub(super) start: i64,
    pub(super) end: i64,
}

impl Covered {
    pub(super) fn of(w: Window) -> Covered {
        Covered {
            start: w.start.timestamp(),
            end: w.end.timestamp(),
        }
    }

    /// The window itself; `None` when the numbers are no window.
    pub(super) fn window(self) -> Option<Window> {
        let start = DateTime::from_timestamp(self.start, 0)?;
        let end = DateTime::from_timestamp(self.end, 0)?;
        (start < end).then_some(Window { start, end })
    }

    /// True when `w`'s start or end is a day or more away from this one's.
    pub(super) fn moved(self, w: Window) -> bool {
        let slack = WINDOW_SLACK.num_seconds();
        (w.start.timestamp() - self.start).abs() >= slack
            || (w.end.timestamp() - self.end).abs() >= slack
    }

    fn parse(start: &str, end: &str) -> Option<Covered> {
        let c = Covered {
            start: start.parse().ok()?,
            end: end.parse().ok()?,
        };
        c.window().map(|_| c)
    }
}

/// Where a sync is in a calendar's journal. `covered` is the window of the
/// listing the cursor descends from (`None` for cursors of an older format,
/// which name none: the next sync lists again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cursor {
    /// List from scratch.
    Start,
    /// Inside a listing from scratch of window `covered` taken at `head`,
    /// after unit `after`.
    Listing {
        head: u64,
        covered: Option<Covered>,
        after: Option<String>,
    },
    /// Up to date at `seq`.
    Current { seq: u64, covered: Option<Covered> },
    /// Inside the changes `(from, to]`, after unit `after`.
    CatchUp {
        from: u64,
        to: u64,
        covered: Option<Covered>,
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
            ["s2", seq, ws, we] => Some(Cursor::Current {
                seq: seq.parse().ok()?,
                covered: Some(Covered::parse(ws, we)?),
            }),
            ["f2", head, ws, we, after] => Some(Cursor::Listing {
                head: head.parse().ok()?,
                covered: Some(Covered::parse(ws, we)?),
                after: key(after)?,
            }),
            ["c2", from, to, ws, we, after] => Some(Cursor::CatchUp {
                from: from.parse().ok()?,
                to: to.parse().ok()?,
                covered: Some(Covered::parse(ws, we)?),
                after: key(after)?,
            }),
            // Cursors handed out before windows were remembered.
            ["s1", seq] => Some(Cursor::Current {
                seq: seq.parse().ok()?,
                covered: None,
            }),
            ["f1", head, after] => Some(Cursor::Listing {
                head: head.parse().ok()?,
                covered: None,
                after: key(after)?,
            }),
            ["c1", from, to, after] => Some(Cursor::CatchUp {
                from: from.parse().ok()?,
                to: to.parse().ok()?,
                covered: None,
                after: key(after)?,
            }),
            _ => None,
        }
    }

    pub(super) fn encode(&self) -> String {
        let key = |k: &Option<String>| k.as_deref().map(hex::encode).unwrap_or_default();
        match self {
            Cursor::Start => String::new(),
            Cursor::Listing {
                head,
                covered: Some(c),
                after,
            } => format!("f2:{head}:{}:{}:{}", c.start, c.end, key(after)),
            Cursor::Listing {
                head,
                covered: None,
                after,
            } => format!("f1:{head}:{}", key(after)),
            Cursor::Current {
                seq,
                covered: Some(c),
            } => format!("s2:{seq}:{}:{}", c.start, c.end),
            Cursor::Current { seq, covered: None } => format!("s1:{seq}"),
            Cursor::CatchUp {
                from,
                to,
                covered: Some(c),
                after,
            } => format!("c2:{from}:{to}:{}:{}:{}", c.start, c.end, key(after)),
            Cursor::CatchUp {
                from,
                to,
                covered: None,
                after,
            } => format!("c1:{from}:{to}:{}", key(after)),
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
            Cursor::Listing {
                head,
                covered,
                after,
            } => {
                self.check_cursor(head)?;
                // A listing keeps the window it began with, so that its
                // pages fit together.
                let w = covered.and_then(Covered::window).unwrap_or(q.window);
                self.listing_page(head, after.as_deref(), w, page)
            }
            Cursor::Current { seq, covered } => {
                self.check_cursor(seq)?;
                match covered {
                    Some(c) if !c.moved(q.window) => {
                        self.changes_page(seq, self.head, None, covered, q.window, page)
                    }
                    _ => {
                        tracing::debug!("the sync window moved; listing the calendar again");
                        self.listing_page(self.head, None, q.window, page)
                    }
                }
            }
            Cursor::CatchUp {
                from,
                to,
                covered,
                after,
            } => {
                self.check_cursor(from)?;
                self.check_cursor(to)?;
                if from > to {
                    return Err(ProviderError::CursorExpired);
                }
                self.changes_page(from, to, after.as_deref(), covered, q.window, page)
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

    /// One page of the listing from scratch of window `w` taken at `head`.
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
        let covered = Some(Covered::of(w));
        resp.next_cursor = if resp.more {
            Cursor::Listing {
                head,
                covered,
                after: last.map(str::to_string),
            }
        } else {
            Cursor::Current { seq: head, covered }
        }
        .encode();
        resp
    }

    /// One page of the changes in `(from, to]`, shown in the request's
    /// window `w`; the cursor keeps the window the listing `covered`.
    pub(super) fn changes_page(
        &self,
        from: u64,
        to: u64,
        after: Option<&str>,
        covered: Option<Covered>,
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
            // The unit's own id names an event only while it is no series
            // (a series shows its instances, never its master).
            let named = self.units.get(key).is_some_and(|u| !u.is_series())
                || states
                    .get(key)
                    .into_iter()
                    .flatten()
                    .any(|u| !u.is_series());
            if named {
                gone.insert(key.to_string());
            }
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
                covered,
                after: last.map(str::to_string),
            }
        } else {
            Cursor::Current { seq: to, covered }
        }
        .encode();
        resp
    }
}
