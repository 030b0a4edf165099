//! The shipped samples load, and every kind of broken edit is rejected with
//! a diagnostic naming file, line and column.

use std::path::{Path, PathBuf};

use kickstand_profiles::model::{Arch, BootLoader, MirrorKind};
use kickstand_profiles::{Diagnostic, Draft, LoadError, Mac, load, load_appliance, load_with};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A private copy of the shipped `profiles/` and `templates/` in a temp dir,
/// laid out side by side as in the repo so relative paths still work.
struct Copy {
    dir: tempfile::TempDir,
}

impl Copy {
    fn new() -> Copy {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["profiles", "templates"] {
            copy_tree(&repo_root().join(sub), &dir.path().join(sub));
        }
        Copy { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("profiles/kickstand.yaml")
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        path
    }

    fn load_err(&self) -> Vec<Diagnostic> {
        match load(&self.config()) {
            Ok(_) => panic!("the broken profile set was accepted"),
            Err(LoadError(diags)) => diags,
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Asserts exactly one diagnostic that points into `file` at `line`.
fn assert_one_at(diags: &[Diagnostic], file: &Path, line: u64, needle: &str) {
    assert_eq!(diags.len(), 1, "expected one diagnostic, got: {diags:#?}");
    let d = &diags[0];
    assert_eq!(d.file, file, "{d}");
    let (l, c) = d
        .position
        .unwrap_or_else(|| panic!("no line/column in {d}"));
    assert_eq!(l, line, "{d}");
    assert!(c >= 1, "{d}");
    assert!(d.message.contains(needle), "`{needle}` not in: {d}");
    let shown = d.to_string();
    assert!(
        shown.starts_with(&format!("{}:{l}:{c}: ", file.display())),
        "{shown}"
    );
}

#[test]
fn shipped_samples_load() {
    let snap = load(&repo_root().join("profiles/kickstand.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.oses.len(), 4);
    let arm = &snap.oses["centos-stream-9-aarch64"];
    assert_eq!(arm.arch, Arch::Aarch64);
    assert_eq!(
        (arm.shim.as_str(), arm.grub.as_str()),
        ("EFI/BOOT/BOOTAA64.EFI", "EFI/BOOT/grubaa64.efi")
    );
    let x64 = &snap.oses["centos-stream-9"];
    assert_eq!(
        (x64.shim.as_str(), x64.grub.as_str()),
        ("EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi")
    );
    assert_eq!(x64.grub_template, "grub.cfg.j2");
    assert!(snap.hosts.len() >= 4);
    let node01 = snap
        .host(&"52:54:00:10:00:01".parse::<Mac>().expect("mac"))
        .expect("node01");
    assert_eq!(node01.groups, ["compute"]);
    assert_eq!(node01.disk.device.as_deref(), Some("vda"));
    assert!(
        node01.packages.contains(&"tuned".to_owned())
            && node01.packages.contains(&"chrony".to_owned())
    );
    let stor01 = snap
        .host(&"52:54:00:20:00:01".parse::<Mac>().expect("mac"))
        .expect("stor01");
    assert_eq!(stor01.groups, ["storage"], "selected by hostname pattern");
    assert_eq!(stor01.os, "rocky-9", "group overrides defaults");
    assert_eq!(stor01.snippets.post.len(), 1);
}

#[test]
fn syntax_error_is_located() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: [unclosed\n",
    );
    let diags = copy.load_err();
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].file, file);
    assert!(diags[0].position.is_some(), "{}", diags[0]);
}

/// The commands that talk to the running daemon read the appliance config
/// alone: a broken profile file does not stop them, a broken
/// `kickstand.yaml` does, located like any other problem.
#[test]
fn the_appliance_config_loads_alone_beside_a_broken_profile() {
    let copy = Copy::new();
    let whole = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: [unclosed\n",
    );
    assert!(load(&copy.config()).is_err());
    let alone = load_appliance(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(alone, whole.appliance, "the same settings as a whole load");
    let text = std::fs::read_to_string(copy.config()).expect("config");
    copy.write(
        "profiles/kickstand.yaml",
        &text.replace("http_port: 8080", "http_port: eighty"),
    );
    let LoadError(diags) = load_appliance(&copy.config()).expect_err("a broken config");
    assert!(
        diags
            .iter()
            .any(|d| d.file == copy.config() && d.position.is_some()),
        "{diags:#?}"
    );
}

#[test]
fn wrong_type_is_located() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: web\n    packages: nginx-as-a-string\n",
    );
    let diags = copy.load_err();
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(
        (diags[0].file.as_path(), diags[0].position.map(|p| p.0)),
        (file.as_path(), Some(4)),
        "{}",
        diags[0]
    );
}

#[test]
fn unknown_key_is_located() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: web\n    hostnmae: typo\n",
    );
    assert_one_at(&copy.load_err(), &file, 4, "unknown field `hostnmae`");
}

#[test]
fn missing_os_reference_is_located() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: web\n    os: centos-stream-10\n",
    );
    assert_one_at(
        &copy.load_err(),
        &file,
        4,
        "OS `centos-stream-10` is not defined",
    );
}

#[test]
fn a_host_on_an_os_of_another_architecture_is_located() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/arm.yaml",
        "hosts:\n  \"52:54:00:99:00:02\":\n    hostname: arm1\n    arch: aarch64\n    os: centos-stream-9\n",
    );
    assert_one_at(
        &copy.load_err(),
        &file,
        5,
        "host 52:54:00:99:00:02 is aarch64 but OS `centos-stream-9` is for x86_64",
    );
    // On the ARM64 OS it loads, with the default loader.
    copy.write(
        "profiles/hosts/arm.yaml",
        "hosts:\n  \"52:54:00:99:00:02\":\n    hostname: arm1\n    arch: aarch64\n    os: centos-stream-9-aarch64\n    boot_loader: grub\n",
    );
    let snap = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    let host = snap
        .host(&"52:54:00:99:00:02".parse::<Mac>().expect("mac"))
        .expect("arm1");
    assert_eq!(host.boot_loader, BootLoader::Grub);
}

#[test]
fn a_bad_boot_loader_and_a_shim_apart_from_its_grub_are_located() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/bad.yaml",
        "hosts:\n  \"52:54:00:99:00:03\":\n    hostname: x1\n    boot_loader: pxelinux\n",
    );
    assert_one_at(&copy.load_err(), &file, 4, "boot_loader");
    std::fs::remove_file(&file).expect("rm");
    let file = copy.write(
        "profiles/os/custom.yaml",
        "os:\n  custom:\n    mirror: centos\n    tree: custom/os\n    shim: EFI/BOOT/BOOTX64.EFI\n    grub: EFI/custom/grubx64.efi\n    kickstart: centos-stream-9.ks.j2\n",
    );
    let diags = copy.load_err();
    assert!(
        diags
            .iter()
            .any(|d| d.file == file && d.message.contains("must be in one directory")),
        "{diags:#?}"
    );
    copy.write(
        "profiles/os/custom.yaml",
        "os:\n  custom:\n    mirror: centos\n    tree: custom/os\n    grub: EFI/BOOT/grub.efi\n    kickstart: centos-stream-9.ks.j2\n",
    );
    let diags = copy.load_err();
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("must be named `grubx64.efi`")),
        "{diags:#?}"
    );
}

#[test]
fn duplicate_mac_across_files_and_spellings() {
    let copy = Copy::new();
    // Same machine as node01 in rack1.yaml, written another way.
    let file = copy.write(
        "profiles/hosts/rack2.yaml",
        "hosts:\n  \"52-54-00-10-00-01\":\n    hostname: node01-again\n",
    );
    let diags = copy.load_err();
    assert_one_at(&diags, &file, 3, "MAC 52:54:00:10:00:01 appears twice");
    assert!(
        diags[0].message.contains("rack1.yaml"),
        "names the first place too: {}",
        diags[0]
    );
}

/// A file not written yet is validated with the whole set, by the same
/// code, and named in what is wrong with it; nothing is read from its path.
#[test]
fn a_draft_is_validated_with_the_set_before_it_exists() {
    let copy = Copy::new();
    let path = copy
        .dir
        .path()
        .join("profiles/adopted/52-54-00-99-99-07.yaml");
    let draft = |text| Draft { path: &path, text };
    let good = "hosts:\n  \"52:54:00:99:99:07\":\n    hostname: node09\n";
    let snapshot = load_with(&copy.config(), Some(draft(good))).expect("a good draft loads");
    let mac: Mac = "52:54:00:99:99:07".parse().expect("mac");
    assert_eq!(
        snapshot.host(&mac).map(|h| h.hostname.as_str()),
        Some("node09")
    );
    assert!(snapshot.files.contains(&path));
    assert!(!path.exists(), "a draft is never written by loading it");

    let clash = "hosts:\n  \"52:54:00:99:99:07\":\n    hostname: node01\n";
    let Err(LoadError(diags)) = load_with(&copy.config(), Some(draft(clash))) else {
        panic!("a hostname clash was accepted");
    };
    assert_one_at(&diags, &path, 3, "hostname `node01`");
    let unknown =
        "hosts:\n  \"52:54:00:99:99:07\":\n    hostname: node09\n    groups: [nosuchgroup]\n";
    let Err(LoadError(diags)) = load_with(&copy.config(), Some(draft(unknown))) else {
        panic!("an unknown group was accepted");
    };
    assert!(diags.iter().all(|d| d.file == path), "{diags:#?}");
    assert!(
        diags.iter().any(|d| d.message.contains("nosuchgroup")),
        "{diags:#?}"
    );
}

#[test]
fn duplicate_mac_key_in_one_file() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/dup.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: a\n  \"52:54:00:99:00:01\":\n    hostname: b\n",
    );
    let diags = copy.load_err();
    assert_one_at(&diags, &file, 4, "duplicate");
}

#[test]
fn every_problem_is_reported_at_once() {
    let copy = Copy::new();
    copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: a\n    os: nope\n  \"52:54:00:99:00:02\":\n    hostname: b_bad\n  \"not-a-mac\":\n    hostname: c\n",
    );
    let diags = copy.load_err();
    assert_eq!(diags.len(), 3, "{diags:#?}");
}

#[test]
fn clear_text_password_is_refused() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/broken.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: a\n    root_password_hash: hunter2\n",
    );
    assert_one_at(&copy.load_err(), &file, 4, "crypt(3)");
}

#[test]
fn conflicting_groups_are_an_error_but_the_host_may_settle_it() {
    let copy = Copy::new();
    copy.write(
        "profiles/hosts/both.yaml",
        "hosts:\n  \"52:54:00:10:00:09\":\n    hostname: stor09\n",
    );
    // In both `compute` (by MAC) and `storage` (by hostname), which set
    // different disk layouts.
    let diags = copy.load_err();
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0].message.contains("set different `disk`"),
        "{}",
        diags[0]
    );
    copy.write(
        "profiles/hosts/both.yaml",
        "hosts:\n  \"52:54:00:10:00:09\":\n    hostname: stor09\n    disk: {layout: plain}\n",
    );
    let snap = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.hosts.len(), 5);
}

#[test]
fn mirror_and_template_references_are_checked() {
    let copy = Copy::new();
    let file = copy.write(
        "profiles/os/extra.yaml",
        "os:\n  fedora:\n    mirror: fedora\n    tree: x\n    kickstart: missing.ks.j2\n",
    );
    let diags = copy.load_err();
    assert_eq!(diags.len(), 2, "{diags:#?}");
    assert!(diags.iter().all(|d| d.file == file));
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("mirror `fedora`") && d.position.map(|p| p.0) == Some(3))
    );
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("template `missing.ks.j2`")
                && d.position.map(|p| p.0) == Some(5))
    );
}

/// hickory-dns style: a bogus key in any mapping of any shipped sample must
/// be rejected. JSON is YAML, so the mutated document is written as JSON.
#[test]
fn bogus_key_in_every_mapping_of_every_sample_is_rejected() {
    let samples = yaml_files(&repo_root().join("profiles"));
    assert!(samples.len() >= 5, "{samples:?}");
    let mut tried = 0;
    for sample in &samples {
        let rel = sample.strip_prefix(repo_root()).expect("inside repo");
        let text = std::fs::read_to_string(sample).expect("read sample");
        let doc: Value = serde_saphyr::from_str(&text).expect("sample parses");
        for path in mapping_paths(&doc, &mut Vec::new()) {
            let mut mutated = doc.clone();
            let map = pointer_mut(&mut mutated, &path)
                .as_object_mut()
                .expect("a mapping");
            map.insert("kickstand_bogus_key".into(), Value::from(1));
            let copy = Copy::new();
            copy.write(
                &rel.to_string_lossy(),
                &serde_json::to_string_pretty(&mutated).expect("json"),
            );
            let result = load(&copy.config());
            assert!(
                result.is_err(),
                "{} at /{} accepted a bogus key",
                rel.display(),
                path.join("/")
            );
            tried += 1;
        }
    }
    assert!(tried > 30, "only {tried} mappings tried");
}

/// The stick's `kickstand.yaml.example` is a config as it stands (naming
/// the loopback, `address: auto` resolves on any machine), and a bogus key
/// in any of its mappings is refused.
#[test]
fn the_stick_s_example_loads_and_refuses_a_bogus_key() {
    let text = std::fs::read_to_string(repo_root().join("image/kickstand.yaml.example"))
        .expect("read the example")
        .replacen("  interfaces: []\n", "  interfaces: [lo]\n", 1);
    assert!(
        text.contains("interfaces: [lo]"),
        "the example has `interfaces: []`"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("kickstand.yaml");
    std::fs::write(&config, &text).expect("write");
    let appliance = load_appliance(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        appliance.server.address.v4(),
        Some(std::net::Ipv4Addr::LOCALHOST)
    );
    assert_eq!(appliance.server.interfaces, ["lo"]);

    let doc: Value = serde_saphyr::from_str(&text).expect("the example parses");
    for path in mapping_paths(&doc, &mut Vec::new()) {
        let mut mutated = doc.clone();
        pointer_mut(&mut mutated, &path)
            .as_object_mut()
            .expect("a mapping")
            .insert("kickstand_bogus_key".into(), Value::from(1));
        std::fs::write(
            &config,
            serde_json::to_string_pretty(&mutated).expect("json"),
        )
        .expect("write");
        assert!(
            load_appliance(&config).is_err(),
            "a bogus key at /{} was accepted",
            path.join("/")
        );
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn mapping_paths(v: &Value, at: &mut Vec<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    match v {
        Value::Object(map) => {
            out.push(at.clone());
            for (k, child) in map {
                at.push(k.clone());
                out.extend(mapping_paths(child, at));
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(i.to_string());
                out.extend(mapping_paths(child, at));
                at.pop();
            }
        }
        _ => {}
    }
    out
}

fn pointer_mut<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, key| match v {
        Value::Object(map) => map.get_mut(key).expect("key"),
        Value::Array(items) => &mut items[key.parse::<usize>().expect("index")],
        _ => panic!("not a container"),
    })
}

#[test]
fn connection_caps_are_checked_where_they_are_written() {
    let copy = Copy::new();
    let config = copy.config();
    let text = std::fs::read_to_string(&config).expect("read config");
    let edited = text.replacen(
        "  syslog_port: 5514\n",
        "  syslog_port: 5514\n  max_connections_per_client: 0\n",
        1,
    );
    assert_ne!(edited, text, "the shipped config has a syslog_port line");
    std::fs::write(&config, &edited).expect("write config");
    let line = edited
        .lines()
        .position(|l| l.contains("max_connections_per_client"))
        .expect("line") as u64
        + 1;
    assert_one_at(
        &copy.load_err(),
        &config,
        line,
        "server.max_connections_per_client 0 must be between 1",
    );
    std::fs::write(
        &config,
        text.replacen(
            "  syslog_port: 5514\n",
            "  syslog_port: 5514\n  max_connections_per_client: 8\n  max_connections: 100\n",
            1,
        ),
    )
    .expect("write config");
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.appliance.server.max_connections_per_client, 8);
    assert_eq!(snap.appliance.server.max_connections, Some(100));
}

/// Appends a `state:` section to the copy's config; returns the config's
/// path and the 1-based line of the first line given.
fn with_state(copy: &Copy, lines: &[&str]) -> (PathBuf, u64) {
    let config = copy.config();
    let mut text = std::fs::read_to_string(&config).expect("read config");
    let first = text.lines().count() as u64 + 2;
    text.push_str("state:\n");
    for l in lines {
        text.push_str(&format!("  {l}\n"));
    }
    std::fs::write(&config, text).expect("write config");
    (config, first)
}

fn private(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The PostgreSQL settings are read and checked at load, relative to the
/// config like every path, and each problem points at its line; the
/// password from the URL or the file never shows.
#[test]
fn postgres_tls_settings_are_checked_where_they_are_written() {
    use kickstand_profiles::model::SslMode;

    let copy = Copy::new();
    let secret = copy.write("profiles/pg.password", "s3cret-from-file\n");
    private(&secret, 0o600);
    // PEM is what is checked here; the state store reads the certificate.
    let ca = copy.write(
        "profiles/ca.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    let (config, _) = with_state(
        &copy,
        &[
            "url: \"postgres://kick:s3cret-in-url@db.example:5433/state?sslmode=verify-full\"",
            "ca_file: ca.pem",
            "password_file: pg.password",
        ],
    );
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    let pg = snap.appliance.state.postgres.as_ref().expect("postgres");
    assert_eq!(pg.sslmode, Some(SslMode::VerifyFull));
    assert_eq!(pg.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(pg.password_file.as_deref(), Some(secret.as_path()));
    assert_eq!(pg.get("host"), Some("db.example"));
    let shown = format!("{:?} {}", snap.appliance, pg.redacted());
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("db.example"), "{shown}");

    // A world-readable password file, named with the line of its setting.
    private(&secret, 0o644);
    let diags = copy.load_err();
    assert_one_at(
        &diags,
        &config,
        line_of(&config, "password_file"),
        "pg.password is readable by group or others",
    );
    assert!(!format!("{diags:?}").contains("s3cret"), "{diags:?}");
    private(&secret, 0o600);

    // Not PEM.
    std::fs::write(&ca, "not a certificate\n").expect("write");
    assert_one_at(
        &copy.load_err(),
        &config,
        line_of(&config, "ca_file"),
        "holds no PEM certificate",
    );
    std::fs::remove_file(&ca).expect("rm");
    assert_one_at(
        &copy.load_err(),
        &config,
        line_of(&config, "ca_file"),
        "cannot be read",
    );
}

#[test]
fn a_bad_sslmode_and_settings_without_a_url_are_located() {
    let copy = Copy::new();
    let (config, first) = with_state(
        &copy,
        &["url: \"postgres://kick:s3cret@db/state?sslmode=verify_full\""],
    );
    let diags = copy.load_err();
    assert_one_at(
        &diags,
        &config,
        first,
        "sslmode `verify_full` is not one of disable, prefer, require, verify-ca, verify-full",
    );
    assert!(!format!("{diags:?}").contains("s3cret"), "{diags:?}");

    let copy = Copy::new();
    let (config, first) = with_state(&copy, &["ca_file: ca.pem"]);
    assert_one_at(
        &copy.load_err(),
        &config,
        first,
        "state.ca_file is for PostgreSQL",
    );

    // sslrootcert in the URL is a CA file too, relative to the config.
    let copy = Copy::new();
    let (config, first) = with_state(
        &copy,
        &["url: \"postgresql://db/state?sslrootcert=missing.pem\""],
    );
    let diags = copy.load_err();
    assert_one_at(&diags, &config, first, "state.url sslrootcert");
    assert!(
        diags[0].message.contains("profiles/missing.pem"),
        "{diags:?}"
    );
}

/// Several hosts, in either form, for a primary and its standbys: read
/// as written; what tokio-postgres would refuse only at connect (ports
/// that match no host) and a session that could land on a standby are
/// refused at load, where they are written.
#[test]
fn several_postgresql_hosts_are_taken_and_checked_at_load() {
    for url in [
        "host=db1.example,db2.example port=5432,5433 user=kick dbname=state target_session_attrs=read-write",
        "postgresql://kick@db1.example:5432,db2.example:5433/state?target_session_attrs=read-write",
    ] {
        let copy = Copy::new();
        let (config, _) = with_state(&copy, &[&format!("url: \"{url}\"")]);
        let snap = load(&config).unwrap_or_else(|e| panic!("{url}: {e}"));
        let pg = snap.appliance.state.postgres.as_ref().expect("postgres");
        assert_eq!(pg.get("host"), Some("db1.example,db2.example"), "{url}");
        assert_eq!(pg.get("port"), Some("5432,5433"), "{url}");
    }
    for (url, needle) in [
        (
            "host=db1,db2 port=5432,5433,5434 user=kick",
            "names 2 host(s) but 3 ports: give one port for them all, or one per host",
        ),
        (
            "host=db1,db2 hostaddr=10.0.0.1 user=kick",
            "names 2 host(s) but 1 hostaddr(s)",
        ),
        (
            "postgresql://kick@db1,db2/state?target_session_attrs=any",
            "has a target_session_attrs other than read-write",
        ),
        ("user=kick dbname=state", "must name a host"),
    ] {
        let copy = Copy::new();
        let (config, first) = with_state(&copy, &[&format!("url: \"{url}\"")]);
        assert_one_at(&copy.load_err(), &config, first, needle);
    }
}

fn line_of(file: &Path, needle: &str) -> u64 {
    std::fs::read_to_string(file)
        .expect("read")
        .lines()
        .position(|l| l.contains(needle))
        .expect("line") as u64
        + 1
}

#[test]
fn https_settings_are_checked_where_they_are_written() {
    let copy = Copy::new();
    let config = copy.config();
    let text = std::fs::read_to_string(&config).expect("read config");
    let at = |edited: &str, key: &str| {
        edited
            .lines()
            .position(|l| l.trim_start().starts_with(key))
            .expect("line") as u64
            + 1
    };
    let edited = text.replacen("https_port: 8443", "https_port: 8080", 1);
    assert_ne!(edited, text, "the shipped config has an https_port line");
    std::fs::write(&config, &edited).expect("write config");
    assert_one_at(
        &copy.load_err(),
        &config,
        at(&edited, "https_port:"),
        "server.https_port 8080 is server.http_port too",
    );
    let edited = text.replacen(
        "https_port: 8443\n",
        "https_port: 8443\n  tls_cert: site.crt\n",
        1,
    );
    std::fs::write(&config, &edited).expect("write config");
    assert_one_at(
        &copy.load_err(),
        &config,
        at(&edited, "tls_cert:"),
        "server.tls_cert needs server.tls_key too",
    );
    std::fs::write(
        &config,
        text.replacen(
            "https_port: 8443\n",
            "https_port: 8443\n  tls_cert: site.crt\n  tls_key: site.key\n",
            1,
        ),
    )
    .expect("write config");
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    let tls = snap.appliance.server.tls.expect("configured");
    assert!(tls.cert.ends_with("site.crt") && tls.key.ends_with("site.key"));
    assert_eq!(snap.appliance.server.https_port, 8443);
}

#[test]
fn router_advertisements_need_proxydhcp_on_named_interfaces() {
    let copy = Copy::new();
    let config = copy.config();
    let text = std::fs::read_to_string(&config).expect("read config");
    let unsaid = text.replacen("  answer_router_solicitations: false\n", "", 1);
    assert_ne!(unsaid, text, "the shipped config says it is off");
    std::fs::write(&config, &unsaid).expect("write config");
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !snap.appliance.dhcp.answer_router_solicitations,
        "off by default"
    );

    let edited = text.replacen(
        "answer_router_solicitations: false",
        "answer_router_solicitations: true",
        1,
    );
    // The shipped config answers DHCP nowhere: a mode must be set first.
    let with_mode = edited.replacen("mode: off", "mode: proxy", 1);
    std::fs::write(&config, &with_mode).expect("write config");
    let line = line_of(&config, "answer_router_solicitations");
    assert_one_at(
        &copy.load_err(),
        &config,
        line,
        "dhcp.answer_router_solicitations needs server.interfaces",
    );
    let with_interface = edited.replacen("interfaces: []", "interfaces: [eth1]", 1);
    std::fs::write(&config, &with_interface).expect("write config");
    assert_one_at(
        &copy.load_err(),
        &config,
        line,
        "dhcp.answer_router_solicitations needs dhcp.mode proxy or full",
    );
    std::fs::write(
        &config,
        with_interface.replacen("mode: off", "mode: proxy", 1),
    )
    .expect("write config");
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    assert!(snap.appliance.dhcp.answer_router_solicitations);
}

/// `bmc:` merges field by field: a group gives the driver, the user, the
/// password file (relative to the group's file) and the certificate's
/// fingerprint; each host its own address.
#[test]
fn a_bmc_is_merged_from_a_group_and_the_host() {
    use kickstand_profiles::model::{BmcDriver, BmcTls};
    use std::os::unix::fs::PermissionsExt as _;
    let copy = Copy::new();
    let password = copy.write("profiles/bmc/rack.pass", "s3cret\n");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let fp = "AB:".repeat(31) + "CD";
    copy.write(
        "profiles/hosts/bmc.yaml",
        &format!(
            "groups:\n  racked:\n    match: {{ hostname: [\"bmc*\"] }}\n    profile:\n      bmc:\n        driver: redfish\n        username: admin\n        password_file: ../bmc/rack.pass\n        tls: \"{fp}\"\nhosts:\n  \"52:54:00:99:00:01\":\n    hostname: bmc01\n    os: centos-stream-9\n    bmc:\n      address: https://10.0.9.21:8443\n      system: /redfish/v1/Systems/1\n  \"52:54:00:99:00:02\":\n    hostname: ipmi02\n    os: centos-stream-9\n    bmc: {{ driver: ipmi, address: \"10.0.9.22\", username: root, password_file: ../bmc/rack.pass, cipher_suite: 3 }}\n"
        ),
    );
    let snap = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    let host = |mac: &str| snap.host(&mac.parse::<Mac>().expect("mac")).expect("host");
    let redfish = host("52:54:00:99:00:01")
        .bmc
        .clone()
        .expect("bmc01 has a BMC");
    assert_eq!(redfish.username, "admin");
    assert_eq!(
        redfish.password_file,
        copy.dir.path().join("profiles/hosts/../bmc/rack.pass")
    );
    let mut pinned = [0xab; 32];
    pinned[31] = 0xcd;
    assert_eq!(
        redfish.driver,
        BmcDriver::Redfish {
            base: "https://10.0.9.21:8443".into(),
            system: Some("/redfish/v1/Systems/1".into()),
            tls: BmcTls::Fingerprint(pinned),
        }
    );
    let ipmi = host("52:54:00:99:00:02")
        .bmc
        .clone()
        .expect("bmc02 has a BMC");
    assert_eq!(
        ipmi.driver,
        BmcDriver::Ipmi {
            host: "10.0.9.22".into(),
            port: 623,
            cipher_suite: Some(3),
        }
    );
    assert_eq!(ipmi.address(), "10.0.9.22:623");
    // No `bmc:` anywhere: none.
    assert_eq!(host("52:54:00:10:00:01").bmc, None);
}

/// A password file others may read is refused by name, where the profile
/// names it; the password never appears in the message.
#[test]
fn a_bmc_password_file_others_may_read_is_located() {
    use std::os::unix::fs::PermissionsExt as _;
    let copy = Copy::new();
    let password = copy.write("profiles/hosts/node.pass", "hunter2-not-shown\n");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let file = copy.write(
        "profiles/hosts/bmc.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: bmc01\n    os: centos-stream-9\n    bmc:\n      driver: ipmi\n      address: 10.0.9.21\n      username: admin\n      password_file: node.pass\n",
    );
    let diags = copy.load_err();
    assert_one_at(&diags, &file, 9, "node.pass is readable by group or others");
    assert!(diags[0].message.contains("chmod 600"), "{}", diags[0]);
    assert!(!diags[0].to_string().contains("hunter2"), "{}", diags[0]);
}

/// Each wrong `bmc:` is one located diagnostic that says what to write.
#[test]
fn wrong_bmc_settings_are_located() {
    use std::os::unix::fs::PermissionsExt as _;
    let cases = [
        (
            "driver: redfish\n      address: https://10.0.9.21",
            6,
            "bmc needs username, password_file",
        ),
        (
            "driver: telnet\n      address: 10.0.9.21\n      username: a\n      password_file: p",
            6,
            "`telnet` is not one of redfish, ipmi",
        ),
        (
            "driver: redfish\n      address: https://10.0.9.21/redfish/v1\n      username: a\n      password_file: p",
            7,
            "without a path",
        ),
        (
            "driver: redfish\n      address: https://admin:pw@10.0.9.21\n      username: a\n      password_file: p",
            7,
            "must not hold credentials",
        ),
        (
            "driver: redfish\n      address: http://10.0.9.21\n      username: a\n      password_file: p\n      tls: insecure",
            10,
            "bmc.tls is for an https:// address",
        ),
        (
            "driver: redfish\n      address: https://10.0.9.21\n      system: Systems/1\n      username: a\n      password_file: p",
            8,
            "must be a path like /redfish/v1/Systems/1",
        ),
        (
            "driver: ipmi\n      address: 10.0.9.21:notaport\n      username: a\n      password_file: p",
            7,
            "is not a host or host:port",
        ),
        (
            "driver: ipmi\n      address: 10.0.9.21\n      username: a\n      password_file: p\n      tls: insecure",
            10,
            "bmc.tls is for Redfish, not IPMI",
        ),
        (
            "driver: ipmi\n      address: 10.0.9.21\n      username: a\n      password_file: p\n      cipher_suite: 0",
            10,
            "without authentication",
        ),
        (
            "driver: redfish\n      address: https://10.0.9.21\n      username: a\n      password_file: p\n      cipher_suite: 3",
            10,
            "bmc.cipher_suite is for IPMI",
        ),
        (
            "driver: redfish\n      address: https://10.0.9.21\n      username: a\n      password_file: p\n      tls: no-such-ca.pem",
            10,
            "no-such-ca.pem (verify, insecure, a SHA-256 fingerprint or a CA file) cannot be read",
        ),
    ];
    for (bmc, line, needle) in cases {
        let copy = Copy::new();
        let password = copy.write("profiles/hosts/p", "pw\n");
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let file = copy.write(
            "profiles/hosts/bmc.yaml",
            &format!("hosts:\n  \"52:54:00:99:00:01\":\n    hostname: bmc01\n    os: centos-stream-9\n    bmc:\n      {bmc}\n"),
        );
        assert_one_at(&copy.load_err(), &file, line, needle);
    }
}

/// `power.poll_interval`: a duration of 5 s or more, or `off`.
#[test]
fn the_power_poll_interval_is_a_duration_or_off() {
    let copy = Copy::new();
    let config = copy.config();
    let text = std::fs::read_to_string(&config).expect("read");
    for (value, want) in [("5m", Some(300)), ("off", None)] {
        std::fs::write(
            &config,
            text.replace("poll_interval: 60s", &format!("poll_interval: {value}")),
        )
        .expect("write");
        let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            snap.appliance.power_poll.map(|d| d.as_secs()),
            want,
            "{value}"
        );
    }
    std::fs::write(
        &config,
        text.replace("poll_interval: 60s", "poll_interval: 1s"),
    )
    .expect("write");
    let line = text
        .lines()
        .position(|l| l.contains("poll_interval"))
        .expect("sample has it") as u64
        + 1;
    assert_one_at(&copy.load_err(), &config, line, "is under 5s");
}

#[test]
fn server_address_takes_either_family_or_one_of_each() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let copy = Copy::new();
    let config = copy.config();
    let text = std::fs::read_to_string(&config).expect("read config");
    let shipped = "  address: 127.0.0.1\n  bind: 127.0.0.1\n";
    assert!(
        text.contains(shipped),
        "the shipped config names its address"
    );
    let with = |lines: &str| {
        let edited = text.replacen(shipped, lines, 1);
        std::fs::write(&config, &edited).expect("write config");
        edited
    };
    let v6 = Ipv6Addr::LOCALHOST;

    // An IPv6-only appliance listens on `::` unless told otherwise.
    with("  address: ::1\n");
    let server = load(&config)
        .unwrap_or_else(|e| panic!("{e}"))
        .appliance
        .server;
    assert_eq!((server.address.v4(), server.address.v6()), (None, Some(v6)));
    assert_eq!(server.bind, IpAddr::V6(Ipv6Addr::UNSPECIFIED));

    // Dual-stack: each client is told the address of its own family.
    with("  address: [127.0.0.1, \"::1\"]\n  bind: \"::\"\n");
    let appliance = load(&config).unwrap_or_else(|e| panic!("{e}")).appliance;
    let address = appliance.server.address;
    assert_eq!(address.v4(), Some(Ipv4Addr::LOCALHOST));
    assert_eq!(address.facing(IpAddr::V6(v6)), IpAddr::V6(v6));
    let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped());
    assert_eq!(address.facing(mapped), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(
        appliance.urls_for(IpAddr::V6(v6)).base(),
        "http://[::1]:8080"
    );
    assert_eq!(appliance.urls().base(), "http://127.0.0.1:8080");

    for (lines, needle) in [
        (
            "  address: [127.0.0.2, 127.0.0.1]\n",
            "server.address two addresses of one family",
        ),
        (
            "  address: fe80::1\n",
            "server.address `fe80::1` cannot be reached across the rack",
        ),
        (
            "  address: [auto, \"::1\", 127.0.0.1]\n",
            "server.address name one address, or one IPv4 address (or `auto`) and one IPv6",
        ),
        (
            "  address: ::1\n  bind: 0.0.0.0\n",
            "server.bind `0.0.0.0` listens on IPv4 only, but IPv6 machines are told ::1: bind `::`",
        ),
        (
            "  address: [127.0.0.1, \"::1\"]\n  bind: \"::1\"\n",
            "server.bind `::1` listens on IPv6 only, but IPv4 machines are told 127.0.0.1",
        ),
        (
            "  address: 10.0.0.300\n",
            "`10.0.0.300` is not an IPv4 or IPv6 address",
        ),
    ] {
        let edited = with(lines);
        let key = if needle.starts_with("server.bind") {
            "bind:"
        } else {
            "address:"
        };
        let line = edited
            .lines()
            .position(|l| l.trim_start().starts_with(key))
            .expect("line") as u64
            + 1;
        assert_one_at(&copy.load_err(), &config, line, needle);
    }

    // A full-mode pool is IPv4: an IPv6-only appliance cannot serve one.
    let edited = with("  address: ::1\n").replacen("  mode: off\n", "  mode: full\n", 1);
    std::fs::write(&config, &edited).expect("write config");
    let diags = copy.load_err();
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("needs an IPv4 address")),
        "{diags:#?}"
    );
}

/// `network.vlan` is merged on its own: a group's VLAN holds for a host
/// that gives its own address, and the host may set another.
#[test]
fn a_vlan_is_merged_apart_from_the_address() {
    let copy = Copy::new();
    copy.write(
        "profiles/hosts/vlan.yaml",
        "groups:\n  tagged:\n    match: { hostname: [\"tag*\"] }\n    profile:\n      network: { vlan: 20 }\nhosts:\n  \"52:54:00:99:00:01\":\n    hostname: tag01\n    network:\n      address: 10.0.20.11/24\n  \"52:54:00:99:00:02\":\n    hostname: tag02\n    network: { vlan: \"4094\" }\n  \"52:54:00:99:00:03\":\n    hostname: plain03\n",
    );
    let snap = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    let host = |mac: &str| {
        let host = snap.host(&mac.parse::<Mac>().expect("mac")).expect("host");
        (
            host.network.vlan.map(|v| v.get()),
            host.network
                .static_ip
                .as_ref()
                .map(|s| s.address.to_string()),
        )
    };
    assert_eq!(
        host("52:54:00:99:00:01"),
        (Some(20), Some("10.0.20.11".into()))
    );
    assert_eq!(host("52:54:00:99:00:02"), (Some(4094), None));
    assert_eq!(host("52:54:00:99:00:03"), (None, None));
}

/// An installed system's fixed address is IPv4 or IPv6 (a gateway of its
/// family, which for IPv6 may be link-local; name servers of either).
#[test]
fn a_static_address_is_of_either_family() {
    let copy = Copy::new();
    copy.write(
        "profiles/hosts/static.yaml",
        "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: six01\n    network:\n      address: fd00:10::11/64\n      gateway: fe80::1\n      dns: [\"fd00:10::53\", 10.0.0.53]\n  \"52:54:00:99:00:02\":\n    hostname: four02\n    network: { address: 10.0.0.12/24, gateway: 10.0.0.1 }\n",
    );
    let snap = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    let static_ip = |mac: &str| {
        let host = snap.host(&mac.parse::<Mac>().expect("mac")).expect("host");
        host.network.static_ip.clone().expect("a static address")
    };
    let six = static_ip("52:54:00:99:00:01");
    assert_eq!(
        (
            six.family,
            six.address.to_string(),
            six.prefix_len,
            six.netmask
        ),
        ("ipv6", "fd00:10::11".to_owned(), 64, None)
    );
    assert_eq!(
        six.gateway.map(|g| g.to_string()).as_deref(),
        Some("fe80::1")
    );
    assert_eq!(six.dns.len(), 2);
    let four = static_ip("52:54:00:99:00:02");
    assert_eq!(
        (four.family, four.netmask.map(|m| m.to_string())),
        ("ipv4", Some("255.255.255.0".to_owned()))
    );
}

/// A fixed address a host cannot have, or a gateway of the other family,
/// is located.
#[test]
fn a_wrong_static_address_is_located() {
    for (address, gateway, says) in [
        ("fd00:10::11", "fd00:10::1", "is not an address with prefix"),
        (
            "fd00:10::11/129",
            "fd00:10::1",
            "is not an address with prefix",
        ),
        ("fe80::11/64", "fe80::1", "is not an address with prefix"),
        ("ff02::1/64", "fe80::1", "is not an address with prefix"),
        ("10.0.0.11/33", "10.0.0.1", "is not an address with prefix"),
        ("fd00:10::11/64", "10.0.0.1", "is not an IPv6 address"),
        ("10.0.0.11/24", "fd00:10::1", "is not an IPv4 address"),
    ] {
        let copy = Copy::new();
        let file = copy.write(
            "profiles/hosts/static.yaml",
            &format!("hosts:\n  \"52:54:00:99:00:01\":\n    hostname: six01\n    network:\n      address: \"{address}\"\n      gateway: \"{gateway}\"\n"),
        );
        assert_one_at(&copy.load_err(), &file, 5, says);
    }
}

/// A VLAN ID is 1 to 4094, written as digits; anything else is located.
#[test]
fn a_wrong_vlan_is_located() {
    for vlan in ["0", "4095", "abc", "-1", "+20", "20.5", "\"\""] {
        let copy = Copy::new();
        let file = copy.write(
            "profiles/hosts/vlan.yaml",
            &format!("hosts:\n  \"52:54:00:99:00:01\":\n    hostname: tag01\n    network:\n      vlan: {vlan}\n"),
        );
        assert_one_at(&copy.load_err(), &file, 5, "network.vlan");
    }
    // In a group, the diagnostic points into the group's file.
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/vlan.yaml",
        "groups:\n  tagged:\n    match: { hostname: [\"tag*\"] }\n    profile:\n      network:\n        vlan: 5000\nhosts:\n  \"52:54:00:99:00:01\":\n    hostname: tag01\n",
    );
    assert_one_at(
        &copy.load_err(),
        &file,
        6,
        "`5000` is not a VLAN ID (1 to 4094)",
    );
}

/// `boot_vlan` is merged like any host field: `defaults:` gives the rack's
/// install VLAN, a group or a host another; it is apart from the installed
/// system's `network.vlan`.
#[test]
fn a_boot_vlan_is_merged_from_defaults_groups_and_hosts() {
    let copy = Copy::new();
    let groups = copy.dir.path().join("profiles/groups.yaml");
    let edited = std::fs::read_to_string(&groups)
        .expect("read groups")
        .replacen("defaults:\n", "defaults:\n  boot_vlan: 30\n", 1);
    std::fs::write(&groups, edited).expect("write groups");
    copy.write(
        "profiles/hosts/vlan.yaml",
        "groups:\n  tagged:\n    match: { hostname: [\"tag*\"] }\n    profile:\n      boot_vlan: 20\nhosts:\n  \"52:54:00:99:00:01\":\n    hostname: tag01\n    network: { vlan: 40 }\n  \"52:54:00:99:00:02\":\n    hostname: tag02\n    boot_vlan: \"4094\"\n  \"52:54:00:99:00:03\":\n    hostname: plain03\n",
    );
    let snap = load(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    let host = |mac: &str| {
        let host = snap.host(&mac.parse::<Mac>().expect("mac")).expect("host");
        (
            host.boot_vlan.map(|v| v.get()),
            host.network.vlan.map(|v| v.get()),
        )
    };
    assert_eq!(host("52:54:00:99:00:01"), (Some(20), Some(40)));
    assert_eq!(host("52:54:00:99:00:02"), (Some(4094), None));
    assert_eq!(host("52:54:00:99:00:03"), (Some(30), None));
}

/// A `boot_vlan` is 1 to 4094, written as digits; anything else is located
/// in the file that gives it.
#[test]
fn a_wrong_boot_vlan_is_located() {
    for vlan in ["0", "4095", "abc", "-1", "+20", "20.5", "\"\""] {
        let copy = Copy::new();
        let file = copy.write(
            "profiles/hosts/vlan.yaml",
            &format!(
                "hosts:\n  \"52:54:00:99:00:01\":\n    hostname: tag01\n    boot_vlan: {vlan}\n"
            ),
        );
        assert_one_at(&copy.load_err(), &file, 4, "boot_vlan");
    }
    let copy = Copy::new();
    let file = copy.write(
        "profiles/hosts/vlan.yaml",
        "groups:\n  tagged:\n    match: { hostname: [\"tag*\"] }\n    profile:\n      boot_vlan: 5000\nhosts:\n  \"52:54:00:99:00:01\":\n    hostname: tag01\n",
    );
    assert_one_at(
        &copy.load_err(),
        &file,
        5,
        "host 52:54:00:99:00:01: boot_vlan `5000` is not a VLAN ID (1 to 4094)",
    );
}

/// `server.interface_vlans` names the VLAN of interfaces ProxyDHCP listens
/// on; a VLAN ID out of range, or an interface it does not listen on, is
/// located at its value.
#[test]
fn interface_vlans_name_listened_interfaces_and_vlan_ids() {
    let copy = Copy::new();
    let config = copy.config();
    let shipped = std::fs::read_to_string(&config).expect("read config");
    let with = |vlans: &str| {
        shipped
            .replacen("  interfaces: []\n", "  interfaces: [eth1, eth1.20]\n", 1)
            .replacen(
                "  interface_vlans: {}\n",
                &format!("  interface_vlans:\n{vlans}"),
                1,
            )
    };
    std::fs::write(&config, with("    eth1.20: 20\n")).expect("write config");
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    let vlans: Vec<(String, u16)> = snap
        .appliance
        .server
        .interface_vlans
        .iter()
        .map(|(name, id)| (name.clone(), id.get()))
        .collect();
    assert_eq!(vlans, [("eth1.20".to_owned(), 20)]);

    for (entry, needle) in [
        (
            "    eth1.20: 4095\n",
            "server.interface_vlans.eth1.20 `4095` is not a VLAN ID",
        ),
        ("    eth2: 30\n", "`eth2` is not in server.interfaces"),
    ] {
        std::fs::write(&config, with(entry)).expect("write config");
        let line = line_of(&config, entry.trim_end());
        assert_one_at(&copy.load_err(), &config, line, needle);
    }
}

/// `server.segment` names the segment several appliances elect one
/// answerer for: it needs the PostgreSQL they share, the interface the
/// active one holds the address on, and that address written out; each
/// missing piece is located.
#[test]
fn a_segment_needs_a_shared_database_an_interface_and_a_fixed_address() {
    let copy = Copy::new();
    let config = copy.config();
    let shipped = std::fs::read_to_string(&config).expect("read config");
    let segment = "  interfaces: [eth1]\n  segment: rack-a\n";
    let with = |interfaces: &str, state: &str| {
        let mut text = shipped.replacen("  interfaces: []\n", interfaces, 1);
        text.push_str(state);
        text
    };
    let shared = "state:\n  url: \"postgresql://kickstand@db.example/kickstand\"\n";
    std::fs::write(&config, with(segment, shared)).expect("write config");
    let snap = load(&config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snap.appliance.server.segment.as_deref(), Some("rack-a"));

    for (interfaces, state, needle) in [
        (
            segment,
            "",
            "elect the active one through the PostgreSQL they share: set state.url",
        ),
        (
            "  interfaces: []\n  segment: rack-a\n",
            shared,
            "name the rack's interface in server.interfaces",
        ),
        (
            "  interfaces: [eth1]\n  segment: \"rack a\"\n",
            shared,
            "server.segment `rack a` must be 1 to 63 letters",
        ),
    ] {
        std::fs::write(&config, with(interfaces, state)).expect("write config");
        let line = line_of(&config, "segment:");
        assert_one_at(&copy.load_err(), &config, line, needle);
    }
    // Full DHCP's leases are this appliance's alone.
    let full = with(segment, shared).replacen("mode: off", "mode: full", 1);
    std::fs::write(&config, full).expect("write config");
    let diags = copy.load_err();
    let line = line_of(&config, "segment:");
    assert!(
        diags.iter().any(|d| d
            .message
            .contains("keeps its leases in a file of this appliance")
            && d.position.map(|p| p.0) == Some(line)),
        "{diags:#?}"
    );
    // `lo` resolves: the only complaint is the segment's.
    let on_lo = "  interfaces: [lo]\n  segment: rack-a\n";
    let auto = with(on_lo, shared).replacen("address: 127.0.0.1", "address: auto", 1);
    std::fs::write(&config, auto).expect("write config");
    let line = line_of(&config, "  address: auto");
    assert_one_at(&copy.load_err(), &config, line, "write it out (not `auto`");
}

#[test]
fn a_parent_appliance_serves_the_mirror_under_its_own_name() {
    let copy = Copy::new();
    let text = std::fs::read_to_string(copy.config()).expect("config");
    let shipped = "  centos:\n    - http://mirror.stream.centos.org/\n";
    assert!(text.contains(shipped), "the shipped centos mirror moved");
    let chained = "  centos:\n    - kickstand://site-cache.example:8080/centos\n    - http://mirror.stream.centos.org/\n";
    copy.write(
        "profiles/kickstand.yaml",
        &text.replacen(shipped, chained, 1),
    );
    let appliance = load_appliance(&copy.config()).unwrap_or_else(|e| panic!("{e}"));
    let bases = &appliance.mirrors["centos"];
    assert_eq!(
        (bases[0].base(), bases[0].kind),
        (
            "http://site-cache.example:8080/repo/centos/".to_string(),
            MirrorKind::Appliance
        )
    );
    assert_eq!(bases[1].kind, MirrorKind::Mirror);

    let renamed = "  centos:\n    - kickstand://site-cache.example/stream\n";
    copy.write(
        "profiles/kickstand.yaml",
        &text.replacen(shipped, renamed, 1),
    );
    let LoadError(diags) = load_appliance(&copy.config()).expect_err("a renamed parent mirror");
    let line = text[..text.find(shipped).expect("shipped")].lines().count() as u64 + 2;
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("mirror `stream` is not `centos`")
                && d.message
                    .contains("kickstand://site-cache.example:80/centos")
                && d.position.map(|p| p.0) == Some(line)),
        "{diags:#?}"
    );
}
