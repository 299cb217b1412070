//! The deployment files in deploy/: the example configuration and the
//! ConfigMap's parse as daemon configurations; the DaemonSet manifest
//! validates against the Kubernetes schema (`kubernetes-validate`, from
//! PyPI, works offline); the systemd unit passes `systemd-analyze verify`.
//! The external tools are optional: without them those checks say SKIPPED.

use std::{path::PathBuf, process::Command};

use map_auditor::daemon::config::DaemonConfig;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// The `daemon.toml: |` block of the ConfigMap.
fn configmap_toml(yaml: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.trim_start().starts_with("daemon.toml: |") {
            inside = true;
            continue;
        }
        if inside {
            match line.strip_prefix("    ") {
                Some(l) => {
                    out.push_str(l);
                    out.push('\n');
                }
                None if line.trim().is_empty() => out.push('\n'),
                None => break,
            }
        }
    }
    out
}

#[test]
fn example_config_and_configmap_are_valid_daemon_configurations() {
    let text = std::fs::read_to_string(deploy("daemon.toml")).unwrap();
    let c = DaemonConfig::from_toml(&text, "deploy/daemon.toml").unwrap();
    assert_eq!(c, DaemonConfig::default(), "the example shows the defaults");
    let yaml = std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).unwrap();
    let embedded = configmap_toml(&yaml);
    let c = DaemonConfig::from_toml(&embedded, "ConfigMap daemon.toml").unwrap();
    assert!(c.stdout_json, "the cluster's pipeline reads stdout");
    assert!(c.metrics_listen.unwrap().ip().is_loopback());
}

fn tool(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[test]
fn daemonset_manifest_validates_against_the_kubernetes_schema() {
    let Some(kv) = tool("MAP_AUDITOR_KUBERNETES_VALIDATE", "kubernetes-validate") else {
        eprintln!(
            "SKIPPED: kubernetes-validate not found (pip install kubernetes-validate, or set MAP_AUDITOR_KUBERNETES_VALIDATE)"
        );
        return;
    };
    let out = Command::new(kv)
        .args(["--strict", "--quiet", "-k", "1.34.0"])
        .arg(deploy("kubernetes/daemonset.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_verifies() {
    let Some(sa) = tool("MAP_AUDITOR_SYSTEMD_ANALYZE", "systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze not found");
        return;
    };
    let unit = std::fs::read_to_string(deploy("map-auditor.service")).unwrap();
    let unit = unit.replace(
        "/usr/local/bin/map-auditor",
        env!("CARGO_BIN_EXE_map-auditor"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map-auditor.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(sa).arg("verify").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("map-auditor.service:"),
        "{err}"
    );
}
