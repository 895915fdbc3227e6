//! The opaque sync cursor of a calendar (the format the module docs of
//! [`super`] describe): its parts, and their encoding as one printable
//! string, with hrefs front-coded so a long listing fits.

use std::collections::BTreeSet;

use chrono_tz::Tz;
use sha2::{Digest, Sha256};

/// How change detection works for a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6578 sync-collection.
    SyncToken,
    /// getctag, full listing on change.
    Ctag,
    /// A listing from scratch whose sync token is taken at the next poll;
    /// the value is the ctag read with the listed members.
    PendingToken,
    /// A listing read whole whose sync token is taken at the next poll;
    /// the value is the digest of its hrefs and etags ([`members_digest`]).
    PendingDigest,
}

/// What a paged answer in progress is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    /// A full listing (`full_listing` pages).
    Listing,
    /// The changed members of one sync-collection.
    Changes,
}

/// The rest of a paged answer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageState {
    /// Listing or changes.
    pub kind: PageKind,
    /// The calendar's zone (floating times), read when the answer began.
    pub zone: Option<Tz>,
    /// Events made by the resources fetched so far.
    pub events: u64,
    /// Resources fetched so far.
    pub resources: u64,
    /// How many events of the first href still to fetch earlier pages
    /// already carried: a resource expanding to more events than fit in
    /// one page is split across pages, at the same place whatever it
    /// expands to (expansion is deterministic).
    pub offset: u64,
    /// Hrefs still to fetch, sorted.
    pub hrefs: Vec<String>,
    /// For a listing longer than the request's `max_carried` hrefs: the last
    /// href
    /// carried; the members after it are listed again when `hrefs` runs out.
    pub after: Option<String>,
}

/// The window a listing covered, in UTC seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Covered {
    /// Start (inclusive).
    pub start: i64,
    /// End (exclusive).
    pub end: i64,
}

/// How far a window's edge may move before the covered listing is stale:
/// one day.
pub const WINDOW_SLACK_SECONDS: i64 = 86_400;

impl Covered {
    /// The window `w` covers.
    pub fn of(w: crate::recurrence::Window) -> Covered {
        Covered {
            start: w.start.timestamp(),
            end: w.end.timestamp(),
        }
    }

    /// True when `covered` (what the cursor's listing covered) no longer
    /// stands for `requested`: either edge moved by a day or more, or the
    /// cursor does not say what it covered.
    pub fn moved(covered: Option<Covered>, requested: crate::recurrence::Window) -> bool {
        let now = Covered::of(requested);
        covered.is_none_or(|c| {
            now.start.abs_diff(c.start) >= WINDOW_SLACK_SECONDS.unsigned_abs()
                || now.end.abs_diff(c.end) >= WINDOW_SLACK_SECONDS.unsigned_abs()
        })
    }
}

/// The decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Change-detection mode.
    pub mode: Mode,
    /// The sync token or ctag.
    pub value: String,
    /// Hashes of hrefs that held a series.
    pub recurring: BTreeSet<String>,
    /// The sync window the last full listing covered, as UTC seconds
    /// `[start, end)`; `None` in cursors of the older forms, which did not
    /// say (see [`Covered::moved`]).
    pub window: Option<Covered>,
    /// A paged answer in progress.
    pub page: Option<PageState>,
}

impl Cursor {
    /// The cursor's string form.
    pub fn encode(&self) -> String {
        let page = match &self.page {
            None => "-".to_string(),
            Some(p) => format!(
                "{}{};{};{};{};{};{}",
                match p.kind {
                    PageKind::Listing => "L",
                    PageKind::Changes => "I",
                },
                match p.offset {
                    0 => String::new(),
                    n => format!("+{n}"),
                },
                p.zone.map(|z| z.name()).unwrap_or(""),
                p.events,
                p.resources,
                p.after.as_deref().map(escape).unwrap_or_default(),
                front_code(&p.hrefs)
            ),
        };
        // The window travels as one more entry of the recurring list
        // (`@<start>~<end>`), which keeps the v2 form: an adapter of the
        // older form reads it as one more hash, which costs nothing.
        let window = self.window.map(|w| format!("@{}~{}", w.start, w.end));
        let recurring: Vec<&str> = window
            .iter()
            .map(String::as_str)
            .chain(self.recurring.iter().map(String::as_str))
            .collect();
        format!(
            "v2|{}|{}|{page}|{}",
            match self.mode {
                Mode::SyncToken => "st",
                Mode::Ctag => "ct",
                Mode::PendingToken => "pt",
                Mode::PendingDigest => "pd",
            },
            recurring.join(","),
            self.value
        )
    }

    /// Reads a cursor; `None` when it is not one of ours, or is a listing
    /// in progress of the older `v1` form (which carried no hrefs).
    /// Cursors written before the window was kept carry none.
    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(5, '|');
        let version = parts.next()?;
        let mode = match parts.next()? {
            "st" => Mode::SyncToken,
            "ct" => Mode::Ctag,
            "pt" if version == "v2" => Mode::PendingToken,
            "pd" if version == "v2" => Mode::PendingDigest,
            _ => return None,
        };
        let (recurring, page) = match version {
            // v1|mode|listing offset or -|recurring|value
            "v1" => {
                if parts.next()? != "-" {
                    return None;
                }
                (parts.next()?, None)
            }
            "v2" => {
                let recurring = parts.next()?;
                let page = match parts.next()? {
                    "-" => None,
                    p => Some(decode_page(p)?),
                };
                (recurring, page)
            }
            _ => return None,
        };
        let mut window = None;
        let mut hashes = BTreeSet::new();
        for entry in recurring.split(',').filter(|h| !h.is_empty()) {
            match entry.strip_prefix('@') {
                Some(w) if window.is_none() => window = Some(decode_window(w)?),
                Some(_) => return None,
                None => {
                    hashes.insert(entry.to_string());
                }
            }
        }
        Some(Cursor {
            mode,
            value: parts.next()?.to_string(),
            recurring: hashes,
            window,
            page,
        })
    }
}

/// A covered window, `<start>~<end>` in UTC seconds; `None` when
/// malformed.
fn decode_window(w: &str) -> Option<Covered> {
    let (start, end) = w.split_once('~')?;
    Some(Covered {
        start: start.parse().ok()?,
        end: end.parse().ok()?,
    })
}

fn decode_page(p: &str) -> Option<PageState> {
    let mut f = p.splitn(6, ';');
    let first = f.next()?;
    let (kind, offset) = match first.split_once('+') {
        Some((k, n)) => (k, n.parse().ok()?),
        None => (first, 0),
    };
    let kind = match kind {
        "L" => PageKind::Listing,
        "I" => PageKind::Changes,
        _ => return None,
    };
    let zone = match f.next()? {
        "" => None,
        z => Some(z.parse::<Tz>().ok()?),
    };
    let events = f.next()?.parse().ok()?;
    let resources = f.next()?.parse().ok()?;
    let after = match f.next()? {
        "" => None,
        a => Some(unescape(a)?),
    };
    Some(PageState {
        kind,
        zone,
        events,
        resources,
        offset,
        after,
        hrefs: front_decode(f.next()?)?,
    })
}

/// Characters the cursor uses as separators (and the escape itself).
fn needs_escape(c: char) -> bool {
    matches!(c, '^' | '|' | ';' | ',') || c.is_control()
}

/// Escapes separators as `^XX` (hex of the byte); hrefs are otherwise kept
/// verbatim, so requests name them exactly as the server wrote them.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if needs_escape(c) && c.is_ascii() {
            out.push_str(&format!("^{:02X}", c as u8));
        } else if needs_escape(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("^{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'^' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const DIGITS: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Sorted hrefs as `,`-separated entries, each the lengths of the prefix
/// and of the suffix it shares with the previous href (one base-62 digit
/// each, at most 61) and the rest, escaped.
pub(super) fn front_code(hrefs: &[String]) -> String {
    let max = DIGITS.len() - 1;
    let mut out = String::new();
    let mut prev = "";
    for (i, h) in hrefs.iter().enumerate() {
        let mut p = prev
            .bytes()
            .zip(h.bytes())
            .take_while(|(a, b)| a == b)
            .count()
            .min(max);
        while !h.is_char_boundary(p) {
            p -= 1;
        }
        let mut s = prev[p..]
            .bytes()
            .rev()
            .zip(h[p..].bytes().rev())
            .take_while(|(a, b)| a == b)
            .count()
            .min(max);
        while !h.is_char_boundary(h.len() - s) {
            s -= 1;
        }
        if i > 0 {
            out.push(',');
        }
        out.push(DIGITS[p] as char);
        out.push(DIGITS[s] as char);
        out.push_str(&escape(&h[p..h.len() - s]));
        prev = h;
    }
    out
}

pub(super) fn front_decode(s: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    let digit = |b: u8| DIGITS.iter().position(|d| *d == b);
    for entry in s.split(',') {
        let p = digit(*entry.as_bytes().first()?)?;
        let n = digit(*entry.as_bytes().get(1)?)?;
        let prev = out.last().map(String::as_str).unwrap_or("");
        if p + n > prev.len() {
            return None;
        }
        let mut h = prev.get(..p)?.to_string();
        h.push_str(&unescape(entry.get(2..)?)?);
        h.push_str(prev.get(prev.len() - n..)?);
        out.push(h);
    }
    Some(out)
}

/// A short, stable hash of an href (collisions only cost a full listing).
pub fn href_hash(href: &str) -> String {
    let digest = Sha256::digest(crate::client::percent_decode(href).as_bytes());
    hex::encode(&digest[..5])
}
