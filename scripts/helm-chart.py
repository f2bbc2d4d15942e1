#!/usr/bin/env python3
"""Lint or render a Helm chart with the real Helm library (helm-sdkpy), without a cluster.

    helm-chart.py lint   CHART [VALUES.json]   -> {"errors": N, "messages": [...]}
    helm-chart.py render CHART [VALUES.json]   -> {"objects": [...], "manifest": "...", "notes": "..."}

helm-sdkpy (installed by scripts/install-helm.sh into .tools/helm-sdkpy) exposes lint,
which only reads the chart's own values.yaml, and install, which needs a cluster; it has no
`helm template`. So:
- lint with values copies the chart and writes the values, merged over its values.yaml,
  into the copy's values.yaml;
- render runs a real `helm install` against a stand-in Kubernetes API on 127.0.0.1 that
  answers discovery, says every object is new and echoes what it is sent. Helm does all its
  usual work on the way (values.schema.json, templates, required/fail, YAML parsing, the
  mapping of every kind to an API resource), and the objects it sends are the rendered
  manifests. Nothing leaves the machine.

Exit status 0 with the JSON on stdout; 1 with Helm's error on stderr.
"""

import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("HELM_SDKPY_DIR", os.path.join(REPO, ".tools", "helm-sdkpy")))

import helm_sdkpy  # noqa: E402
import yaml  # noqa: E402  (PyYAML, installed beside helm-sdkpy)

# The API resources the stand-in serves: enough for the kinds the Sluis chart renders.
# (group, version) -> [(plural, kind, namespaced)]
RESOURCES = {
    ("", "v1"): [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("namespaces", "Namespace", False),
    ],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True)],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor", True)],
}


class FakeApi(BaseHTTPRequestHandler):
    """Answers what `helm install` asks of a cluster; records the objects it creates."""

    created = []

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            groups = [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                    "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
                }
                for (group, version) in RESOURCES
                if group
            ]
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        for (group, version), resources in RESOURCES.items():
            group_version = f"{group}/{version}" if group else version
            if path == ("/apis/" if group else "/api/") + group_version:
                return self.reply(200, {
                    "kind": "APIResourceList",
                    "groupVersion": group_version,
                    "resources": [
                        {"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind,
                         "verbs": ["create", "get", "list", "patch", "update", "delete"]}
                        for plural, kind, namespaced in resources
                    ],
                })
        # Every object is new, and there is no release history.
        if "labelSelector=" in self.path:
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "items": []})
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def read_object(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "json" not in (self.headers.get("Content-Type") or ""):
            # Helm's own release record (a protobuf Secret): not a chart object.
            return None
        return json.loads(raw or b"{}")

    def do_POST(self):
        obj = self.read_object()
        if obj is None:
            return self.reply(201, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release"}})
        FakeApi.created.append(obj)
        self.reply(201, obj)

    def do_PUT(self):
        obj = self.read_object()
        self.reply(200, obj or {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release"}})

    do_PATCH = do_PUT


def fake_cluster():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    kubeconfig = f"""apiVersion: v1
kind: Config
clusters: [{{name: stand-in, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: stand-in, user: {{}}}}]
contexts: [{{name: stand-in, context: {{cluster: stand-in, user: stand-in, namespace: sluis}}}}]
current-context: stand-in
"""
    return server, kubeconfig


def merge(base, override):
    """Helm's merge of user values over a chart's values.yaml: maps deep, all else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base.get(key), value) if key in base else value
        return out
    return override


def lint(chart, values):
    config = helm_sdkpy.Configuration(namespace="sluis")
    with tempfile.TemporaryDirectory() as tmp:
        if values:
            copy = os.path.join(tmp, os.path.basename(os.path.normpath(chart)))
            shutil.copytree(chart, copy)
            show = asyncio.run(helm_sdkpy.Show(config).values(chart))
            defaults = yaml.safe_load(show) or {}
            with open(os.path.join(copy, "values.yaml"), "w") as f:
                # JSON is YAML: no YAML writer needed.
                json.dump(merge(defaults, values), f, indent=1)
            chart = copy
        result = asyncio.run(helm_sdkpy.Lint(config).run(chart))
    # Severity: 1 info, 2 warning, 3 error (helm's support.Severity). The Go error texts
    # do not cross the library boundary, only where and how bad.
    messages = [{"severity": m.get("Severity"), "path": m.get("Path")} for m in result.get("Messages") or []]
    errors = sum(1 for m in messages if (m["severity"] or 0) >= 3)
    return {"errors": errors, "messages": messages}


def render(chart, values):
    server, kubeconfig = fake_cluster()
    try:
        config = helm_sdkpy.Configuration(namespace="sluis", kubeconfig=kubeconfig)
        release = asyncio.run(helm_sdkpy.Install(config).run(
            "sluis", chart, values=values or None, wait=False, timeout=60))
    finally:
        server.shutdown()
    return {
        "objects": FakeApi.created,
        "manifest": release.get("manifest", ""),
        "notes": (release.get("info") or {}).get("notes", ""),
    }


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("lint", "render"):
        sys.stderr.write(__doc__)
        return 2
    values = {}
    if len(sys.argv) == 4:
        with open(sys.argv[3]) as f:
            values = json.load(f)
    try:
        out = (lint if sys.argv[1] == "lint" else render)(sys.argv[2], values)
    except helm_sdkpy.HelmError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
