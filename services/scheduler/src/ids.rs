//! Typed ids: a tenant, an account, a calendar and a provider event id are
//! all strings on the wire and on disk, but never interchangeable inside the
//! scheduler. Each is its own type, so a call that passes an account id
//! where a calendar id belongs does not compile. They serialize as the plain
//! string (the store's format is unchanged) and read as `&str` where only
//! the text matters (logging, hashing, key building).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id with this text.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, owned.
            pub fn into_string(self) -> String {
                self.0
            }

            /// The text, to be replaced in place (the store seals and opens
            /// ids inside records).
            pub fn text_mut(&mut self) -> &mut String {
                &mut self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }

        impl From<&String> for $name {
            fn from(id: &String) -> Self {
                Self(id.clone())
            }
        }

        impl From<&$name> for $name {
            fn from(id: &$name) -> Self {
                id.clone()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

/// One calendar of one account: how the sync loop, its urgent set and the
/// writes in doubt name a calendar.
pub type CalendarKey = (AccountId, CalendarId);

id_type! {
    /// A tenant (calling service), as the Admin API created it.
    TenantId
}

id_type! {
    /// A connected account, as calbridge named it.
    AccountId
}

id_type! {
    /// A calendar, as its provider names it (may hold an e-mail address).
    CalendarId
}

id_type! {
    /// An event (or one instance of a series), as its provider names it.
    EventId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_their_text_and_compare_with_it() {
        let a = AccountId::new("acc-1");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"acc-1\"");
        let back: AccountId = serde_json::from_str("\"acc-1\"").unwrap();
        assert_eq!(back, a);
        assert_eq!(a, "acc-1");
        assert_eq!(a.len(), 5);
        assert_eq!(format!("{a}"), "acc-1");
        let set: std::collections::HashSet<CalendarId> = [CalendarId::new("c")].into();
        assert!(set.contains("c"));
    }
}
