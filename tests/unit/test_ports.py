"""The ports table (hardway.ports): its rules, the renderers reading it, the insecure ports off
in every minor, and the listener check on recorded `ss -ltnupH` output."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from hardway import ports
from hardway.ports import REMOTE_ACCESS, Access, Bind, check_listeners, parse_ss
from hardway.render import render_cluster
from hardway.spec import versions
from tests.fake_material import fake_material
from tests.specs import make_spec


def render(preset="basic", version="1.20.2", edit=None):
    spec = make_spec(preset, version, edit)
    return spec, render_cluster(spec, fake_material(spec))


def unit_flags(bundle, unit: str) -> dict[str, str]:
    text = bundle.files[f"/etc/systemd/system/{unit}.service"].content.decode()
    words = text.split("ExecStart=", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split()[1:]
    return dict(w.split("=", 1) for w in words)


def config(bundle, path: str) -> dict:
    return next(d for d in yaml.safe_load_all(bundle.files[path].content) if d)


# ---------------------------------------------------------------------------------------------
# the table's own rules


def test_every_row_outside_loopback_has_an_allowed_access_class():
    for row in ports.PORTS:
        if row.bind is Bind.loopback:
            assert row.access is Access.loopback, row.key
        else:
            assert row.access in REMOTE_ACCESS, row.key
        if row.access is Access.tls_client_auth:
            assert row.probe and row.probe.startswith("/"), f"{row.key}: a tls-client-auth row names a path to probe"
    assert len(ports.BY_KEY) == len(ports.PORTS)


def test_every_row_applies_somewhere_and_resolves():
    for preset in ("basic", "ha", "ha-vip", "single"):
        spec = make_spec(preset)
        for node in spec.nodes:
            for e in ports.node_ports(spec, node):
                assert e.ports is None or 1 <= e.ports[0] <= e.ports[1] <= 65535
    keys = {e.row.key for p in ("basic", "ha", "ha-vip") for s in [make_spec(p)] for n in s.nodes
            for e in ports.node_ports(s, n)}
    assert keys == set(ports.BY_KEY)


def test_roles_pick_their_rows():
    spec = make_spec("ha-vip")
    keys = {n.name: {e.row.key for e in ports.node_ports(spec, n)} for n in spec.nodes}
    assert "haproxy" in keys["controller-0"] and "kubelet" not in keys["controller-0"]
    assert "haproxy" not in keys["worker-0"] and "etcd-client" not in keys["worker-0"]
    assert ports.port("haproxy", spec) == 8443
    ha = make_spec("ha")
    assert {e.row.key for e in ports.node_ports(ha, ha.node("lb-0"))} == {"haproxy", "sshd"}
    assert "haproxy" not in {e.row.key for e in ports.node_ports(ha, ha.node("controller-0"))}
    assert ports.port("haproxy", ha) == 6443


def test_the_docs_list_every_row():
    design = (Path(__file__).parents[2] / "docs" / "design.md").read_text()
    section = design.split("## Ports", 1)[1].split("\n## ", 1)[0]
    for row in ports.PORTS:
        assert f"`{row.key}`" in section, f"docs/design.md, section Ports: row {row.key} missing"


# ---------------------------------------------------------------------------------------------
# the insecure ports are off in every minor


@pytest.mark.parametrize("minor", versions.SUPPORTED_MINORS)
def test_no_insecure_port_in_any_minor(minor):
    """kube-controller-manager and kube-scheduler serve plain HTTP on 10252/10251 on every
    interface unless told otherwise, in 1.20-1.22 (the flags exist until 1.23)."""
    _, cb = render("basic", f"{minor}.1")
    c = cb.nodes["controller-0"]
    for component in ("kube-controller-manager", "kube-scheduler"):
        f = unit_flags(c, component)
        if versions.has_flag(component, minor, "--port"):
            assert f["--port"] == "0", f"{component} {minor}"
        else:
            assert "--port" not in f
        assert f["--bind-address"] == "127.0.0.1"
    # A config file would keep 1.20-1.22's plain-HTTP port open whatever --port says: those
    # minors run the scheduler from flags (--port=0 then holds), the later ones from the config.
    sched = unit_flags(c, "kube-scheduler")
    has_config = "/etc/kubernetes/kube-scheduler.yaml" in c.files
    if versions.scheduler_field(minor, "healthzBindAddress"):
        assert not has_config and "--config" not in sched, minor
        assert sched["--kubeconfig"] == "/etc/kubernetes/scheduler.conf" and sched["--leader-elect"] == "true"
    else:
        assert has_config and sched["--config"] == "/etc/kubernetes/kube-scheduler.yaml", minor
        cfg = config(c, "/etc/kubernetes/kube-scheduler.yaml")
        assert not {"healthzBindAddress", "metricsBindAddress"} & set(cfg), minor
    kubelet = config(cb.nodes["worker-0"], "/var/lib/kubelet/config.yaml")
    assert kubelet["readOnlyPort"] == 0


def test_the_insecure_flags_exist_exactly_in_1_20_to_1_23():
    for component in ("kube-controller-manager", "kube-scheduler"):
        for flag in ("--port", "--address"):
            have = [m for m in versions.SUPPORTED_MINORS if versions.has_flag(component, m, flag)]
            assert have == ["1.20", "1.21", "1.22", "1.23"], (component, flag)
    have = [m for m in versions.SUPPORTED_MINORS if versions.scheduler_field(m, "healthzBindAddress")]
    assert have == ["1.20", "1.21", "1.22"]


# ---------------------------------------------------------------------------------------------
# the renderers read the table


def test_renderers_take_ports_and_addresses_from_the_table():
    spec, cb = render("single")
    n = cb.nodes["node-0"]
    node = spec.node("node-0")
    api = unit_flags(n, "kube-apiserver")
    assert (api["--bind-address"], api["--secure-port"]) == ("0.0.0.0", "6443")
    for component, port in (("kube-controller-manager", "10257"), ("kube-scheduler", "10259")):
        f = unit_flags(n, component)
        assert (f["--bind-address"], f["--secure-port"]) == ("127.0.0.1", port)
    etcd = unit_flags(n, "etcd")
    assert etcd["--listen-client-urls"] == f"https://{node.address}:2379"
    assert etcd["--listen-peer-urls"] == f"https://{node.address}:2380"
    k = config(n, "/var/lib/kubelet/config.yaml")
    assert (k["address"], k["port"], k["healthzBindAddress"], k["healthzPort"]) == ("0.0.0.0", 10250, "127.0.0.1", 10248)
    p = config(n, "/var/lib/kube-proxy/config.yaml")
    assert (p["healthzBindAddress"], p["metricsBindAddress"]) == ("0.0.0.0:10256", "127.0.0.1:10249")
    _, vip = render("ha-vip")
    assert "bind *:8443\n" in vip.nodes["controller-0"].files["/etc/haproxy/haproxy.cfg"].content.decode()


def test_a_changed_row_changes_what_is_rendered(monkeypatch):
    """One source: move rows in the table and the rendered files follow."""
    moved = {
        "kubelet": dict(port=11250), "kubelet-healthz": dict(port=11248),
        "kube-proxy-healthz": dict(port=11256, bind=Bind.node), "kube-proxy-metrics": dict(port=11249),
        "kube-controller-manager": dict(port=11257), "kube-scheduler": dict(port=11259),
        "etcd-client": dict(bind=Bind.any),
    }
    for key, change in moved.items():
        monkeypatch.setitem(ports.BY_KEY, key, dataclasses.replace(ports.BY_KEY[key], **change))
    spec, cb = render("single")
    n = cb.nodes["node-0"]
    k = config(n, "/var/lib/kubelet/config.yaml")
    assert (k["port"], k["healthzPort"]) == (11250, 11248)
    p = config(n, "/var/lib/kube-proxy/config.yaml")
    assert (p["healthzBindAddress"], p["metricsBindAddress"]) == ("10.240.0.10:11256", "127.0.0.1:11249")
    assert unit_flags(n, "kube-controller-manager")["--secure-port"] == "11257"
    assert unit_flags(n, "kube-scheduler")["--secure-port"] == "11259"
    assert unit_flags(n, "etcd")["--listen-client-urls"] == "https://0.0.0.0:2379"


# ---------------------------------------------------------------------------------------------
# the listener check, on `ss -ltnupH` as recorded on lab nodes (Debian bookworm, iproute2 6.1)

CONTROLLER = """\
tcp   LISTEN 0      4096     10.240.78.10:2380       0.0.0.0:*    users:(("etcd",pid=412,fd=7))
tcp   LISTEN 0      4096     10.240.78.10:2379       0.0.0.0:*    users:(("etcd",pid=412,fd=8))
tcp   LISTEN 0      128           0.0.0.0:22         0.0.0.0:*    users:(("sshd",pid=88,fd=3))
tcp   LISTEN 0      4096        127.0.0.1:10257      0.0.0.0:*    users:(("kube-controller",pid=530,fd=7))
tcp   LISTEN 0      4096        127.0.0.1:10259      0.0.0.0:*    users:(("kube-scheduler",pid=531,fd=8))
tcp   LISTEN 0      4096                *:6443             *:*    users:(("kube-apiserver",pid=501,fd=7))
tcp   LISTEN 0      128              [::]:22            [::]:*    users:(("sshd",pid=88,fd=4))
"""

WORKER = """\
tcp   LISTEN 0      4096        127.0.0.1:10248      0.0.0.0:*    users:(("kubelet",pid=702,fd=16))
tcp   LISTEN 0      4096        127.0.0.1:10249      0.0.0.0:*    users:(("kube-proxy",pid=760,fd=10))
tcp   LISTEN 0      4096        127.0.0.1:38915      0.0.0.0:*    users:(("containerd",pid=650,fd=12))
tcp   LISTEN 0      128           0.0.0.0:22         0.0.0.0:*    users:(("sshd",pid=88,fd=3))
tcp   LISTEN 0      4096                *:10250            *:*    users:(("kubelet",pid=702,fd=20))
tcp   LISTEN 0      4096                *:10256            *:*    users:(("kube-proxy",pid=760,fd=11))
tcp   LISTEN 0      4096                *:31234            *:*    users:(("kube-proxy",pid=760,fd=14))
tcp   LISTEN 0      128              [::]:22            [::]:*    users:(("sshd",pid=88,fd=4))
"""

LB = """\
tcp   LISTEN 0      4096          0.0.0.0:6443       0.0.0.0:*    users:(("haproxy",pid=301,fd=7),("haproxy",pid=300,fd=7))
tcp   LISTEN 0      128           0.0.0.0:22         0.0.0.0:*    users:(("sshd",pid=88,fd=3))
tcp   LISTEN 0      128              [::]:22            [::]:*    users:(("sshd",pid=88,fd=4))
"""

# Kubernetes 1.20 as hardway rendered it before the insecure ports were turned off (the demo).
CONTROLLER_BEFORE = CONTROLLER + """\
tcp   LISTEN 0      4096                *:10251            *:*    users:(("kube-scheduler",pid=531,fd=7))
tcp   LISTEN 0      4096                *:10252            *:*    users:(("kube-controller",pid=530,fd=6))
"""


def spec_at(octet: int, preset: str = "basic"):
    def move(d):
        for n in d["nodes"]:
            n["address"] = n["address"].replace("10.240.0.", f"10.240.{octet}.")
        d["network"]["nodeSubnet"] = f"10.240.{octet}.0/24"
    return make_spec(preset, edit=move)


def test_a_clean_cluster_has_no_problem():
    spec = spec_at(78)
    assert check_listeners(spec, spec.node("controller-0"), CONTROLLER) == []
    assert check_listeners(spec, spec.node("worker-0"), WORKER) == []
    ha = spec_at(78, "ha")
    assert check_listeners(ha, ha.node("lb-0"), LB) == []


def test_the_demos_insecure_ports_are_reported():
    spec = spec_at(78)
    problems = check_listeners(spec, spec.node("controller-0"), CONTROLLER_BEFORE)
    assert len(problems) == 2, problems
    scheduler, manager = problems
    assert "tcp *:10251 (kube-scheduler)" in scheduler and "not in the ports table" in scheduler
    assert "tcp *:10252 (kube-controller)" in manager and "not in the ports table" in manager


def test_an_unexpected_listener_is_reported():
    spec = spec_at(78)
    ss = WORKER + 'udp   UNCONN 0      0             0.0.0.0:5353       0.0.0.0:*    users:(("avahi-daemon",pid=99,fd=12))\n'
    ss += 'tcp   LISTEN 0      5           127.0.0.1:631        0.0.0.0:*    users:(("cupsd",pid=98,fd=7))\n'
    problems = check_listeners(spec, spec.node("worker-0"), ss)
    assert len(problems) == 2, problems
    assert "udp 0.0.0.0:5353 (avahi-daemon) is not in the ports table" in problems[0]
    # Loopback is no excuse: a listener must be in the table either way.
    assert "tcp 127.0.0.1:631 (cupsd) is not in the ports table" in problems[1]


def test_a_wrong_bind_address_is_reported():
    spec = spec_at(78)
    ss = CONTROLLER.replace("10.240.78.10:2379       0.0.0.0:*", "          *:2379             *:*")
    problems = check_listeners(spec, spec.node("controller-0"), ss)
    assert problems == ["controller-0 (controller): tcp *:2379 (etcd) is etcd-client (etcd clients: the "
                        "apiservers, etcdctl), which must listen on tcp 10.240.78.10:2379 only (tls-client-auth)"]
    ss = WORKER.replace("127.0.0.1:10248", "  0.0.0.0:10248")
    problems = check_listeners(spec, spec.node("worker-0"), ss)
    assert len(problems) == 1 and "tcp 0.0.0.0:10248 (kubelet) is kubelet-healthz" in problems[0]
    assert "127.0.0.1:10248 only (loopback)" in problems[0]
    # An IPv6 wildcard is every address too.
    ss = WORKER.replace("127.0.0.1:10249      0.0.0.0:*", "     [::]:10249         [::]:*")
    assert "tcp [::]:10249 (kube-proxy) is kube-proxy-metrics" in check_listeners(spec, spec.node("worker-0"), ss)[0]


def test_a_port_held_by_another_process_is_reported():
    spec = spec_at(78)
    ss = WORKER.replace('("kubelet",pid=702,fd=20)', '("nc",pid=999,fd=3)')
    problems = check_listeners(spec, spec.node("worker-0"), ss)
    assert any("tcp *:10250 (nc) holds the port of kubelet" in p for p in problems), problems
    assert any("nothing listens on tcp 0.0.0.0:10250 (kubelet" in p for p in problems), problems
    # containerd's streaming port is any port, but only containerd's.
    ss = WORKER.replace('("containerd",pid=650,fd=12)', '("python3",pid=998,fd=3)')
    assert check_listeners(spec, spec.node("worker-0"), ss) == [
        "worker-0 (worker): tcp 127.0.0.1:38915 (python3) is not in the ports table for this node "
        "(hardway.ports.PORTS; a stray service, or a row missing)"]


def test_a_missing_listener_and_a_role_mismatch_are_reported():
    spec = spec_at(78)
    ss = "".join(ln + "\n" for ln in CONTROLLER.splitlines() if ":2380 " not in ln)
    assert check_listeners(spec, spec.node("controller-0"), ss) == [
        "controller-0 (controller): nothing listens on tcp 10.240.78.10:2380 (etcd-peer: etcd peers; etcd.service)"]
    # A worker's kubelet on a controller: not in the controller's rows.
    problems = check_listeners(spec, spec.node("controller-0"), CONTROLLER + WORKER.splitlines()[4] + "\n")
    assert len(problems) == 1 and "tcp *:10250 (kubelet) is not in the ports table" in problems[0]


def test_without_process_names_ports_still_count_and_odd_lines_are_named():
    spec = spec_at(78)
    bare = re.sub(r" +users:\(.*\)", "", WORKER)
    # Port numbers alone: every fixed port matches; containerd's any-port listener cannot be told
    # from a stray one without its process.
    problems = check_listeners(spec, spec.node("worker-0"), bare)
    assert problems == ["worker-0 (worker): tcp 127.0.0.1:38915 (process unknown) is not in the ports table "
                        "for this node (hardway.ports.PORTS; a stray service, or a row missing)"]
    # `ss -ltn` (one protocol: no Netid column) reads the same.
    one = "\n".join(" ".join(ln.split()[1:]) for ln in bare.splitlines() if ":38915" not in ln)
    assert check_listeners(spec, spec.node("worker-0"), one) == []
    problems = check_listeners(spec, spec.node("worker-0"), WORKER + "garbage here\n")
    assert problems == ["worker-0 (worker): cannot read this line of ss: 'garbage here'"]


def test_parse_ss_reads_scoped_and_mapped_addresses():
    text = ('udp UNCONN 0 0 127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=5,fd=13))\n'
            'udp UNCONN 0 0 [fe80::1]%host0:123 [::]:*\n'
            'tcp LISTEN 0 4096 [::ffff:127.0.0.1]:10248 *:*\n')
    listeners, bad = parse_ss(text)
    assert bad == []
    assert [(ln.protocol, ln.address, ln.port, ln.processes) for ln in listeners] == [
        ("udp", "127.0.0.53", 53, ("systemd-resolve",)), ("udp", "fe80::1", 123, ()),
        ("tcp", "::ffff:127.0.0.1", 10248, ())]
    spec = spec_at(78)
    # A mapped loopback address is loopback.
    ss = WORKER.replace("127.0.0.1:10248      0.0.0.0:*", "[::ffff:127.0.0.1]:10248 *:*")
    assert check_listeners(spec, spec.node("worker-0"), ss) == []
