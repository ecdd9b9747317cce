"""Certificates for TLS pairs: a CA made at `up` for the lab, and a certificate per node
that terminates TLS (the proxy, the upstream server), naming the node's addresses.

Private keys are written 0600 under the lab's state directory (removed at `down`) and
never logged; the CA's key is not kept at all: nothing signs after `up`.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from labkit.base.files import write_private
from labkit.lab import state

VALID_DAYS = 7  # a lab lives for hours; a short life limits a key that leaked anyway


@dataclass(frozen=True)
class NodeCert:
    cert: str
    key: str


def ca_path(lab: str) -> str:
    return state.secret_path(lab, "kproxy-ca.crt")


def node_paths(lab: str, node: str) -> NodeCert:
    return NodeCert(state.secret_path(lab, f"kproxy-{node}.crt"),
                    state.secret_path(lab, f"kproxy-{node}.key"))


def make(lab: str, nodes: dict[str, list[str]]) -> dict[str, NodeCert]:
    """A CA and a certificate per node (name -> its IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"labkit {lab} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    write_private(ca_path(lab), ca.public_bytes(serialization.Encoding.PEM))
    out = {}
    for node, addresses in nodes.items():
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(until)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(ca_key, hashes.SHA256()))
        paths = node_paths(lab, node)
        write_private(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        write_private(paths.key, key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        out[node] = paths
    return out
