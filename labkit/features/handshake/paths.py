"""Where a lab's handshake files live, next to its kernel.

Files (daemon configs, certificates, keys, key logs, event logs, status, NVMe backing
stores) sit in the lab's secret directory as `<lab>.<what>`, created 0600, and `down`
removes them with the lab's record. Directories (NFS export and mount points) cannot live
there, so they go under WORK_DIR/<lab>, which the feature's teardown removes.
"""

from __future__ import annotations

import os

from labkit.lab.state import secret_path

WORK_DIR = "/run/labkit/handshake"


def daemon_config(lab: str, node: str) -> str:
    return secret_path(lab, f"handshake-{node}.json")


def events(lab: str, node: str) -> str:
    return secret_path(lab, f"handshake-{node}.events")


def status(lab: str, node: str) -> str:
    return secret_path(lab, f"handshake-{node}.status")


def log(lab: str, node: str) -> str:
    return secret_path(lab, f"handshake-{node}.log")


def keylog(lab: str, node: str) -> str:
    return secret_path(lab, f"handshake-{node}.keylog")


def ca(lab: str) -> str:
    return secret_path(lab, "tls-ca.pem")


def cert(lab: str, node: str) -> str:
    return secret_path(lab, f"tls-{node}.crt")


def key(lab: str, node: str) -> str:
    return secret_path(lab, f"tls-{node}.key")


def nvme_backing(lab: str, node: str) -> str:
    return secret_path(lab, f"nvme-{node}.img")


def work(lab: str, *parts: str) -> str:
    return os.path.join(WORK_DIR, lab, *parts)
