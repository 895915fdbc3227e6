//! OAuth 2.0 accounts (Google, Microsoft).
//!
//! - **Begin**: a single-use `state` and a PKCE S256 verifier are made here;
//!   the verifier is sealed with a data key of its own (wrapped by the master
//!   key) and kept under the hash of the state, with a short expiry. The
//!   adapter builds the consent URL.
//! - **Complete**: the state is taken out of the store (so a second attempt
//!   with the same state finds nothing), checked for expiry, tenant and the
//!   exact redirect URI, and only then is the code exchanged.
//! - **Use**: see [`crate::accounts::usable_credentials`].

use base64::Engine;
use calbridge::pb::{self, AccessLevel, AccountStatus};
use calbridge::{ErrorKind, Invalid};
use sha2::{Digest, Sha256};

use super::{store_connected, Connected};
use crate::accounts::provider_name;
use crate::adapters::adapter_error;
use crate::clock::{now_ms, ts_ms};
use crate::crypto::{hash_hex, random_hex};
use crate::ids::{AccountId, TenantId};
use crate::providers::{names_signing_in, SignIn};
use crate::state::Shared;
use crate::store::AuthStateRecord;

/// Longest redirect URI accepted.
const MAX_REDIRECT_URI_BYTES: usize = 2048;

/// The key a pending authorisation is stored under.
pub fn state_hash(state: &str) -> String {
    hash_hex(&["oauth-state", state])
}

fn verifier_aad(state_hash: &str) -> String {
    format!("oauth-verifier\0{state_hash}")
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A new PKCE verifier: 32 random bytes, base64url (43 characters).
fn pkce_verifier() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Checks that `uri` is an absolute http(s) URL without a fragment.
fn check_redirect_uri(inv: &mut Invalid, field: &str, uri: &str) {
    if uri.len() > MAX_REDIRECT_URI_BYTES {
        inv.push(
            field,
            format!("must be at most {MAX_REDIRECT_URI_BYTES} bytes"),
        );
        return;
    }
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {
            if uri.contains('#') {
                inv.push(field, "must not contain a fragment (#)");
            } else if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
                inv.push(field, "must not contain spaces or control characters");
            }
        }
        _ => inv.push(field, "must be an absolute http:// or https:// URL"),
    }
}

/// BeginAuthorization: validates, keeps the state and sealed verifier, and
/// asks the adapter for the consent URL.
pub async fn begin(
    shared: &Shared,
    tenant: &TenantId,
    mut req: pb::BeginAuthorizationRequest,
) -> Result<pb::BeginAuthorizationResponse, ErrorKind> {
    let mut inv = Invalid::default();
    let provider = crate::providers::from_request(req.provider);
    let access_level = AccessLevel::try_from(req.access_level).unwrap_or(AccessLevel::Unspecified);
    match crate::providers::info(provider).map(|p| p.sign_in) {
        Some(SignIn::OAuth) => {}
        Some(SignIn::Password { .. }) => inv.push(
            "provider",
            "connects with a user name and password: call ConnectPasswordAccount instead",
        ),
        None => inv.push(
            "provider",
            format!("must be {}", names_signing_in(|s| s == SignIn::OAuth)),
        ),
    }
    if access_level == AccessLevel::Unspecified {
        inv.push("access_level", "must be FREE_BUSY, READ or READ_WRITE");
    }
    if req.redirect_uri.is_empty() {
        match shared.config.oauth.callback_redirect_uri() {
            Some(u) => req.redirect_uri = u,
            None => inv.push(
                "redirect_uri",
                "is required: this scheduler has no OAuth callback endpoint configured (oauth.callback_listen)",
            ),
        }
    } else {
        check_redirect_uri(&mut inv, "redirect_uri", &req.redirect_uri);
    }
    if req.login_hint.len() > calbridge::limits::MAX_EMAIL_BYTES {
        inv.push(
            "login_hint",
            format!(
                "must be at most {} bytes",
                calbridge::limits::MAX_EMAIL_BYTES
            ),
        );
    } else if req.login_hint.chars().any(char::is_control) {
        inv.push("login_hint", "must not contain control characters");
    }
    inv.into_result().map_err(ErrorKind::from)?;
    if !req.account_id.is_empty() {
        let account = crate::accounts::tenant_account(
            shared,
            tenant,
            &AccountId::from(req.account_id.as_str()),
        )?;
        if account.provider != provider {
            return Err(Invalid::field(
                "account_id",
                format!(
                    "is a {} account, not a {} one",
                    provider_name(account.provider),
                    provider_name(provider)
                ),
            )
            .into());
        }
        if account.status == AccountStatus::Revoked {
            return Err(ErrorKind::FailedPrecondition(
                "the account is revoked: connect a new account instead".into(),
            ));
        }
    }
    let caps = shared.adapters.capabilities(provider).await?;
    if !caps.oauth {
        return Err(Invalid::field(
            "provider",
            format!(
                "the {} adapter does not connect through OAuth",
                provider_name(provider)
            ),
        )
        .into());
    }

    let state = random_hex(32);
    let verifier = pkce_verifier();
    let hash = state_hash(&state);
    let response = shared
        .adapters
        .client(provider)?
        .build_authorization_url(pb::BuildAuthorizationUrlRequest {
            access_level: req.access_level,
            redirect_uri: req.redirect_uri.clone(),
            state: state.clone(),
            code_challenge: pkce_challenge(&verifier),
            login_hint: req.login_hint.clone(),
        })
        .await
        .map_err(|s| adapter_error(&s))?
        .into_inner();
    let (key, wrapped_key) = shared.vault.new_transient_key(&hash);
    let expires_ms =
        now_ms() + i64::try_from(shared.config.oauth.state_ttl_seconds).unwrap_or(600) * 1000;
    shared.store.put_auth_state(
        &hash,
        &AuthStateRecord {
            tenant_id: tenant.into(),
            provider,
            access_level,
            redirect_uri: req.redirect_uri,
            account_id: req.account_id.into(),
            wrapped_key,
            sealed_verifier: key.seal(verifier_aad(&hash).as_bytes(), verifier.as_bytes()),
            expires_ms,
        },
    )?;
    shared.store.flush().await?;
    Ok(pb::BeginAuthorizationResponse {
        authorization_url: response.authorization_url,
        state,
        expires_at: ts_ms(expires_ms),
    })
}

/// CompleteAuthorization: takes the state (once), checks it, exchanges the
/// code and stores the account. `tenant` is the caller's tenant on the gRPC
/// path, `None` on the HTTP callback (where the state names the tenant).
pub async fn complete(
    shared: &Shared,
    tenant: Option<&str>,
    state: &str,
    code: &str,
    redirect_uri: &str,
) -> Result<pb::Account, ErrorKind> {
    let mut inv = Invalid::default();
    if state.is_empty() || state.len() > 256 {
        inv.push("state", "must be the state BeginAuthorization returned");
    }
    if code.is_empty() {
        inv.push("code", "must not be empty");
    } else if code.len() > 4096 {
        inv.push("code", "must be at most 4096 bytes");
    }
    check_redirect_uri(&mut inv, "redirect_uri", redirect_uri);
    inv.into_result().map_err(ErrorKind::from)?;

    let hash = state_hash(state);
    let unknown = || {
        ErrorKind::from(Invalid::field(
            "state",
            "is unknown, expired or already used: begin the authorisation again",
        ))
    };
    // Checked before it is taken, so that a caller who merely knows the
    // state (another tenant, a wrong redirect URI) cannot use it up.
    let peeked = shared.store.auth_state(&hash)?.ok_or_else(unknown)?;
    if tenant.is_some_and(|t| t != peeked.tenant_id) || peeked.expires_ms <= now_ms() {
        return Err(unknown());
    }
    if peeked.redirect_uri != redirect_uri {
        return Err(Invalid::field(
            "redirect_uri",
            "differs from the one given to BeginAuthorization",
        )
        .into());
    }
    // Then taken: of two attempts at once, one gets it.
    let record = shared.store.take_auth_state(&hash)?.ok_or_else(unknown)?;
    shared.store.flush().await?;
    let verifier = shared
        .vault
        .open_transient_key(&hash, &record.wrapped_key)
        .ok()
        .and_then(|k| {
            k.open(verifier_aad(&hash).as_bytes(), &record.sealed_verifier)
                .ok()
        })
        .ok_or_else(|| ErrorKind::Internal("a pending authorisation cannot be opened".into()))?;
    let verifier = String::from_utf8(verifier)
        .map_err(|_| ErrorKind::Internal("a pending authorisation is damaged".into()))?;
    let credentials = shared
        .adapters
        .client(record.provider)?
        .exchange_code(pb::ExchangeCodeRequest {
            code: code.to_string(),
            code_verifier: verifier,
            redirect_uri: record.redirect_uri.clone(),
            access_level: record.access_level as i32,
        })
        .await;
    let credentials = match credentials {
        Ok(c) => c.into_inner(),
        Err(s) => {
            let e = adapter_error(&s);
            // A code the provider refuses proves nothing: anyone who saw the
            // consent URL can send one. The state goes back, so the user's
            // own redirect (with the real code) still completes it.
            if matches!(e, ErrorKind::Unauthenticated(_) | ErrorKind::Invalid(_)) {
                shared.store.put_auth_state(&hash, &record)?;
            }
            return Err(match e {
                ErrorKind::Unauthenticated(_) => ErrorKind::Unauthenticated(format!(
                    "{} refused the authorisation code (expired, already used, or not issued for this redirect URI)",
                    provider_name(record.provider)
                )),
                other => other,
            });
        }
    };
    let expected = (!record.account_id.is_empty()).then_some(record.account_id.as_str());
    store_connected(
        shared,
        &record.tenant_id,
        Connected {
            provider: record.provider,
            access_level: record.access_level,
            server_url: "",
            credentials,
            expected_account: expected,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_long_random_and_unreserved() {
        let a = pkce_verifier();
        let b = pkce_verifier();
        assert_ne!(a, b);
        assert!((43..=128).contains(&a.len()));
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn redirect_uris_must_be_absolute_without_fragment() {
        for bad in [
            "",
            "/callback",
            "ftp://x.example/cb",
            "https:///cb",
            "https://x.example/cb#frag",
            "https://x.example/c b",
        ] {
            let mut inv = Invalid::default();
            check_redirect_uri(&mut inv, "redirect_uri", bad);
            assert!(inv.into_result().is_err(), "{bad:?} accepted");
        }
        let mut inv = Invalid::default();
        check_redirect_uri(
            &mut inv,
            "redirect_uri",
            "http://127.0.0.1:8080/oauth/callback?x=1",
        );
        assert!(inv.into_result().is_ok());
    }
}
