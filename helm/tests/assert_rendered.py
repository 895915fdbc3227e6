"""Assertions over the chart's rendered manifests (scripts/chart-test).

    python assert_rendered.py CASE RENDERED.yaml [CASE RENDERED.yaml ...]

CASE is the name of a values file in values/ (or "default"). Every case gets
the general checks (security context, gRPC probes, the scheduler's claim,
NetworkPolicy peers, Secret references, the dashboard); EXPECT below says
what differs per case. Needs PyYAML (in the chart-test venv, with checkov).
"""

import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "calbridge"
RELEASE = "t"  # scripts/chart-test renders every case as release t
NAMESPACE = "calbridge"
BASE = f"{RELEASE}-calbridge"
PRIVATE_V4 = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "127.0.0.0/8", "100.64.0.0/10"}

# Per case: the adapters deployed, which of them autoscale, whether
# NetworkPolicies are on, which adapters push to the scheduler, and which
# Secrets the pods must mount ("ADAPTER-oauth" for an OAuth adapter's client,
# "ADAPTER-webhook-tls" for its webhook's certificate).
EXPECT = {
    "default": dict(adapters={"caldav"}, hpa={"caldav"}, pdb={"caldav"}, netpol=True, pushers=set(),
                    secrets={"master-key": f"{BASE}-scheduler-keys", "admin-token": f"{BASE}-scheduler-keys"}),
    "all-adapters": dict(adapters={"sandbox", "caldav", "google", "microsoft"}, hpa={"caldav", "google", "microsoft"},
                         pdb={"sandbox", "caldav", "google", "microsoft"}, netpol=True,
                         pushers={"sandbox", "google", "microsoft"},
                         secrets={"master-key": f"{BASE}-scheduler-keys", "admin-token": f"{BASE}-scheduler-keys",
                                  "google-oauth": f"{BASE}-adapter-google-oauth",
                                  "google-webhook-tls": "calbridge-webhook-tls",
                                  "microsoft-oauth": f"{BASE}-adapter-microsoft-oauth",
                                  "microsoft-webhook-tls": "calbridge-graph-webhook-tls"},
                         service_monitor=True, digest=True),
    "one-adapter": dict(adapters={"sandbox"}, hpa=set(), pdb={"sandbox"}, netpol=True, pushers={"sandbox"},
                        secrets={"master-key": f"{BASE}-scheduler-keys", "admin-token": f"{BASE}-scheduler-keys"}),
    "one-adapter-microsoft": dict(adapters={"microsoft"}, hpa={"microsoft"}, pdb={"microsoft"}, netpol=True,
                                  pushers={"microsoft"}, microsoft_tenant="contoso.onmicrosoft.com",
                                  secrets={"master-key": f"{BASE}-scheduler-keys",
                                           "admin-token": f"{BASE}-scheduler-keys",
                                           "microsoft-oauth": "microsoft-oauth-client"}),
    "hpa-off": dict(adapters={"caldav", "google"}, hpa=set(), pdb={"caldav"}, netpol=True, pushers=set(),
                    secrets={"master-key": f"{BASE}-scheduler-keys", "admin-token": f"{BASE}-scheduler-keys",
                             "google-oauth": "google-oauth-client"}),
    "netpol-off": dict(adapters={"sandbox", "caldav"}, hpa={"caldav"}, pdb={"sandbox", "caldav"}, netpol=False,
                       pushers={"sandbox"},
                       secrets={"master-key": f"{BASE}-scheduler-keys", "admin-token": f"{BASE}-scheduler-keys"}),
    "mesh": dict(adapters={"sandbox", "caldav"}, hpa={"caldav"}, pdb={"sandbox", "caldav"}, netpol=True,
                 pushers={"sandbox"}, tls=False,
                 secrets={"master-key": f"{BASE}-scheduler-keys", "admin-token": f"{BASE}-scheduler-keys"}),
    "existing-secrets": dict(adapters={"caldav", "google", "microsoft"}, hpa={"caldav", "google", "microsoft"},
                             pdb={"caldav", "google", "microsoft"}, netpol=True, pushers=set(), no_chart_keys=True,
                             secrets={"master-key": "calbridge-master-key", "admin-token": "calbridge-admin",
                                      "previous-master-key": "calbridge-master-key-old",
                                      "google-oauth": "google-oauth-client",
                                      "microsoft-oauth": "microsoft-oauth-client"},
                             tls_secrets={"scheduler": "calbridge-scheduler-links", "google": "calbridge-google-links"},
                             client_certificates=True),
}
# The plaintext gRPC health port kubelet's probes use beside a TLS gRPC port.
HEALTH_PORT = 50070
TLS_DIR = "/etc/calbridge/tls"
PORTS = {"sandbox": 50061, "caldav": 50062, "google": 50063, "microsoft": 50065}
# Adapters with an OAuth client and a push webhook, and the webhook's port.
WEBHOOK_PORTS = {"google": 50064, "microsoft": 50066}
# Where the Microsoft adapter signs users in and calls Graph, by default.
MICROSOFT_URLS = {"CALBRIDGE_MICROSOFT_AUTHORITY_URL": "https://login.microsoftonline.com",
                  "CALBRIDGE_MICROSOFT_GRAPH_BASE_URL": "https://graph.microsoft.com/v1.0/"}
READY_SERVICE = {"scheduler": "calbridge.v1.Scheduler", "adapter": "calbridge.v1.CalendarAdapter"}


class Failures:
    def __init__(self):
        self.items = []

    def check(self, ok, msg):
        if not ok:
            self.items.append(msg)
        return ok


def selector(component):
    return {"app.kubernetes.io/name": "calbridge", "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": component}


def load(path):
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    by = {}
    for d in docs:
        by.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return docs, by


def workloads(by):
    for kind in ("StatefulSet", "Deployment"):
        for name, w in by.get(kind, {}).items():
            yield kind, name, w


def check_security(f, kind, name, w):
    pod = w["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    f.check(pod.get("automountServiceAccountToken") is False, f"{name}: service account token mounted")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        f.check(not pod.get(flag), f"{name}: {flag}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        csc = c.get("securityContext", {})
        eff = {**psc, **csc}
        where = f"{name}/{c['name']}"
        f.check(eff.get("runAsNonRoot") is True, f"{where}: runAsNonRoot not true")
        f.check(isinstance(eff.get("runAsUser"), int) and eff["runAsUser"] > 0, f"{where}: runs as root (runAsUser {eff.get('runAsUser')})")
        f.check(eff.get("runAsGroup", 1) != 0, f"{where}: runAsGroup 0")
        f.check(csc.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem writable")
        f.check(csc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed")
        f.check(not csc.get("privileged"), f"{where}: privileged")
        f.check("ALL" in csc.get("capabilities", {}).get("drop", []), f"{where}: capabilities not all dropped")
        f.check(not csc.get("capabilities", {}).get("add"), f"{where}: capabilities added")
        f.check(eff.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp not RuntimeDefault")
        res = c.get("resources", {})
        for k in ("requests", "limits"):
            f.check(res.get(k, {}).get("memory") and res.get(k, {}).get("cpu"), f"{where}: no cpu/memory {k}")
        cmd = c.get("command", [])
        f.check(len(cmd) == 1 and re.fullmatch(r"/usr/local/bin/calbridge(-[a-z-]+)?", cmd[0]) is not None,
                f"{where}: command {cmd} is not one calbridge binary (no shell)")


def check_probes(f, name, w, role, tls):
    c = w["spec"]["template"]["spec"]["containers"][0]
    # Probes cannot speak TLS: with TLS they use the plaintext health port.
    port_name = "health" if tls else "grpc"
    grpc_port = next((p["containerPort"] for p in c["ports"] if p["name"] == port_name), None)
    f.check(grpc_port is not None, f"{name}: no {port_name} port")
    if tls:
        f.check(grpc_port == HEALTH_PORT and env_of(c).get("CALBRIDGE_HEALTH_LISTEN") == f"0.0.0.0:{HEALTH_PORT}",
                f"{name}: health listener not on port {HEALTH_PORT}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(probe)
        if not f.check(p is not None, f"{name}: no {probe}"):
            continue
        f.check(set(p) & {"httpGet", "tcpSocket", "exec"} == set(), f"{name}: {probe} is not gRPC-only")
        f.check("grpc" in p and p["grpc"]["port"] == grpc_port, f"{name}: {probe} not gRPC on the {port_name} port {grpc_port}")
    ready = c.get("readinessProbe", {}).get("grpc", {})
    f.check(ready.get("service") == READY_SERVICE[role], f"{name}: readiness asks for {ready.get('service')!r}")
    f.check(c.get("livenessProbe", {}).get("grpc", {}).get("service", "") == "", f"{name}: liveness not on the whole server")


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mounted_secrets(pod):
    """volume name -> Secret name, for the Secrets a pod mounts."""
    return {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}


def check_scheduler(f, case, exp, by):
    sts = by.get("StatefulSet", {})
    if not f.check(list(sts) == [f"{BASE}-scheduler"], f"StatefulSets {list(sts)}"):
        return
    s = sts[f"{BASE}-scheduler"]
    spec = s["spec"]
    f.check(spec["replicas"] == 1, "scheduler replicas != 1 (sled is single-writer)")
    claims = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", [])}
    f.check("data" in claims, "scheduler has no volume claim 'data'")
    if "data" in claims:
        f.check(claims["data"]["spec"]["resources"]["requests"].get("storage"), "claim without a size")
    pod = spec["template"]["spec"]
    c = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    env = env_of(c)
    f.check(mounts.get("data") == "/var/lib/calbridge", "claim not mounted at /var/lib/calbridge")
    f.check(env.get("CALBRIDGE_DATA_DIR", "").startswith("/var/lib/calbridge/"), "data_dir is not on the claim")
    f.check(not any(v.get("name") == "data" for v in pod.get("volumes", [])), "a pod volume shadows the claim")
    f.check(env.get("CALBRIDGE_MODE") == "production", "scheduler not in production mode")
    # Secret files: each path the scheduler reads lies in a mounted Secret.
    secrets = mounted_secrets(pod)
    for var, vol in (("CALBRIDGE_MASTER_KEY_FILE", "master-key"), ("CALBRIDGE_ADMIN_TOKEN_FILE", "admin-token"),
                     ("CALBRIDGE_PREVIOUS_MASTER_KEY_FILE", "previous-master-key")):
        if vol not in exp["secrets"]:
            f.check(var not in env, f"{var} set without a Secret")
            continue
        f.check(secrets.get(vol) == exp["secrets"][vol], f"{vol}: Secret {secrets.get(vol)} != {exp['secrets'][vol]}")
        f.check(env.get(var, "").startswith(mounts.get(vol, "?") + "/"), f"{var}={env.get(var)} not in the {vol} mount")
        f.check(not any(k.startswith("CALBRIDGE_MASTER_KEY") and k != "CALBRIDGE_MASTER_KEY_FILE" and "PREVIOUS" not in k
                        for k in env), "master key given in the environment")
    chart_keys = by.get("Secret", {}).get(f"{BASE}-scheduler-keys")
    if exp.get("no_chart_keys"):
        f.check(chart_keys is None, "chart made a key Secret although existing ones are named")
    else:
        f.check(chart_keys is not None and set(chart_keys["data"]) == {"master-key", "admin-token"},
                "chart key Secret missing or incomplete")
        if chart_keys:
            f.check(chart_keys["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
                    "generated key Secret is not kept on uninstall")
    # Adapters registered: exactly the enabled ones, at their Services.
    urls = dict(item.split("=", 1) for item in env.get("CALBRIDGE_ADAPTERS", "").split(",") if item)
    tls = exp.get("tls", True)
    scheme = "https" if tls else "http"
    want = {}
    for a in exp["adapters"]:
        url = f"{scheme}://{BASE}-adapter-{a}.{NAMESPACE}.svc:{PORTS[a]}"
        want[a] = url
        if a == "caldav":
            want["icloud"] = url
    f.check(urls == want, f"CALBRIDGE_ADAPTERS {urls} != {want}")
    svc = by.get("Service", {}).get(f"{BASE}-scheduler")
    f.check(svc is not None and svc["spec"].get("clusterIP") == "None", "scheduler Service missing or not headless")
    f.check(spec["serviceName"] == f"{BASE}-scheduler", "StatefulSet serviceName is not the headless Service")
    advertise = env.get("CALBRIDGE_ADVERTISE_URL")
    f.check(advertise == f"{scheme}://{BASE}-scheduler-0.{BASE}-scheduler.{NAMESPACE}.svc:50051",
            f"advertise URL {advertise}")
    # Transport security: the link certificate, mounted read-only from its
    # Secret, for the API and toward the adapters; or a mesh, declared.
    check_links_tls(f, "scheduler", exp, pod, c, env, secrets, mounts,
                    want_env={"CALBRIDGE_TLS_CERT": "tls.crt", "CALBRIDGE_TLS_KEY": "tls.key",
                              "CALBRIDGE_ADAPTER_CA": "ca.crt", "CALBRIDGE_ADAPTER_CLIENT_CERT": "tls.crt",
                              "CALBRIDGE_ADAPTER_CLIENT_KEY": "tls.key", "CALBRIDGE_CA_FILE": "ca.crt"},
                    default_secret=f"{BASE}-scheduler-tls")
    if tls:
        f.check(("CALBRIDGE_TLS_CLIENT_CA" in env) == bool(exp.get("client_certificates")),
                f"scheduler: client certificates required is {'CALBRIDGE_TLS_CLIENT_CA' in env}")
        f.check(env.get("CALBRIDGE_SERVER") == advertise, "scheduler: the CLI in the pod does not dial the advertised URL")
    f.check((env.get("CALBRIDGE_ALLOW_PLAINTEXT_LINKS") == "true") == (not tls),
            "scheduler: plaintext links allowed without a mesh, or a mesh without allowing them")
    return advertise


def check_links_tls(f, who, exp, pod, c, env, secrets, mounts, want_env, default_secret):
    """The link certificate of one process (scheduler or adapter)."""
    tls = exp.get("tls", True)
    if not tls:
        f.check("links-tls" not in secrets and not any(k.startswith("CALBRIDGE_TLS_") for k in env),
                f"{who}: TLS material without tls.enabled")
        return
    secret = exp.get("tls_secrets", {}).get(who, default_secret)
    f.check(secrets.get("links-tls") == secret, f"{who}: link certificate Secret {secrets.get('links-tls')} != {secret}")
    vol = next((v for v in pod.get("volumes", []) if v["name"] == "links-tls"), {})
    items = {i["key"] for i in vol.get("secret", {}).get("items", [])}
    f.check(items == {"tls.crt", "tls.key", "ca.crt"}, f"{who}: link certificate items {items}")
    mount = next((m for m in c.get("volumeMounts", []) if m["name"] == "links-tls"), {})
    f.check(mount.get("mountPath") == TLS_DIR and mount.get("readOnly") is True,
            f"{who}: link certificate not mounted read-only at {TLS_DIR}")
    f.check("subPath" not in mount, f"{who}: a subPath mount would not follow rotations")
    for var, file in want_env.items():
        f.check(env.get(var) == f"{TLS_DIR}/{file}", f"{who}: {var}={env.get(var)} is not {TLS_DIR}/{file}")


def check_adapters(f, case, exp, by, advertise):
    deps = by.get("Deployment", {})
    f.check(set(deps) == {f"{BASE}-adapter-{a}" for a in exp["adapters"]}, f"Deployments {sorted(deps)}")
    hpas = {n.removeprefix(f"{BASE}-adapter-") for n in by.get("HorizontalPodAutoscaler", {})}
    f.check(hpas == exp["hpa"], f"HPAs {sorted(hpas)} != {sorted(exp['hpa'])}")
    pdbs = {n.removeprefix(f"{BASE}-adapter-") for n in by.get("PodDisruptionBudget", {})}
    f.check(pdbs == exp["pdb"], f"PDBs {sorted(pdbs)} != {sorted(exp['pdb'])}")
    for a in exp["adapters"]:
        name = f"{BASE}-adapter-{a}"
        d = deps.get(name)
        if not d:
            continue
        svc = by.get("Service", {}).get(name)
        f.check(svc is not None and svc["spec"]["selector"] == selector(f"adapter-{a}"), f"{name}: no Service selecting it")
        f.check(d["spec"]["selector"]["matchLabels"] == selector(f"adapter-{a}"), f"{name}: selector")
        if a in exp["hpa"]:
            f.check("replicas" not in d["spec"], f"{name}: replicas set although an HPA scales it")
            h = by["HorizontalPodAutoscaler"][name]
            f.check(h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    f"{name}: HPA targets {h['spec']['scaleTargetRef']}")
        if a == "sandbox":
            f.check(d["spec"].get("replicas") == 1, "sandbox (in-memory) not exactly one replica")
        c = d["spec"]["template"]["spec"]["containers"][0]
        f.check(c["command"] == [f"/usr/local/bin/calbridge-adapter-{a}"], f"{name}: command {c['command']}")
        env = env_of(c)
        f.check(env.get("CALBRIDGE_LISTEN") == f"0.0.0.0:{PORTS[a]}", f"{name}: listen {env.get('CALBRIDGE_LISTEN')}")
        secrets = mounted_secrets(d["spec"]["template"]["spec"])
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        # Only the scheduler's certificate (the CA's clients) is answered.
        check_links_tls(f, a, exp, d["spec"]["template"]["spec"], c, env, secrets, mounts,
                        want_env={"CALBRIDGE_TLS_CERT": "tls.crt", "CALBRIDGE_TLS_KEY": "tls.key",
                                  "CALBRIDGE_TLS_CLIENT_CA": "ca.crt"},
                        default_secret=f"{name}-tls")
        if a in WEBHOOK_PORTS:
            check_oauth_adapter(f, a, exp, env, secrets, mounts, advertise)
        else:
            f.check(not any(k.endswith("-oauth") for k in secrets), f"{name}: mounts an OAuth client")
        if a == "microsoft":
            want = {**MICROSOFT_URLS, "CALBRIDGE_MICROSOFT_TENANT": exp.get("microsoft_tenant", "common")}
            got = {k: env.get(k) for k in want}
            f.check(got == want, f"{name}: identity platform and Graph {got} != {want}")


def check_oauth_adapter(f, a, exp, env, secrets, mounts, advertise):
    """An OAuth adapter (Google, Microsoft): its client from the expected
    Secret, read from files in that mount; its webhook, when on, forwarding
    only to the scheduler and serving TLS from the expected Secret."""
    name = f"{BASE}-adapter-{a}"
    var = f"CALBRIDGE_{a.upper()}"
    f.check(secrets.get(f"{a}-oauth") == exp["secrets"][f"{a}-oauth"],
            f"{name}: OAuth client from {secrets.get(f'{a}-oauth')}")
    for key in ("CLIENT_ID_FILE", "CLIENT_SECRET_FILE"):
        f.check(env.get(f"{var}_{key}", "").startswith(mounts.get(f"{a}-oauth", "?") + "/"),
                f"{name}: {var}_{key}={env.get(f'{var}_{key}')} not in the {a}-oauth mount")
    f.check(not any(k in env for k in (f"{var}_CLIENT_ID", f"{var}_CLIENT_SECRET")),
            f"{name}: OAuth client given in the environment")
    push = f"{var}_WEBHOOK_PUBLIC_URL" in env
    f.check(push == (a in exp["pushers"]), f"{name}: webhook {push}, pushes {a in exp['pushers']}")
    if push:
        f.check(env.get(f"{var}_WEBHOOK_LISTEN") == f"0.0.0.0:{WEBHOOK_PORTS[a]}",
                f"{name}: webhook listens on {env.get(f'{var}_WEBHOOK_LISTEN')}")
        f.check(env.get(f"{var}_ALLOWED_CALLBACK_ENDPOINTS") == advertise,
                f"{name}: callback endpoints {env.get(f'{var}_ALLOWED_CALLBACK_ENDPOINTS')} != advertised {advertise}")
    tls = exp["secrets"].get(f"{a}-webhook-tls")
    f.check(secrets.get("webhook-tls") == tls, f"{name}: webhook TLS Secret {secrets.get('webhook-tls')} != {tls}")
    if tls:
        for key in ("WEBHOOK_TLS_CERT", "WEBHOOK_TLS_KEY"):
            f.check(env.get(f"{var}_{key}", "").startswith(mounts.get("webhook-tls", "?") + "/"),
                    f"{name}: {var}_{key} not in the webhook-tls mount")


def rule_ports(rule):
    return {p["port"] for p in rule.get("ports", [])}


def check_network_policies(f, case, exp, by):
    nps = by.get("NetworkPolicy", {})
    if not exp["netpol"]:
        f.check(not nps, "NetworkPolicies rendered although disabled")
        return
    sched_sel = selector("scheduler")
    # Every pod is selected by a policy with both directions.
    for kind, name, w in workloads(by):
        labels = w["spec"]["template"]["metadata"]["labels"]
        covered = [n for n, p in nps.items()
                   if all(labels.get(k) == v for k, v in p["spec"]["podSelector"]["matchLabels"].items())
                   and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}]
        f.check(covered, f"{name}: no NetworkPolicy (ingress and egress) selects it")
    sp = nps.get(f"{BASE}-scheduler")
    if not f.check(sp is not None, "no scheduler NetworkPolicy"):
        return
    api = [r for r in sp["spec"].get("ingress") or [] if 50051 in rule_ports(r)]
    for r in api:
        f.check(r.get("from"), "scheduler API open to every source (a rule without 'from')")
    api_peers = [p for r in api for p in r.get("from", [])]
    adapter_peers = [p for p in api_peers if p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component", "").startswith("adapter-")]
    pushers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"].removeprefix("adapter-") for p in adapter_peers}
    f.check(pushers == exp["pushers"], f"adapters admitted to the scheduler {sorted(pushers)} != pushers {sorted(exp['pushers'])}")
    for p in adapter_peers:
        f.check("namespaceSelector" not in p and p["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE,
                "adapter peer not limited to this release's pods")
    f.check(all("ipBlock" not in p for p in api_peers), "scheduler API admits an ipBlock")
    for r in sp["spec"].get("egress") or []:
        for p in r.get("to", []):
            f.check("ipBlock" not in p, "scheduler may reach an ipBlock (it calls only adapters, DNS, OTLP)")
    adapter_egress = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"].removeprefix("adapter-"): rule_ports(r)
                      for r in sp["spec"].get("egress") or [] for p in r.get("to", [])
                      if p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component", "").startswith("adapter-")}
    f.check(adapter_egress == {a: {PORTS[a]} for a in exp["adapters"]}, f"scheduler egress to adapters {adapter_egress}")
    for a in exp["adapters"]:
        p = nps.get(f"{BASE}-adapter-{a}")
        if not f.check(p is not None, f"no NetworkPolicy for adapter {a}"):
            continue
        ingress = p["spec"].get("ingress") or []
        grpc = [r for r in ingress if PORTS[a] in rule_ports(r)]
        f.check(len(grpc) == 1 and grpc[0].get("from") == [{"podSelector": {"matchLabels": sched_sel}}],
                f"adapter {a}: gRPC port open to more than the scheduler: {grpc}")
        for r in ingress:
            f.check(rule_ports(r), f"adapter {a}: an ingress rule opens every port")
        webhook = [r for r in ingress if WEBHOOK_PORTS.get(a) in rule_ports(r)]
        f.check(bool(webhook) == (a in WEBHOOK_PORTS and a in exp["pushers"]), f"adapter {a}: webhook ingress {webhook}")
        egress = p["spec"].get("egress") or []
        to_sched = [r for r in egress if any(q.get("podSelector", {}).get("matchLabels") == sched_sel for q in r.get("to", []))]
        f.check(bool(to_sched) == (a in exp["pushers"]), f"adapter {a}: egress to the scheduler {bool(to_sched)}, pushes {a in exp['pushers']}")
        for r in to_sched:
            f.check(rule_ports(r) == {50051}, f"adapter {a}: egress to the scheduler on {rule_ports(r)}")
        blocks = [q["ipBlock"] for r in egress for q in r.get("to", []) if "ipBlock" in q]
        for r in egress:
            f.check(r.get("ports") or all("ipBlock" in q and q["ipBlock"]["cidr"] not in ("0.0.0.0/0", "::/0")
                                          for q in r.get("to", [])),
                    f"adapter {a}: an egress rule opens every port to {r.get('to')}")
        if a == "sandbox":
            f.check(not blocks, "sandbox adapter may reach the network (its provider is in memory)")
        else:
            v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
            f.check(len(v4) == 1 and PRIVATE_V4 <= set(v4[0].get("except", [])),
                    f"adapter {a}: provider egress does not exclude private ranges: {v4}")
        if a in WEBHOOK_PORTS:
            # Google's and Microsoft's APIs and sign-in are HTTPS only.
            public = {port for r in egress if any(q.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for q in r.get("to", []))
                      for port in rule_ports(r)}
            f.check(public == {443}, f"adapter {a}: provider egress on ports {sorted(public)} != [443]")


def check_metrics_ports(f, by):
    """A container with a metrics port serves metrics there; none without one."""
    for kind, name, w in workloads(by):
        for c in w["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "metrics" in ports:
                f.check(env.get("CALBRIDGE_METRICS_LISTEN") == f"0.0.0.0:{ports['metrics']}",
                        f"{name}: metrics port {ports['metrics']} but CALBRIDGE_METRICS_LISTEN={env.get('CALBRIDGE_METRICS_LISTEN')}")
            else:
                f.check("CALBRIDGE_METRICS_LISTEN" not in env, f"{name}: metrics served on no declared port")


def check_dashboard(f, by):
    cms = [c for n, c in by.get("ConfigMap", {}).items() if n.endswith("-dashboard")]
    if not f.check(len(cms) == 1, "no dashboard ConfigMap"):
        return
    cm = cms[0]
    f.check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard without the sidecar label")
    dash = json.loads(cm["data"]["calbridge.json"])
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    f.check(len(exprs) >= 12, "dashboard has few queries")
    readme = (CHART / "README.md").read_text()
    names = set()
    for e in exprs:
        for m in re.findall(r"\b((?:calbridge|rpc|http)_[a-z_]+?)(?:_bucket|_count|_sum)?\{", e):
            names.add(m)
    for n in sorted(names):
        f.check(f"`{n}`" in readme, f"dashboard metric {n} is not listed in helm/calbridge/README.md")


def check_case(case, path):
    f = Failures()
    exp = EXPECT[case]
    docs, by = load(path)
    for d in docs:
        md = d["metadata"]
        f.check(md.get("namespace") == NAMESPACE or d["kind"] in (), f"{d['kind']}/{md['name']}: namespace {md.get('namespace')}")
        f.check(len(md["name"]) <= 63, f"{md['name']}: name too long")
    for kind, name, w in workloads(by):
        check_security(f, kind, name, w)
        check_probes(f, name, w, "scheduler" if kind == "StatefulSet" else "adapter", exp.get("tls", True))
        images = {c["image"] for c in w["spec"]["template"]["spec"]["containers"]}
        if exp.get("digest"):
            f.check(all("@sha256:" in i for i in images), f"{name}: image not pinned by digest")
    advertise = check_scheduler(f, case, exp, by)
    check_adapters(f, case, exp, by, advertise)
    check_network_policies(f, case, exp, by)
    f.check(bool(by.get("ServiceMonitor")) == bool(exp.get("service_monitor")), "ServiceMonitor presence")
    for sm in by.get("ServiceMonitor", {}).values():
        f.check([e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"], "ServiceMonitor not on the metrics port")
    check_metrics_ports(f, by)
    check_dashboard(f, by)
    return f.items


def main(argv):
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for case, path in zip(argv[::2], argv[1::2]):
        items = check_case(case, path)
        if items:
            failed += 1
            print(f"FAIL {case}:", file=sys.stderr)
            for i in items:
                print(f"  - {i}", file=sys.stderr)
        else:
            print(f"ok   {case}: rendered manifests pass the chart assertions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
