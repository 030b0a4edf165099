//! The test suite both backends run: every function here takes a [`Bed`]
//! (a fresh database and a state directory) and is turned into one test
//! per backend by `suite!` in `sqlite.rs` and `postgres.rs`.

#![allow(dead_code, unreachable_pub)]

use std::io::BufRead as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use kickstand_state::{
    AUDIT_KEPT, Backend, Diagnosis, DiscoveryLimits, DiscoveryOutcome, EventKind, Evicted, Facts,
    Mac, OperatorAction, Outcome, Phase, Refused, StateConfig, StateError, StateStore,
    TokenRejected, Transition,
};
use serde_json::json;

/// A database to test against, and what must live as long as it does.
pub struct Bed {
    pub backend: Backend,
    /// The state directory: SQLite's, or the one a PostgreSQL store
    /// imports `hosts.json` from.
    pub dir: PathBuf,
    pub keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Bed {
    pub fn sqlite() -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        Bed {
            backend: Backend::Sqlite {
                dir: dir.path().to_owned(),
            },
            dir: dir.path().to_owned(),
            keep: vec![Box::new(dir)],
        }
    }

    pub fn config(&self, appliance: &str) -> StateConfig {
        let mut c = StateConfig::new(self.backend.clone(), appliance);
        c.import_dir = Some(self.dir.clone());
        c
    }

    pub async fn open(&self) -> StateStore {
        self.open_with("rack-a", |_| {}).await
    }

    pub async fn open_with(&self, appliance: &str, f: impl FnOnce(&mut StateConfig)) -> StateStore {
        let mut c = self.config(appliance);
        f(&mut c);
        StateStore::open(c).await.expect("open the store")
    }
}

/// Generates one test per suite function, each on a fresh `$bed`.
#[macro_export]
macro_rules! suite {
    ($bed:expr $(, #[$attr:meta])*) => {
        $crate::suite!(@each $bed, [$(#[$attr])*],
            life_cycle_is_recorded_as_it_happens,
            refused_transitions_are_events_not_changes,
            token_matrix,
            the_token_goes_only_to_the_address_of_the_hosts_exchange,
            the_token_moves_to_the_install_vlan_once_and_stays_there,
            the_token_goes_to_the_ipv6_addresses_of_the_hosts_exchanges,
            tokens_expire_after_the_install_timeout,
            an_overdue_install_fails_and_is_held,
            failed_host_is_held_until_rearmed,
            retention_bounds_each_class_of_a_host_and_the_whole_timeline,
            ten_thousand_wrong_tokens_leave_the_life_cycle_in_place,
            discovered_table_is_bounded,
            progress_counts_and_expected_install,
            everything_survives_a_reopen,
            json_state_is_imported_once,
            an_old_schema_is_upgraded_in_place,
            diagnosis_reads_the_stored_timeline,
            requests_without_a_mac_find_their_host_by_address,
            the_audit_log_keeps_who_did_what_and_is_bounded
        );
    };
    (@each $bed:expr, $attrs:tt, $name:ident $(, $rest:ident)* $(,)?) => {
        $crate::suite!(@one $bed, $attrs, $name);
        $crate::suite!(@each $bed, $attrs, $($rest),*);
    };
    (@each $bed:expr, $attrs:tt $(,)?) => {};
    (@one $bed:expr, [$($attr:tt)*], $name:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $name() {
            let bed = $bed;
            suite::$name(&bed).await;
        }
    };
}

pub fn mac(n: u16) -> Mac {
    let [hi, lo] = n.to_be_bytes();
    format!("52:54:00:00:{hi:02x}:{lo:02x}")
        .parse()
        .expect("mac")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Now, to the millisecond the store keeps; offsets from it are test time.
fn t0() -> SystemTime {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).expect("ms"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn post() -> Transition {
    Transition::PostCallback {
        os: "rocky-9".into(),
    }
}

pub async fn life_cycle_is_recorded_as_it_happens(bed: &Bed) {
    let store = bed.open().await;
    let (m, now) = (mac(1), t0());
    assert_eq!(store.host(m), None);
    let steps = [
        (Transition::SeenByDhcp, Phase::New, Phase::Discovered),
        (Transition::BootFetched, Phase::Discovered, Phase::Booting),
        (
            Transition::KickstartFetched,
            Phase::Booting,
            Phase::Installing,
        ),
        (post(), Phase::Installing, Phase::Installed),
    ];
    for (i, (t, from, to)) in steps.into_iter().enumerate() {
        let at = now + secs(10 * u64::try_from(i).expect("i"));
        let got = store
            .transition(m, t, Some(ip("10.0.0.5")), at)
            .await
            .expect("transition");
        assert_eq!(got, Outcome::Changed { from, to });
    }
    assert_eq!(
        store
            .transition(m, Transition::SeenByDhcp, None, now + secs(40))
            .await
            .expect("dhcp"),
        Outcome::Unchanged(Phase::Installed)
    );
    let h = store.host(m).expect("a record");
    assert_eq!(h.phase, Phase::Installed);
    assert_eq!(h.since, now + secs(30));
    assert_eq!(h.install_started, Some(now + secs(10)));
    assert_eq!(h.install_ended, Some(now + secs(30)));
    assert_eq!(h.last_ip, Some(ip("10.0.0.5")));
    assert_eq!(h.appliance, "rack-a");
    let timeline = store.timeline(m, 100).await.expect("timeline");
    let changes: Vec<(String, String, String)> = timeline
        .iter()
        .filter(|e| e.kind == EventKind::PhaseChange)
        .map(|e| {
            let f = |k: &str| e.text(k).unwrap_or_default().to_owned();
            (f("from"), f("to"), f("transition"))
        })
        .collect();
    let want = [
        ("new", "discovered", "seen-by-dhcp"),
        ("discovered", "booting", "boot-fetched"),
        ("booting", "installing", "kickstart-fetched"),
        ("installing", "installed", "post-callback"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(changes, want);
    assert!(
        timeline
            .iter()
            .all(|e| e.mac == m && e.appliance == "rack-a")
    );
    assert!(
        timeline.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first"
    );
    let hosts = store.hosts();
    assert_eq!(hosts.iter().map(|h| h.mac).collect::<Vec<_>>(), [m]);
}

pub async fn refused_transitions_are_events_not_changes(bed: &Bed) {
    let store = bed.open().await;
    let (m, now) = (mac(2), t0());
    let got = store.transition(m, post(), None, now).await.expect("post");
    assert_eq!(
        got,
        Outcome::Refused {
            phase: Phase::New,
            reason: Refused::NotInstalling(Phase::New)
        }
    );
    store
        .transition(m, Transition::PreCallback, None, now)
        .await
        .expect("pre");
    store.transition(m, post(), None, now).await.expect("post");
    let again = store
        .transition(m, post(), None, now + secs(1))
        .await
        .expect("again");
    assert_eq!(
        again,
        Outcome::Refused {
            phase: Phase::Installed,
            reason: Refused::Installed
        }
    );
    let h = store.host(m).expect("record");
    assert_eq!((h.phase, h.since), (Phase::Installed, now));
    let refused: Vec<_> = store
        .timeline(m, 100)
        .await
        .expect("timeline")
        .into_iter()
        .filter(|e| e.kind == EventKind::TransitionRefused)
        .collect();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[1].text("phase"), Some("installed"));
    assert_eq!(refused[1].text("transition"), Some("post-callback"));
}

async fn rejection_reasons(store: &StateStore, m: Mac) -> Vec<(String, String)> {
    store
        .timeline(m, 1000)
        .await
        .expect("timeline")
        .into_iter()
        .filter(|e| e.kind == EventKind::TokenRejected)
        .map(|e| {
            (
                e.text("reason").unwrap_or_default().to_owned(),
                e.text("ip").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub async fn token_matrix(bed: &Bed) {
    let store = bed
        .open_with("rack-a", |c| c.install_timeout = secs(3600))
        .await;
    let (a, b, now) = (mac(3), mac(4), t0());
    let (first, second) = (ip("10.0.0.3"), ip("10.0.0.99"));
    let ta = store
        .ensure_token(a, now)
        .expect("mint")
        .await
        .expect("ensure")
        .expect("a token");
    let tb = store
        .ensure_token(b, now)
        .expect("mint")
        .await
        .expect("ensure")
        .expect("b token");
    assert_ne!(ta, tb);
    assert_eq!(
        store
            .ensure_token(a, now + secs(5))
            .expect("mint")
            .await
            .expect("ensure"),
        Some(ta.clone()),
        "a live token is handed out again, not replaced"
    );
    let check = |tok: Option<String>, peer: IpAddr, at: SystemTime| {
        let store = store.clone();
        async move {
            store
                .check_token(a, tok.as_deref(), peer, at)
                .await
                .expect("check")
        }
    };
    let s = |t: &kickstand_state::BuildToken| Some(t.as_str().to_owned());
    // none, empty, wrong, other host's
    assert_eq!(check(None, first, now).await, Err(TokenRejected::Missing));
    assert_eq!(
        check(Some(String::new()), first, now).await,
        Err(TokenRejected::Missing)
    );
    assert_eq!(
        check(Some("guess".into()), first, now).await,
        Err(TokenRejected::Wrong)
    );
    assert_eq!(
        check(s(&tb), first, now).await,
        Err(TokenRejected::OtherHost { owner: b })
    );
    // right: accepted and bound to the first address
    assert_eq!(check(s(&ta), first, now).await, Ok(()));
    assert_eq!(check(s(&ta), first, now + secs(1)).await, Ok(()));
    let h = store.host(a).expect("record");
    assert_eq!(h.token_ip, Some(first));
    // the same token from a second address
    assert_eq!(
        check(s(&ta), second, now + secs(2)).await,
        Err(TokenRejected::WrongAddress { bound: first })
    );
    // expired by time
    assert_eq!(
        check(s(&ta), first, now + secs(3600)).await,
        Err(TokenRejected::Expired)
    );
    // after installed
    store
        .transition(a, Transition::KickstartFetched, None, now + secs(10))
        .await
        .expect("ks");
    store
        .transition(a, post(), None, now + secs(20))
        .await
        .expect("post");
    assert_eq!(
        check(s(&ta), first, now + secs(21)).await,
        Err(TokenRejected::Expired)
    );
    assert_eq!(
        store
            .ensure_token(a, now + secs(22))
            .expect("mint")
            .await
            .expect("ensure"),
        None
    );
    // after rearm: the old token is refused, a new one is minted and accepted
    store
        .transition(a, Transition::Rearm, None, now + secs(30))
        .await
        .expect("rearm");
    assert_eq!(
        check(s(&ta), first, now + secs(31)).await,
        Err(TokenRejected::Expired)
    );
    let fresh = store
        .ensure_token(a, now + secs(32))
        .expect("mint")
        .await
        .expect("ensure")
        .expect("a new token after rearm");
    assert_ne!(fresh, ta);
    assert_eq!(
        check(s(&ta), first, now + secs(33)).await,
        Err(TokenRejected::Wrong)
    );
    assert_eq!(
        check(s(&fresh), second, now + secs(34)).await,
        Ok(()),
        "rebound anew"
    );
    // every rejection is on the timeline, with its address (two windows of
    // the rate limit: the one at +3600 s starts the second)
    let reasons = rejection_reasons(&store, a).await;
    let want = [
        ("missing", "10.0.0.3"),
        ("missing", "10.0.0.3"),
        ("wrong", "10.0.0.3"),
        ("other-host", "10.0.0.3"),
        ("wrong-address", "10.0.0.99"),
        ("expired", "10.0.0.3"),
        ("expired", "10.0.0.3"),
        ("expired", "10.0.0.3"),
        ("wrong", "10.0.0.3"),
    ]
    .map(|(r, i)| (r.to_owned(), i.to_owned()));
    assert_eq!(reasons, want);
    let timeline = store.timeline(a, 1000).await.expect("timeline");
    let other = timeline
        .iter()
        .find(|e| e.text("reason") == Some("other-host"))
        .expect("other-host event");
    assert_eq!(other.text("owner"), Some(b.to_string().as_str()));
    assert!(
        timeline
            .iter()
            .all(|e| !e.detail.to_string().contains(ta.as_str())),
        "no event carries a token's value"
    );
}

pub async fn the_token_goes_only_to_the_address_of_the_hosts_exchange(bed: &Bed) {
    use kickstand_state::{Binding, Claimed, Network, Withheld};
    let store = bed
        .open_with("rack-a", |c| c.install_timeout = secs(3600))
        .await;
    let (m, now) = (mac(21), t0());
    let (own, other) = (ip("10.0.0.21"), ip("10.0.0.66"));
    let hand = |peer, binding, at| {
        let store = store.clone();
        async move {
            match store.hand_token(m, peer, binding, at).expect("hand") {
                Ok(written) => Ok(written.await.expect("durable")),
                Err(why) => Err(why),
            }
        }
    };
    assert_eq!(
        hand(own, Binding::Dhcp, now).await,
        Err(Withheld::NoExchange),
        "no exchange seen, no token"
    );
    assert_eq!(
        store.phase(m),
        Phase::New,
        "an anonymous fetch moves nothing"
    );
    assert_eq!(store.claim(m, own, Network::Boot, now), Claimed::First);
    assert_eq!(
        store.host_by_ip(own),
        Some(m),
        "attributed through the claim"
    );
    assert_eq!(
        hand(other, Binding::Dhcp, now + secs(1)).await,
        Err(Withheld::OtherAddress { claimed: own })
    );
    let token = hand(own, Binding::Dhcp, now + secs(2))
        .await
        .expect("its own address")
        .expect("a token");
    assert_eq!(
        store.host(m).and_then(|h| h.token_ip),
        Some(own),
        "bound when handed"
    );
    assert_eq!(
        store
            .check_token(m, Some(token.as_str()), other, now + secs(3))
            .await
            .expect("check"),
        Err(TokenRejected::WrongAddress { bound: own }),
        "a token read off the wire is refused elsewhere"
    );
    assert_eq!(
        store.claim(m, own, Network::Boot, now + secs(4)),
        Claimed::Again
    );
    // A forged REQUEST for another address: the host is held.
    assert_eq!(
        store.claim(m, other, Network::Boot, now + secs(5)),
        Claimed::Conflict {
            first: own,
            second: other
        }
    );
    assert_eq!(store.phase(m), Phase::Failed);
    let host = store.host(m).expect("host");
    assert!(
        host.last_error
            .as_deref()
            .is_some_and(|e| e.contains("possible spoofing")
                && e.contains("10.0.0.21")
                && e.contains("10.0.0.66")),
        "{:?}",
        host.last_error
    );
    assert_eq!(
        store
            .check_token(m, Some(token.as_str()), own, now + secs(6))
            .await
            .expect("check"),
        Err(TokenRejected::Expired),
        "the token is revoked"
    );
    assert_eq!(
        hand(own, Binding::Dhcp, now + secs(7)).await,
        Ok(None),
        "held: no install"
    );
    // The operator re-arms it: a new build, a new claim.
    store
        .transition(m, Transition::Rearm, None, now + secs(8))
        .await
        .expect("rearm");
    assert_eq!(
        store.claim(m, other, Network::Boot, now + secs(9)),
        Claimed::First
    );
    assert!(
        hand(other, Binding::Dhcp, now + secs(10))
            .await
            .is_ok_and(|t| t.is_some())
    );

    // With no DHCP exchange to see, the first fetch binds and a second
    // address raises the same alarm.
    let n = mac(22);
    let first = store
        .hand_token(n, own, Binding::FirstFetch, now)
        .expect("hand")
        .expect("first fetch binds");
    assert!(first.await.expect("durable").is_some());
    assert_eq!(
        store
            .hand_token(n, other, Binding::FirstFetch, now + secs(1))
            .expect("hand")
            .err(),
        Some(Withheld::Conflict {
            first: own,
            second: other
        })
    );
    assert_eq!(store.phase(n), Phase::Failed);
}

/// A `boot_vlan` host's installer claims its VLAN address: the token
/// bound at its boot address moves there (on disk too), once; its boot
/// address is then a second claim.
pub async fn the_token_moves_to_the_install_vlan_once_and_stays_there(bed: &Bed) {
    use kickstand_state::{Binding, Claimed, Network};
    let (m, now) = (mac(23), t0());
    let (boot, vlan) = (ip("10.0.0.23"), ip("10.0.20.23"));
    let token = {
        let store = bed
            .open_with("rack-a", |c| c.install_timeout = secs(3600))
            .await;
        assert_eq!(store.claim(m, boot, Network::Boot, now), Claimed::First);
        let token = store
            .hand_token(m, boot, Binding::Dhcp, now + secs(1))
            .expect("hand")
            .expect("its boot address")
            .await
            .expect("durable")
            .expect("a token");
        assert_eq!(
            store.claim(m, vlan, Network::InstallVlan, now + secs(2)),
            Claimed::Moved {
                from: boot,
                to: vlan
            }
        );
        assert_eq!(
            store
                .check_token(m, Some(token.as_str()), vlan, now + secs(3))
                .await
                .expect("check"),
            Ok(()),
            "the installer's kickstart, from the VLAN"
        );
        assert_eq!(
            store
                .check_token(m, Some(token.as_str()), boot, now + secs(4))
                .await
                .expect("check"),
            Err(TokenRejected::WrongAddress { bound: vlan })
        );
        store.close().await.expect("close");
        token
    };
    let store = bed
        .open_with("rack-a", |c| c.install_timeout = secs(3600))
        .await;
    let h = store.host(m).expect("record");
    assert_eq!((h.token.as_ref(), h.token_ip), (Some(&token), Some(vlan)));
    let events = store.timeline(m, 50).await.expect("timeline");
    assert!(
        events.iter().any(|e| e.kind == EventKind::TokenBound
            && e.detail == json!({"ip": "10.0.20.23", "from": "10.0.0.23"})),
        "{events:?}"
    );
    // The boot network's address is a second claim now.
    assert_eq!(
        store.claim(m, boot, Network::Boot, now + secs(5)),
        Claimed::Conflict {
            first: vlan,
            second: boot
        }
    );
}

/// Over IPv6 firmware, loader and installer each take an address of their
/// own: the token goes to any of them, or to the machine's SLAAC address
/// under one's /64, and nowhere else; IPv4 beside it keeps one address.
/// Claims are in memory: after a restart only the bound address stands.
pub async fn the_token_goes_to_the_ipv6_addresses_of_the_hosts_exchanges(bed: &Bed) {
    use kickstand_state::{Binding, Claimed, Network, Withheld};
    let (m, now) = (mac(24), t0());
    // The firmware's lease, the installer's, and the installer's SLAAC
    // address (52:54:00:00:00:18, modified EUI-64) under the firmware's /64.
    let (firmware, installer) = (ip("fd70::1e2"), ip("fd70::1a9"));
    let slaac = ip("fd70::5054:ff:fe00:18");
    let elsewhere = [
        ip("fd71::5054:ff:fe00:18"),
        ip("fd70::5054:ff:fe00:19"),
        ip("fd70::66"),
    ];
    let check = |store: &StateStore, token: &str, peer, at| {
        let written = store.check_token(m, Some(token), peer, at);
        async move { written.await.expect("check") }
    };
    let token = {
        let store = bed
            .open_with("rack-a", |c| c.install_timeout = secs(3600))
            .await;
        let hand = |peer, at| store.hand_token(m, peer, Binding::Dhcp, at).expect("hand");
        assert!(matches!(hand(firmware, now), Err(Withheld::NoExchange)));
        assert_eq!(
            store.claim(m, ip("10.0.0.24"), Network::Boot, now),
            Claimed::First
        );
        assert!(
            matches!(hand(firmware, now), Err(Withheld::NoExchange)),
            "an IPv4 claim is no IPv6 one"
        );
        assert_eq!(store.claim(m, firmware, Network::Boot, now), Claimed::First);
        let token = hand(firmware, now + secs(1))
            .expect("its lease")
            .await
            .expect("durable")
            .expect("a token");
        assert_eq!(store.host(m).and_then(|h| h.token_ip), Some(firmware));
        assert_eq!(
            store.claim(m, installer, Network::Boot, now + secs(2)),
            Claimed::Added("fd70::1a9".parse().expect("ip"))
        );
        for own in [installer, slaac] {
            let handed = hand(own, now + secs(3))
                .unwrap_or_else(|why| panic!("{own}: {why}"))
                .await
                .expect("durable");
            assert_eq!(handed.as_ref(), Some(&token), "{own}: its script");
            assert_eq!(
                check(&store, token.as_str(), own, now + secs(3)).await,
                Ok(()),
                "{own}"
            );
        }
        assert_eq!(
            store.host(m).and_then(|h| h.last_ip),
            Some(slaac),
            "requests from there are the host's"
        );
        for other in elsewhere {
            assert_eq!(
                hand(other, now + secs(4)).err(),
                Some(Withheld::OtherAddress { claimed: firmware }),
                "{other}"
            );
            assert_eq!(
                check(&store, token.as_str(), other, now + secs(4)).await,
                Err(TokenRejected::WrongAddress { bound: firmware }),
                "{other}"
            );
        }
        // IPv4 beside it: one address, as ever.
        assert_eq!(
            check(&store, token.as_str(), ip("10.0.0.24"), now + secs(5)).await,
            Err(TokenRejected::WrongAddress { bound: firmware })
        );
        store.close().await.expect("close");
        token
    };
    let store = bed
        .open_with("rack-a", |c| c.install_timeout = secs(3600))
        .await;
    let at = now + secs(6);
    assert_eq!(check(&store, token.as_str(), firmware, at).await, Ok(()));
    assert_eq!(
        check(&store, token.as_str(), slaac, at).await,
        Ok(()),
        "its SLAAC address under the bound one's /64"
    );
    assert_eq!(
        check(&store, token.as_str(), installer, at).await,
        Err(TokenRejected::WrongAddress { bound: firmware }),
        "claims are in memory: after a restart only the bound address stands"
    );
    // Its installer's exchange is seen again: the set grows to eight,
    // and the ninth address holds the host.
    for n in 1..=7u16 {
        let a = IpAddr::V6(std::net::Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, 0x200 + n));
        assert!(matches!(
            store.claim(m, a, Network::Boot, at),
            Claimed::Added(_)
        ));
    }
    assert_eq!(
        check(&store, token.as_str(), ip("fd70::201"), at).await,
        Ok(())
    );
    let ninth = ip("fd70::666");
    assert_eq!(
        store.claim(m, ninth, Network::Boot, at),
        Claimed::Conflict {
            first: firmware,
            second: ninth
        }
    );
    assert_eq!(store.phase(m), Phase::Failed);
    assert_eq!(
        check(&store, token.as_str(), firmware, at).await,
        Err(TokenRejected::Expired),
        "the token is revoked"
    );
}

pub async fn tokens_expire_after_the_install_timeout(bed: &Bed) {
    let store = bed
        .open_with("rack-a", |c| c.install_timeout = secs(600))
        .await;
    let (m, now) = (mac(5), t0());
    let old = store
        .ensure_token(m, now)
        .expect("mint")
        .await
        .expect("ensure")
        .expect("token");
    let h = store.host(m).expect("record");
    assert_eq!(h.token_issued, Some(now));
    assert_eq!(h.token_expires, Some(now + secs(600)));
    // unused and expired (the host never booted): a new one is minted
    let new = store
        .ensure_token(m, now + secs(601))
        .expect("mint")
        .await
        .expect("ensure")
        .expect("token");
    assert_ne!(old, new);
    let issued = store
        .timeline(m, 100)
        .await
        .expect("timeline")
        .iter()
        .filter(|e| e.kind == EventKind::TokenIssued)
        .count();
    assert_eq!(issued, 2);
}

pub async fn an_overdue_install_fails_and_is_held(bed: &Bed) {
    let store = bed
        .open_with("rack-a", |c| c.install_timeout = secs(600))
        .await;
    let (a, b, now) = (mac(6), mac(7), t0());
    for m in [a, b] {
        store
            .ensure_token(m, now)
            .expect("mint")
            .await
            .expect("ensure");
        store
            .transition(m, Transition::BootFetched, None, now)
            .await
            .expect("boot");
    }
    assert_eq!(store.fail_overdue(now + secs(599)), []);
    // one boots again past the deadline: no token, it fails
    assert_eq!(
        store
            .ensure_token(a, now + secs(600))
            .expect("mint")
            .await
            .expect("ensure"),
        None
    );
    // the other is found by the sweep
    assert_eq!(store.fail_overdue(now + secs(700)), [b]);
    for m in [a, b] {
        let h = store.host(m).expect("record");
        assert_eq!(h.phase, Phase::Failed);
        assert_eq!(
            h.last_error.as_deref(),
            Some("no installed report within 10 min")
        );
    }
    assert_eq!(store.fail_overdue(now + secs(9000)), []);
}

pub async fn failed_host_is_held_until_rearmed(bed: &Bed) {
    let store = bed.open().await;
    let (m, now) = (mac(8), t0());
    let token = store
        .ensure_token(m, now)
        .expect("mint")
        .await
        .expect("ensure")
        .expect("token");
    store
        .transition(m, Transition::PreCallback, None, now)
        .await
        .expect("pre");
    let got = store
        .transition(
            m,
            Transition::OnError {
                reason: "no usable disk".into(),
            },
            None,
            now + secs(1),
        )
        .await
        .expect("onerror");
    assert_eq!(
        got,
        Outcome::Changed {
            from: Phase::Installing,
            to: Phase::Failed
        }
    );
    assert_eq!(
        store
            .ensure_token(m, now + secs(2))
            .expect("mint")
            .await
            .expect("ensure"),
        None
    );
    assert_eq!(
        store
            .check_token(m, Some(token.as_str()), ip("10.0.0.8"), now + secs(2))
            .await
            .expect("check"),
        Err(TokenRejected::Expired)
    );
    for t in [
        Transition::KickstartFetched,
        Transition::PreCallback,
        post(),
    ] {
        assert_eq!(
            store
                .transition(m, t, None, now + secs(3))
                .await
                .expect("t"),
            Outcome::Refused {
                phase: Phase::Failed,
                reason: Refused::Failed
            }
        );
    }
    let d = store.diagnose(m, now + secs(4));
    assert!(
        d.to_string().contains("failed at") && d.to_string().contains("no usable disk"),
        "{d}"
    );
    store
        .transition(m, Transition::Rearm, None, now + secs(5))
        .await
        .expect("rearm");
    let fresh = store
        .ensure_token(m, now + secs(6))
        .expect("mint")
        .await
        .expect("ensure");
    assert!(fresh.is_some_and(|t| t != token));
}

pub async fn retention_bounds_each_class_of_a_host_and_the_whole_timeline(bed: &Bed) {
    let store = bed
        .open_with("rack-a", |c| {
            c.retention.per_host = 10;
            c.retention.noise_per_host = 4;
            c.retention.max_age = secs(3600);
            c.retention.total = 25;
            c.retention.noise_total = 6;
        })
        .await;
    let now = t0();
    let (a, b, c) = (mac(9), mac(10), mac(11));
    // count: only the newest ten life-cycle events of a host stay
    for i in 0..30u64 {
        store
            .record(a, EventKind::Callback, json!({"n": i}), now + secs(i))
            .await
            .expect("record");
    }
    // noise has a bound of its own and pushes nothing else out
    for i in 0..12u64 {
        store
            .record(
                a,
                EventKind::TokenRejected,
                json!({"reason": "wrong", "k": i}),
                now + secs(30 + 61 * i),
            )
            .await
            .expect("record");
    }
    let kept = store.timeline(a, 1000).await.expect("timeline");
    let ns: Vec<u64> = kept.iter().filter_map(|e| e.number("n")).collect();
    assert_eq!(ns, (20..30).collect::<Vec<_>>());
    let ks: Vec<u64> = kept.iter().filter_map(|e| e.number("k")).collect();
    assert_eq!(ks, (8..12).collect::<Vec<_>>());
    // age: old events go with the next prune
    store
        .record(b, EventKind::Callback, json!({"n": 0}), now)
        .await
        .expect("record");
    store
        .record(b, EventKind::Callback, json!({"n": 1}), now + secs(3601))
        .await
        .expect("record");
    // total: many hosts with a few events each stay under the total
    for host in 100..120u16 {
        store
            .record(mac(host), EventKind::Callback, json!({}), now + secs(3602))
            .await
            .expect("record");
    }
    store
        .record(c, EventKind::Callback, json!({}), now + secs(3603))
        .await
        .expect("record");
    let removed = store.prune(now + secs(3603)).await.expect("prune");
    assert!(removed > 0);
    let ns: Vec<u64> = store
        .timeline(b, 1000)
        .await
        .expect("timeline")
        .iter()
        .filter_map(|e| e.number("n"))
        .collect();
    assert_eq!(ns, [1], "the event older than max_age is gone");
    let mut total = 0;
    let mut noise = 0;
    for host in [a, b, c].into_iter().chain((100..120).map(mac)) {
        for e in store.timeline(host, 1000).await.expect("timeline") {
            match e.kind.class() {
                kickstand_state::Class::Noise => noise += 1,
                _ => total += 1,
            }
        }
    }
    assert_eq!(total, 25);
    assert_eq!(noise, 4, "noise within its own bounds");
    assert_eq!(
        store.timeline(c, 10).await.expect("timeline").len(),
        1,
        "the newest events are the ones kept"
    );
    // and age, across every host
    store.prune(now + secs(3600 * 3)).await.expect("prune");
    for host in [a, b, c] {
        assert_eq!(store.timeline(host, 1000).await.expect("timeline"), []);
    }
}

pub async fn ten_thousand_wrong_tokens_leave_the_life_cycle_in_place(bed: &Bed) {
    let store = bed.open().await;
    let (m, now) = (mac(21), t0());
    let token = store
        .ensure_token(m, now)
        .expect("mint")
        .await
        .expect("ensure")
        .expect("token");
    store
        .transition(m, Transition::BootFetched, Some(ip("10.0.0.21")), now)
        .await
        .expect("boot");
    store
        .record(m, EventKind::BootScript, json!({"script": "install"}), now)
        .await
        .expect("script");
    store
        .check_token(m, Some(token.as_str()), ip("10.0.0.21"), now)
        .await
        .expect("check")
        .expect("the host's own use");
    store
        .transition(m, Transition::KickstartFetched, None, now)
        .await
        .expect("ks");
    let life_cycle = |events: &[kickstand_state::Event]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.kind.class() == kickstand_state::Class::LifeCycle)
            .map(|e| e.kind.to_string())
            .collect()
    };
    let before = life_cycle(&store.timeline(m, 10_000).await.expect("timeline"));
    assert_eq!(
        before,
        [
            "token-issued",
            "phase-change",
            "boot-script",
            "token-bound",
            "phase-change"
        ]
    );
    // an attacker replays requests for ten minutes' worth of seconds
    for i in 0..10_000u64 {
        let at = now + Duration::from_millis(60 * i);
        let verdict = store
            .check_token(m, Some("forged"), ip("10.0.0.66"), at)
            .value();
        assert_eq!(verdict, Err(TokenRejected::Wrong));
    }
    store.tick(now + secs(3600));
    let events = store.timeline(m, 10_000).await.expect("timeline");
    assert_eq!(life_cycle(&events), before, "every life-cycle event stays");
    let rejected: Vec<&kickstand_state::Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::TokenRejected)
        .collect();
    assert!(
        rejected.len() <= 100,
        "{} rejection rows for 10,000 requests",
        rejected.len()
    );
    let counted: u64 = rejected.iter().map(|e| e.repeated()).sum();
    assert!(
        counted > 9000,
        "the summaries still say how many came ({counted})"
    );
    assert!(rejected.iter().any(|e| e.repeated() > 1));
    let d = store.diagnose(m, now + secs(1));
    assert!(!matches!(d, Diagnosis::NeverSeen), "{d:?}");
}

pub async fn discovered_table_is_bounded(bed: &Bed) {
    let limits = DiscoveryLimits {
        max: 3,
        per_address: 2,
        expire_after: secs(3600),
    };
    let store = bed.open_with("rack-a", |c| c.discovery = limits).await;
    let now = t0();
    let facts = |serial: &str| Facts {
        uuid: Some("8c3a1f5e-0000-4000-8000-000000000001".into()),
        serial: Some(serial.into()),
        product: Some("Standard PC (Q35 + ICH9, 2009)".into()),
        platform: Some("efi".into()),
        ..Facts::default()
    };
    for n in 1..=3u16 {
        let got = store
            .report_discovered(
                mac(200 + n),
                ip(&format!("10.0.0.{}", 49 + n)),
                &facts("s1"),
                now + secs(u64::from(n)),
            )
            .await
            .expect("report");
        assert_eq!(got, DiscoveryOutcome::Added);
    }
    // a flood of new MACs from one address churns that address's share:
    // it pushes out at most `per_address` machines, and nothing grows
    for n in 4..50u16 {
        let got = store
            .report_discovered(
                mac(200 + n),
                ip("10.0.0.66"),
                &facts("forged"),
                now + secs(10),
            )
            .await
            .expect("report");
        let want = match n {
            4 => DiscoveryOutcome::AddedEvicting {
                evicted: mac(201),
                why: Evicted::Full,
            },
            5 => DiscoveryOutcome::AddedEvicting {
                evicted: mac(202),
                why: Evicted::Full,
            },
            n => DiscoveryOutcome::AddedEvicting {
                evicted: mac(200 + n - 2),
                why: Evicted::AddressBudget,
            },
        };
        assert_eq!(got, want, "report {n}");
    }
    let macs =
        |store: &StateStore| -> Vec<Mac> { store.discovered().iter().map(|d| d.mac).collect() };
    assert_eq!(macs(&store), [mac(248), mac(249), mac(203)]);
    // a known machine is updated
    let got = store
        .report_discovered(mac(203), ip("10.0.0.51"), &facts("s2"), now + secs(20))
        .await
        .expect("report");
    assert_eq!(got, DiscoveryOutcome::Updated);
    let list = store.discovered();
    assert_eq!(list[0].mac, mac(203));
    assert_eq!(list[0].first_seen, now + secs(3));
    assert_eq!(list[0].last_seen, now + secs(20));
    assert_eq!(list[0].ip, Some(ip("10.0.0.51")));
    assert_eq!(list[0].facts, facts("s2"));
    // the table is on disk as it is in memory
    store.close().await.expect("close");
    let store = bed.open_with("rack-a", |c| c.discovery = limits).await;
    assert_eq!(macs(&store), [mac(203), mac(248), mac(249)]);
    // machines not seen for `expire_after` are forgotten
    store.tick(now + secs(3611));
    assert_eq!(macs(&store), [mac(203)]);
    assert!(store.forget_discovered(mac(203)).await.expect("forget"));
    assert!(!store.forget_discovered(mac(203)).await.expect("forget"));
    for n in 60..62u16 {
        store
            .report_discovered(mac(n), ip("10.0.0.60"), &facts("s3"), now)
            .await
            .expect("report");
    }
    assert_eq!(store.clear_discovered().await.expect("clear"), 2);
    store.close().await.expect("close");
    let store = bed.open_with("rack-a", |c| c.discovery = limits).await;
    assert_eq!(macs(&store), []);
    let huge = Facts {
        serial: Some("x".repeat(20_000)),
        ..Facts::default()
    };
    assert!(matches!(
        store
            .report_discovered(mac(201), ip("10.0.0.51"), &huge, now)
            .await
            .expect("report"),
        DiscoveryOutcome::TooLarge { .. }
    ));
}

pub async fn progress_counts_and_expected_install(bed: &Bed) {
    let store = bed.open().await;
    let (a, b, now) = (mac(12), mac(13), t0());
    assert_eq!(store.expected_install("rocky-9"), None);
    store
        .transition(a, Transition::BootFetched, None, now)
        .await
        .expect("boot");
    for _ in 0..100 {
        store.add_pulled(a, 1000, 1);
    }
    let h = store.host(a).expect("record");
    assert_eq!(
        (h.pulled.bytes, h.pulled.files),
        (100_000, 100),
        "pending counts show"
    );
    store.flush().await.expect("flush");
    store.add_pulled(a, 500, 1);
    store
        .transition(a, post(), None, now + secs(600))
        .await
        .expect("post");
    let want = kickstand_state::InstallSize {
        bytes: 100_500,
        files: 101,
        duration: secs(600),
    };
    assert_eq!(store.expected_install("rocky-9"), Some(want));
    assert_eq!(store.expected_install("alma-9"), None);
    // the next install of another host starts from zero and sees the estimate
    store.add_pulled(b, 7, 7);
    store
        .transition(b, Transition::BootFetched, None, now + secs(700))
        .await
        .expect("boot");
    let h = store.host(b).expect("record");
    assert_eq!((h.pulled.bytes, h.pulled.files), (0, 0));
    // the counts survive a reopen
    store.close().await.expect("close");
    let store = bed.open().await;
    let h = store.host(a).expect("record");
    assert_eq!((h.pulled.bytes, h.pulled.files), (100_500, 101));
}

pub async fn everything_survives_a_reopen(bed: &Bed) {
    let now = t0();
    let (m, token) = {
        let store = bed.open().await;
        let m = mac(14);
        let token = store
            .ensure_token(m, now)
            .expect("mint")
            .await
            .expect("ensure")
            .expect("token");
        store
            .check_token(m, Some(token.as_str()), ip("10.0.0.14"), now)
            .await
            .expect("check")
            .expect("accepted");
        store
            .transition(m, Transition::KickstartFetched, None, now)
            .await
            .expect("ks");
        store
            .record(
                m,
                EventKind::KickstartFetch,
                json!({"ip": "10.0.0.14"}),
                now,
            )
            .await
            .expect("record");
        store.close().await.expect("close");
        (m, token)
    };
    let store = bed.open().await;
    let h = store.host(m).expect("record");
    assert_eq!(h.phase, Phase::Installing);
    assert_eq!(h.token.as_ref(), Some(&token));
    assert_eq!(h.token_ip, Some(ip("10.0.0.14")));
    assert_eq!(
        store
            .ensure_token(m, now + secs(1))
            .expect("mint")
            .await
            .expect("ensure"),
        Some(token.clone())
    );
    assert_eq!(
        store
            .check_token(m, Some(token.as_str()), ip("10.0.0.15"), now + secs(1))
            .await
            .expect("check"),
        Err(TokenRejected::WrongAddress {
            bound: ip("10.0.0.14")
        }),
        "the binding survives too"
    );
    let kinds: Vec<String> = store
        .timeline(m, 100)
        .await
        .expect("timeline")
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "token-issued",
            "token-bound",
            "phase-change",
            "kickstart-fetch",
            "token-rejected"
        ]
    );
}

pub async fn json_state_is_imported_once(bed: &Bed) {
    let json = r#"{
        "52:54:00:00:01:01": {"phase": "installed", "since": 1700000000},
        "52:54:00:00:01:02": {"phase": "installing", "since": 1700000100},
        "52:54:00:00:01:03": {"phase": "new", "since": 1700000200}
    }"#;
    let file = bed.dir.join("hosts.json");
    std::fs::write(&file, json).expect("write hosts.json");
    let store = bed.open().await;
    assert!(!file.exists());
    assert!(bed.dir.join("hosts.json.imported").exists());
    let phases: Vec<(Mac, Phase)> = store.hosts().iter().map(|h| (h.mac, h.phase)).collect();
    let want = [
        ("52:54:00:00:01:01", Phase::Installed),
        ("52:54:00:00:01:02", Phase::Installing),
        ("52:54:00:00:01:03", Phase::New),
    ]
    .map(|(m, p)| (m.parse::<Mac>().expect("mac"), p));
    assert_eq!(phases, want);
    let installed: Mac = "52:54:00:00:01:01".parse().expect("mac");
    let h = store.host(installed).expect("record");
    assert_eq!(h.since, SystemTime::UNIX_EPOCH + secs(1_700_000_000));
    // An operator moves on; then the same file turns up again (an import
    // interrupted before its rename): nothing is duplicated or undone.
    store
        .transition(installed, Transition::Rearm, None, t0())
        .await
        .expect("rearm");
    store.close().await.expect("close");
    std::fs::write(&file, json).expect("write hosts.json again");
    let store = bed.open().await;
    assert!(!file.exists());
    assert_eq!(store.hosts().len(), 3);
    assert_eq!(store.host(installed).map(|h| h.phase), Some(Phase::Rearmed));
    let imports = store
        .timeline(installed, 100)
        .await
        .expect("timeline")
        .iter()
        .filter(|e| e.text("transition") == Some("import"))
        .count();
    assert_eq!(imports, 1);
    // a broken file is a clear error, not an empty store
    store.close().await.expect("close");
    std::fs::write(&file, "{ not json").expect("write");
    let err = StateStore::open(bed.config("rack-a"))
        .await
        .expect_err("a corrupt hosts.json must not be skipped");
    assert!(matches!(err, StateError::Import { .. }), "{err}");
}

pub async fn an_old_schema_is_upgraded_in_place(bed: &Bed) {
    let now = kickstand_state_ms(t0());
    // A host and an event as version 2 wrote them.
    StateStore::make_old(
        &bed.config("rack-a"),
        2,
        &[
            &format!(
                "INSERT INTO hosts (mac, phase, since, appliance) \
                 VALUES ('52:54:00:00:00:0f', 'booting', {now}, 'rack-a')"
            ),
            &format!(
                "INSERT INTO events (time, mac, appliance, kind, detail) VALUES \
                 ({now}, '52:54:00:00:00:0f', 'rack-a', 'phase-change', \
                  '{{\"from\":\"new\",\"to\":\"booting\",\"transition\":\"boot-fetched\"}}'), \
                 ({now}, '52:54:00:00:00:0f', 'rack-a', 'token-rejected', '{{\"reason\":\"wrong\"}}'), \
                 ({now}, '52:54:00:00:00:0f', 'rack-a', 'dhcp-offer', '{{}}')"
            ),
        ],
    )
    .await
    .expect("a version 2 database");
    let store = bed.open().await;
    assert_eq!(store.schema_version().await.expect("version"), 5);
    assert_eq!(store.host(mac(15)).map(|h| h.phase), Some(Phase::Booting));
    let events = store.timeline(mac(15), 10).await.expect("timeline");
    let classes: Vec<&str> = events.iter().map(|e| e.kind.class().as_str()).collect();
    assert_eq!(classes, ["life-cycle", "noise", "activity"]);
    assert_eq!(store.recent(mac(15)).len(), 3, "loaded into memory");
    // what version 3 added works: each class within its bound
    let now = t0();
    store
        .report_discovered(mac(16), ip("10.0.0.16"), &Facts::default(), now)
        .await
        .expect("discovered");
    store
        .transition(mac(15), post(), None, now + secs(1))
        .await
        .expect("post");
    assert!(store.expected_install("rocky-9").is_some());
    // opening again applies nothing twice
    store.close().await.expect("close");
    let store = bed.open().await;
    assert_eq!(store.schema_version().await.expect("version"), 5);
    assert_eq!(store.host(mac(15)).map(|h| h.phase), Some(Phase::Installed));
}

fn kickstand_state_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

/// Waits for `cond` (another appliance's change reaches
/// this one through the database's notifications).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        // A deadline far past what it takes (a tenth of a second), for a
        // loaded machine: not a speed check.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not seen within 10 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn two_appliances_share_hosts_and_timelines(bed: &Bed) {
    let a = bed.open_with("rack-a", |_| {}).await;
    let b = bed.open_with("rack-b", |_| {}).await;
    let (m, now) = (mac(17), t0());
    let token = a
        .ensure_token(m, now)
        .expect("mint")
        .await
        .expect("ensure")
        .expect("token");
    eventually("a's token at b", || {
        b.host(m).and_then(|h| h.token) == Some(token.clone())
    })
    .await;
    assert_eq!(
        b.ensure_token(m, now).expect("mint").await.expect("ensure"),
        Some(token.clone()),
        "both appliances render the same token"
    );
    a.record(
        m,
        EventKind::DhcpOffer,
        json!({"boot_file": "ipxe.efi"}),
        now,
    )
    .await
    .expect("record");
    a.transition(m, Transition::KickstartFetched, None, now)
        .await
        .expect("ks");
    b.check_token(m, Some(token.as_str()), ip("10.1.0.17"), now)
        .await
        .expect("check")
        .expect("accepted through b");
    eventually("b's binding at a", || {
        a.host(m).and_then(|h| h.token_ip) == Some(ip("10.1.0.17"))
    })
    .await;
    assert_eq!(
        a.check_token(m, Some(token.as_str()), ip("10.1.0.99"), now)
            .value(),
        Err(TokenRejected::WrongAddress {
            bound: ip("10.1.0.17")
        }),
        "a token used through b is bound at a too"
    );
    a.transition(m, post(), None, now + secs(60))
        .await
        .expect("post");
    // installed through a, seen installed through b: it boots its disk there
    eventually("installed at b", || b.phase(m) == Phase::Installed).await;
    let seen = b.host(m).expect("record");
    assert_eq!(seen.appliance, "rack-a");
    b.record(
        m,
        EventKind::LocalBoot,
        json!({"how": "exit"}),
        now + secs(120),
    )
    .await
    .expect("record");
    for store in [&a, &b] {
        let by: Vec<String> = store
            .timeline(m, 100)
            .await
            .expect("timeline")
            .iter()
            .map(|e| format!("{}@{}", e.kind, e.appliance))
            .collect();
        assert_eq!(
            by,
            [
                "token-issued@rack-a",
                "dhcp-offer@rack-a",
                "phase-change@rack-a",
                "token-bound@rack-b",
                "token-rejected@rack-a",
                "phase-change@rack-a",
                "local-boot@rack-b"
            ]
        );
    }
    eventually("the install's size at b", || {
        b.expected_install("rocky-9").is_some()
    })
    .await;
    // and what b's memory holds for the diagnosis is the shared timeline
    eventually("a's events in b's memory", || {
        b.recent(m).iter().any(|e| e.appliance == "rack-a")
    })
    .await;
}

pub async fn concurrent_writers_lose_nothing(bed: &Bed) {
    let a = bed.open_with("rack-a", |_| {}).await;
    let b = bed.open_with("rack-b", |_| {}).await;
    let now = t0();
    let mut tasks = Vec::new();
    for n in 0..8u16 {
        for store in [a.clone(), b.clone()] {
            tasks.push(tokio::spawn(async move {
                for i in 0..10u64 {
                    store
                        .record(mac(300 + n), EventKind::TftpTransfer, json!({"i": i}), now)
                        .await?;
                    store
                        .transition(mac(300 + n), Transition::SeenByDhcp, None, now)
                        .await?;
                }
                Ok::<_, StateError>(())
            }));
        }
    }
    for t in tasks {
        t.await.expect("task").expect("writes");
    }
    // repeats past the first few a minute are summed up at its end
    for store in [&a, &b] {
        store.tick(now + secs(61));
        store.flush().await.expect("flush");
    }
    for n in 0..8u16 {
        let events = a.timeline(mac(300 + n), 1000).await.expect("timeline");
        let transfers: u64 = events
            .iter()
            .filter(|e| e.kind == EventKind::TftpTransfer)
            .map(|e| e.repeated())
            .sum();
        let changes = events
            .iter()
            .filter(|e| e.kind == EventKind::PhaseChange)
            .count();
        assert_eq!(
            (transfers, changes),
            (20, 1),
            "host {n}: both appliances' transfers, and one phase change where both saw the host first"
        );
    }
}

pub async fn diagnosis_reads_the_stored_timeline(bed: &Bed) {
    let store = bed.open().await;
    let (m, now) = (mac(18), t0());
    assert_eq!(store.diagnose(m, now), Diagnosis::NeverSeen);
    store
        .transition(m, Transition::SeenByDhcp, None, now)
        .await
        .expect("dhcp");
    store
        .record(
            m,
            EventKind::DhcpOffer,
            json!({"boot_file": "ipxe.efi", "arch": "efi-x64"}),
            now,
        )
        .await
        .expect("offer");
    store
        .record(
            m,
            EventKind::TftpTransfer,
            json!({"file": "ipxe.efi", "bytes": 0, "outcome": "aborted", "error_code": 8}),
            now + secs(1),
        )
        .await
        .expect("tftp");
    let d = store.diagnose(m, now + secs(600));
    assert!(matches!(d, Diagnosis::TftpFailed { .. }), "{d:?}");
    assert!(
        d.to_string()
            .starts_with("TFTP of ipxe.efi aborted by the client after 0 bytes (error 8)"),
        "{d}"
    );
    let last = store.last_events();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].kind, EventKind::TftpTransfer);
}

pub async fn requests_without_a_mac_find_their_host_by_address(bed: &Bed) {
    let store = bed.open().await;
    let now = t0();
    assert_eq!(store.host_by_ip(ip("10.0.0.20")), None);
    store
        .transition(mac(19), Transition::BootFetched, Some(ip("10.0.0.20")), now)
        .await
        .expect("boot");
    store
        .transition(mac(20), Transition::BootFetched, Some(ip("10.0.0.21")), now)
        .await
        .expect("boot");
    assert_eq!(store.host_by_ip(ip("10.0.0.20")), Some(mac(19)));
    assert_eq!(store.host_by_ip(ip("10.0.0.21")), Some(mac(20)));
}

// ---- kill -9 ---------------------------------------------------------------

/// Set in the child the kill -9 test starts: the backend to write to.
pub const WRITER_ENV: &str = "KICKSTAND_STATE_KILL9_WRITER";
const STEPS: u64 = 5;

/// The child's side: walks hosts through their install, printing `ack
/// <host> <step>` after each write the store acknowledged, until killed.
pub async fn writer(config: StateConfig) {
    let store = StateStore::open(config).await.expect("open");
    let now = t0();
    for n in 0..u16::MAX {
        let m = mac(n);
        for step in 0..STEPS {
            match step {
                0 => store
                    .record(
                        m,
                        EventKind::DhcpOffer,
                        json!({"boot_file": "ipxe.efi"}),
                        now,
                    )
                    .await
                    .expect("offer"),
                1 => drop(
                    store
                        .transition(m, Transition::BootFetched, None, now)
                        .await
                        .expect("boot"),
                ),
                2 => store
                    .record(m, EventKind::KickstartFetch, json!({}), now)
                    .await
                    .expect("ks event"),
                3 => drop(
                    store
                        .transition(m, Transition::KickstartFetched, None, now)
                        .await
                        .expect("ks"),
                ),
                _ => drop(store.transition(m, post(), None, now).await.expect("post")),
            }
            println!("ack {n} {step}");
        }
    }
}

/// The parent's side: runs `test` of this test binary as the writer, kills
/// it with SIGKILL after `acks` acknowledgements, reopens `config` and
/// checks that every acknowledged write is there. Returns what it saw.
pub async fn kill9(test: &str, config: StateConfig, spec: &str, acks: usize) -> (u16, u64) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            test,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut last = None;
    let mut seen = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("read");
        let Some(ack) = line.strip_prefix("ack ") else {
            continue;
        };
        let (n, step) = ack.split_once(' ').expect("ack n step");
        last = Some((
            n.parse::<u16>().expect("host"),
            step.parse::<u64>().expect("step"),
        ));
        seen += 1;
        if seen == acks {
            break;
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the writer was killed, not finished");
    let (last_host, last_step) = last.expect("the writer acknowledged something");
    assert_eq!(seen, acks, "the writer died before it was killed");

    let store = StateStore::open(config).await.expect("reopen");
    for n in 0..=last_host {
        let m = mac(n);
        let acked = if n < last_host { STEPS - 1 } else { last_step };
        let phase = store.host(m).map(|h| h.phase);
        // What came after the last acknowledgement the parent read may or
        // may not have committed before the kill (the writer goes on while
        // the parent reads and kills); anything acknowledged must be there.
        let allowed: &[Phase] = match acked {
            0 => &[
                Phase::New,
                Phase::Booting,
                Phase::Installing,
                Phase::Installed,
            ],
            1 | 2 => &[Phase::Booting, Phase::Installing, Phase::Installed],
            3 => &[Phase::Installing, Phase::Installed],
            _ => &[Phase::Installed],
        };
        let phase = phase.unwrap_or(Phase::New);
        assert!(
            allowed.contains(&phase),
            "host {n}: {phase} after ack of step {acked}"
        );
        let kinds: Vec<EventKind> = store
            .timeline(m, 100)
            .await
            .expect("timeline")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        let count = |k: EventKind| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(count(EventKind::DhcpOffer), 1, "host {n}");
        if acked >= 2 {
            assert_eq!(count(EventKind::KickstartFetch), 1, "host {n}");
        }
        let changes = match acked {
            0 => 0,
            1 | 2 => 1,
            3 => 2,
            _ => 3,
        };
        assert!(
            count(EventKind::PhaseChange) >= changes,
            "host {n}: {kinds:?}"
        );
    }
    (last_host, last_step)
}

/// Operator actions, done and refused, come back newest first with who
/// asked, and the log keeps only its newest [`AUDIT_KEPT`] rows.
pub async fn the_audit_log_keeps_who_did_what_and_is_bounded(bed: &Bed) {
    let store = bed.open().await;
    let now = t0();
    let act = |n: u64, error: Option<&str>| OperatorAction {
        peer: ip("10.0.0.9"),
        token_id: Some(format!("{n:08x}")),
        action: "rearm".into(),
        target: mac(1).to_string(),
        error: error.map(str::to_owned),
    };
    let _ = store.record_audit(act(1, None), now);
    store
        .record_audit(act(2, Some("needs HTTPS")), now + secs(1))
        .await
        .expect("written");
    let rows = store.audit(10).await.expect("audit");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].action, act(2, Some("needs HTTPS")), "newest first");
    assert_eq!(rows[1].action, act(1, None));
    assert_eq!(rows[1].time, now);
    assert_eq!(rows[1].appliance, "rack-a");

    for n in 0..AUDIT_KEPT + 10 {
        let _ = store.record_audit(act(n, None), now + secs(2));
    }
    store.prune(now + secs(3)).await.expect("prune");
    let rows = store.audit(AUDIT_KEPT + 100).await.expect("audit");
    assert_eq!(rows.len() as u64, AUDIT_KEPT);
    assert_eq!(rows[0].action, act(AUDIT_KEPT + 9, None), "the newest stay");
}
