//! Helpers shared by the integration tests: a fake with a registered client
//! and user, a small Calendar API client, and an HTTPS webhook receiver with
//! its own CA.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use calbridge_fake_google::{
    serve, ClientRegistration, Control, FakeConfig, FakeHandle, PagingQuirks,
};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub(crate) const USER: &str = "alice@example.com";
pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/callback";

pub(crate) fn client() -> ClientRegistration {
    ClientRegistration {
        client_id: "client-1.apps.googleusercontent.com".into(),
        client_secret: "secret-1".into(),
        redirect_uris: vec![REDIRECT.into()],
    }
}

/// Defaults for deterministic tests: no page quirks, fixed seed, responses validated.
pub(crate) fn quiet() -> FakeConfig {
    FakeConfig {
        paging: PagingQuirks::NONE,
        seed: Some(7),
        validate_responses: true,
        ..FakeConfig::default()
    }
}

pub(crate) struct Fake {
    pub handle: FakeHandle,
    pub control: Control,
    pub http: reqwest::Client,
}

pub(crate) async fn start(config: FakeConfig) -> Fake {
    let handle = serve(config).await.expect("fake starts");
    let control = handle.control();
    control.add_client(&client()).await.unwrap();
    control.add_user(USER).await.unwrap();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Fake {
        handle,
        control,
        http,
    }
}

impl Fake {
    pub(crate) fn base(&self) -> String {
        self.handle.base_url()
    }

    /// An access token for `user` with these scopes (short form).
    pub(crate) async fn token_for(&self, user: &str, scopes: &[&str]) -> String {
        self.control
            .sign_in(&client(), user, scopes)
            .await
            .unwrap()
            .access_token
    }

    pub(crate) async fn api(&self, scopes: &[&str]) -> Api {
        Api {
            base: self.base(),
            token: self.token_for(USER, scopes).await,
            http: self.http.clone(),
        }
    }

    /// Asserts that every response so far matched the discovery document.
    pub(crate) async fn assert_no_violations(&self) {
        let v = self.control.violations().await.unwrap();
        assert!(v.is_empty(), "discovery violations: {v:#?}");
    }
}

pub(crate) struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub(crate) fn reason(&self) -> &str {
        self.body["error"]["errors"][0]["reason"]
            .as_str()
            .unwrap_or_default()
    }
}

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn events_path(cal: &str) -> String {
    format!("/calendar/v3/calendars/{}/events", enc(cal))
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request completes");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("JSON body")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn get(&self, path: &str, query: &[(&str, &str)]) -> Answer {
        self.call(Method::GET, path, query, None, &[]).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, &[], Some(body), &[]).await
    }

    pub(crate) async fn insert(&self, cal: &str, event: Value) -> Value {
        let a = self.post(&events_path(cal), event).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    /// Follows `nextPageToken` to the end; returns items, page count and the sync token.
    pub(crate) async fn list_all(
        &self,
        cal: &str,
        query: &[(&str, &str)],
    ) -> (Vec<Value>, usize, String) {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut token: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(t) = &token {
                q.push(("pageToken", t.as_str()));
            }
            let a = self.get(&events_path(cal), &q).await;
            assert_eq!(a.status, 200, "{}", a.body);
            pages += 1;
            let next = a.body.get("nextPageToken").and_then(Value::as_str);
            let sync = a.body.get("nextSyncToken").and_then(Value::as_str);
            assert!(
                next.is_some() != sync.is_some(),
                "exactly one of the tokens: {}",
                a.body
            );
            items.extend(a.body["items"].as_array().unwrap().iter().cloned());
            match next {
                Some(n) => token = Some(n.to_string()),
                None => return (items, pages, sync.unwrap().to_string()),
            }
        }
    }
}

pub(crate) fn timed(summary: &str, start: &str, end: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

pub(crate) fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// HTTPS webhook receiver.

/// A CA and a leaf certificate for 127.0.0.1 signed by it.
pub(crate) struct Pki {
    pub ca_pem: String,
    pub leaf_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

pub(crate) fn pki() -> Pki {
    let t = calbridge_fake_google::dev_tls().unwrap();
    Pki {
        ca_pem: t.ca_pem,
        leaf_der: t.cert_der,
        key_der: t.key_der,
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_failures: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.handshake_failures.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// One notification as received.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub headers: HashMap<String, String>,
    pub body_len: usize,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Notification {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub(crate) fn number(&self) -> u64 {
        self.header("x-goog-message-number").parse().unwrap()
    }

    pub(crate) fn state(&self) -> &str {
        self.header("x-goog-resource-state")
    }
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Notification>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
}

pub(crate) struct Receiver {
    pub url: String,
    pub pki: Pki,
    rx: mpsc::UnboundedReceiver<Notification>,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    pub handshake_failures: Arc<AtomicUsize>,
}

async fn receive(
    State(s): State<ReceiverState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let status = s.statuses.lock().unwrap().pop_front().unwrap_or(200);
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let _ = s.tx.send(Notification {
        headers,
        body_len: body.len(),
        answered: status,
    });
    StatusCode::from_u16(status).unwrap()
}

/// Starts an HTTPS receiver on 127.0.0.1 with a fresh CA.
pub(crate) async fn receiver() -> Receiver {
    let pki = pki();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(
            pki.leaf_der.clone(),
        )],
        rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key_der.clone().into()),
    )
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let handshake_failures = Arc::new(AtomicUsize::new(0));
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        handshake_failures: handshake_failures.clone(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let statuses = Arc::new(Mutex::new(VecDeque::new()));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(ReceiverState {
            tx,
            statuses: statuses.clone(),
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url: format!("https://{addr}/hook"),
        pki,
        rx,
        statuses,
        handshake_failures,
    }
}

impl Receiver {
    /// The next deliveries are answered with these statuses (then 200).
    pub(crate) fn answer_next_with(&self, statuses: &[u16]) {
        self.statuses
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }

    /// The next notification (fails the test after 10 s).
    pub(crate) async fn next(&mut self) -> Notification {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("a notification within 10 s")
            .expect("receiver running")
    }

    /// A notification if one is already queued.
    pub(crate) fn try_next(&mut self) -> Option<Notification> {
        self.rx.try_recv().ok()
    }
}

/// Waits (bounded) until `check` holds.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
