//! The README's five-minute walkthrough, driven through the `calbridge` CLI
//! exactly as a person would type it, against `calbridge up`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use calbridge_e2e::{bin, dir_contains, eventually, free_port};
use chrono::{Duration as Days, Timelike, Utc};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

struct Cli {
    server: String,
    sandbox: String,
    token_file: String,
    api_key: Option<String>,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> Result<Value> {
        let mut cmd = Command::new(bin("calbridge"));
        cmd.args(args)
            .env("CALBRIDGE_SERVER", &self.server)
            .env("CALBRIDGE_SANDBOX", &self.sandbox)
            .env("CALBRIDGE_ADMIN_TOKEN_FILE", &self.token_file)
            .env_remove("CALBRIDGE_API_KEY");
        if let Some(k) = &self.api_key {
            cmd.env("CALBRIDGE_API_KEY", k);
        }
        let out = cmd.output().await?;
        if !out.status.success() {
            bail!(
                "calbridge {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("calbridge {}: not JSON: {text}", args.join(" ")))
    }
}

/// The ports of `calbridge up`'s processes a test talks to directly.
struct UpPorts {
    scheduler: u16,
    sandbox: u16,
    fake_graph: u16,
    /// Each process's metrics address, as the summary printed it.
    metrics: Vec<(String, std::net::SocketAddr)>,
}

/// The process whose summary line this is (`  scheduler    http://...`),
/// or the address of a `metrics http://ADDR/metrics` line under it.
enum SummaryLine {
    Process(String),
    Metrics(std::net::SocketAddr),
    Other,
}

fn summary_line(l: &str) -> SummaryLine {
    let t = l.trim();
    if let Some(url) = t.strip_prefix("metrics http://") {
        return match url.trim_end_matches("/metrics").parse() {
            Ok(a) => SummaryLine::Metrics(a),
            Err(_) => SummaryLine::Other,
        };
    }
    let mut words = t.split_whitespace();
    match (words.next(), words.next()) {
        (Some(name), Some(url)) if l.starts_with("  ") && url.contains("://") => {
            SummaryLine::Process(name.to_string())
        }
        _ => SummaryLine::Other,
    }
}

/// Starts `calbridge up` on fresh ports and waits for its summary (printed
/// once every process is ready); answers the child and the scheduler's,
/// sandbox's and fake Graph's ports. A port another process took between choosing and
/// binding makes `up` exit early: that try is repeated on new ports, and
/// any other early exit fails with `up`'s own words.
async fn start_up(data_dir: &Path) -> Result<(tokio::process::Child, UpPorts)> {
    let mut last_error = String::new();
    for _ in 0..3 {
        let (sp, bp, cp) = (free_port(), free_port(), free_port());
        let (gp, wp, fp, op) = (free_port(), free_port(), free_port(), free_port());
        let (mp, mwp, gfp) = (free_port(), free_port(), free_port());
        let stderr_path = data_dir.join("up.stderr");
        let mut up = Command::new(bin("calbridge"))
            .args([
                "up",
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen",
                &format!("127.0.0.1:{sp}"),
                "--sandbox-listen",
                &format!("127.0.0.1:{bp}"),
                "--caldav-listen",
                &format!("127.0.0.1:{cp}"),
                "--google-listen",
                &format!("127.0.0.1:{gp}"),
                "--google-webhook-listen",
                &format!("127.0.0.1:{wp}"),
                "--fake-google-listen",
                &format!("127.0.0.1:{fp}"),
                "--oauth-callback-listen",
                &format!("127.0.0.1:{op}"),
                "--microsoft-listen",
                &format!("127.0.0.1:{mp}"),
                "--microsoft-webhook-listen",
                &format!("127.0.0.1:{mwp}"),
                "--fake-graph-listen",
                &format!("127.0.0.1:{gfp}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?)
            .kill_on_drop(true)
            .spawn()?;
        let mut up_out = BufReader::new(up.stdout.take().expect("stdout")).lines();
        let mut metrics = Vec::new();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            let mut process = String::new();
            while let Ok(Some(l)) = up_out.next_line().await {
                if l.trim_start().starts_with("admin token") {
                    return true;
                }
                match summary_line(&l) {
                    SummaryLine::Process(p) => process = p,
                    SummaryLine::Metrics(a) => metrics.push((process.clone(), a)),
                    SummaryLine::Other => {}
                }
            }
            false
        })
        .await
        .context("calbridge up did not become ready within 60 s")?;
        if ready {
            tokio::spawn(async move { while let Ok(Some(_)) = up_out.next_line().await {} });
            let ports = UpPorts {
                scheduler: sp,
                sandbox: bp,
                fake_graph: gfp,
                metrics,
            };
            return Ok((up, ports));
        }
        let _ = up.wait().await;
        last_error = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if !last_error.contains("in use") {
            break;
        }
    }
    bail!("calbridge up exited before it was ready: {last_error}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_works_over_real_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut up, ports) = start_up(dir.path()).await?;

    let mut cli = Cli {
        server: format!("http://127.0.0.1:{}", ports.scheduler),
        sandbox: format!("http://127.0.0.1:{}", ports.sandbox),
        token_file: dir.path().join("admin.token").display().to_string(),
        api_key: None,
    };
    let password = "walkthrough-Pa55word!";
    let title = "Interview with Jordan Quillfeather";
    let outside_title = "Dentist appointment Zephyrine";
    let attendee = "jordan.quillfeather@example.org";

    // 1. A tenant and an API key.
    let tenant = cli
        .run(&["admin", "create-tenant", "--name", "acme-hr", "--json"])
        .await?;
    let tenant_id = tenant["tenant_id"]
        .as_str()
        .context("tenant id")?
        .to_string();
    let key = cli
        .run(&["admin", "create-key", "--tenant", &tenant_id, "--json"])
        .await?;
    cli.api_key = Some(key["api_key"].as_str().context("api key")?.to_string());

    // 2. Connect a sandbox account (waits for the initial sync).
    let account = cli
        .run(&[
            "accounts",
            "connect",
            "--provider",
            "sandbox",
            "--username",
            "alice@example.com",
            "--password",
            password,
            "--access",
            "read-write",
            "--json",
        ])
        .await?;
    let account_id = account["account_id"]
        .as_str()
        .context("account id")?
        .to_string();
    let cals = cli
        .run(&["calendars", "list", "--account", &account_id, "--json"])
        .await?;
    let calendar = cals["calendars"]
        .as_array()
        .context("calendars")?
        .iter()
        .find(|c| c["primary"] == true)
        .context("primary calendar")?["calendar_id"]
        .as_str()
        .context("calendar id")?
        .to_string();

    // 3. Create an event.
    let day = (Utc::now() + Days::days(2))
        .with_hour(10)
        .unwrap()
        .with_minute(0)
        .unwrap()
        .with_second(0)
        .unwrap()
        .with_nanosecond(0)
        .unwrap();
    let start = day.to_rfc3339();
    let end = (day + Days::hours(1)).to_rfc3339();
    let upsert_args = [
        "events",
        "upsert",
        "--account",
        &account_id,
        "--calendar",
        &calendar,
        "--id",
        "interview-42",
        "--title",
        title,
        "--start",
        &start,
        "--end",
        &end,
        "--attendee",
        attendee,
        "--json",
    ];
    let upsert = cli.run(&upsert_args).await?;
    assert_eq!(upsert["outcome"], "WRITE_OUTCOME_CREATED", "{upsert}");
    let again = cli.run(&upsert_args).await?;
    assert_eq!(again["outcome"], "WRITE_OUTCOME_UNCHANGED", "{again}");
    let at_provider = cli
        .run(&["sandbox", "events", "--user", "alice@example.com", "--json"])
        .await?;
    let managed: Vec<&Value> = at_provider["events"]
        .as_array()
        .context("provider events")?
        .iter()
        .filter(|e| e["client_event_id"] == "interview-42")
        .collect();
    assert_eq!(
        managed.len(),
        1,
        "the upsert made exactly one provider event"
    );

    // 4. Watch the change feed from now.
    let cursor = cli.run(&["changes", "cursor", "--json"]).await?["cursor"]
        .as_str()
        .context("cursor")?
        .to_string();
    let mut watch = Command::new(bin("calbridge"))
        .args(["changes", "watch", "--cursor", &cursor, "--json"])
        .env("CALBRIDGE_SERVER", &cli.server)
        .env(
            "CALBRIDGE_API_KEY",
            cli.api_key.as_deref().unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut watch_lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();

    // 5. Edit "outside": the user adds an event at the provider.
    let o_start = (day + Days::hours(3)).to_rfc3339();
    let o_end = (day + Days::hours(4)).to_rfc3339();
    cli.run(&[
        "sandbox",
        "put-event",
        "--user",
        "alice@example.com",
        "--title",
        outside_title,
        "--start",
        &o_start,
        "--end",
        &o_end,
        "--json",
    ])
    .await?;
    let change: Value = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = watch_lines.next_line().await {
            let v: Value = serde_json::from_str(&l).expect("watch prints JSON lines");
            if v["event"]["title"] == outside_title {
                return Some(v);
            }
        }
        None
    })
    .await
    .context("the outside edit did not arrive on the change feed")?
    .context("watch ended")?;
    assert_eq!(change["kind"], "CHANGE_KIND_EVENT_CREATED");
    drop(watch);

    // Echo suppression: our own upsert never came back as a change.
    let all = cli.run(&["changes", "list", "--json"]).await?;
    let echoes = all["changes"]
        .as_array()
        .context("changes")?
        .iter()
        .filter(|c| c["event"]["client_event_id"] == "interview-42")
        .count();
    assert_eq!(
        echoes, 0,
        "the platform's own write came back as a change: {all}"
    );

    // 6. Free/busy shows both events.
    let from = day
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .to_rfc3339();
    let to =
        (day.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc() + Days::days(1)).to_rfc3339();
    let fb = cli
        .run(&[
            "freebusy",
            "--account",
            &account_id,
            "--from",
            &from,
            "--to",
            &to,
            "--json",
        ])
        .await?;
    let busy = fb["accounts"][0]["busy"]
        .as_array()
        .context("busy")?
        .clone();
    assert_eq!(busy.len(), 2, "{fb}");
    let parse = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .to_utc()
    };
    assert_eq!(parse(&busy[0]["start"]), day);
    assert_eq!(parse(&busy[1]["end"]), day + Days::hours(4));

    // The events are listed from the mirror.
    let events = eventually(Duration::from_secs(10), "both events listed", || async {
        let v = cli
            .run(&[
                "events",
                "list",
                "--account",
                &account_id,
                "--calendar",
                &calendar,
                "--from",
                &from,
                "--to",
                &to,
                "--json",
            ])
            .await
            .ok()?;
        (v["events"].as_array()?.len() == 2).then_some(v)
    })
    .await?;
    assert!(events.to_string().contains(title));

    // The outside event, edited by its provider id: updated in place at the
    // provider, never duplicated.
    let outside_id = change["event"]["provider_event_id"]
        .as_str()
        .context("outside event id")?
        .to_string();
    let outside_version = change["event"]["version"]
        .as_str()
        .context("outside event version")?
        .to_string();
    let moved_title = format!("{outside_title} (moved)");
    let edited = cli
        .run(&[
            "events",
            "upsert",
            "--account",
            &account_id,
            "--calendar",
            &calendar,
            "--provider-id",
            &outside_id,
            "--expected-version",
            &outside_version,
            "--title",
            &moved_title,
            "--start",
            &o_start,
            "--end",
            &o_end,
            "--json",
        ])
        .await?;
    assert_eq!(edited["outcome"], "WRITE_OUTCOME_UPDATED", "{edited}");
    assert_eq!(edited["event"]["provider_event_id"], outside_id.as_str());
    let at_provider = cli
        .run(&["sandbox", "events", "--user", "alice@example.com", "--json"])
        .await?;
    let titles: Vec<&str> = at_provider["events"]
        .as_array()
        .context("provider events")?
        .iter()
        .filter_map(|e| e["title"].as_str())
        .collect();
    assert_eq!(titles.len(), 2, "{at_provider}");
    assert!(titles.contains(&moved_title.as_str()), "{at_provider}");

    // A daily series of three, then one of its instances moved by its
    // instance id.
    let s_start = day + Days::days(1);
    let series = cli
        .run(&[
            "events",
            "upsert",
            "--account",
            &account_id,
            "--calendar",
            &calendar,
            "--id",
            "daily-sync",
            "--title",
            "Daily sync",
            "--start",
            &s_start.to_rfc3339(),
            "--end",
            &(s_start + Days::minutes(15)).to_rfc3339(),
            "--recurrence",
            "RRULE:FREQ=DAILY;COUNT=3",
            "--json",
        ])
        .await?;
    assert_eq!(series["outcome"], "WRITE_OUTCOME_CREATED", "{series}");
    let series_id = series["event"]["provider_event_id"]
        .as_str()
        .context("series id")?
        .to_string();
    let (s_from, s_to) = (s_start.to_rfc3339(), (s_start + Days::days(4)).to_rfc3339());
    let list_series = || async {
        let v = cli
            .run(&[
                "events",
                "list",
                "--account",
                &account_id,
                "--calendar",
                &calendar,
                "--from",
                &s_from,
                "--to",
                &s_to,
                "--json",
            ])
            .await
            .ok()?;
        let mut instances: Vec<Value> = v["events"]
            .as_array()?
            .iter()
            .filter(|e| e["recurrence_link"]["series_event_id"] == series_id.as_str())
            .cloned()
            .collect();
        instances.sort_by_key(|e| e["start"].to_string());
        (instances.len() == 3).then_some(instances)
    };
    let instances = eventually(Duration::from_secs(10), "three instances", &list_series).await?;
    let second_start = s_start + Days::days(1) + Days::hours(2);
    let moved = cli
        .run(&[
            "events",
            "upsert",
            "--account",
            &account_id,
            "--calendar",
            &calendar,
            "--provider-id",
            instances[1]["provider_event_id"]
                .as_str()
                .context("instance id")?,
            "--expected-version",
            instances[1]["version"]
                .as_str()
                .context("instance version")?,
            "--title",
            "Daily sync (moved)",
            "--start",
            &second_start.to_rfc3339(),
            "--end",
            &(second_start + Days::minutes(15)).to_rfc3339(),
            "--json",
        ])
        .await?;
    assert_eq!(moved["outcome"], "WRITE_OUTCOME_UPDATED", "{moved}");
    let after = eventually(
        Duration::from_secs(10),
        "the moved instance listed",
        || async {
            let list = list_series().await?;
            list.iter()
                .any(|e| e["title"] == "Daily sync (moved)")
                .then_some(list)
        },
    )
    .await?;
    assert_eq!(
        after.iter().filter(|e| e["title"] == "Daily sync").count(),
        2,
        "the other instances are untouched"
    );

    // 7. Connect Google (the local fake Google) and Microsoft (the local
    // fake Graph) through the consent URL and the scheduler's callback, the
    // way a browser would.
    let google = authorize(&cli, "google").await?;
    assert_eq!(google["provider"], "PROVIDER_GOOGLE", "{google}");
    assert_eq!(google["status"], "ACCOUNT_STATUS_ACTIVE", "{google}");
    let microsoft = authorize(&cli, "microsoft").await?;
    assert_eq!(microsoft["provider"], "PROVIDER_MICROSOFT", "{microsoft}");
    assert_eq!(microsoft["status"], "ACCOUNT_STATUS_ACTIVE", "{microsoft}");
    let microsoft_id = microsoft["account_id"]
        .as_str()
        .context("microsoft account id")?;
    // The fake Graph's user has a default calendar and a read-only one.
    let cals = cli
        .run(&["calendars", "list", "--account", microsoft_id, "--json"])
        .await?;
    let mut listed: Vec<(String, bool, bool)> = cals["calendars"]
        .as_array()
        .context("calendars")?
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["primary"] == true,
                c["read_only"] == true,
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("Calendar".to_string(), true, false),
            ("United States holidays".to_string(), false, true),
        ],
        "{cals}"
    );
    // An Outlook edit reaches the mirror through Graph's change
    // notification to `up`'s webhook: with push on, the next poll is ten
    // minutes away.
    let outlook_title = "Lunch with Ysolde Marchbank";
    let (o_start, o_end) = (day + Days::hours(5), day + Days::hours(6));
    let wall = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let http = reqwest::Client::builder().no_proxy().build()?;
    let stored = http
        .post(format!(
            "http://127.0.0.1:{}/fake/v1/users/ada%40outlook.example/events",
            ports.fake_graph
        ))
        .json(&serde_json::json!({
            "subject": outlook_title,
            "start": {"dateTime": wall(o_start), "timeZone": "UTC"},
            "end": {"dateTime": wall(o_end), "timeZone": "UTC"},
        }))
        .send()
        .await?;
    assert!(stored.status().is_success(), "{}", stored.text().await?);
    let outlook_calendar = cals["calendars"]
        .as_array()
        .context("calendars")?
        .iter()
        .find(|c| c["primary"] == true)
        .context("default calendar")?["calendar_id"]
        .as_str()
        .context("calendar id")?
        .to_string();
    eventually(
        Duration::from_secs(30),
        "the Outlook event pushed to the mirror",
        || async {
            let v = cli
                .run(&[
                    "events",
                    "list",
                    "--account",
                    microsoft_id,
                    "--calendar",
                    &outlook_calendar,
                    "--from",
                    &from,
                    "--to",
                    &to,
                    "--json",
                ])
                .await
                .ok()?;
            v["events"]
                .as_array()?
                .iter()
                .any(|e| e["title"] == outlook_title)
                .then_some(())
        },
    )
    .await?;

    // 8. Every process's metrics, at the URL the summary printed: a real
    // Prometheus scrapes each, and each exposition passes promtool.
    let jobs: Vec<&str> = ports.metrics.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        jobs,
        ["scheduler", "sandbox", "caldav", "google", "microsoft"],
        "metrics URLs in the summary"
    );
    let targets: Vec<(&str, std::net::SocketAddr)> = ports
        .metrics
        .iter()
        .map(|(p, a)| (p.as_str(), *a))
        .collect();
    let prom = calbridge_e2e::prometheus::Prometheus::start(&targets).await?;
    prom.targets_up(Duration::from_secs(60)).await?;
    let scraped = prom.query("up").await?;
    assert!(
        scraped.len() == jobs.len() && scraped.iter().all(|s| s.value == 1.0),
        "{scraped:?}"
    );
    // The processes this walkthrough called have counted their calls (the
    // CalDAV adapter had none: it exposes its target_info alone).
    let served = prom
        .wait_for(
            "sum by (job) (rpc_server_duration_seconds_count)",
            |s| s.len() >= 4,
            Duration::from_secs(60),
        )
        .await?;
    for job in ["scheduler", "sandbox", "google", "microsoft"] {
        assert!(
            served
                .iter()
                .any(|s| s.labels.get("job").map(String::as_str) == Some(job) && s.value >= 1.0),
            "no calls counted by {job}: {served:?}"
        );
    }
    for (process, addr) in &ports.metrics {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await?
            .text()
            .await?;
        calbridge_e2e::prometheus::promtool_check_metrics(&text)
            .with_context(|| format!("{process}'s /metrics"))?;
        assert!(!text.contains("alice@example.com"), "{process}: {text}");
    }
    drop(prom);

    // 9. Stop everything cleanly.
    let pid = up.id().context("up pid")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await??;
    assert!(status.success(), "calbridge up exited with {status}");

    // Nothing personal or secret sits in the store in plaintext.
    assert_store_is_opaque(
        &dir.path().join("store"),
        &[password, title, outside_title, attendee, outlook_title],
    )?;
    Ok(())
}

/// Runs `calbridge accounts authorize --provider PROVIDER --wait`, opens
/// the consent URL it prints the way a browser would (the local fake
/// approves at once and redirects to the scheduler's callback page), and
/// answers the account it prints once the authorisation is complete.
async fn authorize(cli: &Cli, provider: &str) -> Result<Value> {
    let mut authorize = Command::new(bin("calbridge"))
        .args([
            "accounts",
            "authorize",
            "--provider",
            provider,
            "--wait",
            "--json",
        ])
        .env("CALBRIDGE_SERVER", &cli.server)
        .env(
            "CALBRIDGE_API_KEY",
            cli.api_key.as_deref().unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(authorize.stdout.take().context("stdout")?).lines();
    let first: Value = serde_json::from_str(&lines.next_line().await?.context("no URL")?)?;
    let url = first["authorization_url"]
        .as_str()
        .context("authorization_url")?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .no_proxy()
        .build()?;
    let page = http.get(url).send().await?.text().await?;
    assert!(page.contains("Calendar connected"), "{provider}: {page}");
    let account: Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .with_context(|| format!("{provider}: no account within 60 s"))??
            .context("no account line")?,
    )?;
    let status = authorize.wait().await?;
    assert!(
        status.success(),
        "{provider}: authorize exited with {status}"
    );
    Ok(account)
}

fn assert_store_is_opaque(store: &Path, secrets: &[&str]) -> Result<()> {
    assert!(store.is_dir(), "store directory exists");
    for s in secrets {
        assert!(
            !dir_contains(store, s.as_bytes())?,
            "{s:?} found in plaintext in the store"
        );
    }
    Ok(())
}
