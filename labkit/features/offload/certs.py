"""The receivers' certificate: one self-signed ECDSA P-256 certificate per lab, made at
`up` next to the kernel. Its key is 0600 in the lab's secret area, removed at `down`.
ECDSA because the TLS 1.2 suites labkit offers are ECDHE-ECDSA (keys made in
milliseconds, even under emulation)."""

from __future__ import annotations

import datetime
import os

from labkit.base.files import write_private
from labkit.lab.state import secret_path


def paths(lab: str) -> tuple[str, str]:
    """(certificate, key) files of a lab."""
    return secret_path(lab, "offload-cert.pem"), secret_path(lab, "offload-key.pem")


def make(lab: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = paths(lab)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"labkit-offload-{lab}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .sign(key, hashes.SHA256()))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def remove(lab: str) -> None:
    for path in paths(lab):
        if os.path.lexists(path):
            os.unlink(path)
