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

#: What the kube runner calls (runners/src/kube/mod.rs, API_CALLS); tests/chart.rs checks the same
#: against the Rust constant.
KUBE_RUNNER_RULES = {
    ("batch", "jobs"): {"create", "list", "watch", "patch", "delete"},
    ("", "secrets"): {"create", "delete"},
    ("", "pods"): {"list", "delete"},
    ("", "pods/log"): {"get"},
    ("", "events"): {"list"},
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


#: Custom resources: not in the Kubernetes schemas, checked by their own tests.
CRDS = {"ServiceMonitor"}


def test_every_manifest_is_valid_kubernetes(scenario):
    _, docs = scenario
    assert docs
    for d in docs:
        if d["kind"] in CRDS:
            continue
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)


def test_default_objects():
    docs = render.render(render.KEYS)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("ConfigMap", "runyard"),
        ("Deployment", "runyard"),
        ("Namespace", "runyard-jobs"),
        ("PersistentVolumeClaim", "runyard-data"),
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
    # An image that `docker build -t runyard:0.1.0 .` makes (runyard publishes none).
    assert c["image"] == "runyard:0.1.0"
    # The embedded store on a claim that survives the pod moving (and an uninstall).
    data = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"][0]
    pvc = one(docs, "PersistentVolumeClaim")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # Auth on: the JWT secret reaches the server from the Secret; no --insecure-no-auth.
    env = {e["name"]: e for e in c["env"]}
    assert env["RUNYARD_AUTH__JWT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "jwt-secret"
    # One replica: no PodDisruptionBudget (it would block every drain).
    assert not by_kind(docs, "PodDisruptionBudget")


def test_install_needs_explicit_keys():
    """Never generated, never looked up: a render is the same every time (GitOps)."""
    with pytest.raises(helm_python.HelmError) as e:
        render.render({})
    assert "secrets.masterKey" in str(e.value)
    with pytest.raises(helm_python.HelmError) as e:
        render.render({"secrets": {"masterKey": "m" * 40}})
    assert "secrets.jwtSecret" in str(e.value)
    with pytest.raises(helm_python.HelmError) as e:
        render.render({"secrets": {"masterKey": "short", "jwtSecret": "j" * 40}})
    assert "at least 32" in str(e.value)
    a = one(render.render(render.KEYS), "Secret")
    b = one(render.render(render.KEYS), "Secret")
    assert a == b
    for t in render.CHART.joinpath("templates").iterdir():
        assert "lookup" not in t.read_text(), f"{t.name} uses lookup"


def test_jobs_run_in_their_own_namespace(scenario):
    """A Job's pod can mount any Secret of its namespace: runyard's are never there."""
    name, docs = scenario
    cfg = config_of(docs)
    job_ns = {r.get("namespace") for r in cfg["runners"] if r["kind"] == "kube"}
    secret_ns = {d["metadata"].get("namespace", "runyard") for d in by_kind(docs, "Secret")}
    assert secret_ns <= {"runyard"}
    assert "runyard" not in job_ns and None not in job_ns, "every kube runner names its namespace"
    for d in by_kind(docs, "Deployment"):
        assert d["metadata"].get("namespace", "runyard") == "runyard"
    if name in ("default", "redis-workers", "ingress-monitor"):
        ns = one(docs, "Namespace")
        assert ns["metadata"]["name"] == "runyard-jobs"
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert job_ns == {"runyard-jobs"}


def test_a_service_monitor_with_auth_needs_a_token():
    """With auth, /metrics answers 401 to a scrape without a token: refused at render, not a target
    that goes down after the install."""
    monitor = {"enabled": True}
    # No token; an empty `config.auth`; the string "false" (the server wants a boolean there).
    for config in [{}, {"auth": None}, {"auth": {"metrics_require_token": "false"}}]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, "serviceMonitor": monitor, "config": config})
        assert "serviceMonitor.bearerTokenSecret" in str(e.value), (config, str(e.value))
    # Without auth, or with /metrics opened on purpose, no token is needed.
    for values in [
        {**render.KEYS, "serviceMonitor": monitor, "auth": {"enabled": False}},
        {**render.KEYS, "serviceMonitor": monitor, "config": {"auth": {"metrics_require_token": False}}},
    ]:
        ep = one(render.render(values), "ServiceMonitor")["spec"]["endpoints"][0]
        assert "authorization" not in ep
        assert config_of(render.render(values)).get("auth", {}).get("metrics_require_token", False) is False
    # The server's environment overrides its file, and the chart reads it so: "false" opens, any
    # other value (or a value from a Secret) does not, whatever config.auth says.
    def env(value, name="RUNYARD_AUTH__METRICS_REQUIRE_TOKEN"):
        return {"server": {"extraEnv": [{"name": name, **value}]}}
    for opening in [env({"value": "false"}), env({"value": " false "}),
                    env({"value": "false"}, name="runyard_auth__metrics_require_token")]:
        opened = {**render.KEYS, "serviceMonitor": monitor, **opening}
        assert "authorization" not in one(render.render(opened), "ServiceMonitor")["spec"]["endpoints"][0]
    for closing in [env({"value": "true"}), env({"value": "0"}),
                    env({"valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
                    env({"value": "true"}, name="Runyard_Auth__Metrics_Require_Token")]:
        values = {**render.KEYS, "serviceMonitor": monitor, **closing,
                  "config": {"auth": {"metrics_require_token": False}}}
        with pytest.raises(helm_python.HelmError) as e:
            render.render(values)
        assert "serviceMonitor.bearerTokenSecret" in str(e.value), (closing, str(e.value))
    # A token Secret is rendered as given, and one named without its key (or its name) is refused
    # rather than rendered with an empty one.
    secret = {"name": "runyard-metrics-token", "key": "token"}
    ep = one(render.render({**render.KEYS, "serviceMonitor": {**monitor, "bearerTokenSecret": secret}}),
             "ServiceMonitor")["spec"]["endpoints"][0]
    assert ep["authorization"] == {"type": "Bearer", "credentials": secret}
    for part in ["key", "name"]:
        partial = {k: v for k, v in secret.items() if k != part}
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, "serviceMonitor": {**monitor, "bearerTokenSecret": partial}})
        assert f"serviceMonitor.bearerTokenSecret.{part}" in str(e.value), str(e.value)


def test_a_kube_runner_in_the_release_namespace_is_refused():
    values = {**render.KEYS, "runners": [{"kind": "kube", "types": ["x.*"], "namespace": "runyard"}]}
    with pytest.raises(helm_python.HelmError) as e:
        render.render(values)
    assert "runners[0].namespace is the release namespace" in str(e.value)


def test_security_context_and_probes(scenario):
    name, docs = scenario
    for dep in by_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["enableServiceLinks"] is False
        # Longer than runyard's shutdown window (30 s + 5 s + 10 s by default).
        assert pod["terminationGracePeriodSeconds"] > 45
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
            port = "http" if component == "server" else "health"
            assert [p["name"] for p in c["ports"]] == [port]
            # Liveness asks the process only (a Redis outage restarts nothing); readiness the store.
            assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": port}
            assert c["startupProbe"]["httpGet"] == {"path": "/health/live", "port": port}
            assert c["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": port}
            if component == "worker":
                hp = c["ports"][0]["containerPort"]
                assert c["args"] == ["worker", "--health-listen", f"0.0.0.0:{hp}"]
            assert c["resources"]["requests"]
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            # Everything runyard writes is a volume: the root filesystem stays read-only.
            assert {"/var/lib/runyard", "/tmp"} <= mounts


def test_grace_period_shorter_than_the_shutdown_window_is_refused():
    values = {**render.KEYS, "config": {"worker": {"shutdown_grace": "2m"}}}
    with pytest.raises(helm_python.HelmError) as e:
        render.render(values)
    assert "terminationGracePeriodSeconds (60) must be longer" in str(e.value)
    assert "(135 s)" in str(e.value)
    values["server"] = {"terminationGracePeriodSeconds": 150}
    values["worker"] = {"terminationGracePeriodSeconds": 150}
    dep = one(render.render(values), "Deployment")
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 150


def test_values_schema_rejects_wrong_types():
    for bad, where in [
        ({"server": {"replicas": "two"}}, "/server/replicas"),
        ({"persistence": {"enabled": "yes"}}, "/persistence/enabled"),
        ({"runners": [{"kind": "kubernetes", "types": ["a"]}]}, "/runners/0/kind"),
        ({"ingress": {"enabled": True, "hosts": [{"name": "x"}]}}, "/ingress/hosts/0"),
        ({"imagePullPolicy": "Always"}, "imagePullPolicy"),
    ]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, **bad})
        assert "schema" in str(e.value) and where in str(e.value), (bad, str(e.value))


def test_ingress_servicemonitor_networkpolicy_pdb():
    docs = render.render(render.SCENARIOS["ingress-monitor"])
    ing = one(docs, "Ingress")
    assert ing["spec"]["ingressClassName"] == "nginx"
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "jobs.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "runyard", "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [{"secretName": "jobs-tls", "hosts": ["jobs.example.com"]}]
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    svc = one(docs, "Service")
    assert all(svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    ep = sm["spec"]["endpoints"][0]
    assert (ep["port"], ep["path"]) == ("http", "/metrics")
    assert ep["authorization"]["credentials"] == {"name": "runyard-metrics", "key": "token"}
    np = one(docs, "NetworkPolicy")
    peers = np["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "runyard-jobs"}}} in peers
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
    assert np["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]

    docs = render.render(render.SCENARIOS["custom"])
    pdbs = {d["metadata"]["name"]: d for d in by_kind(docs, "PodDisruptionBudget")}
    assert set(pdbs) == {"jobs-api", "jobs-api-worker"}
    assert pdbs["jobs-api-worker"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert {d["metadata"]["name"] for d in by_kind(docs, "NetworkPolicy")} == {"jobs-api", "jobs-api-worker"}


def test_secrets_are_referenced_never_inlined(scenario):
    name, docs = scenario
    for dep in by_kind(docs, "Deployment"):
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "value" not in env["RUNYARD_MASTER_KEY"]
        assert env["RUNYARD_MASTER_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "master-key"
    if name == "custom":
        assert not by_kind(docs, "Secret"), "existingSecret: nothing rendered"
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
        assert keys["master-key"] == "m" * 40
        if name == "embedded-persistent":
            # Auth off: no JWT secret, and the server is told it runs open on purpose.
            assert "jwt-secret" not in keys
            dep = one(docs, "Deployment")
            c = dep["spec"]["template"]["spec"]["containers"][0]
            assert c["args"] == ["serve", "--insecure-no-auth"]
            assert "RUNYARD_AUTH__JWT_SECRET" not in {e["name"] for e in c["env"]}
        else:
            assert keys["jwt-secret"] == "j" * 40


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
        assert cfg["auth"]["tokens"][0]["scopes"] == ["jobs:submit", "jobs:read"]
        assert cfg["public_url"] == "https://jobs.example.com"
        assert cfg["listen"] == "0.0.0.0:8080"
    else:
        assert cfg["public_url"] == "http://runyard.runyard.svc:7070"
        for r in cfg["runners"]:
            if r["kind"] == "kube":
                assert r["namespace"] == "runyard-jobs"


def test_role_grants_exactly_the_kube_runner_calls(scenario):
    name, docs = scenario
    roles = by_kind(docs, "Role")
    if name == "embedded-persistent":
        assert roles == [] and by_kind(docs, "RoleBinding") == []
        return
    expected_ns = {"custom": {"batch-jobs", "runyard-batch"}}.get(name, {"runyard-jobs"})
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
    assert worker["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "worker", "--health-listen", "0.0.0.0:9091",
    ]
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
        ({"runners": [{"kind": "kube", "types": []}]}, "/runners/0/types"),
        ({"jobs": {"namespace": "runyard"}}, "jobs.namespace must not be the release namespace"),
    ],
)
def test_bad_values_are_refused(values, message):
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **values})
    assert message in str(e.value)


def test_lint():
    report = helm_python.lint(str(render.CHART), strict=True, kube_version="v1.33.0")
    assert not report["errors"], report
    assert not [m for m in report["messages"] if m["severity"] >= 2], report


def test_image_sets_no_runyard_env():
    """An image ENV RUNYARD_* would override the chart's runyard.toml (env beats the file)."""
    dockerfile = (render.CHART.parent.parent / "Dockerfile").read_text()
    env_lines = [l for l in dockerfile.splitlines() if l.strip().upper().startswith("ENV ")]
    assert not [l for l in env_lines if "RUNYARD_" in l], env_lines


@pytest.mark.parametrize(
    "config, message",
    [
        # Secrets: they belong in a Secret, never in the ConfigMap.
        ({"master_key": "M" * 40}, "config.master_key is not allowed (the chart sets it or it holds a secret); use secrets.masterKey"),
        ({"redis": "redis://:hunter2@redis:6379/0"}, "config.redis is not allowed (the chart sets it or it holds a secret); use redis.url or redis.existingSecret"),
        ({"auth": {"jwt_secret": "J" * 40}}, "config.auth.jwt_secret is not allowed (the chart sets it or it holds a secret); use secrets.jwtSecret"),
        # Keys the chart writes itself (a second one is a duplicate TOML key: the pod crash-loops).
        ({"listen": "0.0.0.0:9000"}, "config.listen is not allowed (the chart sets it or it holds a secret); use server.port"),
        ({"data_dir": "/data"}, "config.data_dir is not allowed (the chart sets it or it holds a secret); use persistence"),
        ({"public_url": "https://x.example.com"}, "config.public_url is not allowed (the chart sets it or it holds a secret); use publicUrl"),
        ({"runners": [{"kind": "local", "types": ["a"]}]}, "config.runners is not allowed (the chart sets it or it holds a secret); use the chart's top-level runners"),
        ({"auth": {"insecure_no_auth": True}}, "use auth.enabled=false"),
        ({"worker": {"enabled": False}}, "config.worker.enabled is not allowed"),
        # A dotted name would be a TOML dotted key: auth.jwt_secret by another spelling.
        ({"auth.jwt_secret": "J" * 40}, 'config key "auth.jwt_secret" is not a plain name'),
        ({"auth": {"a.jwt_secret": "x"}}, 'config.auth key "a.jwt_secret" is not a plain name'),
        ({"notify": {"defaults": [{"types": ["a"], "url": "https://u:pw@hooks.example.com/x"}]}},
         "config.notify.defaults[0].url carries a user name or password"),
    ],
)
def test_config_keys_the_chart_owns_or_secrets_are_refused(config, message):
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, "config": config})
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"server": {"extraEnv": [{"name": "RUNYARD_MASTER_KEY", "value": "M" * 40}]}},
         "server.extraEnv must not set RUNYARD_MASTER_KEY"),
        ({"worker": {"extraEnv": [{"name": "runyard_redis", "value": "redis://:pw@r:6379/0"}]}},
         "worker.extraEnv must not set runyard_redis"),
        ({"server": {"extraEnv": [{"name": "RUNYARD_AUTH__JWT_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
         "use secrets.jwtSecret or secrets.existingSecret"),
        ({"server": {"extraEnv": [{"name": "RUNYARD_AUTH", "value": '{jwt_secret="' + "q" * 40 + '"}'}]}},
         "server.extraEnv must not set RUNYARD_AUTH "),
        ({"worker": {"extraEnv": [{"name": "runyard_auth", "value": "{insecure_no_auth=true}"}]}},
         "worker.extraEnv must not set runyard_auth "),
        ({"server": {"extraArgs": ["--redis=redis://:pw@r:6379/0"]}}, "server.extraArgs must not hold --redis:"),
        ({"server": {"extraArgs": ["--data-dir", "/x"]}}, "server.extraArgs must not hold --data-dir"),
    ],
)
def test_env_and_args_the_chart_owns_are_refused(values, message):
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **values})
    assert message in str(e.value), str(e.value)
    assert "pw@" not in str(e.value), "the message never repeats a secret"


def test_config_numbers_are_written_exactly_or_refused():
    """Helm reads numbers as 64-bit floats: whole numbers up to 2^53 are written as they are; a
    larger one (no longer the number written, and negative past 2^63 once made an integer) is
    refused, naming it."""
    values = {**render.KEYS, "config": {"api": {"max_page": 2**53, "ratio": 0.25, "neg": -(2**53)}}}
    cfg = config_of(render.render(values))
    assert cfg["api"] == {"max_page": 2**53, "ratio": 0.25, "neg": -(2**53)}
    for big in [2**53 + 2, 10**20, -(10**20)]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, "config": {"api": {"max_page": big}}})
        assert "too large to pass exactly" in str(e.value), str(e.value)


def test_config_may_still_set_other_keys_of_owned_tables():
    values = {**render.KEYS, "config": {"auth": {"jwt_leeway": "30s"}, "worker": {"lease_ttl": "20s"}, "api": {"max_page": 10}}}
    cfg = config_of(render.render(values))
    assert cfg["auth"] == {"jwt_leeway": "30s"}
    assert cfg["worker"] == {"lease_ttl": "20s"}
    assert cfg["api"] == {"max_page": 10}


def test_an_existing_secret_takes_no_inline_secrets():
    """secrets.existingSecret: the chart renders no Secret, so an inline key or Redis URL next to it
    would be dropped without a word; refused instead, naming what to do."""
    mine = {"existingSecret": "mine"}
    for values, message in [
        ({"secrets": {**mine, "masterKey": "m" * 40}}, "secrets.masterKey and secrets.existingSecret are both set"),
        ({"secrets": {**mine, "jwtSecret": "j" * 40}}, "secrets.jwtSecret and secrets.existingSecret are both set"),
        ({"secrets": mine, "redis": {"url": "redis://:pw@redis:6379/0"}}, "set redis.existingSecret"),
        ({**render.KEYS, "redis": {"url": "redis://r:6379/0", "existingSecret": "r"}}, "set redis.url or redis.existingSecret, not both"),
        ({**render.KEYS, "redis": {"existingSecret": "r", "existingSecretKey": ""}}, "redis.existingSecret needs redis.existingSecretKey"),
    ]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render(values)
        assert message in str(e.value), (values, str(e.value))
        assert "pw@" not in str(e.value)
    # The documented way: the keys and the URL from Secrets of your own (here the same one).
    docs = render.render({"secrets": mine, "redis": {"existingSecret": "mine"}})
    assert not by_kind(docs, "Secret")
    env = {e["name"]: e for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RUNYARD_MASTER_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "master-key"}
    assert env["RUNYARD_AUTH__JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "jwt-secret"}
    assert env["RUNYARD_REDIS"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "redis-url"}
    # redis.url without existingSecret: the chart's Secret holds it, and the env reads it there.
    docs = render.render({**render.KEYS, "redis": {"url": "redis://:pw@redis:6379/0"}})
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == "redis://:pw@redis:6379/0"
    env = {e["name"]: e for e in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RUNYARD_REDIS"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "redis-url"}


def test_a_redis_ca_is_mounted_and_named_in_every_pod():
    """redis.caSecret: the CA certificate of a rediss:// server with a private CA, mounted read-only
    from that Secret in the server's and the worker's pods, and named as store.redis_ca."""
    tls = {"url": "rediss://redis.redis.svc:6380/0", "caSecret": "redis-ca", "caSecretKey": "ca.pem"}
    docs = render.render({**render.KEYS, "redis": tls, "worker": {"enabled": True}})
    deployments = by_kind(docs, "Deployment")
    assert len(deployments) == 2
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        assert env["RUNYARD_STORE__REDIS_CA"] == {"name": "RUNYARD_STORE__REDIS_CA", "value": "/etc/runyard/redis-ca/ca.pem"}
        assert {"name": "redis-ca", "mountPath": "/etc/runyard/redis-ca", "readOnly": True} in c["volumeMounts"]
        assert {"name": "redis-ca", "secret": {"secretName": "redis-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}} in pod["volumes"]
    # Without it, nothing of the kind: the system's CAs.
    docs = render.render({**render.KEYS, "redis": {"url": "rediss://redis:6380/0"}})
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert "RUNYARD_STORE__REDIS_CA" not in {e["name"] for e in pod["containers"][0]["env"]}
    assert "redis-ca" not in {v["name"] for v in pod["volumes"]}
    for values, message in [
        ({"redis": {"caSecret": "redis-ca"}}, "redis.caSecret needs Redis over TLS"),
        ({"redis": {"url": "redis://redis:6379/0", "caSecret": "redis-ca"}}, "redis.url must be a rediss:// URL"),
        ({"redis": {**tls, "caSecretKey": ""}}, "redis.caSecret needs redis.caSecretKey"),
        ({"redis": tls, "config": {"store": {"redis_ca": "/x.pem"}}}, "config.store.redis_ca next to redis.caSecret"),
        ({"redis": tls, "server": {"extraEnv": [{"name": "RUNYARD_STORE__REDIS_CA", "value": "/x.pem"}]}},
         "server.extraEnv must not set RUNYARD_STORE__REDIS_CA"),
    ]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, **values})
        assert message in str(e.value), (values, str(e.value))


def test_a_changed_secret_or_config_rolls_the_pods():
    def annotations(values):
        docs = render.render(values)
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"] for d in by_kind(docs, "Deployment")}
    redis = {"redis": {"url": "redis://redis:6379/0"}, "worker": {"enabled": True}}
    base = annotations({**render.KEYS, **redis})
    assert set(base) == {"runyard", "runyard-worker"}
    for changed in [
        {"secrets": {"masterKey": "q" * 40, "jwtSecret": "j" * 40}},
        {"secrets": {"masterKey": "m" * 40, "jwtSecret": "z" * 40}},
        {"redis": {"url": "redis://:pw@redis:6379/0"}},
    ]:
        after = annotations({**render.KEYS, **redis, **changed})
        for name in base:
            assert after[name]["checksum/secret"] != base[name]["checksum/secret"], (changed, name)
            assert after[name]["checksum/config"] == base[name]["checksum/config"]
    # The same values: the same annotations (no roll on every upgrade).
    assert annotations({**render.KEYS, **redis}) == base
    # A Secret the chart does not render: nothing to hash (docs: restart by hand after rotating).
    docs = render.render(render.SCENARIOS["custom"])
    for d in by_kind(docs, "Deployment"):
        assert "checksum/secret" not in d["spec"]["template"]["metadata"]["annotations"]
        assert "checksum/config" in d["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    "grace, window",
    # Every form the server's duration parser (humantime) reads, plus kill_grace's 5 s and the
    # 10 s the stop may take past the graces.
    [("2m30s", "165"), ("150000ms", "165"), ("2.5m", "165"), ("1m 10s", "85"), ("45s", "60"),
     ("45.5s", "60.500"), ("1h", "3615")],
)
def test_the_shutdown_window_is_read_in_every_duration_form(grace, window):
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, "config": {"worker": {"shutdown_grace": grace}}})
    assert f"terminationGracePeriodSeconds (60) must be longer than runyard's shutdown window, worker.shutdown_grace + worker.kill_grace + 10 s ({window} s)" in str(e.value), str(e.value)


def test_a_shutdown_window_inside_the_grace_period_renders():
    for grace in ["44.5s", "44s", "44000ms", "0", "0.5m"]:
        docs = render.render({**render.KEYS, "config": {"worker": {"shutdown_grace": grace}}})
        assert config_of(docs)["worker"]["shutdown_grace"] == grace


def test_a_duration_the_chart_cannot_read_is_refused():
    for grace, message in [
        ("2x", 'config.worker.shutdown_grace = "2x" is not a duration the chart can read'),
        ("30", 'config.worker.shutdown_grace = "30" is not a duration the chart can read'),
        (30, "config.worker.shutdown_grace must be a duration string"),
    ]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, "config": {"worker": {"kill_grace": "1s", "shutdown_grace": grace}}})
        assert message in str(e.value), str(e.value)
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, "config": {"worker": {"kill_grace": "5 fortnights"}}})
    assert 'config.worker.kill_grace = "5 fortnights" is not a duration' in str(e.value)


def test_the_shutdown_window_set_in_extra_env_is_checked():
    """RUNYARD_WORKER__* in a component's extraEnv overrides config.worker in that component's pods."""
    def env(component, name, **value):
        return {component: {"extraEnv": [{"name": name, **value}]}}
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **env("worker", "RUNYARD_WORKER__SHUTDOWN_GRACE", value="2m")})
    assert "worker.terminationGracePeriodSeconds (60) must be longer" in str(e.value) and "(135 s)" in str(e.value)
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **env("server", "runyard_worker__kill_grace", value="1m")})
    assert "server.terminationGracePeriodSeconds (60) must be longer" in str(e.value) and "(100 s)" in str(e.value)
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **env("server", "RUNYARD_WORKER__SHUTDOWN_GRACE",
                                             valueFrom={"configMapKeyRef": {"name": "c", "key": "k"}})})
    assert "from valueFrom cannot be checked" in str(e.value)
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **env("server", "RUNYARD_WORKER", value='{shutdown_grace="2m"}')})
    assert "must not set RUNYARD_WORKER (the whole [worker] table)" in str(e.value)
    # The env shortens the window below the file's: the env wins, as in the server.
    values = {**render.KEYS, "config": {"worker": {"shutdown_grace": "2m"}},
              **env("server", "RUNYARD_WORKER__SHUTDOWN_GRACE", value="20s"),
              **env("worker", "RUNYARD_WORKER__SHUTDOWN_GRACE", value="20s")}
    assert one(render.render(values), "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60


def test_ingress_needs_hosts_and_quotes_paths():
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, "ingress": {"enabled": True}})
    assert "ingress.enabled needs at least one entry in ingress.hosts" in str(e.value)
    for bad, where in [({"hosts": [{"host": ""}]}, "/ingress/hosts/0/host"),
                       ({"hosts": [{"host": "a.example.com", "paths": [{"path": "api"}]}]}, "/ingress/hosts/0/paths/0/path")]:
        with pytest.raises(helm_python.HelmError) as e:
            render.render({**render.KEYS, "ingress": {"enabled": True, **bad}})
        assert "schema" in str(e.value) and where in str(e.value), str(e.value)
    # A path YAML would cut at " #" (or read as another type) reaches the Ingress as written.
    paths = [{"path": "/api #v2"}, {"path": "/1e3"}, {"path": "/a: b"}]
    docs = render.render({**render.KEYS, "ingress": {"enabled": True, "hosts": [{"host": "a.example.com", "paths": paths}]}})
    got = [p["path"] for p in one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"]]
    assert got == ["/api #v2", "/1e3", "/a: b"]
    kubernetes_validate.validate(one(docs, "Ingress"), KUBE_VERSION, strict=True)


@pytest.mark.parametrize("runners", [None, []])
def test_no_runners_is_refused_unless_allowed(runners):
    """`serve` and `worker` refuse to start without runners: refused at render, not a crash loop
    (nor a template crash in NOTES.txt); --allow-no-runners renders, NOTES with a placeholder."""
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, "runners": runners})
    assert "runners is empty: `runyard serve` refuses to start without runners" in str(e.value), str(e.value)
    allowed = {**render.KEYS, "runners": runners, "server": {"extraArgs": ["--allow-no-runners"]}}
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**allowed, "redis": {"url": "redis://r:6379/0"}, "worker": {"enabled": True}})
    assert "runners is empty: `runyard worker` refuses to start" in str(e.value), str(e.value)
    out = helm_python.Chart.load(str(render.CHART)).render(
        allowed, name=render.RELEASE, namespace=render.NAMESPACE, is_install=True)
    notes = [v for k, v in out.items() if k.endswith("NOTES.txt")]
    assert notes and "runyard submit TYPE" in notes[0]
    docs = render.render(allowed)
    assert "runners" not in config_of(docs)
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve", "--allow-no-runners"]


def test_notes_name_the_first_runners_type():
    out = helm_python.Chart.load(str(render.CHART)).render(
        render.KEYS, name=render.RELEASE, namespace=render.NAMESPACE, is_install=True)
    notes = [v for k, v in out.items() if k.endswith("NOTES.txt")][0]
    assert "runyard submit demo.hello " in notes


@pytest.mark.parametrize(
    "values, message",
    [
        ({"podSecurityContext": {"runAsUser": 0}}, "podSecurityContext.runAsUser is 0 (root) while runAsNonRoot is true"),
        ({"securityContext": {"runAsUser": 0}}, "securityContext.runAsUser is 0 (root) while runAsNonRoot is true"),
        ({"podSecurityContext": {"runAsUser": "0"}}, "/podSecurityContext/runAsUser"),
        ({"securityContext": {"runAsNonRoot": "yes"}}, "/securityContext/runAsNonRoot"),
    ],
)
def test_root_is_refused(values, message):
    with pytest.raises(helm_python.HelmError) as e:
        render.render({**render.KEYS, **values})
    assert message in str(e.value), str(e.value)


def test_a_non_root_user_of_ones_own_renders():
    docs = render.render({**render.KEYS, "podSecurityContext": {"runAsUser": 2000}})
    sc = one(docs, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert sc["runAsUser"] == 2000 and sc["runAsNonRoot"] is True
