"""The API load balancer: HAProxy on an lb node, or HAProxy + keepalived VIP on controllers."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .. import ports
from ..material import Material
from ..pki.profiles import openssl_anchor
from ..spec.model import ClusterSpec, LoadBalancerMode, Node
from .bundle import Bundle, File, Phase, Unit
from .common import SECRET, header, template

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
# The anchor HAProxy's OpenSSL verifies each apiserver against: the cluster CA, or in the root
# layout its self-signed twin (pki/profiles.py: OpenSSL needs a self-signed anchor).
HAPROXY_CA = "/etc/haproxy/kubernetes-ca.crt"
HAPROXY_CRT = "/etc/haproxy/healthcheck.pem"
# Read-only stats (`show stat`); Debian's haproxy package makes /run/haproxy (tmpfiles.d).
HAPROXY_STATS_SOCKET = "/run/haproxy/stats.sock"
HAPROXY_BACKEND = "kube-apiserver"  # the backend of haproxy.cfg.j2 whose servers are the apiservers
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/check_apiserver.sh"


@dataclass(frozen=True)
class HaproxyTiming:
    """How fast HAProxy gives up on a connection and on an apiserver (haproxy.cfg.j2 explains
    each). Times in ms; `up` and `verify` read the same numbers (rise: how long a backend must
    stay UP)."""

    connect_ms: int = 1000
    retries: int = 3
    inter_ms: int = 1000
    fastinter_ms: int = 250
    check_ms: int = 2000  # after the connection: a slow but live apiserver has this long to answer
    fall: int = 2
    rise: int = 2

    @property
    def first_failure_ms(self) -> int:
        """A dead apiserver's next check starts within `inter` and times out connecting."""
        return self.inter_ms + self.connect_ms

    @property
    def down_ms(self) -> int:
        """Worst case from death to DOWN: the first failure, then `fall - 1` more checks at
        `fastinter`, each timing out connecting."""
        return self.first_failure_ms + (self.fall - 1) * (self.fastinter_ms + self.connect_ms)

    @property
    def rise_s(self) -> float:
        """How long `rise` good checks in a row take: what `up` holds every backend UP for."""
        return self.rise * self.inter_ms / 1000

    def words(self) -> dict[str, str | int]:
        ms = {"connect": self.connect_ms, "inter": self.inter_ms, "fastinter": self.fastinter_ms,
              "check": self.check_ms, "first_failure": self.first_failure_ms, "down": self.down_ms}
        return {**{k: _duration(v) for k, v in ms.items()}, "retries": self.retries, "fall": self.fall,
                "rise": self.rise}


def _duration(ms: int) -> str:
    """HAProxy's time syntax: `1s`, `250ms`."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


HAPROXY_TIMING = HaproxyTiming()


def haproxy_cfg(spec: ClusterSpec, bind: str) -> str:
    return template(
        "haproxy.cfg.j2",
        bind=bind,
        port=ports.port("haproxy", spec),
        apiserver_port=ports.port("kube-apiserver"),
        backends=[(n.name, n.address) for n in spec.controllers],
        ca=HAPROXY_CA,
        crt=HAPROXY_CRT,
        stats_socket=HAPROXY_STATS_SOCKET,
        t=HAPROXY_TIMING.words(),
    )


def _haproxy(spec: ClusterSpec, material: Material, bundle: Bundle, bind: str) -> None:
    bundle.add(File(HAPROXY_CFG, haproxy_cfg(spec, bind).encode()))
    bundle.add(File(HAPROXY_CA, material.trust(openssl_anchor(spec))))
    bundle.add(File(HAPROXY_CRT, material.cert("healthcheck") + material.key("healthcheck"), SECRET))
    # socat: `up` and `verify` read HAProxy's stats socket with it (deploy/lbstats.py).
    bundle.packages += ["haproxy", "socat"]
    bundle.units.append(
        # Reloaded, not restarted: HAProxy's master keeps the listening socket while new
        # workers read the new configuration and certificates (Debian's unit: -Ws, USR2).
        Unit("haproxy.service", Phase.load_balancer, reload_on=(HAPROXY_CFG, HAPROXY_CA, HAPROXY_CRT))
    )


def keepalived_conf(spec: ClusterSpec, node: Node, material: Material) -> str:
    controllers = spec.controllers
    index = [n.name for n in controllers].index(node.name)
    # Priorities 150, 140, ...: the spread (10) is smaller than the check weight, so a
    # failing check on the holder always lets a healthy peer take over.
    weight = 10 * len(controllers) + 10
    # VRRP PASS authentication is sent in clear: a guard against accidents (another VRRP
    # group on the segment), not attackers. So it is a secret of its own (cluster_secrets.py),
    # never derived from one that matters, like the encryption key.
    if not material.vrrp_password:
        raise ValueError("keepalived needs material.vrrp_password (load_material reads it)")
    return template(
        "keepalived.conf.j2",
        node=node.name,
        vip=spec.load_balancer.vip,
        prefix=spec.node_subnet.prefixlen,
        check_script=CHECK_SCRIPT,
        weight=weight,
        instance=f"{spec.name.upper().replace('-', '_')}_API",
        interface=spec.load_balancer.interface,
        router_id=spec.load_balancer.virtual_router_id,
        priority=150 - 10 * index,
        auth_pass=material.vrrp_password,
        address=node.address,
        peers=[str(n.address) for n in controllers if n.name != node.name],
    )


def check_script(spec: ClusterSpec) -> str:
    return (
        "#!/bin/sh\n" + header() +
        "# Healthy when the local apiserver answers /readyz to an authenticated request.\n"
        # The same anchor as HAProxy's (a twin in the root layout). curl would also take the
        # intermediate itself: it accepts partial chains by default since 7.68
        # (CURLSSLOPT_NO_PARTIALCHAIN turns that off; bookworm has 7.88), but the twin works
        # with any curl.
        "exec " + shlex.join(["/usr/bin/curl", "--silent", "--fail", "--max-time", "2", "--cacert", HAPROXY_CA,
                              "--cert", HAPROXY_CRT, f"https://127.0.0.1:{ports.port('kube-apiserver')}/readyz", "-o", "/dev/null"])
        + "\n"
    )


def render_lb(spec: ClusterSpec, node: Node, material: Material, bundle: Bundle) -> None:
    mode = spec.load_balancer.mode
    if mode is LoadBalancerMode.haproxy:
        _haproxy(spec, material, bundle, bind="*")
    elif mode is LoadBalancerMode.keepalived:
        _haproxy(spec, material, bundle, bind="*")
        bundle.add(File(KEEPALIVED_CONF, keepalived_conf(spec, node, material).encode(), SECRET))
        bundle.add(File(CHECK_SCRIPT, check_script(spec).encode(), 0o700))
        bundle.packages += ["keepalived", "curl"]
        bundle.units.append(
            # SIGHUP re-reads the configuration without giving up the VIP.
            Unit("keepalived.service", Phase.load_balancer, reload_on=(KEEPALIVED_CONF, CHECK_SCRIPT))
        )
