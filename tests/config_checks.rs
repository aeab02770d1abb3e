//! What `tern serve` and `tern token` check before running: every field optional (an empty file
//! gives the defaults), listeners that would collide, the data directory (creatable, not held by
//! another node), the token key's three sources, and the optional `[cluster]` section (its
//! secret's three sources, seeds, ports, shape). Every problem exits 64, listed at once.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use tern::cluster::config::SecretSource;
use tern::config::{Config, ConfigError, LOCK_FILE, TokenKeySource};
use tern::token::TokenKey;

const TERN: &str = env!("CARGO_BIN_EXE_tern");
const ENV_KEY: &str = "environment-key-0123456789";
const FILE_KEY: &str = "file-key-0123456789abcdef";
const INLINE_KEY: &str = "inline-key-0123456789abcdef";

/// `tern ARGS` with `TERN_TOKEN_KEY` set to `env_key` or removed.
fn tern(args: &[&str], config: &Path, env_key: Option<&str>) -> Output {
    let mut command = Command::new(TERN);
    command.args(args).arg("--config").arg(config);
    match env_key {
        Some(key) => command.env("TERN_TOKEN_KEY", key),
        None => command.env_remove("TERN_TOKEN_KEY"),
    };
    command.output().expect("run tern")
}

/// `tern token` for alice/cli: the token it printed, or its exit code and stderr.
fn token(config: &Path, env_key: Option<&str>) -> Result<String, (Option<i32>, String)> {
    let output = tern(
        &["token", "--user", "alice", "--device", "cli"],
        config,
        env_key,
    );
    if output.status.success() {
        Ok(String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned())
    } else {
        Err((
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }
}

fn signed_by(token: &str, key: &str) -> bool {
    TokenKey::new(key.as_bytes())
        .verify(token, tern::clock::now_secs())
        .is_ok()
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let config = Config::parse_with_environment(Path::new("empty.toml"), "", Some(ENV_KEY.into()))
        .expect("an empty file with a key from the environment is a valid configuration");
    let shipped = Config::parse_with_environment(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml"),
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml"))
            .expect("cluster.toml"),
        None,
    )
    .expect("cluster.toml");
    // The shipped file writes every default out, so the two agree everywhere but the key.
    let mut expected = format!("{shipped:?}");
    expected = expected.replace(
        &format!("{:?}", shipped.auth.token_key),
        &format!("{ENV_KEY:?}"),
    );
    expected = expected.replace(
        r#"token_key_source: Inline("auth.token_key")"#,
        r#"token_key_source: Environment("TERN_TOKEN_KEY")"#,
    );
    assert_eq!(format!("{config:?}"), expected);
    assert_eq!(config.node.id, "tern-1");
    assert_eq!(config.node.data_dir, Path::new("./data"));

    // Without a key anywhere, the key is the one problem.
    let Err(ConfigError::Invalid { problems, .. }) =
        Config::parse_with_environment(Path::new("empty.toml"), "", None)
    else {
        panic!("an empty file without a key must be refused");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("no token key"), "{problems:?}");
}

#[test]
fn token_with_an_empty_config_file_uses_the_environment_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.toml");
    std::fs::write(&path, "").unwrap();
    let printed = token(&path, Some(ENV_KEY)).expect("tern token with an empty file");
    assert!(signed_by(&printed, ENV_KEY));
    let (code, stderr) = token(&path, None).expect_err("no key anywhere");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("TERN_TOKEN_KEY"), "{stderr}");
}

#[test]
fn the_token_key_comes_from_the_environment_then_the_key_file_then_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("token.key");
    // A trailing line break, as `openssl rand -hex 32 > token.key` writes, is not part of it.
    std::fs::write(&key_file, format!("{FILE_KEY}\n")).unwrap();
    let path = dir.path().join("node.toml");
    let both = format!(
        "[auth]\ntoken_key = \"{INLINE_KEY}\"\ntoken_key_file = {:?}\n",
        key_file.display().to_string()
    );
    std::fs::write(&path, &both).unwrap();

    assert!(signed_by(&token(&path, Some(ENV_KEY)).unwrap(), ENV_KEY));
    assert!(signed_by(&token(&path, None).unwrap(), FILE_KEY));
    std::fs::write(&path, format!("[auth]\ntoken_key = \"{INLINE_KEY}\"\n")).unwrap();
    assert!(signed_by(&token(&path, None).unwrap(), INLINE_KEY));

    let parsed = Config::parse_with_environment(&path, &both, None).unwrap();
    assert_eq!(parsed.auth.token_key, FILE_KEY);
    assert_eq!(
        parsed.auth.token_key_source,
        TokenKeySource::File {
            field: "auth.token_key_file",
            path: key_file
        }
    );
}

#[test]
fn every_key_source_is_held_to_the_same_length_rule() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("token.key");
    std::fs::write(&key_file, "short\n").unwrap();
    let path = dir.path().join("node.toml");

    std::fs::write(&path, "").unwrap();
    let (code, stderr) = token(&path, Some("short")).expect_err("short environment key");
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("TERN_TOKEN_KEY must be at least 16 bytes"),
        "{stderr}"
    );

    let with_file = format!(
        "[auth]\ntoken_key_file = {:?}\n",
        key_file.display().to_string()
    );
    std::fs::write(&path, &with_file).unwrap();
    let (code, stderr) = token(&path, None).expect_err("short key file");
    assert_eq!(code, Some(64));
    assert!(stderr.contains("auth.token_key_file"), "{stderr}");
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");

    std::fs::remove_file(&key_file).unwrap();
    let (code, stderr) = token(&path, None).expect_err("missing key file");
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("cannot read auth.token_key_file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_signs_with_the_environment_key() {
    let files = ChildFiles::new(&[]);
    let env_key = std::ffi::OsString::from(ENV_KEY);
    let node = ChildNode::start_with_env(
        &files.config_path,
        &files.data,
        &[("TERN_TOKEN_KEY", env_key.as_os_str())],
    );
    let key = TokenKey::new(ENV_KEY.as_bytes());
    let _client = child_login(node.client, &key, "alice", "phone").await;
    let shipped = TokenKey::new(files.config.auth.token_key.as_bytes());
    let token = shipped
        .sign("bob", "phone", tern::clock::now_secs() + 60)
        .unwrap();
    assert!(
        tern::client::Client::login(node.client, &token, 0)
            .await
            .is_err(),
        "the key in the file must not be used when TERN_TOKEN_KEY is set"
    );
}

#[test]
fn colliding_listeners_and_an_uncreatable_data_dir_are_listed_together_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "[node]\nclient_addr = \"127.0.0.1:47400\"\nadmin_addr = \"0.0.0.0:47400\"\n\
         [auth]\ntoken_key = \"0123456789abcdef\"\n[media]\nlisten_addr = \"127.0.0.1:47400\"\n",
    )
    .unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let output = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(not_a_dir.join("data"))
        .env_remove("TERN_TOKEN_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for problem in [
        "node.client_addr (127.0.0.1:47400) and node.admin_addr (0.0.0.0:47400)",
        "node.client_addr (127.0.0.1:47400) and media.listen_addr (127.0.0.1:47400)",
        "node.admin_addr (0.0.0.0:47400) and media.listen_addr (127.0.0.1:47400)",
        "cannot be created",
    ] {
        assert!(
            stderr.contains(problem),
            "{problem:?} missing from: {stderr}"
        );
    }
}

#[test]
fn port_zero_and_distinct_addresses_do_not_collide() {
    let text = "[node]\nclient_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\n\
                [media]\nlisten_addr = \"127.0.0.2:7400\"\n";
    let config = Config::parse_with_environment(Path::new("x"), text, Some(ENV_KEY.into()));
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn a_data_dir_in_use_by_another_node_exits_64_and_is_free_once_it_stops() {
    let files = ChildFiles::new(&[]);
    let first = files.start();
    let output = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(&files.config_path)
        .arg("--data-dir")
        .arg(&files.data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("is in use by another tern node")
            && stderr.contains(&format!("(pid {})", first.child.id())),
        "{stderr}"
    );
    // SIGKILL leaves the lock file behind; the lock itself goes with the process.
    first.kill();
    assert!(files.data.join(LOCK_FILE).exists());
    let second = files.start();
    second.kill();
}

const CLUSTER_SECRET: &str = "cluster-secret-0123456789abcdef-0123";

/// `tern token` for alice/cli with `TERN_CLUSTER_SECRET` set to `secret` or removed.
fn token_with_cluster_secret(config: &Path, secret: Option<&str>) -> Output {
    let mut command = Command::new(TERN);
    command
        .args(["token", "--user", "alice", "--device", "cli", "--config"])
        .arg(config)
        .env_remove("TERN_TOKEN_KEY");
    match secret {
        Some(secret) => command.env("TERN_CLUSTER_SECRET", secret),
        None => command.env_remove("TERN_CLUSTER_SECRET"),
    };
    command.output().expect("run tern")
}

#[test]
fn cluster_problems_are_listed_together_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "[node]\nclient_addr = \"127.0.0.1:47500\"\nadmin_addr = \"127.0.0.1:47501\"\n\
         [media]\nlisten_addr = \"127.0.0.1:47502\"\n\
         [auth]\ntoken_key = \"0123456789abcdef\"\n\
         [cluster]\nnode = 1024\nlisten = \"127.0.0.1:47500\"\nreplication_factor = 2\n\
         slots = 8\n\
         seeds = [\n\
           { node = 1, addr = \"127.0.0.1:47503\" },\n\
           { node = 1, addr = \"127.0.0.1:47513\" },\n\
           { node = 2, addr = \"127.0.0.1:47503\" },\n\
           { node = 1024, addr = \"127.0.0.1:47523\" },\n\
         ]\n",
    )
    .unwrap();
    let output = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("TERN_TOKEN_KEY")
        .env_remove("TERN_CLUSTER_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for problem in [
        "node.client_addr (127.0.0.1:47500) and cluster.listen (127.0.0.1:47500) use the same port",
        "cluster.node must be between 1 and 1023 (got 1024)",
        "cluster.replication_factor must be 1 or 3 (got 2)",
        "cluster.slots must be between 16 and 65536 (got 8)",
        "cluster.seeds: node 1 is listed twice (127.0.0.1:47503 and 127.0.0.1:47513)",
        "cluster.seeds: nodes 1 and 2 have the same address 127.0.0.1:47503",
        "cluster.seeds: this node (1024) is listed with 127.0.0.1:47523, but advertises 127.0.0.1:47500",
        "no cluster secret",
    ] {
        assert!(
            stderr.contains(problem),
            "{problem:?} missing from: {stderr}"
        );
    }
}

#[test]
fn the_cluster_secret_is_required_and_comes_from_the_environment_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    let secret_file = dir.path().join("cluster.secret");
    std::fs::write(&secret_file, "short\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "[auth]\ntoken_key = \"{INLINE_KEY}\"\n[cluster]\nnode = 1\nsecret_file = {:?}\n",
            secret_file.display().to_string()
        ),
    )
    .unwrap();

    // The file wins over nothing, and is too short.
    let output = token_with_cluster_secret(&path, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("cluster.secret_file") && stderr.contains("at least 32 bytes"),
        "{stderr}"
    );
    // The environment wins over the file.
    let output = token_with_cluster_secret(&path, Some(CLUSTER_SECRET));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = token_with_cluster_secret(&path, Some("short"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("TERN_CLUSTER_SECRET must be at least 32 bytes"),
        "{stderr}"
    );
    // No source at all is a problem: there is no development secret.
    std::fs::write(
        &path,
        format!("[auth]\ntoken_key = \"{INLINE_KEY}\"\n[cluster]\nnode = 1\n"),
    )
    .unwrap();
    let output = token_with_cluster_secret(&path, None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("no cluster secret"), "{stderr}");

    let parsed = Config::parse_with_secrets(
        &path,
        &std::fs::read_to_string(&path).unwrap(),
        None,
        Some(CLUSTER_SECRET.into()),
    )
    .unwrap();
    assert_eq!(parsed.node_ordinal(), 1);
    let cluster = parsed.cluster.expect("[cluster]");
    assert_eq!(cluster.secret, CLUSTER_SECRET);
    assert_eq!(
        cluster.secret_source,
        SecretSource::Environment("TERN_CLUSTER_SECRET")
    );
}

#[test]
fn a_node_without_a_cluster_section_has_ordinal_zero_and_no_cluster() {
    let config = Config::parse_with_environment(Path::new("x"), "", Some(ENV_KEY.into())).unwrap();
    assert!(config.cluster.is_none());
    assert_eq!(config.node_ordinal(), 0);
}
