"""Validation knows what later steps need (issue 11, item 3): what passes `validate` can be
issued and served; what cannot is refused up front, naming the field and its line."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from hardway import api
from hardway.errors import SpecError
from hardway.pki import profiles
from hardway.pki.issue import build_certificate, generate_key
from hardway.spec import checks
from hardway.spec.load import parse_spec
from tests.specs import parse_data, preset_data


def problems_of(data) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_data(data)
    assert info.value.exit_code == 2
    return info.value.problems


def limit_in(problem: str) -> int:
    return int(re.search(r"use at most (\d+) characters", problem)[1])


def pki_init(tmp_path: Path, data: dict) -> list[str]:
    """The real `pki init` on `data`: every certificate of the table issued."""
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return api.pki_init(tmp_path).pki.created


def test_a_node_name_too_long_for_its_kubelet_cn_is_refused_with_its_line(tmp_path):
    d = preset_data()
    d["nodes"][1]["name"] = "w" * 53  # CN system:node:<53> = 65 characters
    text = yaml.safe_dump(d, sort_keys=False)
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    (p,) = info.value.problems
    line = int(p.split()[1].rstrip(":"))
    assert p.startswith(f"line {line}: nodes[1].name:") and "w" * 53 in text.splitlines()[line - 1]
    assert "CN 'system:node:" in p and "at most 64" in p and limit_in(p) == 52
    # The limit it names is exact: 52 characters issue the whole PKI.
    d["nodes"][1]["name"] = "w" * 52
    assert "kubelet-" + "w" * 52 in pki_init(tmp_path, d)


def test_a_cluster_name_too_long_for_the_root_ca_or_the_lb_name(tmp_path):
    d = preset_data("ha")
    d["pki"]["layout"] = "root"
    d["name"] = "c" * 63  # a valid DNS label
    got = [p for p in problems_of(d) if p.startswith("line 1: name:")]
    assert len(got) == 2, got
    root = next(p for p in got if "root-ca" in p)
    lb = next(p for p in got if "DNS name" in p)
    assert limit_in(root) == 56 and limit_in(lb) == 59  # <name>-root-ca in 64; <name>-api in a 63-char label
    d["name"] = "c" * 56
    created = pki_init(tmp_path, d)
    assert "root-ca" in created and "apiserver" in created


def test_an_explicit_lb_name_and_a_long_domain_are_bounded_too():
    d = preset_data("ha")
    d["network"]["clusterDomain"] = ".".join(["d" * 63] * 3) + ".example"  # 200: a valid domain
    d["loadBalancer"]["name"] = "api"
    assert parse_data(d)
    d["network"]["clusterDomain"] = ".".join(["d" * 63] * 3) + "." + "e" * 40  # 232 + 23 > 253
    (p,) = problems_of(d)
    assert p.split(": ", 1)[1].startswith("network.clusterDomain:") and "at most 253" in p
    assert limit_in(p) == 230


def test_every_name_the_table_derives_from_the_spec_is_bounded(monkeypatch):
    """The rule reads the certificate table: a row added later is bounded without a new check."""
    real = profiles.certificate_plan

    def with_new_row(spec):
        cn = f"system:new-thing:{spec.name}"
        return [*real(spec), profiles.CertProfile("new", "ca", cn, profiles.Usage.client, "test row",
                                                   origins=(profiles.Origin(cn, ("name",), spec.name),))]

    monkeypatch.setattr(checks, "certificate_plan", with_new_row)
    d = preset_data()
    d["name"] = "n" * 50
    (p,) = problems_of(d)
    assert "name:" in p and "certificate new" in p and limit_in(p) == 64 - len("system:new-thing:")


def test_origins_point_at_the_field_holding_the_value():
    spec = parse_data(preset_data("ha")).spec
    data = spec.model_dump(by_alias=True, mode="json")
    seen = 0
    for p in profiles.certificate_plan(spec):
        for o in p.origins:
            value = data
            for part in o.field:
                value = value[part]
            assert value == o.value and o.value in o.name
            assert o.name in (p.cn, *p.orgs, *p.dns_names)
            seen += 1
    assert seen >= 10


@pytest.mark.parametrize("field", ["caValidityDays", "certValidityDays"])
@pytest.mark.parametrize("days", [0, -1, 10_000_000, 36501])
def test_validity_days_are_bounded(field, days):
    d = preset_data()
    d["pki"][field] = days
    p = next(p for p in problems_of(d) if f"pki.{field}" in p)
    assert "1 to 36500" in p


def test_the_longest_validity_issues(tmp_path):
    d = preset_data("single")
    d["pki"].update(caValidityDays=36500, certValidityDays=36500)
    assert "ca" in pki_init(tmp_path, d)


def test_a_leaf_valid_longer_than_its_ca_is_refused():
    d = preset_data()
    d["pki"].update(caValidityDays=365, certValidityDays=366)
    (p,) = problems_of(d)
    assert "pki.certValidityDays" in p and "outlive" in p
    d["pki"]["certValidityDays"] = 365
    assert parse_data(d)


@pytest.mark.parametrize("cidr, dns", [("10.32.0.0/30", "10.32.0.2"), ("10.32.0.0/29", "10.32.0.2"),
                                       ("10.32.0.0/32", None)])
def test_a_service_cidr_too_small_for_the_apiserver_is_refused(cidr, dns):
    d = preset_data()
    d["network"]["serviceCIDR"] = cidr
    if dns:
        d["network"]["clusterDNS"] = dns
    (p,) = problems_of(d)
    assert "network.serviceCIDR" in p and "at least a /28" in p


def test_the_smallest_service_cidr_is_a_28():
    d = preset_data()
    d["network"]["serviceCIDR"] = "10.32.0.0/28"
    spec = parse_data(d).spec
    assert str(spec.cluster_dns) == "10.32.0.10" and str(spec.kubernetes_service_ip) == "10.32.0.1"


def test_a_leaf_issued_late_in_its_cas_life_ends_with_the_ca():
    """Within the spec's bounds a leaf can still outlive its CA when issued later (a reissue
    in the CA's last year): its end is the CA's."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, leaf_key = generate_key("ecdsa-p256"), generate_key("ecdsa-p256")
    ca = build_certificate(profiles.CertProfile("ca", None, "kubernetes-ca", profiles.Usage.ca, ""), ca_key, None, 10, now)
    leaf = build_certificate(profiles.CertProfile("admin", "ca", "admin", profiles.Usage.client, ""),
                             leaf_key, (ca, ca_key), 365, now + dt.timedelta(days=5))
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc
    short = build_certificate(profiles.CertProfile("admin", "ca", "admin", profiles.Usage.client, ""),
                              leaf_key, (ca, ca_key), 1, now)
    assert short.not_valid_after_utc < ca.not_valid_after_utc
