//! Real CalDAV servers (Radicale, Xandikos) started from the test venv as
//! child processes on 127.0.0.1, each with its own temporary storage, and
//! killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Radicale with htpasswd (plain) auth.
    Radicale,
    /// Xandikos without auth.
    Xandikos,
}

/// A running server.
pub(crate) struct DavServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// Which server.
    pub kind: Kind,
    /// `http://127.0.0.1:PORT/`.
    pub base: String,
    /// The calendar the tests use (an href).
    pub calendar: String,
    /// User name and password.
    pub user: (&'static str, &'static str),
}

impl Drop for DavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_bin() -> PathBuf {
    let python = std::env::var("CALBRIDGE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "CALBRIDGE_TEST_PYTHON is not set: the CalDAV adapter tests need Radicale and \
             Xandikos from the test venv; run scripts/test (or scripts/test-env and set \
             CALBRIDGE_TEST_PYTHON=target/test-env/bin/python)"
        )
    });
    PathBuf::from(python)
        .parent()
        .expect("the python path has a parent")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server and waits until it answers HTTP.
pub(crate) async fn start(kind: Kind) -> DavServer {
    let bin = venv_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = match kind {
        Kind::Radicale => {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, "user:pw\n").unwrap();
            let mut c = Command::new(bin.join("radicale"));
            c.arg("--config")
                .arg("")
                .arg("--server-hosts")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--storage-filesystem-folder")
                .arg(dir.path().join("collections"))
                .arg("--auth-type")
                .arg("htpasswd")
                .arg("--auth-htpasswd-filename")
                .arg(&htpasswd)
                .arg("--auth-htpasswd-encryption")
                .arg("plain");
            c
        }
        Kind::Xandikos => {
            let mut c = Command::new(bin.join("xandikos"));
            c.arg("serve")
                .arg("-d")
                .arg(dir.path().join("data"))
                .arg("--defaults")
                .arg("-l")
                .arg("127.0.0.1")
                .arg("-p")
                .arg(port.to_string())
                .arg("--current-user-principal")
                .arg("/user/");
            c
        }
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {kind:?} from {}: {e}", bin.display()));
    let base = format!("http://127.0.0.1:{port}/");
    let server = DavServer {
        child,
        _dir: dir,
        kind,
        base: base.clone(),
        calendar: match kind {
            Kind::Radicale => "/user/cal/".into(),
            Kind::Xandikos => "/user/calendars/calendar/".into(),
        },
        user: ("user", "pw"),
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && reqwest::get(&base).await.is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if kind == Kind::Radicale {
        let status = server
            .request("MKCALENDAR", &server.calendar, None, &[])
            .await
            .status();
        assert!(status.is_success(), "MKCALENDAR: {status}");
    }
    server
}

impl DavServer {
    /// A request by "another client", authenticated.
    pub(crate) async fn request(
        &self,
        method: &str,
        href: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let url = reqwest::Url::parse(&self.base).unwrap().join(href).unwrap();
        let mut req = reqwest::Client::new()
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url)
            .basic_auth(self.user.0, Some(self.user.1));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "text/calendar; charset=utf-8")
                .body(b.to_string());
        }
        req.send().await.unwrap()
    }

    /// PUTs an object into the test calendar as `name`.
    pub(crate) async fn put(&self, name: &str, ics: &str) {
        let href = format!("{}{name}", self.calendar);
        let status = self.request("PUT", &href, Some(ics), &[]).await.status();
        assert!(status.is_success(), "PUT {href}: {status}");
    }

    /// DELETEs `name` from the test calendar.
    pub(crate) async fn delete(&self, name: &str) {
        let href = format!("{}{name}", self.calendar);
        let status = self.request("DELETE", &href, None, &[]).await.status();
        assert!(status.is_success(), "DELETE {href}: {status}");
    }

    /// GETs an object: its status and body.
    pub(crate) async fn get(&self, href: &str) -> (u16, String) {
        let resp = self.request("GET", href, None, &[]).await;
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}
