//! `calbridge up`: the local stack. Starts the sandbox adapter and then the
//! scheduler as child processes on loopback, learns their ports from the one
//! JSON line each prints when ready, forwards their logs, and stops both on
//! Ctrl-C / SIGTERM or when either dies.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;

use crate::cli::{UpArgs, DEFAULT_SANDBOX, DEFAULT_SERVER};

const SANDBOX_BIN: &str = "calbridge-adapter-sandbox";
const SCHEDULER_BIN: &str = "calbridge-scheduler";
const CALDAV_BIN: &str = "calbridge-adapter-caldav";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const TAIL_LINES: usize = 20;

/// The address in a `{"event":"listening",...,"addr":"..."}` line.
fn parse_listening(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if v.get("event")?.as_str()? != "listening" {
        return None;
    }
    Some(v.get("addr")?.as_str()?.to_string())
}

/// A sibling binary of the running `calbridge`.
fn sibling(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{name} not found in {}: build every binary with `cargo build --workspace --bins`",
            dir.display()
        )
    }
}

/// The last lines a child wrote on stderr, for failure messages.
type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running child service.
struct Service {
    name: &'static str,
    child: Child,
    addr: String,
    tail: Tail,
    stderr_task: JoinHandle<()>,
}

fn forward_stderr(name: &'static str, stderr: ChildStderr, tail: Tail) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name}] {line}");
            let mut t = tail.lock().expect("tail lock");
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    })
}

impl Service {
    /// Spawns `cmd` and waits for its listening line.
    async fn start(name: &'static str, mut cmd: Command) -> Result<Service> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        let tail: Tail = Arc::default();
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_task = forward_stderr(name, stderr, tail.clone());
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();

        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => match parse_listening(&line) {
                        Some(addr) => return Some(addr),
                        None => println!("[{name}] {line}"),
                    },
                    Ok(None) | Err(_) => return None,
                }
            }
        })
        .await;
        let mut service = Service {
            name,
            child,
            addr: String::new(),
            tail,
            stderr_task,
        };
        match ready {
            Ok(Some(addr)) => {
                service.addr = addr;
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        println!("[{name}] {line}");
                    }
                });
                Ok(service)
            }
            Ok(None) => {
                let status = tokio::time::timeout(Duration::from_secs(5), service.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok);
                Err(service.failure(status).await)
            }
            Err(_) => {
                let _ = service.child.kill().await;
                Err(anyhow!(
                    "the {name} did not report that it is listening within {}s",
                    READY_TIMEOUT.as_secs()
                ))
            }
        }
    }

    /// Why the child exited before it was ready, with its last stderr lines.
    async fn failure(self, status: Option<ExitStatus>) -> anyhow::Error {
        // Let the forwarder drain what the child wrote before exiting.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stderr_task).await;
        let tail = self.tail.lock().expect("tail lock");
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "closed its output".into());
        let mut msg = format!("the {} exited before it was ready ({status})", self.name);
        if !tail.is_empty() {
            msg.push_str("; its last output:");
            for line in tail.iter() {
                msg.push_str("\n  ");
                msg.push_str(line);
            }
        }
        anyhow!(msg)
    }

    /// SIGTERM, then SIGKILL after the grace period.
    async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "the {} did not stop within {}s; killing it",
                self.name,
                STOP_GRACE.as_secs()
            );
            let _ = self.child.kill().await;
        }
    }
}

/// Starts a service unless a stop is requested first (`None`).
async fn start_or_stop(name: &'static str, cmd: Command) -> Result<Option<Service>> {
    tokio::select! {
        s = Service::start(name, cmd) => s.map(Some),
        _ = calbridge_runtime::shutdown_signal() => Ok(None),
    }
}

fn summary(
    args: &UpArgs,
    scheduler: &Service,
    sandbox: &Service,
    caldav: Option<&Service>,
) -> String {
    let server = format!("http://{}", scheduler.addr);
    let sandbox_url = format!("http://{}", sandbox.addr);
    let token_file = args.data_dir.join("admin.token");
    let mut s = String::new();
    s.push_str("calbridge is running (Ctrl-C to stop)\n\n");
    s.push_str(&format!("  scheduler    {server}\n"));
    s.push_str(&format!("  sandbox      {sandbox_url}\n"));
    if let Some(c) = caldav {
        s.push_str(&format!(
            "  caldav       http://{} (also serves iCloud)\n",
            c.addr
        ));
    }
    s.push_str(&format!("  data dir     {}\n", args.data_dir.display()));
    s.push_str(&format!("  admin token  {}\n", token_file.display()));
    s.push_str("\nnext steps, in another terminal:\n");
    if server != DEFAULT_SERVER {
        s.push_str(&format!("  export CALBRIDGE_SERVER={server}\n"));
    }
    if sandbox_url != DEFAULT_SANDBOX {
        s.push_str(&format!("  export CALBRIDGE_SANDBOX={sandbox_url}\n"));
    }
    if token_file != Path::new(".calbridge/admin.token") {
        s.push_str(&format!(
            "  export CALBRIDGE_ADMIN_TOKEN_FILE={}\n",
            token_file.display()
        ));
    }
    s.push_str("  calbridge admin create-tenant --name demo\n");
    s.push_str("  calbridge admin create-key --tenant <TENANT_ID> --label demo\n");
    s.push_str("  export CALBRIDGE_API_KEY=<KEY>\n");
    s.push_str("  calbridge accounts connect --provider sandbox --username ada@example.com --password secret\n");
    s
}

/// Runs the local stack until Ctrl-C / SIGTERM or a child's death.
pub async fn run(args: UpArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the calbridge executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
    let sandbox_bin = sibling(dir, SANDBOX_BIN)?;
    let scheduler_bin = sibling(dir, SCHEDULER_BIN)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir: creating {}", args.data_dir.display()))?;

    let mut cmd = Command::new(&sandbox_bin);
    cmd.arg("--listen").arg(&args.sandbox_listen);
    if let Some(otlp) = &args.otlp_endpoint {
        cmd.arg("--otlp-endpoint").arg(otlp);
    }
    let Some(mut sandbox) = start_or_stop("sandbox", cmd).await? else {
        return Ok(());
    };

    let mut caldav = None;
    if !args.no_caldav {
        let caldav_bin = match sibling(dir, CALDAV_BIN) {
            Ok(b) => b,
            Err(e) => {
                sandbox.stop().await;
                return Err(e);
            }
        };
        let mut cmd = Command::new(&caldav_bin);
        cmd.arg("--listen").arg(&args.caldav_listen);
        if let Some(otlp) = &args.otlp_endpoint {
            cmd.arg("--otlp-endpoint").arg(otlp);
        }
        match start_or_stop("caldav", cmd).await {
            Ok(Some(s)) => caldav = Some(s),
            Ok(None) => {
                sandbox.stop().await;
                return Ok(());
            }
            Err(e) => {
                sandbox.stop().await;
                return Err(e);
            }
        }
    }

    let mut cmd = Command::new(&scheduler_bin);
    cmd.arg("--listen")
        .arg(&args.listen)
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--mode")
        .arg("local")
        .arg("--adapter")
        .arg(format!("sandbox=http://{}", sandbox.addr));
    if let Some(c) = &caldav {
        cmd.arg("--adapter")
            .arg(format!("caldav=http://{}", c.addr))
            .arg("--adapter")
            .arg(format!("icloud=http://{}", c.addr));
    }
    if let Some(otlp) = &args.otlp_endpoint {
        cmd.arg("--otlp-endpoint").arg(otlp);
    }
    let mut scheduler = match start_or_stop("scheduler", cmd).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            if let Some(c) = caldav.as_mut() {
                c.stop().await;
            }
            sandbox.stop().await;
            return Ok(());
        }
        Err(e) => {
            if let Some(c) = caldav.as_mut() {
                c.stop().await;
            }
            sandbox.stop().await;
            return Err(e);
        }
    };

    println!("{}", summary(&args, &scheduler, &sandbox, caldav.as_ref()));

    let caldav_died = async {
        match caldav.as_mut() {
            Some(c) => c.child.wait().await,
            None => std::future::pending().await,
        }
    };
    let died = tokio::select! {
        _ = calbridge_runtime::shutdown_signal() => None,
        s = sandbox.child.wait() => Some(("sandbox", s)),
        s = scheduler.child.wait() => Some(("scheduler", s)),
        s = caldav_died => Some(("caldav adapter", s)),
    };
    eprintln!("stopping calbridge");
    scheduler.stop().await;
    if let Some(c) = caldav.as_mut() {
        c.stop().await;
    }
    sandbox.stop().await;
    match died {
        None => Ok(()),
        Some((name, status)) => {
            let status = status
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            bail!("the {name} exited unexpectedly ({status}); see its log above")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        assert_eq!(
            parse_listening(
                r#"{"event":"listening","service":"calbridge-scheduler","addr":"127.0.0.1:50051"}"#
            ),
            Some("127.0.0.1:50051".into())
        );
        assert_eq!(parse_listening("starting up"), None);
        assert_eq!(parse_listening(r#"{"event":"stopping"}"#), None);
    }

    #[test]
    fn a_missing_binary_suggests_building_the_workspace() {
        let e = sibling(Path::new("/nonexistent"), SCHEDULER_BIN).unwrap_err();
        assert!(
            e.to_string().contains("cargo build --workspace --bins"),
            "{e}"
        );
    }
}
