//! IPMI over RMCP+ (IPMI 2.0 "lanplus"), by running `ipmitool` as a child
//! process: what OpenStack Ironic's ipmitool driver does (MAAS runs
//! FreeIPMI's tools the same way).
//!
//! Why not a crate: `ipmi-rs` 0.6 (MIT/Apache) speaks RMCP+ with
//! RAKP-HMAC-SHA1 only (cipher suite 3): RAKP-HMAC-SHA256, cipher suite 17,
//! which current BMCs prefer and some require once suite 3 is disabled, is
//! a `todo!()` (a panic in the daemon); its command set (`ipmi-rs-core`)
//! has no chassis commands (power control, boot options), and its socket is
//! a blocking `std` one. `rust-ipmi` 0.1 is GPL-3.0 (Kickstand is
//! Apache-2.0) and has `todo!()`s in its packet parser. `ipmitool` 1.8.19
//! (Debian 12) speaks suites 3 and 17 and picks the best one the BMC offers,
//! and is the client the BMC vendors test against.
//!
//! How it is run: the password goes to ipmitool through its environment
//! (`-E`, `IPMI_PASSWORD`), never its arguments (a process's arguments are
//! world-readable in `/proc`, its environment only by its user); `-N`/`-R`
//! are set so that ipmitool gives up on a BMC that never answers within
//! the call's timeout, and the whole run is bounded by that timeout too
//! (the child is killed when it is reached). `-v` makes ipmitool say why a
//! session failed (a RAKP error), which tells a wrong password from a
//! refusal.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::{BootMode, Credentials, Error, PowerAction, PowerState};

const IPMITOOL: &str = "ipmitool";

/// An IPMI BMC on the LAN (RMCP+, `ipmitool -I lanplus`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    /// 623 unless the profile says `host:port`.
    pub port: u16,
    pub credentials: Credentials,
    /// The RMCP+ cipher suite (`ipmitool -C`). `None`: ipmitool asks the
    /// BMC and takes the best it offers (17, then 3). A number for a BMC
    /// that does not answer that question (each call then waits for
    /// ipmitool's retries before it falls back to 3; `ipmi_sim` is one) or
    /// where the site pins a suite.
    pub cipher_suite: Option<u8>,
    /// For each `ipmitool` run, retries included.
    pub timeout: Duration,
}

impl Endpoint {
    pub(crate) async fn power_state(&self) -> Result<PowerState, Error> {
        let out = self
            .ipmitool(
                "power status",
                &["chassis", "power", "status"],
                "Chassis Power is",
            )
            .await?;
        power_state_of(&out)
    }

    /// `Cycle` asks for the state first: some BMCs refuse to cycle a
    /// chassis that is off, so an off one is powered on instead.
    pub(crate) async fn power(&self, action: PowerAction) -> Result<(), Error> {
        let action = match action {
            PowerAction::Cycle if self.power_state().await? == PowerState::Off => PowerAction::On,
            action => action,
        };
        let (what, verb, done) = match action {
            PowerAction::On => ("power on", "on", "Chassis Power Control: Up/On"),
            PowerAction::Off => ("power off", "off", "Chassis Power Control: Down/Off"),
            PowerAction::Cycle => ("power cycle", "cycle", "Chassis Power Control: Cycle"),
        };
        self.ipmitool(what, &["chassis", "power", verb], done)
            .await
            .map(drop)
    }

    /// ipmitool's `bootdev` without `persistent` clears the persistent bit:
    /// the flags hold for the next boot only. `efiboot` sets the EFI bit;
    /// without it the request says legacy (PC compatible) boot.
    pub(crate) async fn boot_pxe_once(&self, mode: BootMode) -> Result<(), Error> {
        let args: &[&str] = match mode {
            BootMode::Uefi => &["chassis", "bootdev", "pxe", "options=efiboot"],
            BootMode::Legacy => &["chassis", "bootdev", "pxe"],
        };
        self.ipmitool("one-time network boot", args, "Set Boot Device to pxe")
            .await
            .map(drop)
    }

    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Runs one ipmitool command and returns its standard output, which
    /// must contain `done`: ipmitool exits 0 from `bootdev` even when the
    /// BMC refused the boot flags, so its exit status alone proves nothing.
    async fn ipmitool(&self, what: &str, command: &[&str], done: &str) -> Result<String, Error> {
        let mut cmd = Command::new(IPMITOOL);
        cmd.args(self.session_args()).args(command);
        let out = run(cmd, &self.credentials, self.timeout).await?;
        tracing::debug!(bmc = %self.address(), command = command.join(" "), status = %out.status, "ipmitool");
        if out.status.success() && out.stdout.contains(done) {
            return Ok(out.stdout);
        }
        Err(failure(
            what,
            &self.credentials.username,
            &out.stderr,
            out.status,
            self.timeout,
        ))
    }

    fn session_args(&self) -> Vec<String> {
        let mut args = vec![
            "-I".into(),
            "lanplus".into(),
            "-H".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            self.credentials.username.clone(),
            "-E".into(),
            "-N".into(),
            "1".into(),
            "-R".into(),
            retries_within(self.timeout).to_string(),
            "-v".into(),
        ];
        if let Some(suite) = self.cipher_suite {
            args.extend(["-C".into(), suite.to_string()]);
        }
        args
    }
}

/// What one ipmitool run left behind.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with the password in its environment, killed when `timeout`
/// is reached (dropping the child kills it).
async fn run(
    mut cmd: Command,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Output, Error> {
    cmd.env("IPMI_PASSWORD", credentials.password.expose())
        // Without a password in its environment ipmitool would prompt on
        // the terminal: there is none to read from.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Tool(format!(
            "{IPMITOOL} not found: install the ipmitool package (apt-get install ipmitool)"
        )),
        _ => Error::Tool(format!("cannot run {IPMITOOL}: {e}")),
    })?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(|e| Error::Tool(format!("{IPMITOOL}: {e}")))?;
    Ok(Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// ipmitool's `-R` for a call bounded by `timeout`, with `-N 1`: the k-th
/// try of a request waits k seconds, and a BMC that never answers costs two
/// requests (Get Channel Authentication Capabilities, asked for IPMI 2.0
/// then 1.5) of R tries each, R(R+1) seconds. That is kept within two
/// thirds of the timeout, so ipmitool says "no answer" itself, with a third
/// left for the session of a BMC that answers slowly. At least 1, at most
/// ipmitool's own default of 4.
fn retries_within(timeout: Duration) -> u32 {
    let budget = timeout.as_secs() * 2 / 3;
    (2..=4u32)
        .take_while(|r| u64::from(r * (r + 1)) <= budget)
        .last()
        .unwrap_or(1)
}

fn power_state_of(stdout: &str) -> Result<PowerState, Error> {
    match stdout.trim() {
        "Chassis Power is on" => Ok(PowerState::On),
        "Chassis Power is off" => Ok(PowerState::Off),
        other => Err(Error::Protocol(format!("power status: {other}"))),
    }
}

/// What a failed ipmitool run means, from what it wrote on stderr (with
/// `-v`): a RAKP error that says the user or password is wrong, no answer
/// at all (ipmitool's own retries ran out), or else the BMC's or ipmitool's
/// words, on one line.
fn failure(what: &str, user: &str, stderr: &str, status: ExitStatus, timeout: Duration) -> Error {
    let lines = || stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    let authentication = [
        // The BMC does not know the user.
        "RAKP 2 message indicates an error : unauthorized name",
        // The BMC's proof of the password does not match ours.
        "RAKP 2 HMAC is invalid",
    ];
    if lines().any(|l| authentication.iter().any(|a| l.contains(a))) {
        return Error::Authentication(user.to_string());
    }
    // Get Channel Authentication Capabilities, the first request, got no
    // answer (with an answer, the line goes on with the completion code).
    if lines().any(|l| l == "Get Auth Capabilities error") {
        return Error::Timeout(timeout);
    }
    let significant: Vec<&str> = lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("failed")
        })
        .collect();
    let why = if significant.is_empty() {
        lines().next_back().map_or_else(
            || format!("{IPMITOOL} exited with {status}"),
            str::to_string,
        )
    } else {
        significant.join("; ")
    };
    Error::Refused {
        what: what.to_string(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Password;
    use std::os::unix::process::ExitStatusExt;

    const SECS: Duration = Duration::from_secs(10);

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn retries_fit_two_thirds_of_the_timeout() {
        for (secs, retries) in [
            (1, 1),
            (3, 1),
            (8, 1),
            (9, 2),
            (10, 2),
            (18, 3),
            (30, 4),
            (600, 4),
        ] {
            assert_eq!(
                retries_within(Duration::from_secs(secs)),
                retries,
                "{secs} s"
            );
        }
    }

    #[test]
    fn power_status_lines() {
        assert_eq!(
            power_state_of("Chassis Power is on\n").ok(),
            Some(PowerState::On)
        );
        assert_eq!(
            power_state_of("Chassis Power is off\n").ok(),
            Some(PowerState::Off)
        );
        assert!(matches!(
            power_state_of("Chassis Power is ???"),
            Err(Error::Protocol(_))
        ));
    }

    // The stderr below is ipmitool 1.8.19's (`-v`) against ipmi_sim 2.0.33
    // and against sockets that never answer, as captured by hand.
    #[test]
    fn failures_are_named_from_ipmitool_stderr() {
        let wrong_password = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\n\
                              Error: Unable to establish IPMI v2 / RMCP+ session\n";
        let wrong_user = "Loading IANA PEN Registry...\n\
                          RAKP 2 message indicates an error : unauthorized name\n\
                          Error: Unable to establish IPMI v2 / RMCP+ session\n";
        for stderr in [wrong_password, wrong_user] {
            let e = failure("power on", "admin", stderr, exit(1), SECS);
            assert!(
                matches!(&e, Error::Authentication(u) if u == "admin"),
                "{e:?}"
            );
        }

        let silent = "Loading IANA PEN Registry...\nGet Auth Capabilities error\n\
                      Error issuing Get Channel Authentication Capabilities request\n\
                      Error: Unable to establish IPMI v2 / RMCP+ session\n";
        let e = failure("power status", "admin", silent, exit(1), SECS);
        assert!(matches!(e, Error::Timeout(t) if t == SECS), "{e:?}");

        // ipmitool exits 0 from bootdev when the BMC refuses the flags.
        let bootdev = "Loading IANA PEN Registry...\n\
                       Running Get VSO Capabilities my_addr 0x20, transit 0, target 0x20\n\
                       Invalid completion code received: Invalid command\n\
                       Discovered IPMB address 0x0\n\
                       Set Chassis Boot Parameter 4 failed: Invalid data field in request\n\
                       Set Chassis Boot Parameter 5 failed: Invalid data field in request\n";
        let e = failure("one-time network boot", "admin", bootdev, exit(0), SECS);
        assert_eq!(
            e.to_string(),
            "refused one-time network boot: Set Chassis Boot Parameter 4 failed: Invalid data \
             field in request; Set Chassis Boot Parameter 5 failed: Invalid data field in request"
        );

        let suite = "Error in open session response message : invalid authentication algorithm\n\n\
                     Error: Unable to establish IPMI v2 / RMCP+ session\n";
        let e = failure("power status", "admin", suite, exit(1), SECS);
        assert_eq!(
            e.to_string(),
            "refused power status: Error in open session response message : invalid \
             authentication algorithm; Error: Unable to establish IPMI v2 / RMCP+ session"
        );

        let e = failure("power on", "admin", "", exit(1), SECS);
        assert_eq!(
            e.to_string(),
            "refused power on: ipmitool exited with exit status: 1"
        );
    }

    #[tokio::test]
    async fn a_missing_ipmitool_says_which_package_to_install() {
        let credentials = Credentials {
            username: "admin".into(),
            password: Password::new("secret".into()),
        };
        let cmd = Command::new("/nonexistent/ipmitool");
        let e = run(cmd, &credentials, SECS)
            .await
            .err()
            .expect("no ipmitool there");
        assert!(
            matches!(&e, Error::Tool(m) if m.contains("install the ipmitool package")),
            "{e:?}"
        );
    }
}
