//! The CLI's side of the running daemon: its addresses as the appliance
//! config gives them. Read-only views come over plain HTTP; operator
//! actions go over HTTPS with the operator token, to a daemon whose
//! certificate has the pinned fingerprint (read from its certificate file
//! on the appliance, or `KICKSTAND_FINGERPRINT`) and to no other.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use anyhow::Context as _;
use kickstand_profiles::model::Appliance;
use tokio_rustls::rustls;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, TcpConnector,
    Transport, TransportAdapter,
};

use crate::operator;
use crate::tls::{self, Fingerprint};

/// The fingerprint to pin instead of the certificate file's, for a CLI
/// that is not on the appliance.
pub(crate) const FINGERPRINT_ENV: &str = "KICKSTAND_FINGERPRINT";

/// A connection to the daemon the config describes.
#[derive(Debug)]
pub(crate) struct Daemon {
    base: String,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer …` on operator routes.
    operator_token: Option<String>,
}

impl Daemon {
    /// For read-only calls.
    pub(crate) fn new(appliance: &Appliance) -> Daemon {
        // The address the running daemon wrote at start; without one, the
        // configured port (a daemon started on port 0 writes it, too).
        let base = match std::fs::read_to_string(address_file(appliance)) {
            Ok(addr) if !addr.trim().is_empty() => format!("http://{}", addr.trim()),
            _ => format!(
                "http://{}",
                std::net::SocketAddr::new(local(appliance.server.bind), appliance.server.http_port)
            ),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Daemon {
            base,
            agent,
            operator_token: None,
        }
    }

    /// For operator actions: over HTTPS to the pinned certificate, with
    /// the operator token file's token.
    pub(crate) fn operator(appliance: &Appliance) -> anyhow::Result<Daemon> {
        let token = operator::read(&appliance.state.operator_token_file)?;
        let base = match std::fs::read_to_string(https_address_file(appliance)) {
            Ok(addr) if !addr.trim().is_empty() => format!("https://{}", addr.trim()),
            _ => format!(
                "https://{}",
                std::net::SocketAddr::new(
                    local(appliance.server.bind),
                    appliance.server.https_port
                )
            ),
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        let connector = ().chain(TcpConnector::default()).chain(PinnedTls::new(pin(appliance)?));
        Ok(Daemon {
            base,
            agent: ureq::Agent::with_parts(config, connector, DefaultResolver::default()),
            operator_token: Some(token),
        })
    }

    /// Why a request got no answer, as the operator should read it.
    fn failed(&self, e: ureq::Error) -> anyhow::Error {
        match not_pinned(&e) {
            Some(wrong) => anyhow::anyhow!("{} at {}", wrong, self.base),
            None => anyhow::Error::new(e).context(format!(
                "cannot reach the running daemon at {} (is `kickstand serve` running?)",
                self.base
            )),
        }
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.operator_token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        req.call().map_err(|e| self.failed(e))
    }

    pub(crate) fn post(
        &self,
        path: &str,
        json: Option<&serde_json::Value>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.operator_token {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        match json {
            Some(body) => req
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            None => req.send_empty(),
        }
        .map_err(|e| self.failed(e))
    }
}

/// Where `serve` writes the address its HTTP front listens on.
pub(crate) fn address_file(appliance: &Appliance) -> std::path::PathBuf {
    appliance.state_dir.join("http.addr")
}

/// Where `serve` writes the address its HTTPS front listens on.
pub(crate) fn https_address_file(appliance: &Appliance) -> std::path::PathBuf {
    appliance.state_dir.join("https.addr")
}

/// The fingerprint the operator's channel is pinned to.
fn pin(appliance: &Appliance) -> anyhow::Result<Fingerprint> {
    if let Ok(given) = std::env::var(FINGERPRINT_ENV) {
        return given
            .parse()
            .map_err(|e| anyhow::anyhow!("{FINGERPRINT_ENV}: {e}"));
    }
    let cert = tls::cert_file(appliance);
    tls::fingerprint_of(&cert).with_context(|| {
        format!(
            "the daemon's HTTPS certificate is pinned by its fingerprint, read from {} (made when `kickstand serve` first starts); elsewhere set {FINGERPRINT_ENV} to the fingerprint the appliance's console shows",
            cert.display()
        )
    })
}

/// The pin's refusal under a failed handshake (rustls wraps it, ureq wraps
/// that).
fn not_pinned(e: &ureq::Error) -> Option<&tls::NotPinned> {
    let ureq::Error::Io(io) = e else {
        return None;
    };
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.downcast_ref()
        }
        _ => None,
    }
}

/// ureq's TLS step with the [`kickstand_pin::Pinned`] verifier in place of a CA
/// store (ureq's own rustls connector takes only root certificates).
#[derive(Debug)]
struct PinnedTls(Arc<rustls::ClientConfig>);

impl PinnedTls {
    fn new(fingerprint: Fingerprint) -> PinnedTls {
        PinnedTls(Arc::new(kickstand_pin::client_config(Some(fingerprint))))
    }
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let name = rustls::pki_types::ServerName::try_from("kickstand")
            .unwrap_or_else(|_| unreachable!("a valid DNS name"));
        let mut conn = rustls::ClientConnection::new(self.0.clone(), name)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e)))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        Ok(Some(Either::B(PinnedTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: rustls::StreamOwned { conn, sock },
        })))
    }
}

/// A TLS connection to the pinned daemon, as ureq's transport.
struct PinnedTransport {
    buffers: LazyBuffers,
    stream: rustls::StreamOwned<rustls::ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedTransport")
            .field("inner", &self.stream.sock.inner())
            .finish()
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// An address the CLI can reach a daemon bound to `bind` at.
pub(crate) fn local(bind: std::net::IpAddr) -> std::net::IpAddr {
    match bind {
        std::net::IpAddr::V4(a) if a.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        other => other,
    }
}

/// The body of a response that is not a success, as an error to show.
pub(crate) fn failure(mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Error {
    let status = resp.status();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    anyhow::anyhow!("the daemon answered {status}: {}", body.trim_end())
}
