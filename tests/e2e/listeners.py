"""The listener check on a live lab cluster: `ss` on every node compared with hardway's ports
table (hardway.ports.check_listeners), and proof that each `tls-client-auth` port refuses a
client without a certificate (a failed handshake, or HTTP 401).

    problems = listener_problems(cluster)   # a LabCluster (tests/e2e/cluster_fixture.py)
"""

from __future__ import annotations

import socket
import ssl

from hardway import ports
from hardway.ports import Access

SS = "ss -ltnupH"  # TCP and UDP listeners, numeric, with their processes, no header


def refusal(host: str, port: int, path: str, timeout: float = 5) -> tuple[bool, str]:
    """(refused, how): a TLS client without a certificate asks `host:port` for `path`.
    Refused means the handshake failed, the server closed without answering, or it answered
    401; any other answer means the port serves a client it cannot name."""
    ctx = ssl.create_default_context()
    # Who the server is does not matter here, only whether it lets an unnamed client in.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return False, f"cannot connect: {e}"
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        return True, f"TLS refused: {e}"
    finally:
        raw.close()
    if not data:
        return True, "closed without an answer"
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return status.split()[1:2] == ["401"], status


def listener_problems(cluster, log=None) -> list[str]:
    """Every problem of every node of a running lab cluster: the ports table's verdict on its
    listeners, and each tls-client-auth port that lets in a client without a certificate."""
    problems = []
    for node in cluster.spec.nodes:
        out = cluster.ok(node.name, SS)
        if log:
            log(f"{node.name}: {SS}\n{out}")
        problems += ports.check_listeners(cluster.spec, node, out)
        for e in ports.node_ports(cluster.spec, node):
            if e.row.access is not Access.tls_client_auth or e.ports is None:
                continue
            refused, how = refusal(str(node.address), e.ports[0], e.row.probe or "/")
            if log:
                log(f"{node.name}: {e.row.key} {node.address}:{e.ports[0]}{e.row.probe} "
                    f"without a client certificate: {how}")
            if not refused:
                problems.append(f"{node.name}: {e.row.key} on {node.address}:{e.ports[0]} answered "
                                f"{e.row.probe} without a client certificate: {how}")
    return problems
