//! The operator's channel: HTTPS beside the installers' plain HTTP. The
//! certificate is the one `server.tls_cert`/`server.tls_key` name, or a
//! self-signed one the daemon makes at first start in the state directory
//! (the key only its user can read) and reuses from then on. Nobody signs
//! it, so it is known by its SHA-256 fingerprint: logged at start, shown
//! on the console banner and by `kickstand fingerprint`; the CLI pins it
//! (`kickstand_pin`) instead of asking a CA.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
pub(crate) use kickstand_pin::{Fingerprint, NotPinned, provider};
use kickstand_profiles::model::{Appliance, BmcTls};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate the HTTPS listener presents, and where it came from.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub(crate) cert_file: PathBuf,
}

impl Identity {
    pub(crate) fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.chain[0])
    }

    /// The listener's TLS settings: ring, TLS 1.2 and 1.3, HTTP/1.1.
    pub(crate) fn server_config(self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)
            .with_context(|| {
                format!(
                    "{} and its key do not go together",
                    self.cert_file.display()
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificate file in force: the configured one, or the daemon's own.
pub(crate) fn cert_file(appliance: &Appliance) -> PathBuf {
    match &appliance.server.tls {
        Some(files) => files.cert.clone(),
        None => self_signed_files(appliance).0,
    }
}

/// `https.crt` and `https.key` beside the operator token.
fn self_signed_files(appliance: &Appliance) -> (PathBuf, PathBuf) {
    let dir = &appliance.state_dir;
    (dir.join("https.crt"), dir.join("https.key"))
}

/// The configured certificate, or the self-signed one (made now if this is
/// the first start).
pub(crate) fn load_or_create(appliance: &Appliance) -> anyhow::Result<Identity> {
    if let Some(files) = &appliance.server.tls {
        return load(&files.cert, &files.key).context("server.tls_cert / server.tls_key");
    }
    let (cert, key) = self_signed_files(appliance);
    match (cert.exists(), key.exists()) {
        (true, true) => {}
        (false, false) => create(appliance, &cert, &key)?,
        _ => anyhow::bail!(
            "only one of {} and {} exists; remove the other and restart to make a new pair",
            cert.display(),
            key.display()
        ),
    }
    load(&cert, &key)
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no PEM certificate",
        cert.display()
    );
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    Ok(Identity {
        chain,
        key: key_der,
        cert_file: cert.to_path_buf(),
    })
}

/// A self-signed certificate for the appliance's address and host name;
/// the key is written first, only its owner may read it, and never
/// replaces a file.
fn create(appliance: &Appliance, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let mut names: Vec<String> = appliance
        .server
        .address
        .iter()
        .map(|a| a.to_string())
        .collect();
    if let Some(host) = hostname() {
        names.push(host);
    }
    let pair = rcgen::KeyPair::generate().context("making the HTTPS key")?;
    let mut params = rcgen::CertificateParams::new(names.clone())
        .context("the appliance's names for its certificate")?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("Kickstand {}", names.join(" ")),
    );
    let made = params
        .self_signed(&pair)
        .context("making the HTTPS certificate")?;
    if let Some(dir) = key.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_new(key, 0o600, &pair.serialize_pem())?;
    write_new(cert, 0o644, &made.pem())?;
    tracing::info!(file = %cert.display(), "made a self-signed HTTPS certificate");
    Ok(())
}

fn write_new(path: &Path, mode: u32, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// The fingerprint of the first certificate in a PEM file.
pub(crate) fn fingerprint_of(cert: &Path) -> anyhow::Result<Fingerprint> {
    let first = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .next()
        .with_context(|| format!("{} holds no PEM certificate", cert.display()))?
        .with_context(|| format!("reading {}", cert.display()))?;
    Ok(Fingerprint::of(&first))
}

/// The TLS client settings for a Redfish BMC, as its profile's `bmc.tls`
/// says. No client certificate; SNI only where a name is checked.
pub(crate) fn bmc_client(tls: &BmcTls) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let config = match tls {
        BmcTls::Verify => {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        BmcTls::CaFile(file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(file)
                .with_context(|| format!("reading {}", file.display()))?
            {
                let cert = cert.with_context(|| format!("reading {}", file.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate of {}", file.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        BmcTls::Fingerprint(fingerprint) => {
            kickstand_pin::client_config(Some(Fingerprint(*fingerprint)))
        }
        BmcTls::Insecure => kickstand_pin::client_config(None),
    };
    Ok(Arc::new(config))
}
