use super::*;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};

/// A test CA that signs leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names` (server and client use), as PEM cert and key.
    fn leaf(&self, names: &[&str], serial: u64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// Makes the next `config()` look at the files again.
fn expire<C>(r: &Reloading<C>) {
    r.state.lock().unwrap().checked = Instant::now() - RECHECK;
}

/// A handshake over memory; the server certificate's DER on success.
async fn handshake(
    server: &ServerTls,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.config());
    let served = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        // A byte proves the handshake finished on the server's side too
        // (TLS 1.3 checks the client's certificate after the client is
        // done).
        s.write_all(b"!").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    });
    let name = ServerName::try_from(name.to_string()).unwrap();
    let client = tokio_rustls::TlsConnector::from(client)
        .connect(name, b)
        .await;
    let client = client.map_err(|e| format!("client: {e}"));
    let server_result = served.await.unwrap();
    let mut stream = client?;
    server_result.map_err(|e| format!("server: {e}"))?;
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    stream
        .read_exact(&mut byte)
        .await
        .map_err(|e| format!("client read: {e}"))?;
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(cert)
}

#[tokio::test]
async fn a_server_with_a_client_ca_answers_only_clients_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("links");
    let other = Ca::new("elsewhere");
    let (cert, key) = ca.leaf(&["adapter.test"], 1);
    let server = ServerTls::new(
        &write(dir.path(), "s.crt", &cert),
        &write(dir.path(), "s.key", &key),
        Some(&write(dir.path(), "ca.crt", &ca.cert.pem())),
    )
    .unwrap();
    assert!(server.verifies_clients());
    let ca_file = dir.path().join("ca.crt");

    let anonymous = ClientTls::new(&ca_file, None).unwrap();
    let err = handshake(&server, anonymous.config(), "adapter.test")
        .await
        .unwrap_err();
    assert!(err.contains("server"), "{err}");

    let (fc, fk) = other.leaf(&["scheduler"], 2);
    let foreign = ClientTls::new(
        &ca_file,
        Some((
            &write(dir.path(), "f.crt", &fc),
            &write(dir.path(), "f.key", &fk),
        )),
    )
    .unwrap();
    assert!(handshake(&server, foreign.config(), "adapter.test")
        .await
        .is_err());

    let (cc, ck) = ca.leaf(&["scheduler"], 3);
    let signed = ClientTls::new(
        &ca_file,
        Some((
            &write(dir.path(), "c.crt", &cc),
            &write(dir.path(), "c.key", &ck),
        )),
    )
    .unwrap();
    handshake(&server, signed.config(), "adapter.test")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_refuses_a_server_certificate_for_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("links");
    let (cert, key) = ca.leaf(&["other.test"], 1);
    let server = ServerTls::new(
        &write(dir.path(), "s.crt", &cert),
        &write(dir.path(), "s.key", &key),
        None,
    )
    .unwrap();
    let client = ClientTls::new(&write(dir.path(), "ca.crt", &ca.cert.pem()), None).unwrap();
    let err = handshake(&server, client.config(), "adapter.test")
        .await
        .unwrap_err();
    assert!(err.contains("client"), "{err}");
    handshake(&server, client.config(), "other.test")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_a_half_written_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("links");
    let (c1, k1) = ca.leaf(&["adapter.test"], 1);
    let cert = write(dir.path(), "s.crt", &c1);
    let key = write(dir.path(), "s.key", &k1);
    let server = ServerTls::new(&cert, &key, None).unwrap();
    let client = ClientTls::new(&write(dir.path(), "ca.crt", &ca.cert.pem()), None).unwrap();
    let first = handshake(&server, client.config(), "adapter.test")
        .await
        .unwrap();

    // Half-way through a rotation: the new certificate, the old key.
    let (c2, k2) = ca.leaf(&["adapter.test"], 2);
    std::fs::write(&cert, &c2).unwrap();
    expire(&server.inner);
    let during = handshake(&server, client.config(), "adapter.test")
        .await
        .unwrap();
    assert_eq!(during, first, "the previous pair stays in use");

    std::fs::write(&key, &k2).unwrap();
    // Within a second of the last look the files are not read again.
    let soon = handshake(&server, client.config(), "adapter.test")
        .await
        .unwrap();
    assert_eq!(soon, first);
    expire(&server.inner);
    let after = handshake(&server, client.config(), "adapter.test")
        .await
        .unwrap();
    assert_ne!(after, first, "the rotated certificate is served");
    assert_eq!(
        after,
        CertificateDer::from_pem_slice(c2.as_bytes())
            .unwrap()
            .to_vec()
    );
}

#[test]
fn missing_or_mismatched_files_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("links");
    let (c1, _) = ca.leaf(&["a.test"], 1);
    let (_, k2) = ca.leaf(&["a.test"], 2);
    let cert = write(dir.path(), "s.crt", &c1);
    let key = write(dir.path(), "s.key", &k2);
    let err = ServerTls::new(&cert, &key, None).unwrap_err().to_string();
    assert!(err.contains("s.crt") && err.contains("s.key"), "{err}");
    let err = ServerTls::new(&dir.path().join("nope.crt"), &key, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.crt"), "{err}");
    let err = ClientTls::new(&write(dir.path(), "empty.pem", ""), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty.pem"), "{err}");
}

#[test]
fn the_flags_need_a_certificate_and_key_together() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct P {
        #[command(flatten)]
        tls: TlsArgs,
    }
    assert!(P::try_parse_from(["p", "--tls-cert", "a.crt"]).is_err());
    assert!(P::try_parse_from(["p", "--tls-client-ca", "ca.crt"]).is_err());
    let p = P::try_parse_from(["p", "--tls-cert", "a.crt", "--tls-key", "a.key"]).unwrap();
    assert_eq!(p.tls.tls_cert.as_deref(), Some(Path::new("a.crt")));
    assert!(TlsArgs::default().server().unwrap().is_none());
    assert!(TlsArgs::default().callback_client().unwrap().is_none());
}

#[test]
fn an_https_url_without_a_ca_is_refused() {
    let err = channel("https://adapter.test:1", None, |e| e).unwrap_err();
    assert!(matches!(err, ChannelError::NoCa(_)), "{err}");
}
