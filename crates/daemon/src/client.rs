//! The CLI's side of the running daemon: its HTTP address as the appliance
//! config gives it, and the operator token for actions that change state.

use anyhow::Context as _;
use kickstand_profiles::model::Appliance;

use crate::operator;

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

    /// For operator actions: reads the operator token file.
    pub(crate) fn operator(appliance: &Appliance) -> anyhow::Result<Daemon> {
        let mut daemon = Daemon::new(appliance);
        daemon.operator_token = Some(operator::read(&appliance.state.operator_token_file)?);
        Ok(daemon)
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach the running daemon at {} (is `kickstand serve` running?)",
            self.base
        )
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        self.agent
            .get(format!("{}{path}", self.base))
            .call()
            .with_context(|| self.unreachable())
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
        .with_context(|| self.unreachable())
    }
}

/// Where `serve` writes the address its HTTP front listens on.
pub(crate) fn address_file(appliance: &Appliance) -> std::path::PathBuf {
    appliance.state_dir.join("http.addr")
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
