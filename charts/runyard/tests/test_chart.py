"""The runyard chart, rendered with Helm's own engine (helm-python-sdk) for default and
non-default values, validated against the Kubernetes schemas (kubernetes-validate, strict).

The Rust side (tests/chart.rs) parses the same manifests into k8s-openapi types, checks that the
rendered runyard.toml is accepted by the server's own config loader, and that the Role grants
exactly the calls of the kube runner.
"""

from __future__ import annotations

import base64
import tomllib

import helm_python
import kubernetes_validate
import pytest

import render

KUBE_VERSION = "1.33.0"

#: What the kube runner calls (runners/src/kube.rs, API_CALLS); tests/chart.rs checks the same
#: against the Rust constant.
KUBE_RUNNER_RULES = {
    ("batch", "jobs"): {"create", "list", "watch", "patch", "delete"},
    ("", "secrets"): {"create"},
    ("", "pods"): {"list"},
    ("", "pods/log"): {"get"},
}


@pytest.fixture(scope="module", params=sorted(render.SCENARIOS))
def scenario(request):
    name = request.param
    return name, render.render(render.SCENARIOS[name])


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind, name=None):
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def config_of(docs):
    return tomllib.loads(one(docs, "ConfigMap")["data"]["runyard.toml"])


def test_every_manifest_is_valid_kubernetes(scenario):
    _, docs = scenario
    assert docs
    for d in docs:
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)


def test_default_objects():
    docs = render.render({})
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ConfigMap", "runyard"),
        ("Deployment", "runyard"),
        ("Role", "runyard-kube-runner"),
        ("RoleBinding", "runyard-kube-runner"),
        ("Secret", "runyard"),
        ("Service", "runyard"),
        ("ServiceAccount", "runyard"),
    ]
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["serve"]
    assert c["image"] == "ghcr.io/runyard/runyard:0.1.0"
    data = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"][0]
    assert data == {"name": "data", "emptyDir": {}}


def test_security_context_and_probes(scenario):
    _, docs = scenario
    for dep in by_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["enableServiceLinks"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            if dep["metadata"]["labels"]["app.kubernetes.io/component"] == "server":
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
            else:
                assert "ports" not in c, "runyard worker serves no HTTP"
            assert c["resources"]["requests"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            # Everything runyard writes is a volume: the root filesystem stays read-only.
            assert {"/var/lib/runyard", "/tmp"} <= mounts


def test_secrets_are_referenced_never_inlined(scenario):
    name, docs = scenario
    for dep in by_kind(docs, "Deployment"):
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "value" not in env["RUNYARD_MASTER_KEY"]
        assert env["RUNYARD_MASTER_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "master-key"
    if name == "custom":
        assert not by_kind(docs, "Secret"), "existingSecret: nothing generated"
        dep = one(docs, "Deployment", "jobs-api")
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["RUNYARD_MASTER_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "runyard-keys"
        assert env["RUNYARD_REDIS"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-conn",
            "key": "url",
        }
    else:
        secret = one(docs, "Secret")
        keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert len(keys["master-key"]) >= 32 and len(keys["jwt-secret"]) >= 32
        if name == "embedded-persistent":
            assert keys["master-key"] == "m" * 40 and keys["jwt-secret"] == "j" * 40


def test_generated_secrets_differ_between_installs():
    a = one(render.render({}), "Secret")["data"]["master-key"]
    b = one(render.render({}), "Secret")["data"]["master-key"]
    assert a != b


def test_config_map_holds_the_runners(scenario):
    name, docs = scenario
    cfg = config_of(docs)
    values = render.SCENARIOS[name]
    runners = values.get("runners", [
        {"kind": "kube", "types": ["demo.*"], "image": "busybox:1.36"},
    ])
    assert [r["kind"] for r in cfg["runners"]] == [r["kind"] for r in runners]
    assert [r["types"] for r in cfg["runners"]] == [r["types"] for r in runners]
    for r in cfg["runners"]:
        if r["kind"] == "kube":
            assert r["image"], "a kube runner always has an image"
    assert cfg["data_dir"] == "/var/lib/runyard"
    if name == "custom":
        batch = cfg["runners"][0]
        assert batch["image"] == "registry.example.com/runyard:1.2.3"
        assert batch["env"] == {"LOG_LEVEL": "info", "REGION": "eu-west-1"}
        assert batch["backoff"] == {
            "initial_ms": 5000, "max_ms": 300000, "multiplier": 2.5, "jitter": True,
        }
        assert batch["max_attempts"] == 5
        assert cfg["worker"] == {"lease_ttl": "20s", "kill_grace": "10s"}
        assert cfg["public_url"] == "https://jobs.example.com"
        assert cfg["listen"] == "0.0.0.0:8080"
    else:
        assert cfg["public_url"] == "http://runyard.runyard.svc:7070"


def test_role_grants_exactly_the_kube_runner_calls(scenario):
    name, docs = scenario
    roles = by_kind(docs, "Role")
    if name == "embedded-persistent":
        assert roles == [] and by_kind(docs, "RoleBinding") == []
        return
    expected_ns = {"default": {"runyard"}, "custom": {"batch-jobs", "runyard"}}[name]
    assert {r["metadata"]["namespace"] for r in roles} == expected_ns
    for role in roles:
        got = {}
        for rule in role["rules"]:
            for g in rule["apiGroups"]:
                for res in rule["resources"]:
                    got.setdefault((g, res), set()).update(rule["verbs"])
        assert got == KUBE_RUNNER_RULES
    sa = by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    for rb in by_kind(docs, "RoleBinding"):
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "runyard"}]


def test_worker_deployment():
    docs = render.render(render.SCENARIOS["custom"])
    server = one(docs, "Deployment", "jobs-api")
    worker = one(docs, "Deployment", "jobs-api-worker")
    assert server["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "serve", "--no-worker", "--public-url", "https://jobs.example.com",
    ]
    assert worker["spec"]["replicas"] == 3
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == ["worker"]
    assert "strategy" not in server["spec"], "with Redis, rolling updates are fine"
    svc = one(docs, "Service")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "server"


def test_persistence():
    docs = render.render(render.SCENARIOS["embedded-persistent"])
    pvc = one(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "fast"
    dep = one(docs, "Deployment")
    data = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"][0]
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"worker": {"enabled": True}}, "worker.enabled needs Redis"),
        ({"server": {"replicas": 3}}, "server.replicas > 1 needs Redis"),
        ({"runners": [{"kind": "kube"}]}, "runners[0] needs types"),
    ],
)
def test_bad_values_are_refused(values, message):
    with pytest.raises(helm_python.HelmError) as e:
        render.render(values)
    assert message in str(e.value)


def test_lint():
    report = helm_python.lint(str(render.CHART), strict=True, kube_version="v1.33.0")
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report
