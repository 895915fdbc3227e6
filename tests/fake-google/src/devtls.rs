//! Development certificates for push tests: Google delivers notifications
//! only over HTTPS, and the fake trusts only the CA it is given, so a test
//! (or a local run) makes a CA and a certificate for 127.0.0.1 signed by it,
//! serves its webhook with the certificate and hands the CA to the fake.

/// A CA and a leaf certificate for `127.0.0.1` and `localhost`, as PEM.
pub struct DevTls {
    /// The CA certificate (give it to the fake as `webhook_ca_pem`).
    pub ca_pem: String,
    /// The leaf certificate (serve the webhook with it).
    pub cert_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
    /// The leaf certificate, DER (for rustls directly).
    pub cert_der: Vec<u8>,
    /// The leaf's private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

/// Makes a fresh CA and a leaf certificate signed by it.
pub fn dev_tls() -> Result<DevTls, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "calbridge development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key)?;
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])?
        .signed_by(&leaf_key, &ca, &ca_key)?;
    Ok(DevTls {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        cert_der: leaf.der().to_vec(),
        key_der: leaf_key.serialize_der(),
    })
}
