//! How the store reaches PostgreSQL: one [`Connector`] per store, built
//! once from the settings, through which every connection goes — the
//! writer's, the reader's, the listener's and every reconnect — so all of
//! them are secured alike and fail with the same words.
//!
//! # TLS, as libpq's `sslmode` says
//! - `disable`: plain text.
//! - `prefer`: TLS when the server offers it, else plain text; nothing is
//!   checked.
//! - `require`: TLS or no connection; nothing is checked of the server
//!   (with a CA file, its chain is, as libpq does), so a warning says how
//!   to check it.
//! - `verify-ca`: the chain is checked against the CA file, not the name.
//! - `verify-full`: the chain and the host name.
//!
//! The CA file (`state.ca_file` or the URL's `sslrootcert`) is then the
//! only trust: a site's private CA is not widened to every public one.
//! Without one, `verify-*` checks against Mozilla's roots (webpki-roots,
//! already the repo proxy's), for a database with a public certificate.
//!
//! Left unsaid, the mode for a TCP host is `verify-full` when a CA file is
//! given and `require` when not. Not libpq's `prefer`: it falls back to
//! plain text, and a capture on the LAN read the build tokens off the wire
//! (the complaint that brought TLS here). Not `verify-full` either without
//! a CA: a LAN's PostgreSQL rarely has a certificate from a public CA, so
//! upgrading appliances would stop starting; `require` still keeps a
//! passive listener out (Debian's PostgreSQL has TLS on out of the box),
//! and with SCRAM passwords tokio-postgres binds the login to the TLS
//! channel, so a machine in the middle cannot log in with it either. Over a
//! Unix socket TLS does not apply (PostgreSQL offers none there; libpq
//! ignores `sslmode`), so the mode is `disable`.
//!
//! tokio-postgres 0.7 knows `disable`, `prefer` and `require` only: the
//! checks of `verify-ca` and `verify-full` are the rustls verifier's, and
//! tokio-postgres is told `require`.
//!
//! # Several hosts, and failover
//! `host=a,b port=p,q` (or `postgresql://a:p,b:q/…`) is tokio-postgres's
//! own: it tries the hosts in order, and with `target_session_attrs=
//! read-write` asks each `SHOW transaction_read_only` and passes over the
//! ones that say `on` (a standby, a primary made read-only). Kickstand
//! always asks for that, said or not: the writer writes and the listener
//! `LISTEN`s, which a standby refuses, so a session on one is of no use.
//! The TLS checks are made per host, against the name of the host being
//! tried (tokio-postgres hands each its own). Unsaid, `connect_timeout` is
//! [`CONNECT_TIMEOUT`] per host, so an unreachable first host (a network
//! cut rather than a refused connection) costs seconds, not the minutes of
//! the system's TCP timeout, before the next is tried; and
//! `tcp_user_timeout` is [`TCP_USER_TIMEOUT`], so a commit sent to a
//! server that vanished fails rather than waits for TCP to give up.
//!
//! # Why tokio-postgres-rustls
//! Weighed against the alternatives, for TLS on the rustls 0.23 and ring
//! the workspace already has:
//! - tokio-postgres-rustls (chosen): the long-standing crate for this,
//!   one file, `forbid(unsafe_code)`, no crypto provider of its own (it
//!   takes our `ClientConfig`, so no second provider), and it computes the
//!   `tls-server-end-point` channel binding SCRAM-SHA-256-PLUS needs (the
//!   digest follows the certificate's signature algorithm, SHA-1 raised to
//!   SHA-256 as RFC 5929 says): the subtle part, not worth writing again.
//!   It brings x509-cert (and der, spki, const-oid) to read that algorithm.
//! - tokio-postgres-rustls-improved: a fork whose defaults pull aws-lc-rs,
//!   a second provider, and a config-reloading stream we do not need.
//! - postgres_rustls: needs Rust 1.93, newer than the workspace's 1.89.
//! - Our own `MakeTlsConnect`: about a hundred lines, channel binding
//!   included, for one dependency less; not worth owning.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kickstand_profiles::model::{Postgres, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::health::Health;
use crate::StateError;

/// How long one host may take to answer a connect, unless
/// `connect_timeout` says.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long data sent may stay unacknowledged before the connection is
/// given up, unless `tcp_user_timeout` says.
pub(crate) const TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The driver's half of a connection, polled by a task of its own.
pub(crate) type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

pub(crate) struct Connector {
    /// Holds the password, if any: never shown (not in `Debug`).
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    mode: SslMode,
    /// Where it connects, for messages: hosts and ports, no credentials.
    target: String,
    /// What vouches for the server, for messages.
    trust: String,
    tcp: bool,
    warned: AtomicBool,
    /// What every connection made with it found of the database.
    pub(crate) health: Health,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("target", &self.target)
            .field("sslmode", &self.mode)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// The mode a connection uses: what was asked, under libpq's rules and
/// Kickstand's default (the module's documentation says why).
pub(crate) fn effective(asked: Option<SslMode>, ca_file: bool, tcp: bool) -> SslMode {
    match asked {
        _ if !tcp => SslMode::Disable,
        Some(SslMode::Require) if ca_file => SslMode::VerifyCa,
        Some(mode) => mode,
        None if ca_file => SslMode::VerifyFull,
        None => SslMode::Require,
    }
}

impl Connector {
    /// Reads the settings, the CA file and the password file; connects to
    /// nothing. Everything wrong with them is found here, so checking a
    /// config ([`crate::check_postgres`]) finds what opening the store would.
    pub(crate) fn new(pg: &Postgres) -> Result<Connector, StateError> {
        let mut config: tokio_postgres::Config = pg
            .conninfo()
            .parse()
            // tokio-postgres names the keyword, never the value.
            .map_err(|e: tokio_postgres::Error| StateError::Settings(e.to_string()))?;
        // The module's documentation says why these, and what the
        // configuration's validation allows of them.
        config.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if let Some(path) = &pg.password_file {
            let password = kickstand_profiles::read_secret(path).map_err(StateError::Password)?;
            // Instead of the URL's, if it has one.
            config.password(password);
        }
        let tcp = pg.get("hostaddr").is_some()
            || pg
                .get("host")
                .is_some_and(|h| h.split(',').any(|h| !h.starts_with('/')));
        let mode = effective(pg.sslmode, pg.ca_file.is_some(), tcp);
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let (roots, trust) = match &pg.ca_file {
            Some(path) => (ca_file(path)?, format!("the CA in {}", path.display())),
            None => (
                rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
                "a CA Mozilla trusts (no CA file is set)".to_owned(),
            ),
        };
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(client_config(mode, roots)?),
            mode,
            target: target(pg),
            trust,
            tcp,
            warned: AtomicBool::new(false),
            health: Health::new(),
        })
    }

    pub(crate) async fn connect(&self) -> Result<(tokio_postgres::Client, Connection), StateError> {
        if !self.warned.swap(true, Ordering::Relaxed) {
            self.warn();
        }
        let connected = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| self.error(e));
        if let Err(e) = &connected
            && e.is_unreachable()
        {
            self.health.lost(e);
        }
        connected
    }

    /// Says the database is reached, by `client`'s new connection (whose
    /// half the caller polls already), and which server that is.
    pub(crate) async fn reached(&self, client: &tokio_postgres::Client) {
        let primary = client
            .query_one(
                "SELECT host(inet_server_addr()) || ':' || inet_server_port()",
                &[],
            )
            .await
            .ok()
            .and_then(|row| row.try_get::<_, Option<String>>(0).ok().flatten());
        self.health.reached(primary);
    }

    /// Once per store: a connection that an operator could make safer.
    fn warn(&self) {
        let target = &self.target;
        let how = "set state.ca_file to the CA that signed the server's certificate \
                   (verify-full is then the default), or sslmode=verify-full if a public CA signed it";
        match self.mode {
            _ if !self.tcp => {}
            SslMode::Disable => tracing::warn!(
                "the state database at {target} is reached in plain text (sslmode=disable): build tokens and the password cross the network readable; drop sslmode=disable, and {how}"
            ),
            SslMode::Prefer => tracing::warn!(
                "the state database at {target} may be reached in plain text (sslmode=prefer: TLS only if the server offers it, and its certificate is not checked); {how}"
            ),
            SslMode::Require => tracing::warn!(
                "the state database at {target} is reached over TLS, but nothing checks that the server is the one it claims to be (sslmode=require); {how}"
            ),
            SslMode::VerifyCa | SslMode::VerifyFull => {}
        }
    }

    /// A connect error naming where and how, never who with what password,
    /// and what to do where that is known.
    fn error(&self, source: tokio_postgres::Error) -> StateError {
        StateError::Connect {
            target: self.target.clone(),
            sslmode: self.mode.as_str(),
            reason: chain(&source),
            hint: self.hint(&source),
            source,
        }
    }

    fn hint(&self, e: &tokio_postgres::Error) -> Option<String> {
        if let Some(db) = e.as_db_error() {
            let plain_refused = *db.code()
                == tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().contains("no encryption");
            return (plain_refused && self.mode == SslMode::Disable).then(|| {
                "TLS is needed: the server takes this connection only over TLS (hostssl in its pg_hba.conf); drop sslmode=disable".to_owned()
            });
        }
        if let Some(tls) = rustls_error(e) {
            return match tls {
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => Some(format!(
                    "the server's certificate is not signed by {}: set state.ca_file to the CA that signed it",
                    self.trust
                )),
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ) => Some(format!(
                    "the server's certificate does not carry the name connected to ({}): connect by a name it carries, or use sslmode=verify-ca to check only who signed it",
                    self.target
                )),
                _ => None,
            };
        }
        // tokio-postgres says these in words only, no error kind to match.
        let text = chain(e);
        if text.contains("does not allow writes") {
            return Some(
                "the last host tried is read-only (a standby) and no other took a writing session: promote a standby (pg_ctl promote), or list the primary among the hosts".to_owned(),
            );
        }
        text.contains("server does not support TLS").then(|| {
            "the server offers no TLS: turn `ssl` on in its postgresql.conf; sslmode=disable would send everything, build tokens included, in plain text".to_owned()
        })
    }
}

/// `e: its cause: …`: the server's message, the handshake's failure.
/// Neither repeats a password: the server never echoes one, and rustls
/// never sees one.
fn chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        text.push_str(&format!(": {err}"));
        next = err.source();
    }
    text
}

/// The rustls error under a failed handshake. tokio-rustls wraps it in an
/// `io::Error`, whose `source()` skips it: unwrapped by hand.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// `host:port`, each host, for messages.
fn target(pg: &Postgres) -> String {
    let hosts = pg.get("host").or_else(|| pg.get("hostaddr")).unwrap_or("");
    let ports: Vec<&str> = pg
        .get("port")
        .map_or_else(Vec::new, |p| p.split(',').collect());
    let shown: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .enumerate()
        .map(|(i, host)| {
            let port = ports
                .get(i)
                .or(ports.first())
                .filter(|p| !p.is_empty())
                .copied()
                .unwrap_or("5432");
            if host.starts_with('/') {
                format!("{host} (Unix socket, port {port})")
            } else if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        })
        .collect();
    if shown.is_empty() {
        "no host".into()
    } else {
        shown.join(", ")
    }
}

fn ca_file(path: &std::path::Path) -> Result<rustls::RootCertStore, StateError> {
    let bad = |reason: String| StateError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for (n, der) in kickstand_profiles::parse::pem_certificates(&pem)
        .map_err(bad)?
        .into_iter()
        .enumerate()
    {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| bad(format!("certificate {}: {e}", n + 1)))?;
    }
    Ok(roots)
}

fn client_config(
    mode: SslMode,
    roots: rustls::RootCertStore,
) -> Result<rustls::ClientConfig, StateError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StateError::Settings(format!("TLS: {e}")))?;
    let webpki = || {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| StateError::Settings(format!("TLS: {e}")))
    };
    Ok(match mode {
        SslMode::VerifyFull => builder.with_webpki_verifier(webpki()?),
        SslMode::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki()?))),
        // `require` and `prefer`: encrypted, the certificate taken as it
        // comes (libpq's meaning). The handshake's signatures are still
        // checked: the server proves it holds the key of the certificate it
        // showed, which channel binding builds on.
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(kickstand_pin::Pinned::new(None))),
    }
    .with_no_client_auth())
}

/// `verify-ca`: the chain is checked, the name it is for is not (a server
/// reached by an address its certificate does not list).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // rustls checks the name only once the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_follows_libpq_and_defaults_to_tls_over_tcp() {
        use SslMode::*;
        // (asked, CA file, TCP) → used
        let table = [
            (None, false, true, Require),
            (None, true, true, VerifyFull),
            (Some(Disable), false, true, Disable),
            (Some(Prefer), false, true, Prefer),
            (Some(Require), false, true, Require),
            (Some(Require), true, true, VerifyCa),
            (Some(VerifyCa), false, true, VerifyCa),
            (Some(VerifyFull), true, true, VerifyFull),
            // A Unix socket has no TLS, whatever was asked.
            (None, false, false, Disable),
            (Some(VerifyFull), true, false, Disable),
        ];
        for (asked, ca, tcp, used) in table {
            assert_eq!(
                effective(asked, ca, tcp),
                used,
                "{asked:?} ca={ca} tcp={tcp}"
            );
        }
    }

    /// A server that answers TLS requests with `N`, as PostgreSQL with
    /// `ssl = off` does: `require` refuses it and says what to turn on.
    #[tokio::test]
    async fn a_server_without_tls_is_refused_and_the_error_says_so() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut peer, _)) = listener.accept().await {
                let mut request = [0u8; 8];
                if peer.read_exact(&mut request).await.is_ok() {
                    let _ = peer.write_all(b"N").await;
                }
            }
        });
        let pg: Postgres = format!("postgres://kick:s3cret@127.0.0.1:{port}/x")
            .parse()
            .expect("parses");
        let connector = Connector::new(&pg).expect("settings");
        let Err(err) = connector.connect().await else {
            panic!("connected to a server that offers no TLS");
        };
        let text = err.to_string();
        assert!(text.contains("sslmode=require"), "{text}");
        assert!(text.contains("turn `ssl` on"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    /// A standby is never a session's server, said or not; an unreachable
    /// host costs a bounded wait unless the settings say otherwise.
    #[test]
    fn every_session_writes_and_no_host_holds_up_the_next() {
        use tokio_postgres::config::TargetSessionAttrs;
        let connector = |s: &str| Connector::new(&s.parse().expect("parses")).expect("settings");
        let several = connector("host=db1,db2 port=5432,5433 user=k");
        assert_eq!(
            several.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(several.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(
            several.config.get_tcp_user_timeout(),
            Some(&TCP_USER_TIMEOUT)
        );
        let said = connector("host=db1 user=k connect_timeout=2 tcp_user_timeout=3");
        let secs = std::time::Duration::from_secs;
        assert_eq!(said.config.get_connect_timeout(), Some(&secs(2)));
        assert_eq!(said.config.get_tcp_user_timeout(), Some(&secs(3)));
    }

    #[test]
    fn targets_name_hosts_and_ports() {
        let t = |s: &str| target(&s.parse().expect("parses"));
        assert_eq!(t("postgres://u:pw@db:5433/x"), "db:5433");
        assert_eq!(
            t("postgresql://u@localhost/x?host=/tmp/pg"),
            "/tmp/pg (Unix socket, port 5432)"
        );
        assert_eq!(t("host=a,::1 port=1,2"), "a:1, [::1]:2");
    }
}
