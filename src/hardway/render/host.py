"""Host settings every node gets: kernel modules, sysctls and static pod routes."""

from __future__ import annotations

import shlex

from ..quoting import systemd_command
from ..spec.model import ClusterSpec, Node, Role
from .bundle import Bundle, File, Phase, Unit
from .common import header, systemd_unit

SYSCTL_FILE = "/etc/sysctl.d/90-hardway.conf"
MODULES_FILE = "/etc/modules-load.d/hardway.conf"
ROUTES_UNIT = "hardway-routes.service"
ROUTE_ADD = ["/sbin/ip", "route", "replace"]

# What the kubelet checks at start; with protectKernelDefaults it refuses to run unless they
# are already set, instead of silently changing them.
KUBELET_KERNEL_DEFAULTS = {
    "vm.overcommit_memory": "1",
    "vm.panic_on_oom": "0",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
    "kernel.keys.root_maxkeys": "1000000",
    "kernel.keys.root_maxbytes": "25000000",
}


def host_settings(spec: ClusterSpec, node: Node) -> tuple[dict[str, str], list[str]]:
    sysctls: dict[str, str] = {}
    modules: list[str] = []
    if node.has(Role.worker):
        modules += ["overlay", "br_netfilter"]
        if spec.kube_proxy.mode == "ipvs":
            modules += ["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"]
        sysctls.update({
            # Pods' traffic is routed by the node (in the node's own network namespace).
            "net.ipv4.ip_forward": "1",
            "net.bridge.bridge-nf-call-iptables": "1",
            "net.bridge.bridge-nf-call-ip6tables": "1",
        })
        sysctls.update(KUBELET_KERNEL_DEFAULTS)
    return sysctls, modules


def pod_routes(spec: ClusterSpec, node: Node) -> list[tuple[str, str]]:
    """(pod CIDR, via address) for every other node that runs pods."""
    return [
        (str(spec.pod_cidr(other)), str(other.address))
        for other in spec.workers
        if other.name != node.name
    ]


def render_host(spec: ClusterSpec, node: Node, bundle: Bundle) -> None:
    sysctls, modules = host_settings(spec, node)
    bundle.sysctls.update(sysctls)
    bundle.modules.extend(m for m in modules if m not in bundle.modules)
    if sysctls:
        body = "".join(f"{k} = {v}\n" for k, v in sysctls.items())
        bundle.add(File(SYSCTL_FILE, (header() + body).encode()))
    if modules:
        bundle.add(File(MODULES_FILE, (header() + "".join(f"{m}\n" for m in modules)).encode()))
    routes = pod_routes(spec, node)
    if routes:
        # One oneshot unit: `ip route replace` is idempotent, and the unit re-adds the
        # routes at every boot without a network manager knowing about them.
        unit = systemd_unit(
            "Routes to the other nodes' pod CIDRs (hardway)",
            [],
            service={
                "Type": "oneshot",
                "RemainAfterExit": "yes",
                "ExecStart": [systemd_command([*ROUTE_ADD, cidr, "via", via]) for cidr, via in routes],
            },
        )
        bundle.add_unit(Unit(ROUTES_UNIT, Phase.host, oneshot=True), unit)


def installed_routes(unit_text: str) -> list[tuple[str, str]]:
    """(pod CIDR, via) for each route a ROUTES_UNIT file, as rendered above, adds. The unit has no
    ExecStop (a restart must not drop the routes for a moment), so `reset` deletes them itself,
    reading the unit file the node has: the routes it actually added."""
    prefix = "ExecStart=" + systemd_command(ROUTE_ADD) + " "
    out = []
    for line in unit_text.splitlines():
        if line.startswith(prefix):
            words = line[len(prefix):].split()
            if len(words) == 3 and words[1] == "via":  # CIDRs and addresses are bare systemd words
                out.append((words[0], words[2]))
    return out


def stale_routes_script(current: str, new: str | None) -> str:
    """Shell: delete each route the unit file at `current` (as the node has it) adds that the
    file at `new` (None: the unit goes) no longer adds. `ip route replace` only adds, and the unit
    has no ExecStop, so a route to a removed worker's pod CIDR would otherwise stay for ever (and
    a restart of the unit must not drop the others for a moment). Read as `installed_routes`
    reads it; run before the new file replaces the old."""
    prefix = "ExecStart=" + systemd_command(ROUTE_ADD) + " "
    keep = (f'grep -qxF "{prefix}$c via $v" {shlex.quote(new)} 2>/dev/null || '
            if new is not None else "")
    return (f"if [ -f {shlex.quote(current)} ]; then\n"
            f"  for r in $(sed -n 's|^{prefix}\\([^ ]*\\) via \\([^ ]*\\)$|\\1,\\2|p' {shlex.quote(current)}); do\n"
            '    c=${r%,*}; v=${r#*,}\n'
            f'    {keep}{{ ip route del "$c" via "$v" 2>/dev/null && echo "deleted the pod route $c via $v"; }} || true\n'
            "  done\n"
            "fi\n")
