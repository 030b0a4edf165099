//! Redfish (DMTF DSP0266): a computer system's `PowerState`, its
//! `ComputerSystem.Reset` action and a one-time boot override, as JSON over
//! HTTP/1.1 or HTTPS, with Basic authentication (every Redfish service
//! takes it; sessions are optional).
//!
//! One connection per request, closed with it: a BMC serves few
//! connections at once, and a power operation is two or three requests, so
//! nothing is pooled. Each request (connect, TLS, answer and body) is
//! bounded by the endpoint's timeout, and dropping it drops the connection,
//! so a BMC that hangs holds nothing once its caller gives up. Redirects
//! are refused, not followed: the profile names where the BMC answers.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, pki_types::ServerName};

use crate::{BootMode, Credentials, Error, PowerAction, PowerState};

/// Larger answers are refused: a system resource is a few KiB, and a BMC
/// must not be able to make the daemon buffer without bound.
const MAX_BODY: usize = 1024 * 1024;

/// Where a service lists its computer systems (DSP0266 fixes the URI).
const SYSTEMS: &str = "/redfish/v1/Systems";

/// A Redfish service and the one computer system it drives.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://10.0.9.21` (or `http://…`), without a path.
    pub base: String,
    /// `/redfish/v1/Systems/1`; `None`: the service's only system.
    pub system: Option<String>,
    pub credentials: Credentials,
    /// How the BMC's certificate is checked (built by the caller: a CA,
    /// a pinned fingerprint, or none for `tls: insecure`).
    pub tls: Arc<ClientConfig>,
    /// For each request, connection included.
    pub timeout: Duration,
}

impl Endpoint {
    pub(crate) async fn power_state(&self) -> Result<PowerState, Error> {
        let path = self.system_path().await?;
        let (system, _) = self.get::<System>(&path).await?;
        system.power_state()
    }

    /// Nothing is sent when the machine already is where `action` would
    /// bring it: many BMCs refuse `On` for a machine that is on.
    pub(crate) async fn power(&self, action: PowerAction) -> Result<(), Error> {
        let path = self.system_path().await?;
        let (system, _) = self.get::<System>(&path).await?;
        let state = system.power_state()?;
        let reset = system.actions.reset.unwrap_or_default();
        let Some(reset_type) = reset_type(action, state, &reset.allowed) else {
            tracing::debug!(bmc = %self.base, ?action, state = state.as_str(), "already there");
            return Ok(());
        };
        let target = reset
            .target
            .unwrap_or_else(|| format!("{path}/Actions/ComputerSystem.Reset"));
        let body = serde_json::json!({ "ResetType": reset_type });
        self.send(Method::POST, &target, Some(&body), None).await?;
        Ok(())
    }

    pub(crate) async fn boot_pxe_once(&self, mode: BootMode) -> Result<(), Error> {
        let path = self.system_path().await?;
        // Some BMCs refuse a PATCH without the resource's current ETag.
        let (_, etag) = self.get::<serde_json::Value>(&path).await?;
        let mode = match mode {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        };
        let body = serde_json::json!({ "Boot": {
            "BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideMode": mode,
        }});
        self.send(Method::PATCH, &path, Some(&body), etag.as_ref())
            .await?;
        Ok(())
    }

    pub(crate) fn address(&self) -> String {
        self.base.clone()
    }

    /// The configured system, or the one the service lists.
    async fn system_path(&self) -> Result<String, Error> {
        if let Some(path) = &self.system {
            return Ok(path.clone());
        }
        let (systems, _) = self.get::<Collection>(SYSTEMS).await?;
        match systems.members.as_slice() {
            [only] => Ok(only.id.clone()),
            members => Err(Error::Protocol(not_one_system(members))),
        }
    }

    /// GET `path` and read its JSON, with the ETag it came with.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(T, Option<HeaderValue>), Error> {
        let (headers, body) = self.send(Method::GET, path, None, None).await?;
        let value = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("GET {path}: {e}")))?;
        Ok((value, headers.get(header::ETAG).cloned()))
    }

    /// One request on a connection of its own, within the timeout; a
    /// status other than 2xx is an error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<&serde_json::Value>,
        if_match: Option<&HeaderValue>,
    ) -> Result<(HeaderMap, Bytes), Error> {
        let target = Target::parse(&self.base)?;
        let request = self.request(&target, &method, path, json, if_match)?;
        let what = || format!("{method} {path}");
        let (status, headers, body) =
            tokio::time::timeout(self.timeout, self.exchange(&target, request))
                .await
                .map_err(|_| Error::Timeout(self.timeout))?
                .map_err(|e| match e {
                    Error::Protocol(why) => Error::Protocol(format!("{}: {why}", what())),
                    other => other,
                })?;
        tracing::debug!(bmc = %self.base, %method, path, status = status.as_u16(), "redfish");
        match status {
            s if s.is_success() => Ok((headers, body)),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Error::Authentication(self.credentials.username.clone()))
            }
            s if s.is_redirection() => Err(Error::Refused {
                what: what(),
                why: redirected(s, &headers),
            }),
            s => Err(Error::Refused {
                what: what(),
                why: match redfish_message(&body) {
                    Some(message) => format!("{s}: {message}"),
                    None => s.to_string(),
                },
            }),
        }
    }

    fn request(
        &self,
        target: &Target,
        method: &Method,
        path: &str,
        json: Option<&serde_json::Value>,
        if_match: Option<&HeaderValue>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let Credentials { username, password } = &self.credentials;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose()));
        let mut authorization = HeaderValue::try_from(format!("Basic {basic}"))
            .expect("base64 is a valid header value");
        authorization.set_sensitive(true);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &target.authority)
            .header(header::AUTHORIZATION, authorization)
            .header(header::ACCEPT, "application/json")
            // DSP0266 asks clients to name the OData version they speak.
            .header("OData-Version", "4.0")
            .header(
                header::USER_AGENT,
                concat!("kickstand/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(etag) = if_match {
            request = request.header(header::IF_MATCH, etag);
        }
        let body = match json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        request
            .body(Full::new(body))
            .map_err(|e| Error::Protocol(format!("{method} {path}: {e}")))
    }

    async fn exchange(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Error> {
        let io = self.connect(target).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::Protocol(chain(&e)))?;
        let answer = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Error::Protocol(chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| match e.downcast_ref::<LengthLimitError>() {
                    Some(_) => Error::Protocol(format!("answer over {} MiB", MAX_BODY >> 20)),
                    None => Error::Protocol(chain(e.as_ref())),
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        // The connection is driven here rather than spawned, so that a
        // timeout, which drops this future, closes it.
        tokio::pin!(answer);
        tokio::select! {
            biased;
            result = &mut answer => result,
            Err(e) = connection => Err(Error::Protocol(chain(&e))),
        }
    }

    async fn connect(&self, target: &Target) -> Result<Box<dyn Io>, Error> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        // Requests are small and each waits for its answer.
        tcp.set_nodelay(true)
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        if !target.https {
            return Ok(Box::new(tcp));
        }
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| Error::Unreachable(format!("{}: {e}", target.host)))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Tls(tls_reason(&e)))?;
        Ok(Box::new(tls))
    }
}

/// The connection a request travels on: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where `base` says to connect.
#[derive(Debug)]
struct Target {
    https: bool,
    /// Without IPv6 brackets, as the resolver and TLS want it.
    host: String,
    port: u16,
    /// `host:port` as written, for the `Host` header.
    authority: String,
}

impl Target {
    fn parse(base: &str) -> Result<Target, Error> {
        let bad = || Error::Unreachable(format!("`{base}` is not an http:// or https:// URL"));
        let uri: Uri = base.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        Ok(Target {
            https,
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_string(),
        })
    }
}

/// The `ResetType` that does `action` from `state`; `None` when the machine
/// already is where `action` would bring it. `allowed` is the system's
/// `ResetType@Redfish.AllowableValues`, empty when it does not say.
fn reset_type(action: PowerAction, state: PowerState, allowed: &[String]) -> Option<&'static str> {
    let allows = |t: &str| allowed.iter().any(|a| a == t);
    match (action, state) {
        (PowerAction::On, PowerState::On) | (PowerAction::Off, PowerState::Off) => None,
        (PowerAction::On, _) | (PowerAction::Cycle, PowerState::Off) => Some("On"),
        (PowerAction::Off, _) => Some("ForceOff"),
        // Some BMCs offer only `PowerCycle` for a cold restart.
        (PowerAction::Cycle, _) if allows("PowerCycle") && !allows("ForceRestart") => {
            Some("PowerCycle")
        }
        (PowerAction::Cycle, _) => Some("ForceRestart"),
    }
}

/// `ComputerSystemCollection`: only the members.
#[derive(Debug, Deserialize)]
struct Collection {
    #[serde(rename = "Members", default)]
    members: Vec<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    #[serde(rename = "@odata.id")]
    id: String,
}

/// `ComputerSystem`: what power control reads of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct System {
    power_state: Option<String>,
    #[serde(default)]
    actions: Actions,
}

#[derive(Debug, Default, Deserialize)]
struct Actions {
    #[serde(rename = "#ComputerSystem.Reset")]
    reset: Option<ResetAction>,
}

#[derive(Debug, Default, Deserialize)]
struct ResetAction {
    target: Option<String>,
    #[serde(rename = "ResetType@Redfish.AllowableValues", default)]
    allowed: Vec<String>,
}

impl System {
    fn power_state(&self) -> Result<PowerState, Error> {
        match self.power_state.as_deref() {
            Some("On") => Ok(PowerState::On),
            Some("Off") => Ok(PowerState::Off),
            Some("PoweringOn" | "PoweringOff") => Ok(PowerState::Changing),
            Some(other) => Err(Error::Protocol(format!("PowerState `{other}`"))),
            None => Err(Error::Protocol("the system has no PowerState".into())),
        }
    }
}

fn not_one_system(members: &[Link]) -> String {
    const SHOWN: usize = 8;
    if members.is_empty() {
        return format!("the BMC lists no computer system in {SYSTEMS}");
    }
    let mut paths: Vec<&str> = members.iter().take(SHOWN).map(|m| m.id.as_str()).collect();
    if members.len() > SHOWN {
        paths.push("…");
    }
    format!(
        "the BMC lists {} computer systems in {SYSTEMS}, not one: set `system:` in the host's `bmc:` ({})",
        members.len(),
        paths.join(", ")
    )
}

fn redirected(status: StatusCode, headers: &HeaderMap) -> String {
    let location = headers
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or("nowhere");
    format!(
        "{status} to {location}: redirects are not followed; set `address:` to where the BMC answers"
    )
}

/// A Redfish error's text. BMCs that fill in both parts put the specific
/// one in `@Message.ExtendedInfo` ("Server is already powered ON") and a
/// generic one in `message` ("See ExtendedInfo for more information").
fn redfish_message(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = json.get("error")?;
    error
        .pointer("/@Message.ExtendedInfo/0/Message")
        .or_else(|| error.get("message"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// Why a TLS handshake failed; for a certificate the verifier refused, the
/// verifier's own words (rustls shows them with `Debug` otherwise).
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            format!("invalid peer certificate: {other}")
        }
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// An error and its causes, `: `-joined (hyper's own text is terse:
/// "connection closed before message completed").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_types() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let full = strings(&["On", "ForceOff", "ForceRestart", "PowerCycle"]);
        let cycle_only = strings(&["On", "ForceOff", "PowerCycle"]);
        use PowerAction as A;
        use PowerState as S;
        let table = [
            (A::On, S::Off, &full, Some("On")),
            (A::On, S::Changing, &full, Some("On")),
            (A::On, S::On, &full, None),
            (A::Off, S::On, &full, Some("ForceOff")),
            (A::Off, S::Changing, &full, Some("ForceOff")),
            (A::Off, S::Off, &full, None),
            (A::Cycle, S::Off, &full, Some("On")),
            (A::Cycle, S::On, &full, Some("ForceRestart")),
            (A::Cycle, S::Changing, &full, Some("ForceRestart")),
            (A::Cycle, S::On, &cycle_only, Some("PowerCycle")),
            (A::Cycle, S::On, &Vec::new(), Some("ForceRestart")),
        ];
        for (action, state, allowed, want) in table {
            assert_eq!(
                reset_type(action, state, allowed),
                want,
                "{action:?} from {state:?} with {allowed:?}"
            );
        }
    }

    #[test]
    fn error_texts() {
        let both = br#"{"error":{"code":"Base.1.0.GeneralError","message":"A general error has occurred. See ExtendedInfo for more information.","@Message.ExtendedInfo":[{"MessageId":"IDRAC.2.8.PSU501","Message":"Server is already powered ON."}]}}"#;
        let message_only = br#"{"error":{"message":"Power state PowerCycle is not supported","@Message.ExtendedInfo":[{"MessageId":"Base.1.0.GeneralError"}]}}"#;
        assert_eq!(
            redfish_message(both).as_deref(),
            Some("Server is already powered ON.")
        );
        assert_eq!(
            redfish_message(message_only).as_deref(),
            Some("Power state PowerCycle is not supported")
        );
        assert_eq!(redfish_message(b"<html>Internal error</html>"), None);
    }

    #[test]
    fn not_one_system_says_what_to_do() {
        let blades: Vec<Link> = (1..=10)
            .map(|n| Link {
                id: format!("/redfish/v1/Systems/Blade{n}"),
            })
            .collect();
        assert_eq!(
            not_one_system(&[]),
            "the BMC lists no computer system in /redfish/v1/Systems"
        );
        let ten = not_one_system(&blades);
        assert!(
            ten.starts_with("the BMC lists 10 computer systems in /redfish/v1/Systems, not one: set `system:`")
                && ten.ends_with("(/redfish/v1/Systems/Blade1, /redfish/v1/Systems/Blade2, /redfish/v1/Systems/Blade3, /redfish/v1/Systems/Blade4, /redfish/v1/Systems/Blade5, /redfish/v1/Systems/Blade6, /redfish/v1/Systems/Blade7, /redfish/v1/Systems/Blade8, …)"),
            "{ten}"
        );
    }

    #[test]
    fn targets() {
        let Ok(t) = Target::parse("https://[fd00::21]:8443") else {
            panic!("IPv6 with a port")
        };
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.authority.as_str()),
            (true, "fd00::21", 8443, "[fd00::21]:8443")
        );
        let Ok(t) = Target::parse("http://10.0.9.21") else {
            panic!("plain HTTP")
        };
        assert_eq!((t.https, t.port), (false, 80));
        assert!(matches!(
            Target::parse("ftp://10.0.9.21"),
            Err(Error::Unreachable(_))
        ));
    }
}
