//! Trusting a TLS server by its certificate's SHA-256 fingerprint, as an
//! operator compares it by eye: the appliance's own HTTPS certificate (the
//! CLI pins it), a BMC's self-signed one (`tls: <fingerprint>`), and — the
//! same verifier without a pin — a server taken as it comes (`tls:
//! insecure`, PostgreSQL's `sslmode=require`). No CA, no name, no expiry
//! is checked; the handshake's signatures always are, so only the holder
//! of the certificate's key can present it.
//!
//! What it does not do: decide whom to pin (the callers' settings do).

use std::sync::Arc;

use sha2::Digest as _;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// The SHA-256 of a certificate's DER: what an operator compares and the
/// CLI pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(cert: &CertificateDer<'_>) -> Fingerprint {
        Fingerprint(sha2::Sha256::digest(cert.as_ref()).into())
    }
}

/// `AB:CD:…`, as `openssl x509 -fingerprint -sha256` and browsers show it.
impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// Hex, either case, with or without colons.
impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Fingerprint, String> {
        // The one reading of a fingerprint: a profile's `tls:` takes it too.
        kickstand_profiles::parse::sha256_fingerprint(s)
            .map(Fingerprint)
            .ok_or_else(|| {
                format!("`{s}` is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
            })
    }
}

/// The crypto provider every TLS client of Kickstand uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server certificate verifier that accepts exactly one certificate, by
/// its fingerprint: no CA, no name, no expiry to check, because the
/// operator was shown that fingerprint on the appliance itself (or on the
/// BMC). The handshake's signatures are still verified, so only the
/// holder of the key can present it. `None` accepts any certificate: a
/// BMC whose profile says `tls: insecure`.
#[derive(Debug)]
pub struct Pinned {
    fingerprint: Option<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    pub fn new(fingerprint: Option<Fingerprint>) -> Pinned {
        Pinned {
            fingerprint,
            provider: provider(),
        }
    }
}

/// Why a pinned handshake failed: the daemon showed another certificate.
#[derive(Debug)]
pub struct NotPinned {
    pub seen: Fingerprint,
    pub pinned: Fingerprint,
}

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the certificate presented has fingerprint {}, not the pinned {}: another machine may be answering at this address",
            self.seen, self.pinned
        )
    }
}

impl std::error::Error for NotPinned {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        match self.fingerprint {
            Some(pinned) if pinned != seen => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotPinned {
                    seen,
                    pinned,
                }))),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that trusts exactly the certificate with
/// `fingerprint`, or any (`None`). It sends no server name: none is
/// checked.
pub fn client_config(fingerprint: Option<Fingerprint>) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports the default TLS versions"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned::new(fingerprint)))
        .with_no_client_auth();
    config.enable_sni = false;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_back_as_shown() {
        let f = Fingerprint([0xab; 32]);
        let shown = f.to_string();
        assert_eq!(shown.len(), 32 * 3 - 1);
        assert!(shown.starts_with("AB:AB:"));
        assert_eq!(shown.parse::<Fingerprint>(), Ok(f));
        assert_eq!(shown.replace(':', "").to_lowercase().parse(), Ok(f));
        assert!("AB:CD".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
        // u8::from_str_radix takes a sign: "+a" is no pair of hex digits.
        assert!("+a".repeat(32).parse::<Fingerprint>().is_err());
    }
}
