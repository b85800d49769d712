"""HAProxy's own view of the apiservers (deploy/lbstats.py), and what `up` and `verify` make of it.

The samples in tests/data/haproxy/ are `show stat` answers recorded from Debian bookworm's
HAProxy 2.6.12 running hardway's rendered haproxy.cfg (level user socket) in front of four
test backends (tests/integration/test_haproxy.py runs the same set-up): controller-0 a good
apiserver, and by sample:
  show-stat-starting.csv   right after start: controller-0 checked (UP, L7OK), the others
                           "UP 1/2" with INI (not checked yet; one with "* INI", in progress)
  show-stat-all-up.csv     every server UP, L7OK (controller-1's check in progress: "* L7OK")
  show-stat-down.csv       controller-1 serves an etcd-domain certificate (L6RSP, SSL handshake
                           failure), controller-2 answers 500 (L7STS), nothing on controller-3
                           (L4CON, Connection refused)
  show-stat-timeout.csv    controller-3 accepts TCP and never speaks TLS (L6TOUT, in progress)
  show-stat-intermediate-anchor.csv  the root layout's defect: HAProxy given the intermediate
                           `ca` as ca-file holds the good controller-0 DOWN (L6RSP)
Rows edited for a case (`edited`) start from these and change named columns only.
"""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from hardway.clusterdir import ClusterDir
from hardway.deploy import lbstats
from hardway.deploy import up as deploy_up
from hardway.deploy.health import wait_for
from hardway.deploy.transport import Result
from hardway.errors import OperationError
from hardway.material import ensure_material
from hardway.render.lb import HAPROXY_TIMING, haproxy_cfg
from hardway.verify import health as vh
from tests.specs import make_spec

DATA = Path(__file__).parent.parent / "data" / "haproxy"
SERVERS = [f"controller-{i}" for i in range(4)]


def sample(name: str) -> str:
    return (DATA / f"show-stat-{name}.csv").read_text()


def edited(text: str, server: str, **columns: str) -> str:
    """`text` with the named columns of `server`'s row replaced."""
    lines = text.splitlines()
    header = lines[0][2:].split(",")
    out = [lines[0]]
    for row in csv.reader(lines[1:]):
        if row and row[1] == server:
            for key, value in columns.items():
                row[header.index(key)] = value
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(row)
        out.append(buf.getvalue())
    return "\n".join(out) + "\n"


def test_the_samples_are_haproxy_2_6_show_stat_with_the_columns_we_read():
    header = sample("down").splitlines()[0]
    assert header.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,")  # 9.1 CSV format, static order
    for column in ("status", "check_status", "check_code", "check_desc", "last_chk", "lastchg"):
        assert f",{column}," in header


def test_every_server_up_with_a_passing_check():
    states = lbstats.parse_show_stat(sample("all-up"))
    assert [s.server for s in states] == SERVERS  # FRONTEND and BACKEND lines are not servers
    assert states[1].check_status == "L7OK"  # "* L7OK": a check running now, the last one passed
    assert lbstats.judge(states, SERVERS) == {s: "" for s in SERVERS}
    assert lbstats.view_from("lb-0", sample("all-up"), SERVERS).ok


def test_a_server_not_checked_yet_is_not_up():
    """HAProxy counts a server UP until its first check fails: `up` must not."""
    verdict = lbstats.judge(lbstats.parse_show_stat(sample("starting")), SERVERS)
    assert verdict["controller-0"] == ""
    for name in SERVERS[1:]:
        assert verdict[name] == f"{name} UP 1/2: INI (Initializing)"


def test_each_down_server_carries_haproxys_reason():
    verdict = lbstats.judge(lbstats.parse_show_stat(sample("down")), SERVERS)
    assert verdict["controller-0"] == ""
    assert verdict["controller-1"].startswith(
        "controller-1 DOWN: L6RSP (Layer6 invalid response, SSL handshake failure), for ")
    assert verdict["controller-2"].startswith(
        "controller-2 DOWN: L7STS (Layer7 wrong status, Internal Server Error (code 500)), for ")
    assert verdict["controller-3"].startswith(
        "controller-3 DOWN: L4CON (Layer4 connection problem, Connection refused), for ")
    timeout = lbstats.judge(lbstats.parse_show_stat(sample("timeout")), SERVERS)
    assert timeout["controller-3"] == "controller-3 DOWN: L6TOUT (Layer6 timeout), for 4 s"
    assert not any(timeout[n] for n in SERVERS[:3])


def test_a_server_missing_from_the_backend_is_named():
    verdict = lbstats.judge(lbstats.parse_show_stat(sample("all-up")), ["controller-0", "controller-9"])
    assert verdict == {"controller-0": "", "controller-9": "controller-9: not a server of HAProxy's backend kube-apiserver"}


@pytest.mark.parametrize("text", ["", "Unknown command. Please enter one of the following commands only :\n",
                                  "# pxname,svname,qcur\nkube-apiserver,controller-0,0\n"])
def test_what_is_not_show_stat_is_an_error_not_a_verdict(text):
    view = lbstats.view_from("lb-0", text, SERVERS)
    assert not view.ok and view.error.startswith("HAProxy's stats: ") and view.problems == [view.error]


def test_only_a_lasting_tls_failure_is_hopeless():
    assert lbstats.view_from("lb-0", sample("down"), SERVERS).hopeless == ()  # just went DOWN
    old = sample("down")
    for name in SERVERS[1:]:
        old = edited(old, name, lastchg=str(lbstats.TLS_HOPELESS_S))
    # TLS failures do not heal; a 500 or a refused connection (an apiserver starting) may
    assert lbstats.view_from("lb-0", old, SERVERS).hopeless == ("controller-1",)


class StatsHost:
    """A node whose `show stat` answers come from a list (the last one repeats)."""

    def __init__(self, node: str, answers: list[str | Result | Exception]) -> None:
        self.node, self.target, self.answers, self.scripts = node, "fake", list(answers), []

    async def run(self, script: str, input=None, timeout=None) -> Result:
        self.scripts.append(script)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, Result) else Result(0, answer.encode(), b"")

    async def close(self) -> None:
        pass


def test_the_stats_are_read_with_socat_from_the_rendered_socket():
    spec = make_spec("ha")
    cfg = haproxy_cfg(spec, "*")
    # root only; admin level: `up` drains an apiserver there before restarting it (roll.py)
    assert "    stats socket /run/haproxy/stats.sock mode 600 level admin\n" in cfg
    assert "stats enable" not in cfg and "stats uri" not in cfg  # no HTTP stats listener
    assert "backend kube-apiserver\n" in cfg
    host = StatsHost("lb-0", [sample("all-up")])
    view = asyncio.run(lbstats.backend_view(host, SERVERS))
    assert view.ok and host.scripts == ["echo 'show stat' | socat -t 5 stdio UNIX-CONNECT:/run/haproxy/stats.sock"]


def test_a_server_state_is_set_with_one_quoted_command_and_refused_states_say_so():
    assert lbstats.set_state_command("controller-1", "drain") == (
        "echo 'set server kube-apiserver/controller-1 state drain' | socat -t 5 stdio "
        "UNIX-CONNECT:/run/haproxy/stats.sock")
    with pytest.raises(ValueError, match="one of ready, drain, maint"):
        lbstats.set_state_command("controller-1", "up; reboot")
    # HAProxy answers an accepted `set server` with nothing; anything else is its refusal
    host = StatsHost("lb-0", ["Permission denied\n"])
    with pytest.raises(OperationError, match="lb-0: HAProxy did not set kube-apiserver/controller-1 to drain"):
        asyncio.run(lbstats.set_server_state(host, "controller-1", "drain"))


def test_a_host_that_cannot_answer_gives_an_error_view():
    failed = Result(1, b"", b"2026/11/28 23:01:02 socat[812] E connect(5, AF=1 \"/run/haproxy/stats.sock\", 25): "
                            b"No such file or directory\n")
    view = asyncio.run(lbstats.backend_view(StatsHost("lb-0", [failed]), SERVERS))
    assert not view.ok and "/run/haproxy/stats.sock (exit 1: " in view.error and "No such file" in view.error
    assert "haproxy.service running" in view.error
    view = asyncio.run(lbstats.backend_view(
        StatsHost("lb-0", [OperationError("lb-0 (root@10.240.0.30:22): command timed out after 10 s")]), SERVERS))
    assert view.error == "lb-0 (root@10.240.0.30:22): command timed out after 10 s"


def _ms(value: str) -> int:
    return int(value[:-2]) if value.endswith("ms") else int(value[:-1]) * 1000


@pytest.mark.parametrize("preset", ["ha", "ha-vip"])
def test_haproxy_gives_up_on_a_dead_apiserver_within_seconds(preset):
    """Read from the rendered haproxy.cfg itself: a connection to a dead apiserver is retried on
    another within 2 s, and a dead apiserver is DOWN within ~3 s (the old config: 5 s connect
    timeout, no redispatch, inter 2s fall 3: clients sent to a stopped controller for ~8 s)."""
    cfg = haproxy_cfg(make_spec(preset), "*")
    directives = [ln.split() for ln in cfg.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    value = {d[0] + (" " + d[1] if d[0] in ("timeout", "option") else ""): d for d in directives}
    connect = _ms(value["timeout connect"][2])
    assert connect <= 2000
    assert int(value["retries"][1]) >= 2 and value["option redispatch"][2:] == ["1"]  # every retry elsewhere
    server = value["default-server"]
    words = dict(zip(server[1::2], server[2::2], strict=False))
    inter, fastinter, fall = _ms(words["inter"]), _ms(words["fastinter"]), int(words["fall"])
    check_connect = min(connect, inter)  # HAProxy: a check's connect timeout (TLS handshake included)
    worst_down = inter + check_connect + (fall - 1) * (fastinter + check_connect)
    assert fall >= 2 and worst_down <= 3500, worst_down  # one slow check is no outage; a dead server soon is
    assert worst_down == HAPROXY_TIMING.down_ms  # what the config's comment says
    assert " on-marked-down shutdown-sessions " in " ".join(server) + " "


# --- up: the load-balancer phase waits for HAProxy's own view -------------------------------------------------


def lb_session(spec, hosts: dict[str, StatsHost], touched: tuple[str, ...] = ()):
    plans = {"lb-0": SimpleNamespace(starts=list(touched), restarts=[])}
    return SimpleNamespace(p=SimpleNamespace(spec=spec), t=hosts, opts=deploy_up.Options(), plans=plans,
                           plans_touch=lambda unit: unit in touched)


def four_controllers(d):
    d["nodes"].insert(3, {"name": "controller-3", "address": "10.240.0.13", "roles": ["controller"]})


def test_the_lb_wait_does_not_pass_on_an_answer_while_haproxy_holds_backends_down(monkeypatch):
    """The defect: `up` said "the API through the load balancer: ok (0.6 s)" (any one answer)
    while HAProxy had not checked, or held DOWN, the other apiservers."""
    spec = make_spec("ha", edit=four_controllers)
    monkeypatch.setattr(deploy_up, "apiserver_ready", lambda *_a, **_k: (True, "HTTP 200: ok"))
    host = StatsHost("lb-0", [sample("starting"), sample("down")])
    probe = deploy_up._lb_probe(lb_session(spec, {"lb-0": host}), ["lb-0"], None)
    ok, detail = asyncio.run(probe())
    assert not ok and "lb-0: controller-1 UP 1/2: INI (Initializing)" in detail
    ok, detail = asyncio.run(probe())
    assert not ok and "lb-0: controller-1 DOWN: L6RSP (Layer6 invalid response, SSL handshake failure)" in detail
    assert "controller-3 DOWN: L4CON (Layer4 connection problem, Connection refused)" in detail
    with pytest.raises(TimeoutError, match=r"L7STS \(Layer7 wrong status, Internal Server Error \(code 500\)\)"):
        asyncio.run(wait_for("lb", probe, 0.3, lambda _m: None, interval=0.05))


def test_the_lb_wait_passes_when_every_backend_is_up_and_the_api_answers(monkeypatch):
    spec = make_spec("ha", edit=four_controllers)
    answers = iter([(False, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol")])
    monkeypatch.setattr(deploy_up, "apiserver_ready", lambda *_a, **_k: next(answers, (True, "HTTP 200: ok")))
    s = lb_session(spec, {"lb-0": StatsHost("lb-0", [sample("all-up")])}, touched=("haproxy.service",))
    probe = deploy_up._lb_probe(s, ["lb-0"], None)
    ok, detail = asyncio.run(probe())
    assert not ok and detail.startswith("the API at https://") and "UNEXPECTED_EOF" in detail
    assert asyncio.run(probe()) == (True, "")
    # A restarted HAProxy counts a server UP after one good check: `up` holds for `rise` checks.
    assert deploy_up._lb_settle(s) == HAPROXY_TIMING.rise_s == 2.0
    assert deploy_up._lb_settle(lb_session(spec, {})) == 0


def test_the_lb_wait_ends_at_once_on_a_lasting_tls_failure(monkeypatch):
    """The root layout before the twin: HAProxy verified each apiserver against the intermediate
    and held every one DOWN; `up` sat out its whole timeout. Now it stops and says why."""
    spec = make_spec("ha", edit=four_controllers)
    monkeypatch.setattr(deploy_up, "apiserver_ready", lambda *_a, **_k: (True, "HTTP 200: ok"))
    text = edited(sample("intermediate-anchor"), "controller-0", lastchg="31")
    probe = deploy_up._lb_probe(lb_session(spec, {"lb-0": StatsHost("lb-0", [text])}), ["lb-0"], None)
    with pytest.raises(deploy_up.PhaseFailed) as e:
        asyncio.run(probe())
    assert "lb-0: controller-0 DOWN: L6RSP (Layer6 invalid response, SSL handshake failure), for 31 s" in str(e.value)
    assert "/etc/haproxy/kubernetes-ca.crt" in str(e.value) and "hardway pki check" in str(e.value)


# --- verify: degraded (a backend DOWN, with HAProxy's reason), not broken -------------------------------------


def test_the_probe_through_the_lb_is_retried_before_the_api_is_called_unreachable(monkeypatch):
    spec = make_spec("ha")
    monkeypatch.setattr(vh, "LB_PAUSE", 0.01)
    answers = iter([(False, "_ssl.c:989: The handshake operation timed out"), (True, "HTTP 200: ok")])
    monkeypatch.setattr(vh, "apiserver_ready", lambda *_a, **_k: next(answers))
    assert vh.api_through_lb(spec, None) == (True, "")
    tries = []
    monkeypatch.setattr(vh, "LB_PATIENCE", 0.2)
    monkeypatch.setattr(vh, "apiserver_ready", lambda *_a, **_k: tries.append(1) or (False, "[Errno 111] Connection refused"))
    ok, detail = vh.api_through_lb(spec, None)
    assert not ok and detail.endswith("(last seen: [Errno 111] Connection refused)") and len(tries) > 2


def test_verify_with_a_controller_gone_is_degraded_and_names_haproxys_reason(monkeypatch, tmp_path):
    """`lab stop controller-0` on `ha`: its etcd, apiserver and SSH are gone; the first
    connection through the LB went to it and timed out; HAProxy holds it DOWN (Layer4 timeout).
    verify said broken (exit 1) on that one timed-out connection; it is degraded (exit 3)."""
    spec = make_spec("ha")
    cd = ClusterDir(tmp_path)
    (tmp_path / "cluster.yaml").write_text("")  # read by the stubbed load_spec below
    ensure_material(cd, spec)
    monkeypatch.setattr(vh, "load_spec", lambda _p: SimpleNamespace(spec=spec))
    dead = "10.240.0.10"
    monkeypatch.setattr(vh, "etcd_health", lambda h, _i: (h != dead, "" if h != dead else "timed out"))
    through_lb = iter([(False, "_ssl.c:989: The handshake operation timed out")])

    def ready(host, port, _ident, timeout=3):
        if host == str(spec.api_host) and port == spec.api_port:
            return next(through_lb, (True, "HTTP 200: ok"))
        return (host != dead, "" if host != dead else "timed out")
    monkeypatch.setattr(vh, "apiserver_ready", ready)
    monkeypatch.setattr(vh, "LB_PAUSE", 0.01)
    three = [f"controller-{i}" for i in range(3)]
    lb_view = edited(sample("all-up"), "controller-0", status="DOWN", check_status="L4TOUT", check_code="",
                     check_desc="Layer4 timeout", last_chk="", lastchg="4")
    lb_view = "\n".join(ln for ln in lb_view.splitlines() if ",controller-3," not in ln) + "\n"

    async def connect_all(_spec, _cd, names, _opts, _progress=None):
        (name,) = names
        if name == "controller-0":
            raise OperationError("controller-0 (root@10.240.0.10:22): cannot connect over SSH: timed out")
        return {name: StatsHost(name, [lb_view])}

    async def unit_states(_t, units):
        return {u: ("active", 0) for u in units}
    monkeypatch.setattr(vh, "connect_all", connect_all)
    monkeypatch.setattr(vh, "unit_states", unit_states)
    monkeypatch.setattr(vh.Api, "nodes", lambda _self: {"worker-0": True, "worker-1": True})
    report = vh.verify(tmp_path)
    assert report.status is vh.Status.degraded and report.status.exit_code == 3, report.reasons
    failed = {c.name: c.detail for c in report.failed}
    assert "API through the load balancer (https://10.240.0.30:6443)" not in failed
    assert failed["lb-0: HAProxy backend controller-0"] == "controller-0 DOWN: L4TOUT (Layer4 timeout), for 4 s"
    assert {f"lb-0: HAProxy backend {n}" for n in three[1:]}.isdisjoint(failed)
    assert "etcd member controller-0" in failed and "controller-0: SSH" in failed
