"""The lab's own certificate authority and the certificates it issues to nodes.

Made with `cryptography` at `up` (ECDSA P-256, valid from an hour ago for 30 days), one
CA per lab; every private key is written 0600 under the lab's secret path, which `down`
removes. A server certificate names the node and every address it has (SAN DNS + IP),
so a client that checks the peer name the kernel hands over (an IP address for NFS)
finds it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY_DAYS = 30


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM (the key redacted in repr)."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"Issued({len(self.cert_pem)} bytes of certificate, key redacted)"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _window() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=VALIDITY_DAYS)


def make_ca(lab: str) -> Issued:
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labkit"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"labkit lab {lab} CA")])
    start, end = _window()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem(key))


def issue(ca: Issued, node: str, addresses: list[str], lab: str) -> Issued:
    """A certificate for a node, usable as TLS server and client (SAN: node name, every
    address)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, None)
    key = _key()
    sans: list[x509.GeneralName] = [x509.DNSName(node)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    start, end = _window()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labkit"),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, lab),
                                     x509.NameAttribute(NameOID.COMMON_NAME, node)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem(key))
