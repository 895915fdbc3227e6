//! What the Microsoft adapter's tests share: the fake Graph with one
//! application and one user, Stoplight Prism with Microsoft's OpenAPI
//! description between the adapter and the fake (`tests/src/prism.rs`,
//! shared with the end-to-end tests), the adapter served over gRPC in this
//! process, and sign-in through its consent URL and code exchange.

#![allow(dead_code)]

use calbridge::pb;
use calbridge::pb::calendar_adapter_client::CalendarAdapterClient;
use calbridge_adapter_microsoft::Config;
use calbridge_fake_graph::{Control, FakeConfig, FakeHandle};
use tonic::transport::Channel;

#[path = "../../../../tests/src/prism.rs"]
#[allow(dead_code, unreachable_pub)]
mod prism;

pub(crate) const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
pub(crate) const SECRET: &str = "fake-secret";
pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";
pub(crate) const USER: &str = "ada@contoso.example";
/// The PKCE verifier and its S256 challenge (RFC 7636, appendix B).
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(crate) const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub(crate) struct World {
    _fake: FakeHandle,
    prism: prism::Prism,
    pub(crate) control: Control,
    pub(crate) client: CalendarAdapterClient<Channel>,
    _dir: tempfile::TempDir,
}

/// The fake (its user in `zone`), Prism and the adapter.
pub(crate) async fn start_in(zone: &str) -> World {
    let fake = calbridge_fake_graph::serve(FakeConfig::default())
        .await
        .unwrap();
    let control = fake.control();
    let prism = prism::Prism::start(&format!("{}/v1.0", fake.base_url()))
        .await
        .unwrap();
    control.set_graph_url(prism.url()).await.unwrap();
    control
        .add_client(CLIENT_ID, SECRET, REDIRECT)
        .await
        .unwrap();
    control.add_user(USER, zone).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
    std::fs::write(&id, CLIENT_ID).unwrap();
    std::fs::write(&secret, SECRET).unwrap();
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), id, secret);
    config.tenant = "organizations".into();
    config.authority_url = fake.base_url();
    config.graph_base_url = prism.url().to_string();
    config.retry_base_delay_ms = 20;
    config.retry_budget_ms = 5_000;
    let bound = calbridge_runtime::bind(config.listen).await.unwrap();
    let addr = bound.addr;
    tokio::spawn(calbridge_adapter_microsoft::serve(
        bound,
        None,
        config,
        std::future::pending(),
    ));
    let client = CalendarAdapterClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    World {
        _fake: fake,
        prism,
        control,
        client,
        _dir: dir,
    }
}

impl World {
    /// Every answer of the fake, and every event body the adapter sent,
    /// fits Microsoft's OpenAPI schemas, by the fake's own check and by
    /// Prism's.
    pub(crate) async fn verify(&self) {
        let v = self.control.violations().await.unwrap();
        assert!(v.is_empty(), "schema violations: {v:#?}");
        self.prism.verify().await.unwrap();
    }

    pub(crate) async fn consent_code(&mut self, level: pb::AccessLevel) -> String {
        let url = self
            .client
            .build_authorization_url(pb::BuildAuthorizationUrlRequest {
                access_level: level as i32,
                redirect_uri: REDIRECT.into(),
                state: "state-1".into(),
                code_challenge: CHALLENGE.into(),
                login_hint: USER.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .authorization_url;
        assert!(
            url.contains("/organizations/oauth2/v2.0/authorize?"),
            "{url}"
        );
        assert!(url.contains("offline_access"), "{url}");
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let answer = browser.get(&url).send().await.unwrap();
        let location = answer.headers()["location"].to_str().unwrap().to_string();
        let back = reqwest::Url::parse(&location).unwrap();
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned());
        code.unwrap_or_else(|| panic!("no code in {location}"))
    }

    pub(crate) async fn exchange(
        &mut self,
        code: &str,
        level: pb::AccessLevel,
    ) -> Result<pb::ProviderCredentials, tonic::Status> {
        self.client
            .exchange_code(pb::ExchangeCodeRequest {
                code: code.into(),
                code_verifier: VERIFIER.into(),
                redirect_uri: REDIRECT.into(),
                access_level: level as i32,
            })
            .await
            .map(|r| r.into_inner())
    }

    pub(crate) async fn credentials(&mut self, level: pb::AccessLevel) -> pb::ProviderCredentials {
        let code = self.consent_code(level).await;
        self.exchange(&code, level).await.unwrap()
    }

    pub(crate) async fn calendars(&mut self, creds: &pb::ProviderCredentials) -> Vec<pb::Calendar> {
        self.client
            .list_calendars(pb::ListProviderCalendarsRequest {
                credentials: Some(creds.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .calendars
    }

    pub(crate) async fn primary(&mut self, creds: &pb::ProviderCredentials) -> String {
        self.calendars(creds)
            .await
            .into_iter()
            .find(|c| c.primary)
            .unwrap()
            .calendar_id
    }
}
