//! The command line: every command, option and default, as clap derive
//! definitions. Nothing here talks to a server; `commands` does.

use std::path::PathBuf;

use calbridge::pb;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// The default scheduler URL, where `calbridge up` listens.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// The default sandbox adapter URL, where `calbridge up` starts it.
pub(crate) const DEFAULT_SANDBOX: &str = "http://127.0.0.1:50061";

/// Drive a calbridge scheduler: connect calendar accounts, read and write
/// events, query free/busy and follow changes.
#[derive(Debug, Parser)]
#[command(name = "calbridge", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The scheduler's gRPC URL.
    #[arg(long, env = "CALBRIDGE_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// The tenant API key, sent as `authorization: Bearer <key>`.
    #[arg(long, env = "CALBRIDGE_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start the scheduler and the adapters (sandbox, CalDAV/iCloud, and
    /// Google and Microsoft against local fakes) locally, until Ctrl-C.
    Up(UpArgs),
    /// Tenants, API keys and the master key (operator; needs the admin token).
    Admin(AdminCommand),
    /// Connect, inspect and revoke calendar accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// List an account's calendars and choose which are synced.
    #[command(subcommand)]
    Calendars(CalendarsCommand),
    /// List, read, write and delete events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Busy intervals of one or more accounts.
    Freebusy(FreeBusyArgs),
    /// Proposed meeting times when all given accounts are free.
    Availability(AvailabilityArgs),
    /// The tenant's change feed.
    #[command(subcommand)]
    Changes(ChangesCommand),
    /// Sync state of an account, and syncing now.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Edit the sandbox provider's calendars "outside" calbridge.
    Sandbox(SandboxCommand),
}

/// Options of `calbridge up`.
#[derive(Debug, Clone, Args)]
pub(crate) struct UpArgs {
    /// Where the scheduler keeps its store and writes the admin token.
    #[arg(long, default_value = ".calbridge")]
    pub data_dir: PathBuf,
    /// The scheduler's listening address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// The sandbox adapter's listening address.
    #[arg(long, default_value = "127.0.0.1:50061")]
    pub sandbox_listen: String,
    /// The CalDAV/iCloud adapter's listening address.
    #[arg(long, default_value = "127.0.0.1:50062")]
    pub caldav_listen: String,
    /// Do not start the CalDAV/iCloud adapter.
    #[arg(long)]
    pub no_caldav: bool,
    /// The Google adapter's listening address.
    #[arg(long, default_value = "127.0.0.1:50063")]
    pub google_listen: String,
    /// The Google adapter's push webhook (HTTPS, with a development
    /// certificate generated in the data directory).
    #[arg(long, default_value = "127.0.0.1:50064")]
    pub google_webhook_listen: String,
    /// The fake Google (OAuth consent, token and Calendar API endpoints)
    /// the local Google adapter talks to.
    #[arg(long, default_value = "127.0.0.1:50065")]
    pub fake_google_listen: String,
    /// The scheduler's OAuth callback endpoint.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub oauth_callback_listen: String,
    /// Do not start the fake Google and the Google adapter.
    #[arg(long)]
    pub no_google: bool,
    /// The Microsoft adapter's listening address.
    #[arg(long, default_value = "127.0.0.1:50066")]
    pub microsoft_listen: String,
    /// The Microsoft adapter's push webhook (HTTPS, with a development
    /// certificate generated in the data directory).
    #[arg(long, default_value = "127.0.0.1:50067")]
    pub microsoft_webhook_listen: String,
    /// The fake Microsoft Graph (identity platform consent and token
    /// endpoints, Graph calendar API) the local Microsoft adapter talks to.
    #[arg(long, default_value = "127.0.0.1:50068")]
    pub fake_graph_listen: String,
    /// Do not start the fake Graph and the Microsoft adapter.
    #[arg(long)]
    pub no_microsoft: bool,
    /// OTLP/gRPC endpoint to export traces to, passed to every process.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
}

/// `calbridge admin ...`: the admin token and the subcommand.
#[derive(Debug, Args)]
pub(crate) struct AdminCommand {
    /// How to find the admin token.
    #[command(flatten)]
    pub token: AdminToken,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminSubcommand,
}

/// Where the operator's admin token comes from.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminToken {
    /// The admin token itself.
    #[arg(
        long,
        env = "CALBRIDGE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    /// A file holding the admin token (written by `calbridge up`).
    #[arg(
        long,
        env = "CALBRIDGE_ADMIN_TOKEN_FILE",
        default_value = ".calbridge/admin.token",
        global = true
    )]
    pub admin_token_file: PathBuf,
}

/// The admin subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AdminSubcommand {
    /// Create a tenant (a calling service).
    CreateTenant {
        /// A name for people.
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    ListTenants,
    /// Create an API key for a tenant; the key is shown once.
    CreateKey {
        /// The tenant id.
        #[arg(long)]
        tenant: String,
        /// Which service uses the key.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke an API key.
    RevokeKey {
        /// The key's public id.
        #[arg(long)]
        key_id: String,
    },
    /// Re-seal every account data key under the key now in the scheduler's
    /// master key file (replace the file's content first).
    RotateMasterKey,
}

/// The access level an account is connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Access {
    /// Only busy/free intervals.
    FreeBusy,
    /// Events are read and mirrored.
    Read,
    /// Events are read and may be written.
    ReadWrite,
}

impl From<Access> for pb::AccessLevel {
    fn from(a: Access) -> Self {
        match a {
            Access::FreeBusy => pb::AccessLevel::FreeBusy,
            Access::Read => pb::AccessLevel::Read,
            Access::ReadWrite => pb::AccessLevel::ReadWrite,
        }
    }
}

/// Providers connected with a user name and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PasswordProvider {
    /// calbridge's in-memory sandbox provider.
    Sandbox,
    /// Any CalDAV server (needs --server-url).
    Caldav,
    /// Apple iCloud, with an app-specific password.
    Icloud,
}

impl From<PasswordProvider> for pb::Provider {
    fn from(p: PasswordProvider) -> Self {
        match p {
            PasswordProvider::Sandbox => pb::Provider::Sandbox,
            PasswordProvider::Caldav => pb::Provider::Caldav,
            PasswordProvider::Icloud => pb::Provider::Icloud,
        }
    }
}

/// Providers connected through OAuth 2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OAuthProvider {
    /// Google Calendar.
    Google,
    /// Microsoft 365 / Outlook.
    Microsoft,
}

impl From<OAuthProvider> for pb::Provider {
    fn from(p: OAuthProvider) -> Self {
        match p {
            OAuthProvider::Google => pb::Provider::Google,
            OAuthProvider::Microsoft => pb::Provider::Microsoft,
        }
    }
}

/// The accounts subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum AccountsCommand {
    /// Connect an account with a user name and (app-specific) password.
    Connect(ConnectArgs),
    /// List the tenant's accounts.
    List,
    /// Show one account.
    Get {
        /// The account id.
        account_id: String,
    },
    /// Revoke an account and delete its mirrored data.
    Revoke {
        /// The account id.
        account_id: String,
    },
    /// Start an OAuth authorisation and print the consent URL.
    Authorize(AuthorizeArgs),
    /// Complete an OAuth authorisation with the code from the redirect.
    Complete {
        /// The state from the redirect.
        #[arg(long)]
        state: String,
        /// The authorization code from the redirect.
        #[arg(long)]
        code: String,
        /// The exact redirect URI given to `accounts authorize`.
        #[arg(long)]
        redirect_uri: String,
    },
}

/// Options of `accounts connect`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("secret").required(true).args(["password", "password_file", "password_stdin"])))]
pub(crate) struct ConnectArgs {
    /// The provider.
    #[arg(long, value_enum)]
    pub provider: PasswordProvider,
    /// The user name at the provider.
    #[arg(long)]
    pub username: String,
    /// The password (visible in the process list; prefer --password-file).
    #[arg(long)]
    pub password: Option<String>,
    /// A file holding the password.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// The CalDAV server URL (required for caldav).
    #[arg(long)]
    pub server_url: Option<String>,
    /// The access level.
    #[arg(long, value_enum, default_value = "read-write")]
    pub access: Access,
    /// Return right away instead of showing the initial sync's progress.
    #[arg(long)]
    pub no_wait: bool,
}

/// Options of `accounts authorize`.
#[derive(Debug, Args)]
pub(crate) struct AuthorizeArgs {
    /// The provider.
    #[arg(long, value_enum)]
    pub provider: OAuthProvider,
    /// The redirect URI registered with the provider. Default: the
    /// scheduler's own OAuth callback endpoint, which completes the
    /// authorisation by itself when the browser comes back.
    #[arg(long)]
    pub redirect_uri: Option<String>,
    /// The access level.
    #[arg(long, value_enum, default_value = "read-write")]
    pub access: Access,
    /// Optional login hint (e-mail).
    #[arg(long)]
    pub login_hint: Option<String>,
    /// Re-authorise this existing account.
    #[arg(long)]
    pub account: Option<String>,
    /// After printing the URL, wait until the scheduler's callback endpoint
    /// has completed the authorisation, then show the account and its
    /// initial sync.
    #[arg(long)]
    pub wait: bool,
}

/// The calendars subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CalendarsCommand {
    /// List an account's calendars.
    List {
        /// The account id.
        #[arg(long)]
        account: String,
    },
    /// Turn a calendar's sync on or off.
    #[command(group(ArgGroup::new("switch").required(true).args(["on", "off"])))]
    Sync {
        /// The account id.
        #[arg(long)]
        account: String,
        /// The calendar id.
        #[arg(long)]
        calendar: String,
        /// Sync the calendar.
        #[arg(long)]
        on: bool,
        /// Stop syncing the calendar and delete its mirror.
        #[arg(long)]
        off: bool,
    },
}

/// One event, by the caller's id or the provider's.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("event_id").required(true).args(["id", "provider_id"])))]
pub(crate) struct EventRef {
    /// The account id.
    #[arg(long)]
    pub account: String,
    /// The calendar id.
    #[arg(long)]
    pub calendar: String,
    /// The caller's own event id.
    #[arg(long)]
    pub id: Option<String>,
    /// The provider's event id.
    #[arg(long)]
    pub provider_id: Option<String>,
}

/// A time window from the command line; parsed by `timearg`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct WindowArgs {
    /// Window start: RFC3339 or YYYY-MM-DD (local midnight).
    #[arg(long)]
    pub from: Option<String>,
    /// Window end: RFC3339 or YYYY-MM-DD (local midnight).
    #[arg(long)]
    pub to: Option<String>,
}

/// The events subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// List events of a calendar overlapping a window (default: from a day ago
    /// to 30 days ahead).
    List {
        /// The account id.
        #[arg(long)]
        account: String,
        /// The calendar id.
        #[arg(long)]
        calendar: String,
        /// The window.
        #[command(flatten)]
        window: WindowArgs,
    },
    /// Show one event.
    Get(EventRef),
    /// Create or update an event keyed by your own id, or edit one by its
    /// provider id.
    Upsert(Box<UpsertArgs>),
    /// Delete an event.
    Delete {
        /// Which event.
        #[command(flatten)]
        event: EventRef,
        /// Only delete when the event still has this version.
        #[arg(long)]
        expected_version: Option<String>,
    },
}

/// Event content shared by `events upsert` and `sandbox put-event`.
#[derive(Debug, Clone, Args)]
pub(crate) struct EventFields {
    /// Title.
    #[arg(long)]
    pub title: String,
    /// Start: RFC3339, YYYY-MM-DDTHH:MM in --time-zone, or YYYY-MM-DD with --all-day.
    #[arg(long)]
    pub start: String,
    /// End (exclusive), in the same form as --start.
    #[arg(long)]
    pub end: String,
    /// IANA time zone of local times, and of the event at the provider.
    #[arg(long)]
    pub time_zone: Option<String>,
    /// An all-day event: --start and --end are dates, --end exclusive.
    #[arg(long)]
    pub all_day: bool,
}

/// Options of `events upsert`.
#[derive(Debug, Args)]
pub(crate) struct UpsertArgs {
    /// The account id.
    #[arg(long)]
    pub account: String,
    /// The calendar id.
    #[arg(long)]
    pub calendar: String,
    /// Your own id for the event: the key of the upsert. With --provider-id
    /// it is attached to that event.
    #[arg(long, required_unless_present = "provider_id")]
    pub id: Option<String>,
    /// The provider's id of an existing event to edit (one made outside
    /// calbridge, or one instance of a series): it is updated, never
    /// duplicated.
    #[arg(long)]
    pub provider_id: Option<String>,
    /// Title, times and zone.
    #[command(flatten)]
    pub fields: EventFields,
    /// Description.
    #[arg(long)]
    pub description: Option<String>,
    /// Location.
    #[arg(long)]
    pub location: Option<String>,
    /// An attendee's e-mail address (repeatable).
    #[arg(long = "attendee", value_name = "EMAIL")]
    pub attendees: Vec<String>,
    /// The event does not block time.
    #[arg(long)]
    pub transparent: bool,
    /// The event is tentative.
    #[arg(long)]
    pub tentative: bool,
    /// Only write when the event still has this version.
    #[arg(long)]
    pub expected_version: Option<String>,
    /// A recurrence line (repeatable): `RRULE:...`, `RDATE:...` or
    /// `EXDATE:...`. The event becomes a recurring series starting at
    /// --start; its instances are listed one by one and each can be edited
    /// with --provider-id.
    #[arg(long = "recurrence", value_name = "LINE")]
    pub recurrence: Vec<String>,
}

/// Options of `freebusy`.
#[derive(Debug, Args)]
pub(crate) struct FreeBusyArgs {
    /// An account id (repeatable).
    #[arg(long = "account", value_name = "ID", required = true)]
    pub accounts: Vec<String>,
    /// The window (default: now to 7 days ahead).
    #[command(flatten)]
    pub window: WindowArgs,
}

/// Options of `availability`.
#[derive(Debug, Args)]
pub(crate) struct AvailabilityArgs {
    /// An account id (repeatable); every account must be free.
    #[arg(long = "account", value_name = "ID", required = true)]
    pub accounts: Vec<String>,
    /// The meeting's duration in minutes.
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub duration: u32,
    /// The period to search (default: now to 7 days ahead).
    #[command(flatten)]
    pub window: WindowArgs,
    /// Most slots to return.
    #[arg(long, default_value_t = 20)]
    pub max_results: u32,
}

/// The changes subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ChangesCommand {
    /// Print one page of changes after a cursor, and the next cursor.
    List {
        /// Resume after this cursor; empty for the oldest retained change.
        #[arg(long, default_value = "")]
        cursor: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Follow changes live until Ctrl-C.
    Watch {
        /// Resume after this cursor; empty replays the retained log.
        #[arg(long, conflicts_with = "from_now")]
        cursor: Option<String>,
        /// Start from the newest change instead of replaying the log.
        #[arg(long)]
        from_now: bool,
    },
    /// Print the cursor of the newest change.
    Cursor,
}

/// The sync subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SyncCommand {
    /// Sync state of each calendar of an account.
    Status {
        /// The account id.
        #[arg(long)]
        account: String,
    },
    /// Make an account's calendars due for sync now.
    Now {
        /// The account id.
        #[arg(long)]
        account: String,
        /// Only this calendar.
        #[arg(long)]
        calendar: Option<String>,
    },
}

/// `calbridge sandbox ...`: the sandbox URL and the subcommand.
#[derive(Debug, Args)]
pub(crate) struct SandboxCommand {
    /// The sandbox adapter's gRPC URL.
    #[arg(long, env = "CALBRIDGE_SANDBOX", default_value = DEFAULT_SANDBOX, global = true)]
    pub sandbox: String,
    /// What to do.
    #[command(subcommand)]
    pub command: SandboxSubcommand,
}

/// The sandbox subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SandboxSubcommand {
    /// Create a sandbox user (or replace its password).
    CreateUser {
        /// The user name (an e-mail address).
        #[arg(long)]
        user: String,
        /// The password.
        #[arg(long)]
        password: String,
    },
    /// List a user's events as the provider holds them.
    Events {
        /// The user name.
        #[arg(long)]
        user: String,
        /// The calendar id (default: the primary calendar).
        #[arg(long)]
        calendar: Option<String>,
    },
    /// Create or replace an event as the user would at the provider.
    PutEvent {
        /// The user name.
        #[arg(long)]
        user: String,
        /// The calendar id (default: the primary calendar).
        #[arg(long)]
        calendar: Option<String>,
        /// The event to replace; omitted creates a new event.
        #[arg(long)]
        provider_id: Option<String>,
        /// Title, times and zone.
        #[command(flatten)]
        fields: EventFields,
        /// A recurrence rule, e.g. "FREQ=WEEKLY;COUNT=4".
        #[arg(long)]
        rrule: Option<String>,
    },
    /// Delete an event as the user would at the provider.
    RemoveEvent {
        /// The user name.
        #[arg(long)]
        user: String,
        /// The calendar id (default: the primary calendar).
        #[arg(long)]
        calendar: Option<String>,
        /// The provider id of the event.
        #[arg(long)]
        provider_id: String,
    },
    /// Make the provider reject the user's current credentials.
    Revoke {
        /// The user name.
        #[arg(long)]
        user: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn access_levels_parse_from_their_kebab_names() {
        assert_eq!(
            Access::from_str("free-busy", false).map(pb::AccessLevel::from),
            Ok(pb::AccessLevel::FreeBusy)
        );
        assert_eq!(
            Access::from_str("read", false).map(pb::AccessLevel::from),
            Ok(pb::AccessLevel::Read)
        );
        assert_eq!(
            Access::from_str("read-write", false).map(pb::AccessLevel::from),
            Ok(pb::AccessLevel::ReadWrite)
        );
        assert!(Access::from_str("write", false).is_err());
    }

    #[test]
    fn providers_parse_to_the_contract_values() {
        assert_eq!(
            PasswordProvider::from_str("sandbox", false).map(pb::Provider::from),
            Ok(pb::Provider::Sandbox)
        );
        assert_eq!(
            PasswordProvider::from_str("caldav", false).map(pb::Provider::from),
            Ok(pb::Provider::Caldav)
        );
        assert_eq!(
            PasswordProvider::from_str("icloud", false).map(pb::Provider::from),
            Ok(pb::Provider::Icloud)
        );
        assert_eq!(
            OAuthProvider::from_str("microsoft", false).map(pb::Provider::from),
            Ok(pb::Provider::Microsoft)
        );
        assert!(PasswordProvider::from_str("google", false).is_err());
    }

    #[test]
    fn connect_defaults_to_read_write_and_needs_a_password_source() {
        let cli = Cli::try_parse_from([
            "calbridge",
            "accounts",
            "connect",
            "--provider",
            "sandbox",
            "--username",
            "ada@example.com",
            "--password",
            "pw",
        ])
        .expect("parses");
        match cli.command {
            Command::Accounts(AccountsCommand::Connect(c)) => {
                assert_eq!(c.access, Access::ReadWrite)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from([
            "calbridge",
            "accounts",
            "connect",
            "--provider",
            "sandbox",
            "--username",
            "ada@example.com",
        ])
        .is_err());
    }

    #[test]
    fn global_options_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "calbridge",
            "changes",
            "cursor",
            "--json",
            "--server",
            "http://127.0.0.1:1",
        ])
        .expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.server, "http://127.0.0.1:1");
    }

    #[test]
    fn admin_token_options_follow_the_admin_subcommand() {
        let cli = Cli::try_parse_from([
            "calbridge",
            "admin",
            "list-tenants",
            "--admin-token-file",
            "/tmp/t",
        ])
        .expect("parses");
        match cli.command {
            Command::Admin(a) => {
                assert_eq!(a.token.admin_token_file, PathBuf::from("/tmp/t"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
