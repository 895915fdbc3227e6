//! TLS material and clients for tests of the links' transport security: a
//! test CA that signs server and client certificates (rcgen), the files of
//! a stack whose scheduler talks to its sandbox adapter over mutual TLS,
//! and a fresh handshake that reports which certificate a server presents.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use calbridge::pb;
use calbridge_runtime::tls::ClientTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};
use rustls::pki_types::ServerName;
use tonic::transport::Channel;

use crate::{free_port, Bearer, Proc, SchedulerClient, Stack};

/// A certificate authority of a test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The certificate, DER (what a handshake shows).
    pub cert_der: Vec<u8>,
}

impl Leaf {
    /// Writes the certificate, then the key, in place (the way a
    /// rotation that is not atomic does; readers may see the new
    /// certificate with the old key for a moment).
    pub fn write(&self, cert: &Path, key: &Path) -> Result<()> {
        std::fs::write(cert, &self.cert_pem)?;
        std::fs::write(key, &self.key_pem)?;
        Ok(())
    }
}

impl TestCa {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(TestCa { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) usable by a
    /// server and a client, with serial number `serial`.
    pub fn leaf(&self, names: &[&str], serial: u64) -> Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.serial_number = Some(SerialNumber::from(serial));
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

/// The TLS files of a stack: one CA, the adapter's server certificate,
/// the scheduler's certificate (its client certificate toward adapters and
/// its public listener's), and a platform client's certificate.
pub struct Links {
    /// Where the files are.
    pub dir: tempfile::TempDir,
    /// The CA that signed them all.
    pub ca: TestCa,
    /// The CA certificate.
    pub ca_file: PathBuf,
    /// The adapter's certificate (for 127.0.0.1 and localhost).
    pub adapter_cert: PathBuf,
    /// Its key.
    pub adapter_key: PathBuf,
    /// The scheduler's certificate.
    pub scheduler_cert: PathBuf,
    /// Its key.
    pub scheduler_key: PathBuf,
    /// A platform client's certificate.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl Links {
    /// Fresh files; the adapter's certificate names `adapter_names`.
    pub fn new(adapter_names: &[&str]) -> Result<Links> {
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new("calbridge test links CA")?;
        let p = |n: &str| dir.path().join(n);
        let links = Links {
            ca_file: p("ca.crt"),
            adapter_cert: p("adapter.crt"),
            adapter_key: p("adapter.key"),
            scheduler_cert: p("scheduler.crt"),
            scheduler_key: p("scheduler.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
            ca,
            dir,
        };
        std::fs::write(&links.ca_file, links.ca.pem())?;
        links
            .ca
            .leaf(adapter_names, 1)?
            .write(&links.adapter_cert, &links.adapter_key)?;
        links
            .ca
            .leaf(&["127.0.0.1", "localhost"], 2)?
            .write(&links.scheduler_cert, &links.scheduler_key)?;
        links
            .ca
            .leaf(&["platform-client"], 3)?
            .write(&links.client_cert, &links.client_key)?;
        Ok(links)
    }

    /// An adapter's flags: its certificate, and clients must present one
    /// this CA signed.
    pub fn adapter_flags(&self) -> Vec<String> {
        [
            ("--tls-cert", &self.adapter_cert),
            ("--tls-key", &self.adapter_key),
            ("--tls-client-ca", &self.ca_file),
        ]
        .iter()
        .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
        .collect()
    }

    /// The scheduler's flags: mutual TLS toward adapters, and with
    /// `public_tls` a TLS listener that requires client certificates.
    pub fn scheduler_flags(&self, public_tls: bool) -> Vec<String> {
        let mut flags = vec![
            ("--adapter-ca", &self.ca_file),
            ("--adapter-client-cert", &self.scheduler_cert),
            ("--adapter-client-key", &self.scheduler_key),
        ];
        if public_tls {
            flags.extend([
                ("--tls-cert", &self.scheduler_cert),
                ("--tls-key", &self.scheduler_key),
                ("--tls-client-ca", &self.ca_file),
            ]);
        }
        flags
            .iter()
            .flat_map(|(f, p)| [f.to_string(), p.display().to_string()])
            .collect()
    }

    /// Client TLS trusting this CA, presenting the platform client's
    /// certificate when `identity`.
    pub fn client_tls(&self, identity: bool) -> Result<ClientTls> {
        let id = identity.then_some((self.client_cert.as_path(), self.client_key.as_path()));
        Ok(ClientTls::new(&self.ca_file, id)?)
    }
}

/// A lazily connected channel to `url` (`https://` over `tls`).
pub fn tls_channel(url: &str, tls: Option<&ClientTls>) -> Result<Channel> {
    Ok(calbridge_runtime::tls::channel(url, tls, |e| {
        e.connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
    })?)
}

/// An adapter client of `url`.
pub fn adapter_client(
    url: &str,
    tls: Option<&ClientTls>,
) -> Result<pb::calendar_adapter_client::CalendarAdapterClient<Channel>> {
    Ok(pb::calendar_adapter_client::CalendarAdapterClient::new(
        tls_channel(url, tls)?,
    ))
}

/// The DER of the certificate a server at `addr` presents to a fresh
/// handshake for `name`.
pub async fn server_certificate(addr: SocketAddr, name: &str, tls: &ClientTls) -> Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(ServerName::try_from(name.to_string())?, tcp)
        .await
        .context("TLS handshake")?;
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .context("no server certificate")?;
    Ok(certs[0].to_vec())
}

/// The sandbox adapter (mutual TLS, with the files of `links`) and the
/// scheduler calling it at `https://127.0.0.1:PORT`; with `public_tls` the
/// scheduler's own listener is TLS with client certificates too (reach it
/// with [`tls_admin`] and [`tls_client`]), plaintext otherwise (the
/// stack's own clients work).
pub async fn mtls_stack(
    links: &Links,
    public_tls: bool,
    scheduler_extra: &[String],
) -> Result<Stack> {
    let dir = tempfile::tempdir()?;
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    args.extend(links.adapter_flags());
    let sandbox = Proc::start("calbridge-adapter-sandbox", &args).await?;
    let scheduler_port = free_port();
    let mut args = vec![
        "--listen".into(),
        format!("127.0.0.1:{scheduler_port}"),
        "--data-dir".into(),
        dir.path().display().to_string(),
        "--mode".into(),
        "local".into(),
        "--adapter".into(),
        format!("sandbox=https://{}", sandbox.addr),
    ];
    args.extend(links.scheduler_flags(public_tls));
    args.extend_from_slice(scheduler_extra);
    let scheduler = Proc::start("calbridge-scheduler", &args).await?;
    Ok(Stack {
        dir,
        sandbox,
        scheduler,
        scheduler_port,
        scheduler_extra: Vec::new(),
        scheduler_env: Vec::new(),
    })
}

/// An admin client over TLS with the platform client's certificate.
pub fn tls_admin(stack: &Stack, links: &Links) -> Result<crate::AdminClient> {
    let ch = tls_channel(
        &format!("https://{}", stack.scheduler.addr),
        Some(&links.client_tls(true)?),
    )?;
    Ok(pb::admin_client::AdminClient::with_interceptor(
        ch,
        Bearer(Some(stack.admin_token())),
    ))
}

/// A scheduler client over TLS with the platform client's certificate.
pub fn tls_client(stack: &Stack, links: &Links, key: &str) -> Result<SchedulerClient> {
    let ch = tls_channel(
        &format!("https://{}", stack.scheduler.addr),
        Some(&links.client_tls(true)?),
    )?;
    Ok(pb::scheduler_client::SchedulerClient::with_interceptor(
        ch,
        Bearer(Some(key.to_string())),
    ))
}

/// Creates a tenant through `admin`; returns (tenant id, API key).
pub async fn tenant_with(admin: &mut crate::AdminClient, name: &str) -> Result<(String, String)> {
    let t = admin
        .create_tenant(pb::CreateTenantRequest { name: name.into() })
        .await?
        .into_inner();
    let k = admin
        .create_api_key(pb::CreateApiKeyRequest {
            tenant_id: t.tenant_id.clone(),
            label: "tests".into(),
        })
        .await?
        .into_inner();
    Ok((t.tenant_id, k.api_key))
}
