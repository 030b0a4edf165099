//! The Redfish driver against sushy-tools' emulator (its fake driver: a
//! machine that is only state), over HTTPS with a self-signed certificate
//! and an htpasswd file; and against small servers of the test's own for
//! what the emulator cannot show (ETags, `Once`, errors, hangs).
//!
//! The emulator's tests are ignored by default: `tests/run` runs them with
//! `--include-ignored` after `tests/setup-peers` installed sushy-tools, and
//! they fail, not skip, when it is missing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use kickstand_bmc::redfish::Endpoint;
use kickstand_bmc::{Bmc, BootMode, Credentials, Error, Password, PowerAction, PowerState};
use serde_json::{Value, json};
use tokio_rustls::rustls::ClientConfig;

const NEEDS_SUSHY: &str = "needs sushy-emulator (tests/setup-peers)";
const USER: &str = "admin";
/// The emulated machine's id, which names it in the emulator's URLs
/// (redfish-start.sh's system 1).
const UUID: &str = "5a0b1c2d-0000-4000-8000-000000000001";
/// The fake driver applies a power change 1 to 11 s after it is asked.
const SETTLE: Duration = Duration::from_secs(20);

/// sushy-emulator with the fake driver and one machine, started by
/// `tests/beds/bmc/redfish-start.sh` (HTTPS, a self-signed certificate, an
/// htpasswd file) in a temp dir.
struct Emulator {
    pid: u32,
    port: u16,
    fingerprint: [u8; 32],
    password: String,
    dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).status();
    }
}

impl Emulator {
    /// One machine, in `power` ("On"/"Off"), booting from its disk in
    /// legacy mode (so that a PXE override in UEFI mode shows).
    async fn start(power: &str) -> Emulator {
        let dir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/beds/bmc/redfish-start.sh");
        let out = Command::new(script)
            .arg(dir.path())
            .arg(power)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sushy-emulator did not start ({NEEDS_SUSHY}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.path().join("redfish.env")).unwrap();
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key} in redfish.env"))
                .to_owned()
        };
        assert_eq!(var("REDFISH_USER"), USER);
        let password = std::fs::read_to_string(var("REDFISH_PASSWORD_FILE")).unwrap();
        let fingerprint: kickstand_pin::Fingerprint = var("REDFISH_FINGERPRINT").parse().unwrap();
        Emulator {
            pid: var("REDFISH_PID").parse().unwrap(),
            port: var("REDFISH_PORT").parse().unwrap(),
            fingerprint: fingerprint.0,
            password: password.trim().to_owned(),
            dir,
        }
    }

    /// The BMC as the daemon would build it: no `system:` (the emulator
    /// lists one), the right password, the certificate pinned by its
    /// fingerprint.
    fn bmc(&self) -> Bmc {
        self.bmc_with(&self.password, self.fingerprint)
    }

    fn bmc_with(&self, password: &str, fingerprint: [u8; 32]) -> Bmc {
        Bmc::Redfish(Endpoint {
            base: format!("https://127.0.0.1:{}", self.port),
            system: None,
            credentials: credentials(password),
            tls: pinned(fingerprint),
            timeout: Duration::from_secs(10),
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    /// The resets the emulator received, by ResetType, in order.
    fn resets(&self) -> Vec<String> {
        let marker = format!("System \"{UUID}\" power state set to \"");
        self.log()
            .lines()
            .filter_map(|l| l.split_once(&marker))
            .map(|(_, rest)| rest.trim_end_matches('"').to_string())
            .collect()
    }

    /// The system as the emulator shows it, read by curl rather than by
    /// the driver under test.
    fn system(&self) -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--insecure", "--user"])
            .arg(format!("{USER}:{}", self.password))
            .arg(format!(
                "https://127.0.0.1:{}/redfish/v1/Systems/{UUID}",
                self.port
            ))
            .output()
            .expect("curl is required");
        assert!(out.status.success(), "curl: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn wait_for_power(&self, want: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let seen = self.system()["PowerState"].clone();
            if seen == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PowerState still {seen} after {SETTLE:?}, not {want}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn power_on_reads_back_on() {
    let emulator = Emulator::start("Off").await;
    let bmc = emulator.bmc();
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(emulator.resets(), ["On"]);
    emulator.wait_for_power("On").await;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn power_off_reads_back_off() {
    let emulator = Emulator::start("On").await;
    let bmc = emulator.bmc();
    bmc.power(PowerAction::Off).await.unwrap();
    assert_eq!(emulator.resets(), ["ForceOff"]);
    emulator.wait_for_power("Off").await;
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn cycle_of_an_off_machine_powers_it_on() {
    let emulator = Emulator::start("Off").await;
    emulator.bmc().power(PowerAction::Cycle).await.unwrap();
    assert_eq!(emulator.resets(), ["On"]);
    emulator.wait_for_power("On").await;
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn cycle_of_an_on_machine_resets_it() {
    let emulator = Emulator::start("On").await;
    emulator.bmc().power(PowerAction::Cycle).await.unwrap();
    // The emulator offers ForceRestart (and no PowerCycle).
    assert_eq!(emulator.resets(), ["ForceRestart"]);
    emulator.wait_for_power("On").await;
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn boot_pxe_once_sets_the_override_and_mode() {
    let emulator = Emulator::start("Off").await;
    let bmc = emulator.bmc();
    let boot = |system: Value| {
        (
            system["Boot"]["BootSourceOverrideTarget"].clone(),
            system["Boot"]["BootSourceOverrideMode"].clone(),
        )
    };
    assert_eq!(boot(emulator.system()), (json!("Hdd"), json!("Legacy")));
    bmc.boot_pxe_once(BootMode::Uefi).await.unwrap();
    assert_eq!(boot(emulator.system()), (json!("Pxe"), json!("UEFI")));
    bmc.boot_pxe_once(BootMode::Legacy).await.unwrap();
    assert_eq!(boot(emulator.system()), (json!("Pxe"), json!("Legacy")));
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn wrong_password_is_an_authentication_error_without_it() {
    let emulator = Emulator::start("Off").await;
    let wrong = "wrong-battery-staple";
    let err = emulator
        .bmc_with(wrong, emulator.fingerprint)
        .power_state()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Authentication(user) if user == USER),
        "{err:?}"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains(wrong), "{shown}");
    }
    assert_eq!(emulator.resets(), Vec::<String>::new());
}

#[tokio::test]
#[ignore = "needs sushy-emulator (tests/setup-peers)"]
async fn another_certificate_than_the_pinned_one_is_refused() {
    let emulator = Emulator::start("Off").await;
    let err = emulator
        .bmc_with(&emulator.password, [0xab; 32])
        .power_state()
        .await
        .unwrap_err();
    let Error::Tls(reason) = &err else {
        panic!("{err:?}")
    };
    let seen = kickstand_pin::Fingerprint(emulator.fingerprint);
    assert!(
        reason.contains(&format!("has fingerprint {seen}, not the pinned")),
        "{reason}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let bmc = plain_bmc(
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        Duration::from_secs(5),
    );
    let err = bmc.power_state().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_bmc_that_never_answers_times_out() {
    // Connections complete in the listener's backlog and are never read.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let timeout = Duration::from_secs(1);
    for base in [format!("http://{addr}"), format!("https://{addr}")] {
        let bmc = Bmc::Redfish(Endpoint {
            base: base.clone(),
            ..endpoint(addr, timeout)
        });
        let started = Instant::now();
        let err = bmc.power(PowerAction::Cycle).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, Error::Timeout(t) if t == timeout),
            "{base}: {err:?}"
        );
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(500),
            "{base}: {took:?}"
        );
    }
}

#[tokio::test]
async fn a_500_is_refused_with_the_status_and_the_bmc_message() {
    let bmc = Canned::start(|_, _| {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {
                "message": "A general error has occurred. See ExtendedInfo for more information.",
                "@Message.ExtendedInfo": [{"Message": "The BMC is rebooting."}],
            }}),
        )
    })
    .await;
    // Spawned, as the daemon runs each BMC call beside everything else.
    let call = bmc.bmc();
    let err = tokio::spawn(async move { call.power_state().await })
        .await
        .unwrap()
        .unwrap_err();
    let Error::Refused { what, why } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(what, "GET /redfish/v1/Systems");
    assert_eq!(why, "500 Internal Server Error: The BMC is rebooting.");
}

#[tokio::test]
async fn several_systems_ask_for_system() {
    let bmc = Canned::start(|_, _| {
        reply(
            StatusCode::OK,
            json!({"Members": [
                {"@odata.id": "/redfish/v1/Systems/Blade1"},
                {"@odata.id": "/redfish/v1/Systems/Blade2"},
            ]}),
        )
    })
    .await;
    let err = bmc.bmc().power_state().await.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("2 computer systems")
            && shown.contains("set `system:`")
            && shown.contains("/redfish/v1/Systems/Blade2"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_redirect_is_refused_not_followed() {
    let bmc = Canned::start(|_, _| {
        Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header("Location", "https://10.0.9.99/redfish/v1/Systems")
            .body(Full::default())
            .unwrap()
    })
    .await;
    let err = bmc.bmc().power_state().await.unwrap_err();
    let Error::Refused { why, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("https://10.0.9.99/redfish/v1/Systems") && why.contains("`address:`"),
        "{why}"
    );
    assert_eq!(bmc.requests().len(), 1);
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_a_mebibyte() {
    let bmc =
        Canned::start(|_, _| Response::new(Full::new(Bytes::from(vec![b' '; 2 * 1024 * 1024]))))
            .await;
    let err = bmc.bmc().power_state().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(why) if why == "GET /redfish/v1/Systems: answer over 1 MiB"),
        "{err:?}"
    );
}

#[tokio::test]
async fn boot_override_is_once_and_sends_the_etag_back() {
    let bmc = Canned::start(|method, path| match (method, path) {
        (&Method::GET, "/redfish/v1/Systems") => reply(
            StatusCode::OK,
            json!({"Members": [{"@odata.id": "/redfish/v1/Systems/System.Embedded.1"}]}),
        ),
        (&Method::GET, _) => {
            let mut r = reply(StatusCode::OK, json!({"PowerState": "Off"}));
            r.headers_mut()
                .insert("ETag", "W/\"gen-42\"".parse().unwrap());
            r
        }
        _ => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::default())
            .unwrap(),
    })
    .await;
    bmc.bmc().boot_pxe_once(BootMode::Legacy).await.unwrap();
    let requests = bmc.requests();
    let patch = requests.last().unwrap();
    assert_eq!(
        (&patch.method, patch.path.as_str()),
        (&Method::PATCH, "/redfish/v1/Systems/System.Embedded.1")
    );
    assert_eq!(patch.headers["If-Match"], "W/\"gen-42\"");
    assert_eq!(
        serde_json::from_slice::<Value>(&patch.body).unwrap(),
        json!({"Boot": {
            "BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideMode": "Legacy",
        }})
    );
}

#[tokio::test]
async fn reset_goes_to_the_advertised_target_with_an_allowed_type() {
    let bmc = Canned::start(|method, _| match *method {
        Method::GET => reply(
            StatusCode::OK,
            json!({
                "PowerState": "On",
                "Actions": {"#ComputerSystem.Reset": {
                    "target": "/redfish/v1/Systems/1/Actions/Oem/Reset",
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "PowerCycle"],
                }},
            }),
        ),
        _ => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::default())
            .unwrap(),
    })
    .await;
    let with_system = Bmc::Redfish(Endpoint {
        system: Some("/redfish/v1/Systems/1".into()),
        ..endpoint(bmc.addr, Duration::from_secs(5))
    });
    // Already on: nothing is sent but the GET.
    with_system.power(PowerAction::On).await.unwrap();
    with_system.power(PowerAction::Cycle).await.unwrap();
    let sent: Vec<_> = bmc
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.body))
        .collect();
    assert_eq!(
        sent,
        [
            (Method::GET, "/redfish/v1/Systems/1".into(), Bytes::new()),
            (Method::GET, "/redfish/v1/Systems/1".into(), Bytes::new()),
            (
                Method::POST,
                "/redfish/v1/Systems/1/Actions/Oem/Reset".into(),
                Bytes::from(r#"{"ResetType":"PowerCycle"}"#)
            ),
        ]
    );
}

/// What a canned server received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A plain-HTTP server answering every request with `answer(method, path)`
/// and keeping what it received.
struct Canned {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = fn(&Method, &str) -> Response<Full<Bytes>>;

impl Canned {
    async fn start(answer: Answer) -> Canned {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let log = log.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let response = answer(&parts.method, parts.uri.path());
                            log.lock().unwrap().push(Seen {
                                method: parts.method,
                                path: parts.uri.path().to_string(),
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, hyper::Error>(response)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Canned { addr, seen, task }
    }

    fn bmc(&self) -> Bmc {
        plain_bmc(self.addr, Duration::from_secs(5))
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn plain_bmc(addr: SocketAddr, timeout: Duration) -> Bmc {
    Bmc::Redfish(endpoint(addr, timeout))
}

/// A BMC at `http://addr`, with no `system:`.
fn endpoint(addr: SocketAddr, timeout: Duration) -> Endpoint {
    Endpoint {
        base: format!("http://{addr}"),
        system: None,
        credentials: credentials("secret"),
        tls: pinned([0; 32]),
        timeout,
    }
}

fn credentials(password: &str) -> Credentials {
    Credentials {
        username: USER.into(),
        password: Password::new(password.into()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client config that accepts exactly the certificate with this SHA-256,
/// as `tls: <fingerprint>` does.
fn pinned(fingerprint: [u8; 32]) -> Arc<ClientConfig> {
    Arc::new(kickstand_pin::client_config(Some(
        kickstand_pin::Fingerprint(fingerprint),
    )))
}
