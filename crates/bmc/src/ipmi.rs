//! IPMI over ipmitool: to be written.

use std::time::Duration;

use crate::{BootMode, Credentials, Error, PowerAction, PowerState};

/// An IPMI BMC on the LAN (RMCP+, `ipmitool -I lanplus`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    /// 623 unless the profile says `host:port`.
    pub port: u16,
    pub credentials: Credentials,
    /// For each `ipmitool` run, retries included.
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
        format!("{}:{}", self.host, self.port)
    }
}
