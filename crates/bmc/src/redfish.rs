//! Redfish (DMTF DSP0266): to be written.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::ClientConfig;

use crate::{BootMode, Credentials, Error, PowerAction, PowerState};

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
        todo!()
    }
    pub(crate) async fn power(&self, _action: PowerAction) -> Result<(), Error> {
        todo!()
    }
    pub(crate) async fn boot_pxe_once(&self, _mode: BootMode) -> Result<(), Error> {
        todo!()
    }
    pub(crate) fn address(&self) -> String {
        self.base.clone()
    }
}
