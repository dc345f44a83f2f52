"""Renders the runyard chart with Helm's own engine (helm-python-sdk binds libhelm, Helm's Go SDK,
so no helm binary is needed) for a few value scenarios.

    python3 render.py              # JSON {scenario: [manifest, ...]} on stdout
    python3 render.py --check      # exit 0 when helm-python-sdk and PyYAML can be imported

The Rust test tests/chart.rs runs this script; test_chart.py imports it.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

CHART = pathlib.Path(__file__).resolve().parent.parent
RELEASE = "runyard"
NAMESPACE = "runyard"

#: The least an install needs: the two keys (the chart never generates them).
KEYS = {"secrets": {"masterKey": "m" * 40, "jwtSecret": "j" * 40}}

#: Value scenarios: the defaults, each documented combination, and a non-default setup touching
#: every switch.
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": KEYS,
    "redis-workers": {
        **KEYS,
        "redis": {"url": "redis://redis-master.redis.svc:6379/0"},
        "worker": {"enabled": True},
    },
    "ingress-monitor": {
        **KEYS,
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "jobs.example.com"}],
            "tls": [{"secretName": "jobs-tls", "hosts": ["jobs.example.com"]}],
        },
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "bearerTokenSecret": {"name": "runyard-metrics", "key": "token"},
        },
        "networkPolicy": {
            "enabled": True,
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        },
    },
    "custom": {
        "fullnameOverride": "jobs-api",
        "image": {"repository": "registry.example.com/runyard", "tag": "1.2.3"},
        "imagePullSecrets": [{"name": "regcred"}],
        "server": {
            "replicas": 2,
            "extraArgs": ["--public-url", "https://jobs.example.com"],
            "port": 8080,
            "extraEnv": [{"name": "RUNYARD_LOG", "value": "debug"}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
        },
        "worker": {"enabled": True, "replicas": 3, "healthPort": 9091},
        "ingress": {"enabled": True, "hosts": [{"host": "jobs.example.com", "paths": [{"path": "/async", "pathType": "Prefix"}]}]},
        "networkPolicy": {"enabled": True},
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "bearerTokenSecret": {"name": "jobs-api-metrics", "key": "token"},
        },
        "jobs": {"namespace": "runyard-batch", "podSecurity": "baseline"},
        "service": {"type": "NodePort", "port": 80, "annotations": {"a.example.com/x": "y"}},
        "publicUrl": "https://jobs.example.com/",
        "redis": {"existingSecret": "redis-conn", "existingSecretKey": "url", "caSecret": "redis-ca"},
        "secrets": {"existingSecret": "runyard-keys"},
        "serviceAccount": {"name": "jobs-sa", "annotations": {"iam.example.com/role": "r"}},
        "config": {
            "worker": {"lease_ttl": "20s", "kill_grace": "10s"},
            "retention": {"finished": "72h", "log_lines_per_job": 5000},
            "hooks": {"require_v2": True},
            # What `runyard token new ci --scopes jobs:submit,jobs:read --types 'report.*'` prints.
            "auth": {
                "tokens": [
                    {
                        "name": "ci",
                        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                        "scopes": ["jobs:submit", "jobs:read"],
                        "types": ["report.*"],
                    }
                ]
            },
        },
        "runners": [
            {
                "kind": "kube",
                "name": "batch",
                "types": ["report.*", "etl.*"],
                "command": ["runyard", "launch", "--", "python3", "job.py"],
                "namespace": "batch-jobs",
                "service_account": "job-runner",
                "ttl_after_finished": "30m",
                "env": {"LOG_LEVEL": "info", "REGION": "eu-west-1"},
                "timeout": "2h",
                "max_attempts": 5,
                "backoff": {"initial_ms": 5000, "max_ms": 300000, "multiplier": 2.5, "jitter": True},
            },
            {"kind": "kube", "types": ["thumb.*"], "image": "thumbs:1", "concurrency": 16},
            {"kind": "service", "types": ["runyard.*"]},
        ],
    },
    "embedded-persistent": {
        "persistence": {"enabled": True, "size": "5Gi", "storageClass": "fast"},
        "secrets": {"masterKey": "m" * 40},
        "auth": {"enabled": False},
        "jobs": {"createNamespace": False},
        "redis": {"url": ""},
        "rbac": {"create": False},
        "serviceAccount": {"create": False, "name": "existing"},
        "runners": [{"kind": "local", "types": ["sh.*"], "command": ["sh", "-c", "echo hi"]}],
    },
}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests (parsed YAML documents) for these values."""
    import helm_python
    import yaml

    chart = helm_python.Chart.load(str(CHART))
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path in sorted(out):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(out[path]):
            if doc:
                docs.append(doc)
    return docs


def main() -> int:
    if "--check" in sys.argv:
        try:
            import helm_python  # noqa: F401
            import yaml  # noqa: F401
        except ImportError as e:
            print(f"missing: {e}", file=sys.stderr)
            return 1
        return 0
    json.dump({name: render(v) for name, v in SCENARIOS.items()}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
