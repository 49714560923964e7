//! The deployment files (no containers here: these machines have no Docker
//! daemon): `docker-compose.yml` is read and checked against what Nimbus
//! understands — every `NIMBUS_*` setting it and `deploy/env.example` give is
//! one this binary reads and accepts — and against the nginx files it mounts
//! (the same `deploy/nginx/nimbus-proxy.conf` the cluster test runs nginx
//! with); the `Dockerfile` is multi-stage, unprivileged and health-checked;
//! the systemd unit runs `nimbus serve` as its own user with settings Nimbus reads.

use std::collections::BTreeMap;

use serde_yaml::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(crate::harness::repository_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

#[test]
fn the_compose_file_runs_postgres_replicas_and_a_balancer() {
    let compose = compose();
    let services = &compose["services"];
    assert!(services["postgres"]["image"].as_str().is_some_and(|i| i.starts_with("postgres:")));
    let nimbus = &services["nimbus"];
    assert!(nimbus["deploy"]["replicas"].as_u64().is_some_and(|n| n >= 2), "at least two replicas");
    assert_eq!(nimbus["build"].as_str(), Some("."), "built from the Dockerfile");
    assert!(nimbus["healthcheck"]["test"]
        .as_sequence()
        .is_some_and(|t| t.iter().any(|p| p.as_str().is_some_and(|p| p.contains("/readyz")))));
    assert_eq!(nimbus["depends_on"]["postgres"]["condition"].as_str(), Some("service_healthy"));
    let balancer = &services["balancer"];
    assert!(balancer["image"].as_str().is_some_and(|i| i.starts_with("nginx:")));
    let mounts: Vec<&str> =
        balancer["volumes"].as_sequence().expect("mounts").iter().filter_map(Value::as_str).collect();
    for mount in &mounts {
        let local = mount.split(':').next().expect("a source");
        assert!(crate::harness::repository_root().join(local).exists(), "{local} is mounted but missing");
    }
    assert!(mounts.iter().any(|m| m.starts_with("./deploy/nginx/nimbus-proxy.conf:/etc/nginx/nimbus-proxy.conf")));
    let upstream = read("deploy/nginx/compose.conf");
    assert!(upstream.contains("upstream nimbus {") && upstream.contains("server nimbus:8090"), "{upstream}");
    assert!(upstream.contains("include /etc/nginx/nimbus-proxy.conf;"), "{upstream}");
    let proxy = read("deploy/nginx/nimbus-proxy.conf");
    assert!(proxy.contains("proxy_set_header Upgrade $http_upgrade;"), "WebSocket upgrades pass");
    let secrets = read(".gitignore");
    assert!(secrets.lines().any(|l| l.trim() == ".env"), "the env file with secrets is never committed");
}

/// The settings the compose file and the example env file give the replicas.
fn nimbus_environment() -> BTreeMap<String, String> {
    let compose = compose();
    let mut settings = BTreeMap::new();
    for line in read("deploy/env.example").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.split_once('=').expect("KEY=value");
        settings.insert(key.to_owned(), value.to_owned());
    }
    let environment = compose["services"]["nimbus"]["environment"].as_mapping().expect("environment");
    for (key, value) in environment {
        let value = value.as_str().expect("a text value").replace("${POSTGRES_PASSWORD}", "secret");
        settings.insert(key.as_str().expect("a name").to_owned(), value);
    }
    settings
}

#[test]
fn every_setting_the_compose_file_gives_is_one_nimbus_reads() {
    let settings = nimbus_environment();
    assert!(settings.keys().any(|k| k == "NIMBUS_SERVICE_KEY"), "the service key comes from the env file");
    assert!(!read("docker-compose.yml").contains("nsk_"), "no secret is baked into the compose file");
    assert_nimbus_accepts(&settings, "the compose file");
}

/// Runs the binary with `settings` (paths standing for the deployment's) and
/// checks it accepts every one and reads each.
fn assert_nimbus_accepts(settings: &BTreeMap<String, String>, source: &str) {
    let folder = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(crate::harness::nimbus_bin());
    command.arg("types").current_dir(folder.path()).env("NIMBUS_LOG", "warn");
    for (key, value) in settings {
        // Paths of the deployment, and its database, stand for ones here.
        let value = match key.as_str() {
            "NIMBUS_DATA_DIR" | "NIMBUS_RULES_DIR" | "NIMBUS_FUNCTIONS_DIR" => folder.path().display().to_string(),
            _ => value.clone(),
        };
        command.env(key, value);
    }
    let output = command.output().expect("nimbus runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nimbus refuses the settings of {source}: {stderr}");
    assert!(!stderr.contains("is not a setting"), "{source} gives a setting nimbus does not read: {stderr}");
}

#[test]
fn the_systemd_unit_runs_serve_unprivileged_with_settings_nimbus_reads() {
    let unit = read("deploy/systemd/nimbus.service");
    let values = |key: &str| -> Vec<String> {
        let prefix = format!("{key}=");
        unit.lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_owned).collect()
    };
    assert!(values("ExecStart").iter().any(|c| c.ends_with("nimbus serve")), "{unit}");
    assert!(values("User").iter().all(|u| u != "root") && !values("User").is_empty(), "not root");
    assert_eq!(values("KillSignal"), ["SIGTERM"], "the signal that lets requests finish");
    assert!(values("EnvironmentFile").iter().any(|f| f.contains("/etc/nimbus/env")), "secrets from a file");
    assert!(!unit.contains("nsk_"), "no secret in the unit");
    let settings: BTreeMap<String, String> = values("Environment")
        .iter()
        .map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).expect("KEY=value"))
        .collect();
    assert!(settings.contains_key("NIMBUS_DATA_DIR"), "{settings:?}");
    assert_nimbus_accepts(&settings, "the systemd unit");
}

#[test]
fn the_image_is_multi_stage_unprivileged_and_health_checked() {
    let dockerfile = read("Dockerfile");
    assert_eq!(dockerfile.lines().filter(|l| l.starts_with("FROM ")).count(), 2, "a builder and a runtime");
    assert!(dockerfile.contains("cmake libsimde-dev"), "the engine's build tools");
    assert!(dockerfile.lines().any(|l| l.starts_with("USER ") && !l.contains("root")), "not root");
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/readyz"));
    assert!(read(".dockerignore").lines().any(|l| l.trim() == "target"), "the build context leaves target/ out");
}
