//! The one table of providers the scheduler knows: each one's names and how
//! its accounts sign in. Everything else that differs between providers
//! (push, native free/busy, recurrence writes, page sizes) comes from the
//! adapter's `Describe` (see [`crate::adapters::Adapters::capabilities`]);
//! nothing else in the scheduler matches on a provider.

use calbridge::pb::Provider;

/// How a provider's accounts sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// A user name and (app-specific) password, through
    /// `ConnectPasswordAccount`.
    Password {
        /// True when the caller must give the server's URL (a CalDAV server
        /// of the user's choice); false when the provider's is known.
        server_url: bool,
    },
    /// OAuth 2.0 consent, through `BeginAuthorization`.
    OAuth,
}

/// What the scheduler knows of one provider.
#[derive(Debug)]
pub struct ProviderInfo {
    /// The provider.
    pub provider: Provider,
    /// Its short name in configuration and flags (`--adapter caldav=URL`).
    pub key: &'static str,
    /// Its name in messages.
    pub name: &'static str,
    /// How its accounts sign in.
    pub sign_in: SignIn,
}

/// Every provider, in the contract's order.
pub const PROVIDERS: &[ProviderInfo] = &[
    ProviderInfo {
        provider: Provider::Google,
        key: "google",
        name: "Google",
        sign_in: SignIn::OAuth,
    },
    ProviderInfo {
        provider: Provider::Microsoft,
        key: "microsoft",
        name: "Microsoft",
        sign_in: SignIn::OAuth,
    },
    ProviderInfo {
        provider: Provider::Icloud,
        key: "icloud",
        name: "iCloud",
        sign_in: SignIn::Password { server_url: false },
    },
    ProviderInfo {
        provider: Provider::Caldav,
        key: "caldav",
        name: "CalDAV",
        sign_in: SignIn::Password { server_url: true },
    },
    ProviderInfo {
        provider: Provider::Sandbox,
        key: "sandbox",
        name: "sandbox",
        sign_in: SignIn::Password { server_url: false },
    },
];

/// The entry of a provider; `None` for an unspecified one.
pub fn info(provider: Provider) -> Option<&'static ProviderInfo> {
    PROVIDERS.iter().find(|p| p.provider == provider)
}

/// The provider a request names (a `pb::Provider` number): `Unspecified`
/// for zero or a number this build does not know.
pub fn from_request(provider: i32) -> Provider {
    Provider::try_from(provider).unwrap_or(Provider::Unspecified)
}

/// The entry of a provider's short name, in any letter case.
pub fn by_key(key: &str) -> Option<&'static ProviderInfo> {
    let key = key.trim();
    PROVIDERS.iter().find(|p| p.key.eq_ignore_ascii_case(key))
}

/// The contract names (`PROVIDER_…`) of the providers that sign in as
/// `wanted` says, joined for a message: "PROVIDER_A, PROVIDER_B or
/// PROVIDER_C".
pub fn names_signing_in(wanted: impl Fn(SignIn) -> bool) -> String {
    let names: Vec<&str> = PROVIDERS
        .iter()
        .filter(|p| wanted(p.sign_in))
        .map(|p| p.provider.as_str_name())
        .collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_provider_is_in_the_table_once() {
        for p in [
            Provider::Google,
            Provider::Microsoft,
            Provider::Icloud,
            Provider::Caldav,
            Provider::Sandbox,
        ] {
            let found: Vec<_> = PROVIDERS.iter().filter(|i| i.provider == p).collect();
            assert_eq!(found.len(), 1, "{p:?}");
            assert_eq!(by_key(found[0].key).unwrap().provider, p);
            assert_eq!(
                p.as_str_name(),
                format!("PROVIDER_{}", found[0].key.to_ascii_uppercase())
            );
        }
        assert!(info(Provider::Unspecified).is_none());
        assert!(by_key("outlook").is_none());
    }

    #[test]
    fn sign_in_lists_read_as_the_messages_did() {
        assert_eq!(
            names_signing_in(|s| matches!(s, SignIn::Password { .. })),
            "PROVIDER_ICLOUD, PROVIDER_CALDAV or PROVIDER_SANDBOX"
        );
        assert_eq!(
            names_signing_in(|s| s == SignIn::OAuth),
            "PROVIDER_GOOGLE or PROVIDER_MICROSOFT"
        );
    }
}
