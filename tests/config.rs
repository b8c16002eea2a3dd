//! Configuration: the example file, layering, and errors that name the
//! file, the key and the value.

use crate::util::{bin, isolate};
use fedmsg::config::{ConfigError, Loader, DEFAULTS_TOML};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn example_file_is_the_builtin_default_and_parses() {
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("endpoints.example.toml"),
    )
    .unwrap();
    assert_eq!(on_disk, DEFAULTS_TOML);
    let config = Loader::isolated()
        .load()
        .expect("the example file is valid");
    assert_eq!(config.topic_prefix, "org.fedoraproject");
    assert_eq!(config.environment, "dev");
    assert_eq!(config.relay_inbound[0].to_string(), "tcp://127.0.0.1:2003");
    assert_eq!(
        config.endpoints["relay_outbound"][0].to_string(),
        "tcp://127.0.0.1:4001"
    );
    assert_eq!(config.reconnect_ivl.as_millis(), 100);
    assert_eq!(config.reconnect_ivl_max.as_millis(), 1000);
}

#[test]
fn layers_apply_in_order_and_tables_merge() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("etc/10-base.toml"), "environment = \"stg\"\n[endpoints]\n\"a.host\" = \"tcp://127.0.0.1:3000\"\n[certnames]\nx = \"1\"\n");
    write(
        &root.join("etc/20-more.toml"),
        "environment = \"prod\"\n[certnames]\ny = \"2\"\n",
    );
    write(&root.join("etc/ignored.txt"), "not toml at all [");
    write(
        &root.join("xdg/fedmsg/a.toml"),
        "topic_prefix = \"com.example\"\n[endpoints]\n\"b.host\" = [\"tcp://127.0.0.1:3001\"]\n",
    );
    write(&root.join("local/z.toml"), "sign_messages = true\n");
    write(
        &root.join("env.toml"),
        "validate_signatures = true\n[certnames]\nx = \"override\"\n",
    );
    let env = BTreeMap::from([
        (
            "FEDMSG_CONFIG".to_owned(),
            root.join("env.toml").display().to_string(),
        ),
        ("FEDMSG_HIGH_WATER_MARK".to_owned(), "50".to_owned()),
        ("FEDMSG_ENVIRONMENT".to_owned(), "envvar".to_owned()),
    ]);
    let config = Loader::isolated()
        .system_dir(root.join("etc"))
        .user_dir(Some(root.join("xdg/fedmsg")))
        .local_dir(root.join("local"))
        .env(env)
        .flag("--environment", "environment", "flag")
        .load()
        .unwrap();
    assert_eq!(config.environment, "flag", "flags win over everything");
    assert_eq!(config.topic_prefix, "com.example");
    assert!(config.sign_messages && config.validate_signatures);
    assert_eq!(config.high_water_mark, 50);
    assert_eq!(config.certnames["x"], "override");
    assert_eq!(config.certnames["y"], "2");
    // Files' endpoints merge; the built-in relay_outbound is gone.
    let names: Vec<&String> = config.endpoints.keys().collect();
    assert_eq!(names, ["a.host", "b.host"]);
    assert_eq!(config.sources.len(), 1 + 5 + 3);
}

#[test]
fn explicit_file_replaces_every_file_layer() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("etc/a.toml"), "environment = \"stg\"\n");
    write(
        &dir.path().join("only.toml"),
        "topic_prefix = \"net.example\"\n",
    );
    let config = Loader::isolated()
        .system_dir(dir.path().join("etc"))
        .file(Some(dir.path().join("only.toml")))
        .load()
        .unwrap();
    assert_eq!(config.environment, "dev");
    assert_eq!(config.topic_prefix, "net.example");
    // No file defined endpoints: the built-in ones stay.
    assert!(config.endpoints.contains_key("relay_outbound"));
}

fn error_of(text: &str) -> (ConfigError, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    write(&path, text);
    let error = Loader::isolated()
        .file(Some(path))
        .load()
        .expect_err("config should be refused");
    let message = error.to_string();
    assert!(
        message.contains("bad.toml"),
        "error does not name the file: {message}"
    );
    (error, message)
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    let (error, message) = error_of("topic_prefx = \"x\"\n");
    assert!(matches!(error, ConfigError::UnknownKey { .. }));
    assert!(
        message.contains("`topic_prefx`") && message.contains("did you mean `topic_prefix`"),
        "{message}"
    );
}

#[test]
fn wrong_type_names_key_and_value() {
    let (_, message) = error_of("high_water_mark = \"lots\"\n");
    assert!(
        message.contains("`high_water_mark`") && message.contains("\"lots\""),
        "{message}"
    );
    let (_, message) = error_of("[endpoints]\n\"a.b\" = 5\n");
    assert!(
        message.contains("`endpoints.a.b`") && message.contains('5'),
        "{message}"
    );
}

#[test]
fn bad_address_names_key_and_value() {
    let (_, message) =
        error_of("[endpoints]\n\"svc.host\" = [\"tcp://127.0.0.1:3000\", \"tcp://nohost\"]\n");
    assert!(
        message.contains("`endpoints.svc.host[1]`") && message.contains("\"tcp://nohost\""),
        "{message}"
    );
    let (_, message) = error_of("relay_inbound = \"udp://1.2.3.4:5\"\n");
    assert!(
        message.contains("relay_inbound[0]") && message.contains("udp://1.2.3.4:5"),
        "{message}"
    );
}

#[test]
fn syntax_error_names_the_file_on_one_line() {
    let (error, message) = error_of("environment = \n");
    assert!(matches!(error, ConfigError::Syntax { .. }));
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn unrelated_fedmsg_variables_are_ignored() {
    let env = BTreeMap::from([("FEDMSG_SOMETHING_ELSE".to_owned(), "x".to_owned())]);
    assert!(Loader::isolated().env(env).load().is_ok());
}

#[test]
fn bad_environment_variable_is_named() {
    let env = BTreeMap::from([("FEDMSG_ZMQ_RECONNECT_IVL".to_owned(), "soon".to_owned())]);
    let message = Loader::isolated().env(env).load().unwrap_err().to_string();
    assert!(
        message.contains("FEDMSG_ZMQ_RECONNECT_IVL") && message.contains("\"soon\""),
        "{message}"
    );
}

fn fedmsg_config(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(bin("fedmsg-config"));
    command.args(args);
    isolate(&mut command, dir);
    command.output().unwrap()
}

#[test]
fn fedmsg_config_prints_queries_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    write(&good, "environment = \"prod\"\n[endpoints]\n\"x.y\" = [\"tcp://127.0.0.1:1\", \"tcp://127.0.0.1:2\"]\n");
    let good = good.to_str().unwrap();

    let all = fedmsg_config(dir.path(), &["--config", good]);
    assert!(all.status.success());
    let json: serde_json::Value = serde_json::from_slice(&all.stdout).expect("prints JSON");
    assert_eq!(json["environment"], "prod");
    assert_eq!(json["endpoints"]["x.y"][1], "tcp://127.0.0.1:2");

    // A list prints one item per line; dotted endpoint names are found.
    let list = fedmsg_config(dir.path(), &["--config", good, "--query", "endpoints.x.y"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "tcp://127.0.0.1:1\ntcp://127.0.0.1:2\n"
    );
    let table = fedmsg_config(dir.path(), &["--config", good, "--query", "endpoints"]);
    let table: serde_json::Value =
        serde_json::from_slice(&table.stdout).expect("a table prints as JSON");
    assert!(table.get("x.y").is_some());
    let value = fedmsg_config(dir.path(), &["--config", good, "--query", "environment"]);
    assert_eq!(String::from_utf8_lossy(&value.stdout), "prod\n");
    let relay = fedmsg_config(dir.path(), &["--query", "endpoints.relay_outbound"]);
    assert_eq!(
        String::from_utf8_lossy(&relay.stdout),
        "tcp://127.0.0.1:4001\n"
    );

    let missing = fedmsg_config(dir.path(), &["--config", good, "--query", "no.such.key"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "Key `no.such.key` does not exist in config"
    );

    let check = fedmsg_config(dir.path(), &["--config", good, "--check"]);
    assert_eq!(check.status.code(), Some(0));
    let bad = dir.path().join("bad.toml");
    write(&bad, "enviroment = \"prod\"\n");
    let check = fedmsg_config(dir.path(), &["--config", bad.to_str().unwrap(), "--check"]);
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("did you mean `environment`"),
        "{stderr}"
    );
}

#[test]
fn local_fedmsg_d_is_read_by_binaries() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("fedmsg.d/site.toml"),
        "environment = \"local\"\n",
    );
    let out = fedmsg_config(dir.path(), &["--query", "environment"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "local\n");
    // FEDMSG_<KEY> beats files.
    let mut command = Command::new(bin("fedmsg-config"));
    isolate(&mut command, dir.path());
    let out = command
        .args(["--query", "environment"])
        .env("FEDMSG_ENVIRONMENT", "fromenv")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fromenv\n");
}

#[test]
fn metrics_addresses_name_key_and_value() {
    let (_, message) = error_of("[metrics]\nrelay = \"localhost\"\n");
    assert!(
        message.contains("`metrics.relay`")
            && message.contains("\"localhost\"")
            && message.contains("HOST:PORT"),
        "{message}"
    );
    let (_, message) = error_of("[metrics]\ngateway = \"10.0.0.1:9942\"\n");
    assert!(
        message.contains("`metrics.gateway`") && message.contains("loopback"),
        "{message}"
    );
}

/// The commented-out `[[meta]]` rule of the example file, uncommented.
fn example_meta_rule() -> String {
    let mut lines = DEFAULTS_TOML
        .lines()
        .skip_while(|line| *line != "# [[meta]]")
        .take_while(|line| line.starts_with("# "))
        .map(|line| line.trim_start_matches("# ").to_owned())
        .peekable();
    assert!(lines.peek().is_some(), "no commented [[meta]] example");
    lines.collect::<Vec<_>>().join("\n") + "\n"
}

#[test]
fn meta_rules_of_later_layers_come_first_and_the_example_rule_works() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("etc/10-example.toml"), &example_meta_rule());
    write(
        &root.join("etc/20-more.toml"),
        "[[meta]]\ntopic = \"git.#\"\nsubtitle = \"any git\"\n[[meta]]\ntopic = \"logger.log\"\nsubtitle = \"mine: {msg.log}\"\n",
    );
    let config = Loader::isolated()
        .system_dir(root.join("etc"))
        .load()
        .unwrap();
    let patterns: Vec<String> = config
        .meta
        .iter()
        .map(|rule| rule.pattern().to_string())
        .collect();
    assert_eq!(
        patterns,
        [
            "git.#",
            "logger.log",
            "git.receive",
            "logger.#",
            "announce.#"
        ]
    );
    let rules = fedmsg::meta::Rules::from_config(&config);
    let message =
        |body: serde_json::Value| fedmsg::Message::from_body(body.as_object().cloned().unwrap());
    // 20-more.toml's logger rule is tried before the built-in one.
    let log = message(
        serde_json::json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "hi"}, "username": "u"}),
    );
    assert_eq!(rules.summarise(&log).terse(), "logger.log -- mine: hi ");
    // The example rule is shadowed by the later "git.#", so only the
    // example file alone shows it at work.
    let alone = Loader::isolated()
        .file(Some(root.join("etc/10-example.toml")))
        .load()
        .unwrap();
    let push = message(
        serde_json::json!({"topic": "org.fedoraproject.prod.git.receive",
        "msg": {"commit": {"username": "alice", "repo": "kernel", "branch": "main", "rev": "abc123"}}}),
    );
    let summary = fedmsg::meta::Rules::from_config(&alone).summarise(&push);
    assert_eq!(
        summary.terse(),
        "git push -- alice pushed to kernel (main) https://src.example.org/kernel/c/abc123"
    );
    assert_eq!(summary.usernames, ["alice"]);
    assert_eq!(summary.packages, ["kernel"]);
    assert_eq!(rules.summarise(&push).subtitle, "any git");
}

#[test]
fn meta_rule_errors_name_the_rule_field_and_value() {
    let (_, message) =
        error_of("[[meta]]\ntopic = \"a\"\n[[meta]]\ntopic = \"b\"\nsubtitle = \"{msg.log\"\n");
    assert!(
        message.contains("`meta[1].subtitle`")
            && message.contains("\"{msg.log\"")
            && message.contains("closing"),
        "{message}"
    );
    let (_, message) = error_of("[[meta]]\ntopic = \"a.b*\"\n");
    assert!(
        message.contains("`meta[0].topic`") && message.contains("whole words"),
        "{message}"
    );
    let (_, message) = error_of("[[meta]]\ntopic = \"a\"\nsubtitel = \"x\"\n");
    assert!(
        message.contains("`meta[0]`") && message.contains("subtitel"),
        "{message}"
    );
    let (_, message) = error_of("[[meta]]\nsubtitle = \"x\"\n");
    assert!(
        message.contains("`meta[0]`") && message.contains("topic"),
        "{message}"
    );
    let (_, message) = error_of("[[meta]]\ntopic = \"a\"\nlink = \"{title}\"\n");
    assert!(
        message.contains("`meta[0].link`") && message.contains("only available in --format"),
        "{message}"
    );
}

#[test]
fn the_meta_rules_in_the_docs_are_valid() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let blocks: Vec<&str> = docs
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(block, _)| block))
        .filter(|block| block.contains("[[meta]]"))
        .collect();
    assert!(!blocks.is_empty());
    let dir = tempfile::tempdir().unwrap();
    for block in blocks {
        let path = dir.path().join("docs.toml");
        write(&path, block);
        let config = Loader::isolated()
            .file(Some(path))
            .load()
            .unwrap_or_else(|e| panic!("{e}\n{block}"));
        let build = fedmsg::Message::from_body(
            serde_json::json!({"topic": "org.fedoraproject.prod.buildsys.build.state.change",
                "msg": {"owner": "carol", "name": "rpm", "version": "4.20", "builds": [{"package": "rpm-libs"}]}})
            .as_object()
            .cloned()
            .unwrap(),
        );
        let summary = fedmsg::meta::Rules::from_config(&config).summarise(&build);
        assert_eq!(summary.subtitle, "carol built rpm-4.20-?");
        assert_eq!(summary.packages, ["rpm", "rpm-libs"]);
    }
}

#[test]
fn an_address_listed_twice_is_subscribed_to_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twice.toml");
    write(
        &path,
        "[endpoints]\n\"a.host\" = [\"tcp://127.0.0.1:3000\", \"tcp://127.0.0.1:3000\"]\n\"b.host\" = [\"tcp://127.0.0.1:3000\", \"tcp://127.0.0.1:3001\"]\n",
    );
    let config = Loader::isolated().file(Some(path)).load().unwrap();
    let endpoints: Vec<String> = config
        .subscribe_endpoints()
        .iter()
        .map(|(name, endpoint)| format!("{name} {endpoint}"))
        .collect();
    assert_eq!(
        endpoints,
        ["a.host tcp://127.0.0.1:3000", "b.host tcp://127.0.0.1:3001"]
    );
}
