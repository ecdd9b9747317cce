"""TIPC key files: never created at a user's path, refused when readable by others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labkit.errors import UsageError
from labkit.features.tipc import keys


def test_missing_key_file_is_a_clear_error_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "tipc.key"
    with pytest.raises(UsageError, match="does not exist") as info:
        keys.for_lab("t", str(path), 128)
    assert "openssl rand -hex 20" in info.value.render()
    assert not path.exists()


def test_key_file_must_be_private_and_match_key_bits(tmp_path: Path) -> None:
    path = tmp_path / "tipc.key"
    path.write_text(os.urandom(20).hex())
    path.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        keys.for_lab("t", str(path), 128)
    path.chmod(0o600)
    assert len(keys.for_lab("t", str(path), 128)) == 20
    with pytest.raises(UsageError, match="key_bits 256"):
        keys.for_lab("t", str(path), 256)


def test_generated_key_is_0600_not_a_symlink_target(tmp_path: Path, monkeypatch) -> None:
    from labkit.lab import state

    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    target = tmp_path / "elsewhere"
    (tmp_path / "t.tipc.key").symlink_to(target)
    key = keys.for_lab("t", None, 128)
    written = tmp_path / "t.tipc.key"
    assert not written.is_symlink() and not target.exists()
    assert written.stat().st_mode & 0o777 == 0o600
    assert bytes.fromhex(written.read_text().strip()) == key
    assert key.hex() not in repr(key) and key.hex() not in str(key)


def test_numeric_like_node_names_stay_as_written(tmp_path: Path) -> None:
    from labkit.topology import loader

    topo = loader.loads("name: t\nnodes: {01: {}, 02: {}}\nlinks:\n"
                        "  - endpoints: ['01:eth1', '02:eth1']\n", str(tmp_path / "t.yaml"))
    assert set(topo.nodes) == {"01", "02"}
