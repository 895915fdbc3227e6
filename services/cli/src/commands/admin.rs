//! `calbridge admin`: tenants, API keys and master-key rotation,
//! authenticated with the operator's admin token.

use anyhow::{bail, Context, Result};
use calbridge::pb;
use serde_json::json;

use super::Ctx;
use crate::cli::{AdminCommand, AdminSubcommand, AdminToken};
use crate::client;
use crate::error::{Api, RpcResultExt};
use crate::output::{self, tenant_json};

/// The admin token: `--admin-token`, else the first line of the token file.
fn resolve_token(t: &AdminToken) -> Result<String> {
    if let Some(token) = t.admin_token.as_deref().map(str::trim) {
        if !token.is_empty() {
            return Ok(token.to_string());
        }
    }
    let path = &t.admin_token_file;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no admin token: {} does not exist; pass --admin-token (CALBRIDGE_ADMIN_TOKEN) or --admin-token-file, or start the stack with `calbridge up`",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("--admin-token-file: reading {}", path.display()))
        }
    };
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        bail!("--admin-token-file: {} is empty", path.display());
    }
    Ok(token.to_string())
}

pub(super) async fn run(ctx: &Ctx, cmd: AdminCommand) -> Result<()> {
    let token = resolve_token(&cmd.token)?;
    let mut admin = client::admin(&ctx.global.server, &token).await?;
    let out = ctx.out;
    match cmd.command {
        AdminSubcommand::CreateTenant { name } => {
            let t = admin
                .create_tenant(pb::CreateTenantRequest { name })
                .await
                .rpc(Api::Admin)?;
            if out.json {
                out.json(&tenant_json(&t));
            } else {
                println!("created tenant {} ({})", t.tenant_id, t.name);
                println!(
                    "next: calbridge admin create-key --tenant {} --label my-service",
                    t.tenant_id
                );
            }
        }
        AdminSubcommand::ListTenants => {
            let r = admin
                .list_tenants(pb::ListTenantsRequest {})
                .await
                .rpc(Api::Admin)?;
            if out.json {
                out.json(
                    &json!({ "tenants": r.tenants.iter().map(tenant_json).collect::<Vec<_>>() }),
                );
            } else if r.tenants.is_empty() {
                println!("no tenants yet: calbridge admin create-tenant --name NAME");
            } else {
                let mut t = output::table(["TENANT", "NAME", "CREATED"]);
                for tenant in &r.tenants {
                    t.add_row(vec![
                        tenant.tenant_id.clone(),
                        tenant.name.clone(),
                        output::ts_cell(tenant.created_at.as_ref()),
                    ]);
                }
                println!("{t}");
            }
        }
        AdminSubcommand::CreateKey { tenant, label } => {
            let r = admin
                .create_api_key(pb::CreateApiKeyRequest {
                    tenant_id: tenant,
                    label,
                })
                .await
                .rpc(Api::Admin)?;
            if out.json {
                out.json(&json!({ "key_id": r.key_id, "api_key": r.api_key }));
            } else {
                println!("created API key {} (shown only once):", r.key_id);
                println!();
                println!("  {}", r.api_key);
                println!();
                println!("use it with:");
                println!("  export CALBRIDGE_API_KEY={}", r.api_key);
            }
        }
        AdminSubcommand::RevokeKey { key_id } => {
            admin
                .revoke_api_key(pb::RevokeApiKeyRequest {
                    key_id: key_id.clone(),
                })
                .await
                .rpc(Api::Admin)?;
            if out.json {
                out.json(&json!({ "key_id": key_id, "revoked": true }));
            } else {
                println!("revoked API key {key_id}");
            }
        }
        AdminSubcommand::RotateMasterKey => {
            let r = admin
                .rotate_master_key(pb::RotateMasterKeyRequest {})
                .await
                .rpc(Api::Admin)?;
            if out.json {
                out.json(&json!({ "account_keys": r.account_keys, "rotated": r.rotated }));
            } else if r.rotated {
                println!(
                    "re-sealed {} account keys under the new master key; keep the old key until every backup of the keyring taken before now has expired",
                    r.account_keys
                );
            } else {
                println!(
                    "the master key file holds the key already in use: nothing changed ({} account keys)",
                    r.account_keys
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn an_explicit_admin_token_wins_over_the_file() {
        let t = AdminToken {
            admin_token: Some(" tok \n".into()),
            admin_token_file: PathBuf::from("/nonexistent/admin.token"),
        };
        assert_eq!(resolve_token(&t).unwrap(), "tok");
    }

    #[test]
    fn a_missing_token_file_explains_how_to_get_a_token() {
        let t = AdminToken {
            admin_token: None,
            admin_token_file: PathBuf::from("/nonexistent/admin.token"),
        };
        let e = resolve_token(&t).unwrap_err().to_string();
        assert!(
            e.contains("--admin-token") && e.contains("calbridge up"),
            "{e}"
        );
    }
}
