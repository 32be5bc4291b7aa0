//! Settings of `vaultd run` from flags, `VAULTD_*` variables and a TOML config file (in that
//! order of precedence), errors that name the setting, and JSON logs.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;

fn print_config(config: &Path, env: &[(&str, &str)], flags: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(["run", "--print-config"]);
    cmd.args(flags);
    for var in [
        "VAULTD_DKG_TIMEOUT",
        "VAULTD_API",
        "VAULTD_INSECURE_NO_PASSPHRASE",
        "VAULTD_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("vaultd.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"/var/lib/vaultd\"\nnetwork = \"/etc/vaultd/network.toml\"\n\
         insecure_no_passphrase = true\ndkg_timeout = 5\napi = \"127.0.0.1:9000\"\n\
         listen = [\"/ip4/127.0.0.1/tcp/4001\", \"/ip4/127.0.0.1/tcp/4002\"]\n",
    )
    .unwrap();
    let (ok, out, err) = print_config(&cfg, &[], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("dkg_timeout = 5"), "{out}");
    assert!(out.contains("data_dir = \"/var/lib/vaultd\""), "{out}");
    assert!(out.contains("/ip4/127.0.0.1/tcp/4002"), "{out}");
    assert!(
        out.contains("sign_timeout = 10"),
        "defaults fill the rest: {out}"
    );
    let (_, out, _) = print_config(&cfg, &[("VAULTD_DKG_TIMEOUT", "7")], &[]);
    assert!(out.contains("dkg_timeout = 7"), "{out}");
    let (_, out, _) = print_config(
        &cfg,
        &[("VAULTD_DKG_TIMEOUT", "7")],
        &["--dkg-timeout", "9"],
    );
    assert!(out.contains("dkg_timeout = 9"), "{out}");
    let (_, out, _) = print_config(&cfg, &[("VAULTD_API", "127.0.0.1:9100")], &[]);
    assert!(out.contains("api = \"127.0.0.1:9100\""), "{out}");
}

#[test]
fn a_wrong_setting_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("vaultd.toml");
    for (text, name) in [
        ("dkg_timout = 5\n", "dkg_timout"),
        ("dkg_timeout = \"soon\"\n", "dkg_timeout"),
        ("listen = \"/ip4/127.0.0.1/tcp/1\"\n", "listen"),
        ("api = \"not an address\"\n", "--api"),
        ("dkg_timeout = 0\n", "--dkg-timeout"),
        ("network = \n", "vaultd.toml"),
    ] {
        std::fs::write(&cfg, format!("data_dir = \"d\"\nnetwork = \"n\"\n{text}")).unwrap();
        let (ok, _, err) = print_config(&cfg, &[], &[]);
        assert!(!ok, "{text} was accepted");
        assert!(err.contains(name), "{text}: {err}");
    }
    let (ok, _, err) = print_config(&tmp.path().join("missing.toml"), &[], &[]);
    assert!(!ok && err.contains("missing.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, _, network) = fresh_validators(tmp.path(), 2, &["BTC"]);
    let node = Node::start_with(&dirs[0], &network, None, &["--log-format", "json"]).await;
    wait_for("a few log lines", Duration::from_secs(20), || async {
        node.log().lines().count() >= 3
    })
    .await;
    for line in node.log().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

/// `vaultd run` of a fresh validator (of two) with `extra` flags, expected to refuse to start;
/// its stderr.
fn refused_run(extra: &[&str], files: impl FnOnce(&Path) -> Vec<String>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let (dirs, _, network) = fresh_validators(tmp.path(), 2, &["BTC"]);
    let out = Command::new(BIN)
        .env("VAULTD_INSECURE_NO_PASSPHRASE", "true")
        .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(extra)
        .args(files(tmp.path()))
        .arg("--data-dir")
        .arg(&dirs[0])
        .arg("--network")
        .arg(&network)
        .output()
        .unwrap();
    assert!(!out.status.success(), "vaultd run {extra:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_api_stays_on_loopback_unless_the_operator_allows_remote_access() {
    let err = refused_run(&["--api", "0.0.0.0:0"], |_| Vec::new());
    assert!(
        err.contains("0.0.0.0:0") && err.contains("--api-allow-remote"),
        "{err}"
    );
}

#[test]
fn a_wrong_sign_policy_stops_the_start_naming_file_and_key() {
    let err = refused_run(&["--api", "127.0.0.1:0"], |dir| {
        let policy = dir.join("policy.toml");
        std::fs::write(&policy, "[BTC]\nmax_msgs = 1\n").unwrap();
        vec!["--sign-policy".into(), policy.display().to_string()]
    });
    assert!(
        err.contains("policy.toml") && err.contains("max_msgs"),
        "{err}"
    );
}

#[test]
fn init_writes_a_private_api_token_that_rotate_token_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    init(&dir);
    let file = vaultd::token::path(&dir);
    let first = vaultd::token::read(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "token file mode {mode:o}");
    }
    let printed = rotate_token(&dir);
    let second = vaultd::token::read(&file).unwrap();
    assert!(
        !second.matches(first.expose()),
        "rotate-token made a new token"
    );
    assert!(
        !printed.contains(second.expose()),
        "the token is not printed"
    );
}
