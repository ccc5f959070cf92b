#!/usr/bin/env python3
"""Static checks of the Kubernetes manifests in cluster/k8s, without a cluster.

    python3 cluster/validate_k8s.py cluster/k8s/*.yaml
    python3 cluster/validate_k8s.py --self-test cluster/k8s/*.yaml

The files are checked as one set: cross-references (Service selectors, the StatefulSet's
headless Service, PVCs, ConfigMaps, env var references, probe ports) must resolve inside
it. The distgat-specific rules (env var names, distgat.toml keys) mirror the binary's
configuration surface; keep them in sync with it (see cluster/README.md).

--self-test applies deliberate breakages to the loaded manifests and fails unless every
one of them is reported, so the checker itself cannot silently rot.

Exit status: 0 clean, 1 problems found (one line each, naming file, document, kind/name),
2 usage or setup error. Needs PyYAML; Python 3.11+ (tomllib) or the tomli package.
"""

from __future__ import annotations

import copy
import os
import re
import sys

try:
    import yaml
except ImportError:
    sys.exit("validate_k8s.py: PyYAML is required (pip install pyyaml)")
try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        sys.exit("validate_k8s.py: needs Python 3.11+ (tomllib) or the tomli package")

# ---- distgat's configuration surface --------------------------------------------------

# distgat.toml: section -> key -> expected Python type.
_SECURITY_KEYS = {"tls_cert": str, "tls_key": str, "tls_ca": str, "auth_token_file": str}
CONFIG_KEYS = {
    "coordinator": {
        "listen": str,
        "data_root": str,
        "work_dir": str,
        "max_upload_bytes": int,
        "heartbeat_timeout_ms": int,
        "addr_file": str,
        "keep_jobs": int,
        "metrics_listen": str,
        "shard_source": str,
        "recovery": str,
        "max_concurrent_fetches": int,
        "max_concurrent_shard_streams": int,
        **_SECURITY_KEYS,
    },
    "worker": {
        "coordinator": str,
        "listen": str,
        "advertise_host": str,
        "addr_file": str,
        "metrics_listen": str,
        "work_dir": str,
        "shard_cache_max_bytes": int,
        "mailbox_max_bytes": int,
        **_SECURITY_KEYS,
    },
    "client": {"coordinator": str, "tls_domain": str, **_SECURITY_KEYS},
}
CONFIG_FILE_KEY = "distgat.toml"

# Env vars each subcommand reads (DISTGAT_CONFIG: all of them).
# TLS and token files (flags --tls-cert, --tls-key, --tls-ca, --auth-token-file).
SECURITY_ENV = {"DISTGAT_TLS_CERT", "DISTGAT_TLS_KEY", "DISTGAT_TLS_CA", "DISTGAT_AUTH_TOKEN_FILE"}
CLIENT_ENV = {"DISTGAT_COORDINATOR", "DISTGAT_CONFIG", "DISTGAT_TLS_DOMAIN"} | SECURITY_ENV
ENV_BY_SUBCOMMAND = {
    "coordinator": {
        "DISTGAT_LISTEN",
        "DISTGAT_DATA_ROOT",
        "DISTGAT_WORK_DIR",
        "DISTGAT_MAX_UPLOAD_BYTES",
        "DISTGAT_HEARTBEAT_TIMEOUT_MS",
        "DISTGAT_ADDR_FILE",
        "DISTGAT_CONFIG",
        *SECURITY_ENV,
        "DISTGAT_SHARD_SOURCE",
        "DISTGAT_RECOVERY",
        "DISTGAT_MAX_CONCURRENT_FETCHES",
        "DISTGAT_MAX_CONCURRENT_SHARD_STREAMS",
    },
    "worker": {
        "DISTGAT_COORDINATOR",
        "DISTGAT_LISTEN",
        "DISTGAT_ADVERTISE_HOST",
        "DISTGAT_ADDR_FILE",
        "DISTGAT_CONFIG",
        *SECURITY_ENV,
        "DISTGAT_WORKER_WORK_DIR",
        "DISTGAT_SHARD_CACHE_MAX_BYTES",
        "DISTGAT_MAILBOX_MAX_BYTES",
    },
    **{c: CLIENT_ENV for c in ("submit", "status", "watch", "fetch", "cancel", "workers")},
}
SERVER_SUBCOMMANDS = {"coordinator", "worker"}
# The only other env vars allowed in a distgat container: the downward-API values that
# DISTGAT_ADVERTISE_HOST is built from.
DOWNWARD_ENV = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
INT_ENV = {"DISTGAT_MAX_UPLOAD_BYTES", "DISTGAT_HEARTBEAT_TIMEOUT_MS"}
# The coordinator's paths that must be on its persistent volume (a PVC).
SHARED_PATH_ENV = {"DISTGAT_DATA_ROOT", "DISTGAT_WORK_DIR"}
SHARD_SOURCES = {"stream", "shared"}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class Doc:
    """One YAML document of one file."""

    def __init__(self, path: str, index: int, obj):
        self.path, self.index, self.obj = path, index, obj

    @property
    def kind(self) -> str:
        return self.obj.get("kind", "?") if isinstance(self.obj, dict) else "?"

    @property
    def name(self) -> str:
        if isinstance(self.obj, dict) and isinstance(self.obj.get("metadata"), dict):
            return str(self.obj["metadata"].get("name", "?"))
        return "?"

    def where(self) -> str:
        return f"{self.path}: document {self.index + 1} ({self.kind}/{self.name})"


def get(obj, *keys, default=None):
    """obj[k1][k2]... or default if any level is missing or not a mapping/list."""
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            obj = obj[k]
        elif isinstance(obj, list) and isinstance(k, int) and 0 <= k < len(obj):
            obj = obj[k]
        else:
            return default
    return obj


def load(paths: list[str]) -> tuple[list[Doc], list[str]]:
    docs, errors = [], []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                for i, obj in enumerate(yaml.safe_load_all(f)):
                    if obj is not None:  # an empty document (e.g. a trailing ---)
                        docs.append(Doc(path, i, obj))
        except (OSError, yaml.YAMLError) as e:
            errors.append(f"{path}: cannot load: {e}")
    return docs, errors


# ---- quantities ------------------------------------------------------------------------

_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def quantity(v) -> float | None:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", str(v))
    if not m or m.group(2) not in _SUFFIX:
        return None
    return float(m.group(1)) * _SUFFIX[m.group(2)]


# ---- the checker -------------------------------------------------------------------------


class Checker:
    def __init__(self, docs: list[Doc]):
        self.docs = docs
        self.errors: list[str] = []

    def err(self, doc: Doc, msg: str) -> None:
        self.errors.append(f"{doc.where()}: {msg}")

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if isinstance(d.obj, dict) and d.obj.get("kind") == kind]

    def named(self, kind: str, name: str) -> Doc | None:
        return next((d for d in self.of_kind(kind) if d.name == name), None)

    def workloads(self) -> list[Doc]:
        return [d for d in self.docs if isinstance(d.obj, dict) and d.kind in WORKLOAD_KINDS]

    def run(self) -> list[str]:
        seen = {}
        for d in self.docs:
            if not self.check_header(d):
                continue
            key = (d.kind, get(d.obj, "metadata", "namespace"), d.name)
            if d.kind != "Kustomization" and key in seen:
                self.err(d, f"duplicate {d.kind}/{d.name} (also {seen[key].where()})")
            seen.setdefault(key, d)
            check = getattr(self, f"check_{d.kind}", None)
            if d.kind in WORKLOAD_KINDS:
                self.check_workload(d)
            elif check:
                check(d)
        self.check_shared_claims()
        return self.errors

    # -- every document

    def check_header(self, d: Doc) -> bool:
        if not isinstance(d.obj, dict):
            self.err(d, "is not a mapping")
            return False
        ok = True
        for field in ("apiVersion", "kind"):
            if not isinstance(d.obj.get(field), str) or not d.obj[field]:
                self.err(d, f"missing {field}")
                ok = False
        # A Kustomization is a build file, not an API object: metadata.name is optional.
        if d.obj.get("kind") != "Kustomization":
            name = get(d.obj, "metadata", "name")
            if not isinstance(name, str) or not name:
                self.err(d, "missing metadata.name")
                ok = False
            elif not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
                self.err(d, f"metadata.name {name!r} is not a valid DNS name")
        return ok

    # -- Kustomization: lists exactly the manifests next to it

    def check_Kustomization(self, d: Doc) -> None:
        base = os.path.dirname(d.path)
        resources = d.obj.get("resources")
        if not isinstance(resources, list) or not resources:
            self.err(d, "resources: must list the manifests")
            return
        for r in resources:
            if not os.path.exists(os.path.join(base, str(r))):
                self.err(d, f"resources: {r} does not exist")
        listed = {os.path.normpath(os.path.join(base, str(r))) for r in resources}
        for other in {x.path for x in self.docs}:
            if (
                os.path.dirname(other) == base
                and os.path.normpath(other) not in listed
                and other != d.path
            ):
                self.err(d, f"resources: {os.path.basename(other)} is not listed")

    # -- workloads

    def check_workload(self, d: Doc) -> None:
        spec = d.obj.get("spec")
        if not isinstance(spec, dict):
            self.err(d, "missing spec")
            return
        tmpl_labels = get(spec, "template", "metadata", "labels", default={}) or {}
        if d.kind != "Job":
            match = get(spec, "selector", "matchLabels")
            if not isinstance(match, dict) or not match:
                self.err(d, "spec.selector.matchLabels is missing or empty")
            else:
                for k, v in match.items():
                    if tmpl_labels.get(k) != v:
                        self.err(
                            d,
                            f"spec.selector.matchLabels {k}={v} does not match the pod "
                            f"template's labels ({k}={tmpl_labels.get(k)})",
                        )
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            self.err(d, f"spec.replicas must be a non-negative integer, got {replicas!r}")
        if d.kind == "StatefulSet":
            self.check_statefulset_service(d, spec, tmpl_labels)
        pod = get(spec, "template", "spec")
        if not isinstance(pod, dict):
            self.err(d, "missing spec.template.spec")
            return
        self.check_pod(d, pod)

    def check_statefulset_service(self, d: Doc, spec: dict, labels: dict) -> None:
        svc_name = spec.get("serviceName")
        if not svc_name:
            self.err(d, "spec.serviceName is missing (needed for stable pod DNS names)")
            return
        svc = self.named("Service", svc_name)
        if svc is None:
            self.err(d, f"spec.serviceName {svc_name!r} names no Service in this set")
        elif get(svc.obj, "spec", "clusterIP") != "None":
            self.err(d, f"spec.serviceName {svc_name!r} is not a headless Service (clusterIP: None)")
        elif not selects(get(svc.obj, "spec", "selector"), labels):
            self.err(d, f"headless Service {svc_name!r} does not select this StatefulSet's pods")

    def check_pod(self, d: Doc, pod: dict) -> None:
        volumes = {}
        for i, v in enumerate(pod.get("volumes") or []):
            if not isinstance(v, dict) or not v.get("name"):
                self.err(d, f"volumes[{i}]: missing name")
                continue
            volumes[v["name"]] = v
            claim = get(v, "persistentVolumeClaim", "claimName")
            if "persistentVolumeClaim" in v and self.named("PersistentVolumeClaim", str(claim)) is None:
                self.err(d, f"volume {v['name']}: claimName {claim!r} names no PersistentVolumeClaim in this set")
            cm = get(v, "configMap", "name")
            if "configMap" in v and not get(v, "configMap", "optional"):
                if self.named("ConfigMap", str(cm)) is None:
                    self.err(d, f"volume {v['name']}: configMap {cm!r} names no ConfigMap in this set")
        containers = pod.get("containers")
        if not isinstance(containers, list) or not containers:
            self.err(d, "spec.template.spec.containers is missing or empty")
            return
        names = set()
        for i, c in enumerate(containers + (pod.get("initContainers") or [])):
            if not isinstance(c, dict):
                self.err(d, f"containers[{i}] is not a mapping")
                continue
            cname = c.get("name")
            if not cname:
                self.err(d, f"containers[{i}]: missing name")
            elif cname in names:
                self.err(d, f"container name {cname!r} used twice")
            names.add(cname)
            if not c.get("image"):
                self.err(d, f"container {cname or i}: missing image")
            self.check_container(d, c, str(cname or i), volumes)

    def check_container(self, d: Doc, c: dict, cname: str, volumes: dict) -> None:
        where = f"container {cname}"
        if c.get("imagePullPolicy") not in (None, "Always", "IfNotPresent", "Never"):
            self.err(d, f"{where}: invalid imagePullPolicy {c['imagePullPolicy']!r}")

        # Ports.
        port_numbers, port_names = set(), set()
        for p in c.get("ports") or []:
            n = p.get("containerPort") if isinstance(p, dict) else None
            if not isinstance(n, int) or not 1 <= n <= 65535:
                self.err(d, f"{where}: containerPort {n!r} is not a port number")
                continue
            port_numbers.add(n)
            if p.get("name"):
                if len(p["name"]) > 15:
                    self.err(d, f"{where}: port name {p['name']!r} is longer than 15 characters")
                port_names.add(p["name"])

        # Probes: a gRPC probe's port must be a declared containerPort (a number: Kubernetes
        # does not accept port names there).
        for probe_kind in PROBES:
            probe = c.get(probe_kind)
            if probe is None:
                continue
            grpc = probe.get("grpc") if isinstance(probe, dict) else None
            if grpc is not None:
                port = grpc.get("port") if isinstance(grpc, dict) else None
                if not isinstance(port, int):
                    self.err(d, f"{where}: {probe_kind}.grpc.port must be a number, got {port!r}")
                elif port not in port_numbers:
                    self.err(d, f"{where}: {probe_kind}.grpc.port {port} is not a declared containerPort {sorted(port_numbers)}")
                if not isinstance(grpc.get("service", ""), str):
                    self.err(d, f"{where}: {probe_kind}.grpc.service must be a string")
            for handler in ("httpGet", "tcpSocket"):
                port = get(probe, handler, "port")
                if port is not None and port not in port_numbers | port_names:
                    self.err(d, f"{where}: {probe_kind}.{handler}.port {port!r} is not a declared containerPort")

        # Volume mounts.
        mounts = []
        for m in c.get("volumeMounts") or []:
            if not isinstance(m, dict) or m.get("name") not in volumes:
                self.err(d, f"{where}: volumeMount {get(m, 'name')!r} refers to no volume of the pod")
                continue
            if not str(m.get("mountPath", "")).startswith("/"):
                self.err(d, f"{where}: volumeMount {m['name']}: mountPath must be absolute")
                continue
            mounts.append(m)

        # Env: names, order of $(VAR) references.
        env = c.get("env") or []
        defined: dict[str, dict] = {}
        for i, e in enumerate(env):
            if not isinstance(e, dict) or not e.get("name"):
                self.err(d, f"{where}: env[{i}]: missing name")
                continue
            name = e["name"]
            if name in defined:
                self.err(d, f"{where}: env {name} defined twice")
            if "value" in e and "valueFrom" in e:
                self.err(d, f"{where}: env {name} has both value and valueFrom")
            value = e.get("value")
            if value is not None and not isinstance(value, str):
                self.err(d, f"{where}: env {name}: value must be a string (quote it), got {value!r}")
            # Kubernetes expands $(VAR) only for vars defined earlier in the same container;
            # anything else stays literally "$(VAR)". $$(VAR) is an escape.
            for ref in VAR_REF.findall(re.sub(r"\$\$", "", str(value or ""))):
                if ref not in defined:
                    later = any(isinstance(x, dict) and x.get("name") == ref for x in env[i + 1:])
                    self.err(
                        d,
                        f"{where}: env {name} refers to $({ref}), "
                        + ("which is defined only after it" if later else "which is not defined in this container"),
                    )
            defined[name] = e

        argv = list(c.get("command") or []) + list(c.get("args") or [])
        image = str(c.get("image", ""))
        if not c.get("command") and re.search(r"(^|/)distgat(:|@|$)", image):
            argv = ["distgat"] + argv  # the image's ENTRYPOINT is distgat
        if argv and os.path.basename(str(argv[0])) == "distgat":
            self.check_distgat_container(d, c, where, argv, defined, port_numbers, mounts, volumes)

    def check_distgat_container(self, d, c, where, argv, env, port_numbers, mounts, volumes):
        sub = str(argv[1]) if len(argv) > 1 else None
        if sub not in ENV_BY_SUBCOMMAND:
            self.err(d, f"{where}: runs {argv!r}: not a distgat server or client subcommand")
            return
        allowed = ENV_BY_SUBCOMMAND[sub]
        for name, e in env.items():
            if name in DOWNWARD_ENV:
                path = get(e, "valueFrom", "fieldRef", "fieldPath")
                if path != DOWNWARD_ENV[name]:
                    self.err(d, f"{where}: env {name} must come from fieldRef {DOWNWARD_ENV[name]}, not {path!r}")
            elif not name.startswith("DISTGAT_"):
                self.err(d, f"{where}: env {name}: distgat reads only DISTGAT_* variables (and POD_NAME/POD_NAMESPACE)")
            elif name not in allowed:
                self.err(d, f"{where}: env {name} is not a setting of `distgat {sub}` (known: {', '.join(sorted(allowed))})")
        val = {n: e.get("value") for n, e in env.items() if isinstance(e.get("value"), str)}
        cfg = val.get("DISTGAT_CONFIG")
        if cfg is not None:
            self.check_config_path(d, where, cfg, mounts, volumes)
        if sub not in SERVER_SUBCOMMANDS:
            return  # a client (e.g. a Job running `distgat submit`): no ports or probes

        for name in INT_ENV & val.keys():
            if not val[name].isdigit():
                self.err(d, f"{where}: env {name}={val[name]!r} is not a non-negative integer")

        # The listen port must be the declared (and probed) containerPort.
        listen = val.get("DISTGAT_LISTEN")
        if listen is None:
            self.err(d, f"{where}: DISTGAT_LISTEN is not set (the default listens on 127.0.0.1 only)")
        else:
            host, _, port = listen.rpartition(":")
            if host in ("127.0.0.1", "localhost", "[::1]"):
                self.err(d, f"{where}: DISTGAT_LISTEN={listen} is loopback-only: probes and peers cannot reach it")
            if not port.isdigit() or int(port) not in port_numbers:
                self.err(d, f"{where}: DISTGAT_LISTEN={listen}: port is not a declared containerPort {sorted(port_numbers)}")

        # Readiness and liveness through the standard gRPC health service.
        for probe_kind in ("readinessProbe", "livenessProbe"):
            if get(c, probe_kind, "grpc") is None:
                self.err(d, f"{where}: needs a {probe_kind} with grpc (grpc.health.v1)")

        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if get(res, part, r) is None:
                    self.err(d, f"{where}: resources.{part}.{r} is not set")
        for r in ("cpu", "memory"):
            req, lim = quantity(get(res, "requests", r)), quantity(get(res, "limits", r))
            if get(res, "requests", r) is not None and req is None:
                self.err(d, f"{where}: resources.requests.{r} {get(res, 'requests', r)!r} is not a quantity")
            if get(res, "limits", r) is not None and lim is None:
                self.err(d, f"{where}: resources.limits.{r} {get(res, 'limits', r)!r} is not a quantity")
            if req is not None and lim is not None and req > lim:
                self.err(d, f"{where}: resources.requests.{r} exceeds resources.limits.{r}")

        # The coordinator's data root and work dir must be on its persistent (PVC) volume.
        for name in SHARED_PATH_ENV & val.keys():
            m = mount_for(val[name], mounts)
            if m is None or "persistentVolumeClaim" not in volumes[m["name"]]:
                self.err(d, f"{where}: env {name}={val[name]} is not on a PersistentVolumeClaim mount (must be persistent storage)")
            elif m.get("readOnly") and name == "DISTGAT_WORK_DIR":
                self.err(d, f"{where}: env {name}={val[name]} is on a read-only mount")
        source = val.get("DISTGAT_SHARD_SOURCE")
        if source is not None and source not in SHARD_SOURCES:
            self.err(d, f"{where}: env DISTGAT_SHARD_SOURCE={source!r} is not one of {sorted(SHARD_SOURCES)}")
        # A worker's own work dir (its shard cache): a writable volume, not the image's
        # filesystem (emptyDir is the intended one).
        wdir = val.get("DISTGAT_WORKER_WORK_DIR")
        if wdir is not None:
            m = mount_for(wdir, mounts)
            if m is None or m.get("readOnly"):
                self.err(d, f"{where}: env DISTGAT_WORKER_WORK_DIR={wdir} is not on a writable volume mount (use an emptyDir)")

        if sub == "worker":
            self.check_worker_addresses(d, where, val)

    def check_config_path(self, d, where, cfg, mounts, volumes) -> None:
        """DISTGAT_CONFIG must be a file that a ConfigMap volume provides."""
        m = mount_for(cfg, mounts)
        vol = volumes.get(m["name"]) if m else None
        if vol is None or "configMap" not in vol:
            self.err(d, f"{where}: DISTGAT_CONFIG={cfg} is not under a ConfigMap volume mount")
            return
        rel = "" if m.get("subPath") else os.path.relpath(cfg, m["mountPath"])
        key = m.get("subPath") or rel
        for item in get(vol, "configMap", "items") or []:
            if item.get("path") == rel:
                key = item.get("key")
        cm = self.named("ConfigMap", str(get(vol, "configMap", "name")))
        if cm is not None and key not in (cm.obj.get("data") or {}):
            self.err(d, f"{where}: DISTGAT_CONFIG={cfg}: ConfigMap {cm.name} has no key {key!r}")

    def check_worker_addresses(self, d, where, val) -> None:
        # DISTGAT_COORDINATOR must name a Service of this set and one of its ports.
        coord = val.get("DISTGAT_COORDINATOR")
        if coord is None:
            self.err(d, f"{where}: DISTGAT_COORDINATOR is not set")
        else:
            host, _, port = coord.rpartition(":")
            svc = self.named("Service", host.split(".")[0])
            if svc is None:
                self.err(d, f"{where}: DISTGAT_COORDINATOR={coord}: no Service {host.split('.')[0]!r} in this set")
            elif not any(get(p, "port") == int(port) for p in get(svc.obj, "spec", "ports", default=[]) if port.isdigit()):
                self.err(d, f"{where}: DISTGAT_COORDINATOR={coord}: Service {svc.name} has no port {port}")
        # In a StatefulSet, the advertised name goes through its headless Service.
        adv = val.get("DISTGAT_ADVERTISE_HOST")
        if d.kind == "StatefulSet":
            svc_name = get(d.obj, "spec", "serviceName")
            if adv is None:
                self.err(d, f"{where}: DISTGAT_ADVERTISE_HOST is not set (peers could not reach the pod)")
            elif not adv.startswith(f"$(POD_NAME).{svc_name}."):
                self.err(d, f"{where}: DISTGAT_ADVERTISE_HOST={adv} should be $(POD_NAME).{svc_name}.$(POD_NAMESPACE).svc.cluster.local")

    # -- Services

    def check_Service(self, d: Doc) -> None:
        spec = d.obj.get("spec") or {}
        if spec.get("type", "ClusterIP") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            self.err(d, f"invalid spec.type {spec.get('type')!r}")
        selector = spec.get("selector")
        targets = [w for w in self.workloads() if selects(selector, get(w.obj, "spec", "template", "metadata", "labels"))]
        if not selector:
            self.err(d, "spec.selector is missing or empty")
        elif not targets:
            self.err(d, f"spec.selector {selector} selects no workload's pods in this set")
        ports = spec.get("ports")
        if not isinstance(ports, list) or not ports:
            self.err(d, "spec.ports is missing or empty")
            return
        for i, p in enumerate(ports):
            n = get(p, "port")
            if not isinstance(n, int) or not 1 <= n <= 65535:
                self.err(d, f"spec.ports[{i}].port {n!r} is not a port number")
            if len(ports) > 1 and not get(p, "name"):
                self.err(d, f"spec.ports[{i}] needs a name (the Service has several ports)")
            target = get(p, "targetPort", default=n)
            for w in targets:
                declared = set()
                for c in get(w.obj, "spec", "template", "spec", "containers", default=[]):
                    for cp in c.get("ports") or []:
                        declared |= {cp.get("containerPort"), cp.get("name")}
                if target not in declared:
                    self.err(d, f"spec.ports[{i}].targetPort {target!r} is not a containerPort of {w.kind}/{w.name}")

    # -- storage and config

    def check_PersistentVolumeClaim(self, d: Doc) -> None:
        spec = d.obj.get("spec") or {}
        modes = spec.get("accessModes")
        valid = {"ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"}
        if not isinstance(modes, list) or not modes or not set(modes) <= valid:
            self.err(d, f"spec.accessModes {modes!r} must be a list of {sorted(valid)}")
        storage = get(spec, "resources", "requests", "storage")
        if storage is None or quantity(storage) is None:
            self.err(d, f"spec.resources.requests.storage {storage!r} is not a quantity")

    def check_shared_claims(self) -> None:
        """A claim mounted by several pods must be ReadWriteMany: the coordinator and the
        workers read the same partition directories."""
        users: dict[str, int] = {}
        for w in self.workloads():
            replicas = get(w.obj, "spec", "replicas", default=1)
            for v in get(w.obj, "spec", "template", "spec", "volumes", default=[]) or []:
                claim = get(v, "persistentVolumeClaim", "claimName")
                if claim:
                    users[claim] = users.get(claim, 0) + (replicas if isinstance(replicas, int) else 1)
        for claim, pods in users.items():
            pvc = self.named("PersistentVolumeClaim", claim)
            if pvc is not None and pods > 1 and "ReadWriteMany" not in (get(pvc.obj, "spec", "accessModes") or []):
                self.err(pvc, f"mounted by {pods} pods but not ReadWriteMany: the coordinator and workers need one shared filesystem")

    def check_ConfigMap(self, d: Doc) -> None:
        text = get(d.obj, "data", CONFIG_FILE_KEY)
        if text is None:
            return
        try:
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            self.err(d, f"data.{CONFIG_FILE_KEY}: invalid TOML: {e}")
            return
        for section, table in config.items():
            if section not in CONFIG_KEYS:
                self.err(d, f"data.{CONFIG_FILE_KEY}: unknown section [{section}] (known: {', '.join(CONFIG_KEYS)})")
                continue
            if not isinstance(table, dict):
                self.err(d, f"data.{CONFIG_FILE_KEY}: {section} must be a table")
                continue
            for key, value in table.items():
                want = CONFIG_KEYS[section].get(key)
                if want is None:
                    self.err(d, f"data.{CONFIG_FILE_KEY}: unknown key {section}.{key} (known: {', '.join(CONFIG_KEYS[section])})")
                elif not isinstance(value, want) or isinstance(value, bool):
                    self.err(d, f"data.{CONFIG_FILE_KEY}: {section}.{key} must be {'a string' if want is str else 'an integer'}, got {value!r}")
                elif want is int and value < 0:
                    self.err(d, f"data.{CONFIG_FILE_KEY}: {section}.{key} must not be negative")


def selects(selector, labels) -> bool:
    return (
        isinstance(selector, dict)
        and bool(selector)
        and isinstance(labels, dict)
        and all(labels.get(k) == v for k, v in selector.items())
    )


def mount_for(path: str, mounts: list[dict]) -> dict | None:
    """The mount whose mountPath is the longest prefix (directory-wise) of path."""
    best = None
    for m in mounts:
        mp = m["mountPath"].rstrip("/") or "/"
        if path == mp or path.startswith(mp + "/") or mp == "/":
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    return best


# ---- self-test ---------------------------------------------------------------------------


def _find(docs, kind, name=None):
    for d in docs:
        if d.kind == kind and (name is None or d.name == name):
            return d.obj
    raise KeyError(f"self-test needs a {kind} {name or ''} in the manifests")


def _container(docs, kind):
    return _find(docs, kind)["spec"]["template"]["spec"]["containers"][0]


def _env(container, name):
    return next(e for e in container["env"] if e["name"] == name)


def _mutations():
    """(description, expected substring of an error, function that breaks the docs)."""
    def m(desc, expect):
        def wrap(fn):
            MUTATIONS.append((desc, expect, fn))
            return fn
        return wrap

    MUTATIONS: list = []

    @m("Deployment selector does not match its template", "matchLabels")
    def _(docs):
        sel = _find(docs, "Deployment")["spec"]["selector"]["matchLabels"]
        sel[next(iter(sel))] = "something-else"

    @m("gRPC probe on an undeclared port", "grpc.port")
    def _(docs):
        _container(docs, "Deployment")["readinessProbe"]["grpc"]["port"] = 50999

    @m("env var that distgat does not read", "FOO")
    def _(docs):
        _container(docs, "StatefulSet")["env"].append({"name": "FOO", "value": "1"})

    @m("misspelt DISTGAT_ env var", "DISTGAT_LISTN")
    def _(docs):
        _env(_container(docs, "Deployment"), "DISTGAT_LISTEN")["name"] = "DISTGAT_LISTN"

    @m("$(VAR) reference to an undefined var", "$(POD_NAMESPAC)")
    def _(docs):
        e = _env(_container(docs, "StatefulSet"), "DISTGAT_ADVERTISE_HOST")
        e["value"] = e["value"].replace("$(POD_NAMESPACE)", "$(POD_NAMESPAC)")

    @m("$(VAR) reference to a var defined later", "only after")
    def _(docs):
        env = _container(docs, "StatefulSet")["env"]
        env.append(env.pop(next(i for i, e in enumerate(env) if e["name"] == "POD_NAME")))

    @m("unknown key in distgat.toml", "heartbeat_timeout")
    def _(docs):
        cm = _find(docs, "ConfigMap")["data"]
        cm[CONFIG_FILE_KEY] = cm[CONFIG_FILE_KEY].replace("heartbeat_timeout_ms", "heartbeat_timeout")

    @m("unparsable distgat.toml", "invalid TOML")
    def _(docs):
        _find(docs, "ConfigMap")["data"][CONFIG_FILE_KEY] += "\n[[oops\n"

    @m("volumeMount of a volume the pod does not have", "refers to no volume")
    def _(docs):
        _container(docs, "StatefulSet")["volumeMounts"][0]["name"] = "dta"

    @m("claimName of an undefined PVC", "names no PersistentVolumeClaim")
    def _(docs):
        vols = _find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        next(v for v in vols if "persistentVolumeClaim" in v)["persistentVolumeClaim"]["claimName"] = "nope"

    @m("StatefulSet service is not headless", "headless")
    def _(docs):
        name = _find(docs, "StatefulSet")["spec"]["serviceName"]
        del _find(docs, "Service", name)["spec"]["clusterIP"]

    @m("Service selecting no pods", "selects no workload")
    def _(docs):
        _find(docs, "Service")["spec"]["selector"] = {"app": "missing"}

    @m("workers mounting the coordinator's ReadWriteOnce claim", "ReadWriteMany")
    def _(docs):
        pod = _find(docs, "StatefulSet")["spec"]["template"]["spec"]
        pod["volumes"].append({"name": "data", "persistentVolumeClaim": {"claimName": "distgat-data"}})

    @m("worker work dir off any volume", "DISTGAT_WORKER_WORK_DIR")
    def _(docs):
        _env(_container(docs, "StatefulSet"), "DISTGAT_WORKER_WORK_DIR")["value"] = "/var/cache/distgat"

    @m("unknown shard source", "DISTGAT_SHARD_SOURCE")
    def _(docs):
        _env(_container(docs, "Deployment"), "DISTGAT_SHARD_SOURCE")["value"] = "nfs"

    @m("container without an image", "missing image")
    def _(docs):
        del _container(docs, "StatefulSet")["image"]

    @m("document without metadata.name", "missing metadata.name")
    def _(docs):
        del _find(docs, "ConfigMap")["metadata"]["name"]

    @m("work dir off the shared volume", "DISTGAT_WORK_DIR")
    def _(docs):
        _env(_container(docs, "Deployment"), "DISTGAT_WORK_DIR")["value"] = "/tmp/work"

    @m("listen port differs from the containerPort", "DISTGAT_LISTEN=0.0.0.0:50053")
    def _(docs):
        _env(_container(docs, "StatefulSet"), "DISTGAT_LISTEN")["value"] = "0.0.0.0:50053"

    @m("worker pointed at a Service that does not exist", "DISTGAT_COORDINATOR")
    def _(docs):
        _env(_container(docs, "StatefulSet"), "DISTGAT_COORDINATOR")["value"] = "coordinator:50051"

    @m("Kustomization missing a manifest", "is not listed")
    def _(docs):
        k = _find(docs, "Kustomization")
        k["resources"] = k["resources"][1:]

    return MUTATIONS


def self_test(docs: list[Doc]) -> int:
    baseline = Checker(docs).run()
    if baseline:
        print("self-test: the manifests must be clean first:", *baseline, sep="\n  ")
        return 1
    failures = 0
    for desc, expect, mutate in _mutations():
        broken = copy.deepcopy(docs)
        try:
            mutate(broken)
        except (KeyError, StopIteration, IndexError) as e:
            print(f"self-test: cannot apply '{desc}': {e!r}")
            failures += 1
            continue
        errors = Checker(broken).run()
        hit = [e for e in errors if expect in e]
        if hit:
            print(f"self-test ok: {desc}: {hit[0]}")
        else:
            failures += 1
            print(f"self-test FAILED: {desc}: no error containing {expect!r} (got {errors})")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--self-test"]
    if not args or any(a.startswith("-") for a in args):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    docs, errors = load(args)
    if errors:
        print(*errors, sep="\n", file=sys.stderr)
        return 1
    if "--self-test" in argv:
        return self_test(docs)
    errors = Checker(docs).run()
    for e in errors:
        print(e, file=sys.stderr)
    kinds = ", ".join(sorted({d.kind for d in docs}))
    if errors:
        print(f"validate_k8s.py: {len(errors)} problem(s) in {len(args)} file(s)", file=sys.stderr)
        return 1
    print(f"validate_k8s.py: {len(docs)} documents in {len(args)} file(s) OK ({kinds})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
