//! The Helm chart (charts/runyard), rendered by Helm's own engine through
//! charts/runyard/tests/render.py (helm-python-sdk), parsed strictly into k8s-openapi types:
//! the Role grants exactly the calls the kube runner makes ([`API_CALLS`]), the rendered
//! runyard.toml is accepted by the server's own config loader and runner set, and the
//! Deployments reference their secrets and run non-root on a read-only root filesystem.
//!
//! Needs `python3` (or `RUNYARD_PYTHON`) with helm-python-sdk and PyYAML
//! (charts/runyard/tests/requirements.txt); without them the test says so and skips.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clap::Parser;
use runyard::config::{Config, RunnerKind};
use runyard::runner_set::RunnerSet;
use runyard_runners::kube::k8s_openapi::api::apps::v1::Deployment;
use runyard_runners::kube::k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use runyard_runners::kube::k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use runyard_runners::kube::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use runyard_runners::kube::k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use runyard_runners::kube::API_CALLS;
use runyard_runners::service::ServiceRegistry;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The chart's objects of one scenario, typed.
#[derive(Default)]
struct Manifests {
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    secrets: Vec<Secret>,
    services: Vec<Service>,
    service_accounts: Vec<ServiceAccount>,
    pvcs: Vec<PersistentVolumeClaim>,
    namespaces: Vec<Namespace>,
    ingresses: Vec<Ingress>,
    network_policies: Vec<NetworkPolicy>,
    pdbs: Vec<PodDisruptionBudget>,
    /// Custom resources (ServiceMonitor): no k8s-openapi type; test_chart.py checks them.
    custom: Vec<Value>,
}

/// Deserialises, and refuses any field the k8s-openapi type does not know (a typo in a template
/// would otherwise pass silently).
fn strict<T: DeserializeOwned + Serialize>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("cannot parse {}: {e}\n{v:#}", v["kind"]));
    let back = serde_json::to_value(&t).unwrap();
    if let Some(p) = unknown(v, &back, "") {
        panic!("{} {}: unknown field {p}", v["kind"], v["metadata"]["name"]);
    }
    t
}

fn unknown(orig: &Value, back: &Value, path: &str) -> Option<String> {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => o.iter().find_map(|(k, v)| {
            let p = format!("{path}.{k}");
            match b.get(k) {
                None if !v.is_null() => Some(p),
                None => None,
                Some(bv) => unknown(v, bv, &p),
            }
        }),
        (Value::Array(o), Value::Array(b)) => o
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (ov, bv))| unknown(ov, bv, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn parse(docs: &[Value]) -> Manifests {
    let mut m = Manifests::default();
    for d in docs {
        match d["kind"].as_str().unwrap_or_default() {
            "ConfigMap" => m.config_maps.push(strict(d)),
            "Deployment" => m.deployments.push(strict(d)),
            "Role" => m.roles.push(strict(d)),
            "RoleBinding" => m.role_bindings.push(strict(d)),
            "Secret" => m.secrets.push(strict(d)),
            "Service" => m.services.push(strict(d)),
            "ServiceAccount" => m.service_accounts.push(strict(d)),
            "PersistentVolumeClaim" => m.pvcs.push(strict(d)),
            "Namespace" => m.namespaces.push(strict(d)),
            "Ingress" => m.ingresses.push(strict(d)),
            "NetworkPolicy" => m.network_policies.push(strict(d)),
            "PodDisruptionBudget" => m.pdbs.push(strict(d)),
            "ServiceMonitor" => m.custom.push(d.clone()),
            k => panic!("unexpected kind {k} in the chart"),
        }
    }
    m
}

/// Renders every scenario of render.py; `None` (with a message) when Python or its packages are
/// missing.
fn rendered() -> Option<BTreeMap<String, Vec<Value>>> {
    let python = std::env::var("RUNYARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/runyard/tests/render.py");
    let check = Command::new(&python).arg(&script).arg("--check").output();
    match check {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            eprintln!(
                "SKIPPED: the chart test needs helm-python-sdk and PyYAML for {python} \
                 (pip install -r charts/runyard/tests/requirements.txt): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("SKIPPED: the chart test needs {python}: {e}");
            return None;
        }
    }
    let out = Command::new(&python)
        .arg(&script)
        .output()
        .expect("run render.py");
    assert!(
        out.status.success(),
        "render.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("render.py prints JSON"))
}

type Grant = (String, String, String);

fn grants(role: &Role) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role.rules.clone().unwrap_or_default() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for g in rule.api_groups.clone().unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for v in &rule.verbs {
                    assert!(g != "*" && r != "*" && v != "*", "wildcard in {rule:?}");
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn chart_renders_valid_objects_with_exact_rbac() {
    let Some(scenarios) = rendered() else {
        return;
    };
    assert!(scenarios.contains_key("default") && scenarios.contains_key("custom"));
    let declared: BTreeSet<Grant> = API_CALLS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    for (name, docs) in &scenarios {
        let m = parse(docs);

        // The config is what the server itself accepts, and its runners build.
        assert_eq!(m.config_maps.len(), 1, "{name}");
        let toml = &m.config_maps[0].data.as_ref().unwrap()["runyard.toml"];
        let cfg = Config::from_toml(toml).unwrap_or_else(|e| {
            panic!("{name}: the server refuses the chart's config: {e}\n{toml}")
        });
        RunnerSet::build(&cfg, Arc::new(ServiceRegistry::with_builtins()))
            .unwrap_or_else(|e| panic!("{name}: runners do not build: {e}"));
        let kube_namespaces: BTreeSet<String> = cfg
            .runners
            .iter()
            .filter(|r| r.kind == RunnerKind::Kube)
            .map(|r| {
                r.namespace.clone().unwrap_or_else(|| {
                    panic!("{name}: the chart names every kube runner's namespace")
                })
            })
            .collect();
        // Jobs never run where runyard's Secrets are (a Job's pod can mount any Secret of its
        // namespace).
        assert!(
            !kube_namespaces.contains("runyard"),
            "{name}: a kube runner in the release namespace"
        );

        // RBAC: one Role per kube runner namespace, granting exactly API_CALLS.
        let rbac = name != "embedded-persistent";
        if rbac {
            let role_ns: BTreeSet<String> = m
                .roles
                .iter()
                .map(|r| r.metadata.namespace.clone().unwrap())
                .collect();
            assert_eq!(
                role_ns, kube_namespaces,
                "{name}: a Role where each kube runner works"
            );
            for role in &m.roles {
                assert_eq!(
                    grants(role),
                    declared,
                    "{name}: the Role must grant every call of the kube runner, and no more"
                );
            }
            let sa = m.deployments[0]
                .spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .service_account_name
                .clone()
                .unwrap();
            assert_eq!(m.role_bindings.len(), m.roles.len());
            for rb in &m.role_bindings {
                assert_eq!(rb.role_ref.kind, "Role");
                assert!(m.roles.iter().any(|r| r.metadata.name.as_deref()
                    == Some(rb.role_ref.name.as_str())
                    && r.metadata.namespace == rb.metadata.namespace));
                let subjects = rb.subjects.clone().unwrap();
                assert_eq!(subjects.len(), 1);
                assert_eq!(
                    (subjects[0].kind.as_str(), subjects[0].name.as_str()),
                    ("ServiceAccount", sa.as_str())
                );
                assert_eq!(subjects[0].namespace.as_deref(), Some("runyard"));
            }
        } else {
            assert!(m.roles.is_empty() && m.role_bindings.is_empty());
        }

        // Deployments: secrets by reference, non-root, read-only root, probes on /health.
        assert!(!m.deployments.is_empty());
        for d in &m.deployments {
            let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
            let psc = pod.security_context.as_ref().unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(pod.enable_service_links, Some(false));
            for c in &pod.containers {
                let sc = c.security_context.as_ref().unwrap();
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                let component = &d.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"];
                // Liveness asks the process, readiness the store (src/api/health.rs).
                let path = |p: &Option<_>| {
                    let p: &runyard_runners::kube::k8s_openapi::api::core::v1::Probe =
                        p.as_ref().expect("a probe");
                    p.http_get.as_ref().unwrap().path.clone().unwrap()
                };
                assert_eq!(path(&c.liveness_probe), "/health/live");
                assert_eq!(path(&c.startup_probe), "/health/live");
                assert_eq!(path(&c.readiness_probe), "/health/ready");
                if component != "server" {
                    let args = c.args.clone().unwrap();
                    assert_eq!(args[..2], ["worker", "--health-listen"]);
                    // The flag the binary takes.
                    runyard::cli::Cli::try_parse_from(
                        std::iter::once("runyard").chain(args.iter().map(String::as_str)),
                    )
                    .unwrap_or_else(|e| panic!("{name}: the worker's args do not parse: {e}"));
                }
                if component == "server" {
                    let args = c.args.clone().unwrap();
                    runyard::cli::Cli::try_parse_from(
                        std::iter::once("runyard").chain(args.iter().map(String::as_str)),
                    )
                    .unwrap_or_else(|e| panic!("{name}: the server's args do not parse: {e}"));
                }
                for e in c.env.clone().unwrap_or_default() {
                    if e.name == "RUNYARD_MASTER_KEY" || e.name == "RUNYARD_REDIS" {
                        assert!(e.value.is_none(), "{} must come from a Secret", e.name);
                        assert!(e.value_from.unwrap().secret_key_ref.is_some());
                    }
                }
            }
        }
        let sel = m.services[0]
            .spec
            .as_ref()
            .unwrap()
            .selector
            .clone()
            .unwrap();
        let server = &m.deployments[0];
        let labels = server
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(
            sel.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "{name}: the Service selects the server pods"
        );
        let _ = (&m.secrets, &m.service_accounts, &m.pvcs, &m.custom);
        let _ = (&m.namespaces, &m.ingresses, &m.network_policies, &m.pdbs);
    }
}
