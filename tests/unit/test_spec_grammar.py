"""Every free-text field of the spec has its real grammar (issue 11, item 4): what is outside
it is refused by `validate`, naming the field."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from hardway.errors import SpecError
from hardway.spec import model
from tests.specs import parse_data, preset_data

INJECTION = "cluster.local \\\n --authorization-mode=AlwaysAllow"

# field path -> (valid values, invalid values)
GRAMMAR = {
    ("network", "clusterDomain"): (
        ["cluster.local", "corp.internal", "a", "k8s-1.example.com", ".".join(["a" * 63] * 3)],
        [INJECTION, "", "cluster.local.", "Cluster.Local", "-a.b", "a..b", "a_b.local", "a" * 64 + ".b",
         ".".join(["a" * 63] * 4) + ".b", "x\ny", "$(id).local"],
    ),
    ("artifacts", "versions", "pauseImage"): (
        ["registry.k8s.io/pause:3.2", "pause", "localhost:5000/team/pause:v1.0_x", "[::1]:5000/pause",
         "docker.io/library/busybox@sha256:" + "a" * 64, "quay.io/a__b/c-d.e:latest"],
        ['registry.k8s.io/pause:3.2"\nx = "y', "", "Registry.k8s.io/Pause", "pause:", "pause:-x",
         "a//b", "pause@sha256:short", "pause:" + "t" * 129, "$(id)", "pause latest", "/pause"],
    ),
    ("kubelet", "resolvConf"): (
        ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf", "/"],
        ["etc/resolv.conf", "", "/etc/../shadow", "/etc/./x", "/etc/", "//etc", "/etc/resolv conf",
         "/etc/$(id)", "/etc/x\ny"],
    ),
    ("kubelet", "cgroupRoot"): (
        ["/", "/kubepods.slice", "/hardway-lab/{node}"],
        ["kubepods", "/a b", "/{name}", "/a/../b", "/x\n"],
    ),
    ("ssh", "user"): (
        ["root", "debian", "_svc", "user.name-1"],
        ["", "-root", "1abc", "a b", "root;id", "u" * 33, "x\ny"],
    ),
    ("ssh", "key"): (
        ["~/.ssh/id_ed25519", "/home/me/keys/lab key", "keys/id"],
        ["", "key\n--", "a\x00b", "tab\there"],
    ),
    ("artifacts", "mirror"): (
        ["http://127.0.0.1:8080", "https://mirror.example/k8s/", "file:///srv/mirror", "/srv/mirror",
         "../mirror"],
        ["", "ftp://example.org", "http://", "http://a b/", "/srv/x\ny"],
    ),
    ("artifacts", "images", 0): (
        ["pause-3.2", "web-1.0", "/srv/images/pause-3.2.tar", "images/my_app.v1.tar", "~/x.tar"],
        ["images/$(touch /tmp/pwned).tar", "", "a b", "/srv/.tar", "/srv/-x.tar", "x\ny", "/srv/a;b.tar"],
    ),
}


def _set(data: dict, path: tuple, value) -> None:
    if path == ("artifacts", "images", 0):
        data["artifacts"]["images"] = [value]
        return
    *head, last = path
    for part in head:
        data = data.setdefault(part, {})
    data[last] = value


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int)) + ("[0]" if isinstance(path[-1], int) else "")


CASES = [(path, v, True) for path, (good, _) in GRAMMAR.items() for v in good] + \
        [(path, v, False) for path, (_, bad) in GRAMMAR.items() for v in bad]


@pytest.mark.parametrize("path, value, ok", CASES, ids=[f"{p[-1]}-{ok}-{i}" for i, (p, _v, ok) in enumerate(CASES)])
def test_free_text_field_grammar(path, value, ok):
    d = preset_data()
    _set(d, path, value)
    if ok:
        parse_data(d)
        return
    with pytest.raises(SpecError) as info:
        parse_data(d)
    assert any(_dotted(path) + ":" in p for p in info.value.problems), info.value.problems


def test_every_str_field_of_the_spec_has_a_grammar():
    """A plain `str` field (no validator, no pattern, no Literal) is free text nobody checks."""
    loose = []

    def walk(cls: type[BaseModel], where: str) -> None:
        for name, f in cls.model_fields.items():
            for arg in (f.annotation, *typing.get_args(f.annotation)):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg, f"{where}.{name}")
            plain = f.annotation in (str, str | None, list[str])
            if plain and not f.metadata:
                loose.append(f"{where}.{name}")

    walk(model.ClusterSpec, "spec")
    assert loose == [], loose


def test_image_entries_that_would_share_a_file_on_the_nodes():
    d = preset_data()
    d["artifacts"]["images"] = ["/a/pause.tar", "/b/pause.tar"]
    with pytest.raises(SpecError) as info:
        parse_data(d)
    assert any("artifacts.images[1]" in p and "artifacts.images[0]" in p for p in info.value.problems)


@pytest.mark.parametrize("bad", ["worker-0\n", "worker-0\n--x"])
def test_a_trailing_newline_is_not_part_of_a_dns_label(bad):
    d = preset_data()
    d["nodes"][1]["name"] = bad
    with pytest.raises(SpecError) as info:
        parse_data(d)
    assert any("nodes[1].name:" in p and "DNS-1123" in p for p in info.value.problems)
