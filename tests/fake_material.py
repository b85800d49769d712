"""Deterministic stand-in material so rendered bundles can be compared byte for byte."""

from __future__ import annotations

from hardway.cluster_secrets import EncryptionKey
from hardway.material import Material
from hardway.pki.profiles import SERVICE_ACCOUNT, certificate_plan
from hardway.spec.model import ClusterSpec


def fake_material(spec: ClusterSpec) -> Material:
    names = [p.name for p in certificate_plan(spec)]
    certs = {n: f"-----BEGIN CERTIFICATE-----\nfake {n}\n-----END CERTIFICATE-----\n".encode() for n in names}
    keys = {n: f"-----BEGIN PRIVATE KEY-----\nfake {n} key\n-----END PRIVATE KEY-----\n".encode() for n in names}
    keys[SERVICE_ACCOUNT] = b"-----BEGIN PRIVATE KEY-----\nfake sa key\n-----END PRIVATE KEY-----\n"
    sa_pub = b"-----BEGIN PUBLIC KEY-----\nfake sa pub\n-----END PUBLIC KEY-----\n"
    return Material(certs, keys, sa_pub, (EncryptionKey("key1", "ZmFrZS1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcy0hISE="),),
                    "fakeVRRP")
