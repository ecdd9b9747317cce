"""The TIPC v7 Wireshark plugin and the decrypted copies, judged by tshark and by the kernel.

Captures: tests/fixtures/tipc/*.pcap. v7_master_key / v7_cluster_key were made with keys
that were not kept; v7_known_* were made by capture_v7_known.sh (iproute2's `tipc` in the
debian-6.12 VM) with the fixed test keys stored beside them (NAME.key), so decryption is
checked against what a real kernel encrypted: cluster key, master key with a session key
the kernel made and sent (rekeying), per-node keys, and a udp bearer.

tshark (Debian's 4.0) is the independent judge of what Wireshark users see; each run gets
an empty HOME so a plugin installed on this machine cannot change the verdict.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

from labkit.features.tipc import layers as T
from labkit.features.tipc.wireshark import frames, pcapfile
from labkit.features.tipc.wireshark.plugin import INSTALLED_NAME, plugin_path
from labkit.features.tipc.wireshark.tipc_crypto import Decrypter, TipcKey, load_keys, parse_keys

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tipc"
V7_UNKNOWN_KEY = ("v7_master_key", "v7_cluster_key")
# name: markers of the user messages sent (broadcast-mode multicast) in that capture
V7_KNOWN = {
    "v7_known_cluster": [f"V7CLUSTER-{i:02d}" for i in range(5)],
    "v7_known_master_rekey": [f"V7MASTER-{i:02d}" for i in range(3)]
    + [f"V7SESSION-{i:02d}" for i in range(3)],
    "v7_known_pernode": [f"V7PERNODE-{i:02d}" for i in range(5)],
    "v7_known_udp": [f"V7UDP-{i:02d}" for i in range(3)],
}
V7_ALL = (*V7_UNKNOWN_KEY, *V7_KNOWN)
V2 = ("v2_eth_cluster", "v2_bcast_data", "crossover_lo", "udp_bearer", "inject_ghost")

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(
    TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)")

# The CLI (the wireshark verb comes from the TIPC feature's registry entry).
CLI = [sys.executable, "-m", "labkit.cli.main"]


def pcap(name: str) -> str:
    return str(FIXTURES / f"{name}.pcap")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty HOME: no personal Wireshark plugins or preferences."""
    return str(tmp_path_factory.mktemp("home"))


def tshark(home: str, *args: str, plugin: bool = False) -> str:
    assert TSHARK is not None
    cmd = [TSHARK, "-n"]
    if plugin:
        cmd += ["-X", f"lua_script:{plugin_path()}"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": home}, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def summary(home: str, path: str, plugin: bool = False) -> list[str]:
    return tshark(home, "-r", path, plugin=plugin).splitlines()


def bad_frames(home: str, path: str, plugin: bool = False) -> list[str]:
    """Frames tshark marks malformed or with an expert warning or error."""
    return tshark(home, "-r", path, "-Y",
                  '_ws.malformed || _ws.expert.severity >= "Warning"',
                  plugin=plugin).splitlines()


def key_copy(tmp_path: Path, name: str) -> str:
    """The fixture's key as a user keeps one: mode 0600 (git checks files out 0644)."""
    dst = tmp_path / f"{name}.key"
    shutil.copyfile(FIXTURES / f"{name}.key", dst)
    dst.chmod(0o600)
    return str(dst)


def cli(*args: str, home: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"HOME": home} if home else {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


@functools.cache
def decrypted(name: str, out_dir: str) -> tuple[str, dict[str, object]]:
    """Decrypt a known-key fixture once per test session with the CLI; (copy, report)."""
    out = os.path.join(out_dir, f"{name}.dec.pcap")
    key = key_copy(Path(out_dir), name)
    proc = cli("wireshark", "decrypt", pcap(name), out, "--key-file", key, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def outdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("decrypted"))


# -- the dissector ------------------------------------------------------------------------


@needs_tshark
@pytest.mark.parametrize("name", V7_ALL)
def test_v7_capture_is_malformed_without_the_plugin(home: str, name: str) -> None:
    """The positive control: Wireshark 4.0 alone marks every v7 frame malformed."""
    lines = summary(home, pcap(name))
    assert lines and all("Malformed" in line for line in lines), lines[:3]


@needs_tshark
@pytest.mark.parametrize("name", V7_ALL)
def test_plugin_decodes_every_v7_frame(home: str, name: str) -> None:
    lines = summary(home, pcap(name), plugin=True)
    assert len(lines) == len(rdpcap(pcap(name)))
    assert all(" TIPCv7 " in line and "Encrypted" in line for line in lines), lines[:3]
    assert bad_frames(home, pcap(name), plugin=True) == []


@needs_tshark
@pytest.mark.parametrize("name", V2)
def test_v2_captures_go_to_the_builtin_dissector_unchanged(home: str, name: str) -> None:
    """With the plugin, v2 frames dissect exactly as without it (only the protocol path
    through the plugin differs)."""
    def detail(plugin: bool) -> list[str]:
        out = tshark(home, "-r", pcap(name), "-V", plugin=plugin)
        return [ln for ln in out.splitlines() if "Protocols in frame" not in ln]

    plain = detail(False)
    assert any(ln.startswith("Transparent Inter Process Communication") for ln in plain)
    assert detail(True) == plain
    assert bad_frames(home, pcap(name), plugin=True) == []


FIELDS = ("tipcv7.version", "tipcv7.user", "tipcv7.seqno", "tipcv7.tx_key",
          "tipcv7.destined", "tipcv7.master_key", "tipcv7.prev_node", "tipcv7.node_id",
          "tipcv7.ciphertext_len", "tipcv7.tag")


@needs_tshark
@pytest.mark.parametrize("name", V7_ALL)
def test_header_fields_match_labkits_scapy_layer(home: str, name: str) -> None:
    args = ["-r", pcap(name), "-T", "fields", "-E", "separator=/t"]
    for f in FIELDS:
        args += ["-e", f]
    rows = [ln.split("\t") for ln in tshark(home, *args, plugin=True).splitlines()]
    layers = [f[T.TIPCv7] for f in rdpcap(pcap(name))]
    assert len(rows) == len(layers)
    for row, v7 in zip(rows, layers, strict=True):
        got = dict(zip(FIELDS, row, strict=True))
        want = {
            "tipcv7.version": str(v7.version), "tipcv7.user": str(v7.user),
            "tipcv7.seqno": str(v7.seqno), "tipcv7.tx_key": str(v7.tx_key),
            "tipcv7.destined": str(v7.destined), "tipcv7.master_key": str(v7.master_key),
            "tipcv7.prev_node": "" if v7.user == T.LINK_CONFIG else f"0x{v7.addr:08x}",
            "tipcv7.node_id": v7.node_id.hex() if v7.user == T.LINK_CONFIG else "",
            "tipcv7.ciphertext_len": str(len(v7.ciphertext)),
            "tipcv7.tag": v7.tag.hex(),
        }
        got["tipcv7.node_id"] = got["tipcv7.node_id"].replace(":", "")
        got["tipcv7.tag"] = got["tipcv7.tag"].replace(":", "")
        assert got == want


@needs_tshark
def test_truncated_v7_frame_is_flagged_not_crashing(home: str, tmp_path: Path) -> None:
    """A v7 message too short for header and tag: one expert error, the rest dissected."""
    good = pcapfile.read(pcap("v7_known_cluster"))
    short = pcapfile.Pcap(good.header, good.endian, good.linktype,
                          [pcapfile.Record(r.ts_sec, r.ts_frac, r.data[:14 + 20], 14 + 20)
                           for r in good.records[:1]] + good.records[1:3])
    path = str(tmp_path / "short.pcap")
    pcapfile.write(path, short)
    assert len(bad_frames(home, path, plugin=True)) == 1
    assert "truncated" in summary(home, path, plugin=True)[0]


@needs_tshark
@pytest.mark.parametrize("snaplen", [60, 20, 15])
def test_capture_cut_by_snapshot_length(home: str, tmp_path: Path, snaplen: int) -> None:
    """tcpdump -s N: what was captured is shown, the cut is a note, never a Lua error."""
    cap = pcapfile.read(pcap("v7_known_cluster"))
    for rec in cap.records:
        rec.data = rec.data[:snaplen]  # orig_len keeps the length on the wire
    path = str(tmp_path / "cut.pcap")
    pcapfile.write(path, cap)
    detail = tshark(home, "-r", path, "-V", plugin=True)
    assert "Lua Error" not in detail and "Malformed" not in detail
    notes = [ln for ln in detail.splitlines() if "[Capture cut short: " in ln]
    assert len(notes) == len(cap.records)  # one expert note per frame (all are cut)
    assert bad_frames(home, path, plugin=True) == []


# -- installing ---------------------------------------------------------------------------


def test_path_names_the_shipped_plugin() -> None:
    proc = cli("wireshark", "path")
    assert proc.returncode == 0, proc.stderr
    path = proc.stdout.strip()
    assert path == plugin_path() and path.endswith(".lua") and os.path.isfile(path)


@needs_tshark
def test_install_puts_the_plugin_where_tshark_loads_it(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert "Malformed" in summary(home, pcap("v7_known_cluster"))[0]  # before: not loaded
    proc = cli("wireshark", "install", home=home)
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / ".local/lib/wireshark/plugins" / INSTALLED_NAME
    assert str(target) in proc.stdout and "tshark loads it" in proc.stdout
    assert target.read_bytes() == Path(plugin_path()).read_bytes()
    lines = summary(home, pcap("v7_known_cluster"))  # no -X: found by itself
    assert all(" TIPCv7 " in line for line in lines)
    again = cli("wireshark", "install", "--json", home=home)  # idempotent
    assert again.returncode == 0 and json.loads(again.stdout)["path"] == str(target)


def test_install_dir(tmp_path: Path) -> None:
    proc = cli("wireshark", "install", "--dir", str(tmp_path / "plugins"), "--json")
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "plugins" / INSTALLED_NAME
    assert json.loads(proc.stdout)["path"] == str(target) and target.is_file()
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = cli("wireshark", "install", "--dir", str(blocker))
    assert bad.returncode == 2 and "is a file, not a directory" in bad.stderr
    assert "Traceback" not in bad.stderr


# -- decryption against the kernel's own frames -----------------------------------------


@pytest.mark.parametrize("name", V7_KNOWN)
def test_every_kernel_frame_decrypts(name: str, outdir: str) -> None:
    out, report = decrypted(name, outdir)
    assert report["v7_frames"] == report["frames"] == report["decrypted"] > 0
    assert report["not_decrypted"] == []
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # holds plaintext and keys
    tipc = [f.getlayer(T.TIPC) for f in rdpcap(out)]
    assert all(t is not None and t.version == 2 for t in tipc)
    copy = pcapfile.read(out)
    for rec in copy.records:  # v2 size field = the message, up to the sender's 4-byte padding
        spot = frames.locate(copy.linktype, rec.data)
        assert spot is not None
        size = struct.unpack("!I", rec.data[spot.start:spot.start + 4])[0] & 0x1FFFF
        assert 0 <= (spot.end - spot.start) - size < 4
    blob = Path(out).read_bytes()
    for marker in V7_KNOWN[name]:
        assert marker.encode() in blob
        assert marker.encode() not in Path(pcap(name)).read_bytes()  # was encrypted


def test_session_key_sent_by_the_kernel_is_learned(outdir: str) -> None:
    """Master key + `tipc node set key rekeying now`: the kernel makes a session key and
    sends it under the master key; later frames open only with that key."""
    _, report = decrypted("v7_known_master_rekey", outdir)
    assert report["learned_keys"] == 1
    learned = {k: n for k, n in report["by_key"].items() if "key sent by node" in k}
    assert sum(learned.values()) > 0
    tx_keys = {f[T.TIPCv7].tx_key for f in rdpcap(pcap("v7_known_master_rekey"))}
    assert tx_keys == {0, 1}  # master (0) and the session key's slot (1)


def test_per_node_keys_use_the_destination_in_the_nonce(outdir: str) -> None:
    _, report = decrypted("v7_known_pernode", outdir)
    modes = report["by_mode"]
    assert modes.get("per-node", 0) > 0  # broadcast: no destination
    assert any(m.startswith("per-node to ") for m in modes)  # unicast: salt ^ destination


def test_decrypted_copy_changes_only_the_v7_messages(outdir: str) -> None:
    for name in V7_KNOWN:
        out, _ = decrypted(name, outdir)
        before, after = pcapfile.read(pcap(name)), pcapfile.read(out)
        assert after.header == before.header
        assert len(after.records) == len(before.records)
        for a, b in zip(after.records, before.records, strict=True):
            assert (a.ts_sec, a.ts_frac) == (b.ts_sec, b.ts_frac)
            spot = frames.locate(before.linktype, b.data)
            assert spot is not None
            if spot.udp is None:  # Ethernet: everything before the message is as it was
                assert a.data[:spot.start] == b.data[:spot.start]
                continue
            assert spot.ip is not None  # IPv4: only total length and checksum change
            same = (slice(0, spot.ip + 2), slice(spot.ip + 4, spot.ip + 10),
                    slice(spot.ip + 12, spot.udp + 4))
            for s in same:
                assert a.data[s] == b.data[s]


def test_wrong_key_opens_nothing_and_says_so(tmp_path: Path) -> None:
    """The control for the test above: with another capture's key, not one frame opens,
    exit 1, and the copy is the capture byte for byte."""
    out = tmp_path / "wrong.pcap"
    key = key_copy(tmp_path, "v7_known_udp")
    proc = cli("wireshark", "decrypt", pcap("v7_known_cluster"), str(out), "--key-file", key)
    assert proc.returncode == 1
    assert "Decrypted 0 of 80" in proc.stdout and "did not open" in proc.stderr
    assert out.read_bytes() == Path(pcap("v7_known_cluster")).read_bytes()


def test_unknown_key_captures_stay_encrypted() -> None:
    """The first fixtures' keys were random and not kept: nothing opens them."""
    keys = parse_keys(Path(FIXTURES / "v7_known_cluster.key").read_text(), "k")
    dec = Decrypter(keys.keys)
    for f in rdpcap(pcap("v7_master_key")):
        assert dec.open(bytes(f[T.TIPCv7])) is None


@needs_tshark
@pytest.mark.parametrize("name", V7_KNOWN)
def test_builtin_dissector_reads_the_decrypted_copy(home: str, name: str, outdir: str) -> None:
    out, _ = decrypted(name, outdir)
    lines = summary(home, out)
    assert lines and all(" TIPC " in line for line in lines), lines[:3]
    assert bad_frames(home, out) == []
    if name == "v7_known_udp":
        status = tshark(home, "-o", "ip.check_checksum:TRUE", "-r", out, "-T", "fields",
                        "-e", "ip.checksum.status").split()
        assert status and set(status) == {"1"}  # 1: good


# -- frames and key files -----------------------------------------------------------------


def test_udp6_replacement_has_a_valid_checksum() -> None:
    frame = bytes(Ether() / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=6118, dport=6118)
                  / (b"\xe0" + b"x" * 70))
    spot = frames.locate(frames.LINKTYPE_ETHERNET, frame)
    assert spot is not None and frame[spot.start:spot.end] == b"\xe0" + b"x" * 70
    new = frames.replace(frame, spot, b"\x40hello-v2")
    pkt = Ether(new)
    assert bytes(pkt[UDP].payload) == b"\x40hello-v2" and pkt[IPv6].plen == 8 + 9
    sent = pkt[UDP].chksum
    del pkt[UDP].chksum
    assert Ether(bytes(pkt))[UDP].chksum == sent


def test_locate_behind_vlan_and_in_cooked_captures() -> None:
    msg = b"\xee" + b"m" * 40
    vlan = b"\xff" * 12 + struct.pack("!HHH", 0x8100, 5, 0x88CA) + msg
    spot = frames.locate(frames.LINKTYPE_ETHERNET, vlan)
    assert spot is not None and vlan[spot.start:] == msg
    sll = b"\0" * 14 + struct.pack("!H", 0x88CA) + msg
    spot = frames.locate(frames.LINKTYPE_SLL, sll)
    assert spot is not None and sll[spot.start:] == msg
    assert frames.locate(frames.LINKTYPE_ETHERNET, b"\xff" * 12 + b"\x08\x06" + msg) is None


def test_udp_bearer_on_another_port(tmp_path: Path) -> None:
    """The udp fixture moved to port 7000: found only when --udp-port names it."""
    cap = pcapfile.read(pcap("v7_known_udp"))
    for rec in cap.records:
        spot = frames.locate(cap.linktype, rec.data)
        assert spot is not None and spot.udp is not None
        data = bytearray(rec.data)
        ports = struct.unpack_from("!HH", data, spot.udp)
        struct.pack_into("!HH", data, spot.udp, *(7000 if p == 6118 else p for p in ports))
        rec.data = bytes(data)
    moved = tmp_path / "port7000.pcap"
    pcapfile.write(str(moved), cap)
    key = key_copy(tmp_path, "v7_known_udp")
    out = str(tmp_path / "o.pcap")
    plain = cli("wireshark", "decrypt", str(moved), out, "--key-file", key, "--json")
    assert plain.returncode == 0 and json.loads(plain.stdout)["v7_frames"] == 0
    found = cli("wireshark", "decrypt", str(moved), out, "--key-file", key, "--udp-port",
                "7000", "--json")
    report = json.loads(found.stdout)
    assert found.returncode == 0 and report["decrypted"] == report["frames"] == len(cap.records)


def test_key_file_errors_are_one_paragraph(tmp_path: Path) -> None:
    cases = {
        "open.key": ("00" * 20, 0o644, "readable by others"),
        "hex.key": ("not-hex", 0o600, "not a hex string"),
        "len.key": ("00" * 19, 0o600, "has 19 bytes"),
        "empty.key": ("# nothing\n", 0o600, "holds no key"),
        "ident.key": ("# per-node\nnode/A " + "00" * 20, 0o600,
                      "ident.key:2: invalid TIPC node identity"),
    }
    for fname, (text, mode, expect) in cases.items():
        path = tmp_path / fname
        path.write_text(text)
        path.chmod(mode)
        proc = cli("wireshark", "decrypt", pcap("v7_known_cluster"), str(tmp_path / "o.pcap"),
                   "--key-file", str(path))
        assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.pcap").exists()


def test_reads_the_key_files_labkit_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lab's cluster/master key file and its per-node key file, as labkit writes them."""
    from labkit.features.tipc import keys as lab_keys
    from labkit.lab import state

    monkeypatch.setattr(state, "STATE_DIR", str(tmp_path))
    cluster = lab_keys.for_lab("lab", None, 256)  # generated, kept 0600 with the state
    got = load_keys(state.secret_path("lab", "tipc.key"))
    assert [k.material for k in got.keys] == [bytes(cluster)] and got.identities == []
    nodes = lab_keys.per_node("lab", ["n1", "n2"], 128)
    got = load_keys(state.secret_path("lab", "tipc.keys"))
    assert got.identities == ["n1", "n2"]
    assert [k.material for k in got.keys] == [bytes(nodes["n1"]), bytes(nodes["n2"])]


def test_pcapng_input_names_the_conversion(tmp_path: Path) -> None:
    ng = tmp_path / "c.pcapng"
    ng.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)
    proc = cli("wireshark", "decrypt", str(ng), str(tmp_path / "o.pcap"), "--key-file",
               key_copy(tmp_path, "v7_known_cluster"))
    assert proc.returncode == 2 and "editcap -F pcap" in proc.stderr


def test_key_material_never_printed(tmp_path: Path, outdir: str) -> None:
    key = load_keys(key_copy(tmp_path, "v7_known_master_rekey")).keys[0]
    assert key.material.hex() not in repr(key) and key.material.hex() not in str(key)
    out = tmp_path / "o.pcap"
    for extra in ([], ["--json"]):
        proc = cli("wireshark", "decrypt", pcap("v7_known_master_rekey"), str(out),
                   "--key-file", key_copy(tmp_path, "v7_known_master_rekey"), *extra)
        assert proc.returncode == 0
        assert key.material.hex() not in proc.stdout + proc.stderr
        out.unlink()
    learned = TipcKey(b"\x11" * 20, "x")
    assert "11" * 20 not in repr(learned)
