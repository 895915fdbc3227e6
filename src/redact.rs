//! Ids as logs and traces show them. Calendar ids and provider event ids
//! often carry a user's e-mail address (a Google calendar shared by
//! address, a CalDAV href under `/calendars/ada@example.com/`, a sandbox
//! calendar `ada@example.com/primary`); logs and spans must not. An id that
//! looks personal (it holds `@` or its escape `%40`) is shown as a keyed
//! hash, `~` and 16 hex digits, stable within one process (so one calendar's
//! log lines still correlate) and meaningless outside it; other ids are
//! shown as they are, cut to [`MAX_SHOWN`] bytes (ids are caller and
//! provider input: a megabyte id must not become a megabyte log line).

use std::fmt;
use std::hash::BuildHasher;
use std::sync::OnceLock;

/// The most bytes of an id shown in clear.
pub const MAX_SHOWN: usize = 96;

/// An id ready for a log line or span field (`%redact::id(&x)`).
#[derive(Debug, Clone, Copy)]
pub struct LogId<'a>(&'a str);

/// `id` as logs may show it.
pub fn id(id: &str) -> LogId<'_> {
    LogId(id)
}

/// True when `id` may carry an e-mail address.
pub fn looks_personal(id: &str) -> bool {
    id.contains('@') || id.to_ascii_lowercase().contains("%40")
}

fn key() -> &'static std::collections::hash_map::RandomState {
    static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

impl fmt::Display for LogId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if looks_personal(self.0) {
            return write!(f, "~{:016x}", key().hash_one(self.0));
        }
        let mut end = self.0.len().min(MAX_SHOWN);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        let shown: String = self.0[..end]
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        f.write_str(&shown)?;
        if end < self.0.len() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_mail_addresses_never_show_and_the_same_id_hashes_alike() {
        for personal in [
            "ada@example.com/primary",
            "/calendars/ada%40example.com/work/",
            "/calendars/ADA%40EXAMPLE.COM/",
        ] {
            let shown = id(personal).to_string();
            assert!(shown.starts_with('~') && shown.len() == 17, "{shown}");
            assert!(!shown.contains("ada") && !shown.contains("example"));
            assert_eq!(shown, id(personal).to_string());
        }
        assert_ne!(id("a@x").to_string(), id("b@x").to_string());
    }

    #[test]
    fn other_ids_show_cut_and_without_control_characters() {
        assert_eq!(id("primary").to_string(), "primary");
        assert_eq!(id("/u/cal/").to_string(), "/u/cal/");
        let long = "é".repeat(1000);
        let shown = id(&long).to_string();
        assert!(shown.len() <= MAX_SHOWN + "…".len(), "{}", shown.len());
        assert!(shown.ends_with('…'));
        assert_eq!(id("a\nb").to_string(), "a\u{fffd}b");
    }
}
