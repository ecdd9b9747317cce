"""The exercises of labs 04 (kproxy, this machine's kernel), 05 (handshake) and 06
(offload), both in a debian-6.12 VM (`labkit up` places them there): on a freshly built
lab every exercise's check fails (a check that passes before the learner acts grades
nothing), a wrong answer is explained (what was seen, what is still missing: one per lab),
and after `exercise solve` every exercise passes. One lab per test; it goes down at the end.
"""

from __future__ import annotations

import json

import pytest

from labkit.exercises.api import Exercises, Result
from tests.conftest import run_cli
from tests.host.test_exercises_cli import lab_with_exercises

pytestmark = pytest.mark.needs_root


def by_name(result: Result) -> dict[str, object]:
    return {c.name: c for c in result.checks}


def all_fail_first(ex: Exercises, skip: tuple[str, ...] = ()) -> None:
    """Every exercise is "not yet" on the fresh lab, and each says what is missing
    (skip: those this kernel cannot do, tested on their own)."""
    for item in (i for i in ex.items if i.id not in skip):
        got = ex.check(item.id)
        assert got.outcome == "fail", (item.id, got.as_dict())
        assert all(c.missing for c in got.checks if c.outcome == "fail"), got.as_dict()


def solve_all(ex: Exercises, skip: tuple[str, ...] = ()) -> None:
    for item in (i for i in ex.items if i.id not in skip):
        solved = ex.solve(item.id)
        assert solved.ok, solved.as_dict()
        got = ex.check(item.id)
        assert got.passed, (item.id, got.as_dict())
    assert all(s.passed_at is not None and s.solved for s in ex.status() if s.id not in skip)
    rows = ex.report()
    assert {r["exercise"] for r in rows} == {i.id for i in ex.items}


def test_kproxy_exercises(tmp_path_factory: pytest.TempPathFactory) -> None:
    with lab_with_exercises(tmp_path_factory, "kproxy.yaml") as ex:
        assert ex.set.ids() == ["zero-copy", "drop-in-kernel"]
        all_fail_first(ex)
        # A wrong answer: messages through kl, none starting with DROP. What passed is
        # counted, and the check says the drops are what is missing.
        server = ex.lab.node("server").run(
            ["sh", "-c", "setsid sh -c 'sleep 30 | busybox nc -l -p 9105 >/dev/null' "
             "</dev/null >/dev/null 2>&1 & for i in $(seq 50); do ss -Hltn sport = :9105 "
             "| grep -q . && exit 0; sleep 0.1; done; exit 1"], timeout=30)
        assert server.returncode == 0, server.stderr
        sent = ex.lab.node("client").run(
            ["python3", "-c", "import socket, struct, time; "
             "s = socket.create_connection(('198.19.0.2', 9005)); "
             "[s.sendall(struct.pack('>I', 5) + b'hello') for _ in range(12)]; "
             "time.sleep(0.5); s.close()"], timeout=30)
        assert sent.returncode == 0, sent.stderr
        wrong = ex.check("drop-in-kernel")
        checks = by_name(wrong)
        dropped = checks["the BPF verdict dropped 10 DROP messages"]
        passed = checks["it let 10 other messages through"]
        assert wrong.outcome == "fail"
        assert passed.outcome == "pass" and "+12 since" in passed.saw  # control: it counted
        assert dropped.outcome == "fail" and "+0 since" in dropped.saw
        assert dropped.missing == "10 more (it must grow by 10)"
        solve_all(ex)
        copied = by_name(ex.check("zero-copy"))["km's process copied none of it"]
        assert copied.passed and "kproxy:km:copied" in copied.saw


@pytest.mark.vm
def test_handshake_exercises(tmp_path_factory: pytest.TempPathFactory) -> None:
    with lab_with_exercises(tmp_path_factory, "nvme-tls.yaml") as ex:
        assert ex.set.ids() == ["reconnect-tls", "write-through-tls", "key-update"]
        # key-update needs kTLS KeyUpdate, which 6.12 lacks: "could not check" (exit 2),
        # once, naming the kernel and the way to one that has it; never "not yet"
        cannot = ex.check("key-update")
        assert cannot.outcome == "error" and cannot.needs == "kTLS KeyUpdate (debian-7.2)"
        assert len(cannot.checks) == 1, cannot.as_dict()  # one reason, not one per check
        why = cannot.checks[0].saw
        assert "h's kernel (6.12." in why and "--vm debian-7.2" in why, why
        cli = run_cli("exercise", "check", ex.lab.name, "key-update", "--json", timeout=300)
        assert cli.returncode == 2, cli.stdout + cli.stderr
        assert json.loads(cli.stdout)["results"][0]["needs"] == "kTLS KeyUpdate (debian-7.2)"
        all_fail_first(ex, skip=("key-update",))  # control: the lab is checkable
        # A wrong answer: the host reconnected without `tls`. The target requires TLS, so
        # the connect is refused: no new kTLS socket, and no queue left at all.
        name = ex.lab.name
        opts = (f"transport=tcp,traddr=198.18.4.1,trsvcid=4420,"
                f"nqn=nqn.2014-08.org.labkit:{name}.t,hostnqn=nqn.2014-08.org.labkit:{name}.h,"
                "nr_io_queues=1,ctrl_loss_tmo=0")
        res = ex.lab.node("h").run(
            ["sh", "-c", f"nvme disconnect -n nqn.2014-08.org.labkit:{name}.t; "
                         f"echo '{opts}' > /dev/nvme-fabrics"], timeout=120)
        assert res.returncode != 0  # the kernel refused the plaintext connect
        wrong = by_name(ex.check("reconnect-tls"))
        tx = wrong["h's kernel put kTLS on 2 new queues (handshakes done)"]
        assert tx.outcome == "fail" and "+0 since" in tx.saw and tx.missing.startswith("2 more")
        queues = wrong["the queues use kTLS now"]
        assert queues.outcome == "fail" and "0 TCP socket(s) in h on port 4420" in queues.saw
        solve_all(ex, skip=("key-update",))


@pytest.mark.vm
def test_offload_exercises(tmp_path_factory: pytest.TempPathFactory) -> None:
    with lab_with_exercises(tmp_path_factory, "offload.yaml") as ex:
        assert ex.set.ids() == ["resync", "software-ktls"]
        all_fail_first(ex)
        # A wrong answer: the loss put on the server's eth1, not on the NIC's (client's).
        put = ex.lab.node("server").run(
            ["sh", "-c", "tc qdisc replace dev eth1 root netem loss 10% && "
                         "tc qdisc show dev eth1"], timeout=30)
        assert put.returncode == 0 and "netem" in put.stdout, put.stderr  # it is there
        wrong = ex.check("resync")
        assert wrong.outcome == "fail", wrong.as_dict()
        netem = by_name(wrong)["netem loses packets on client:eth1"]
        assert netem.outcome == "fail"
        assert "in client" in netem.saw and "netem" not in netem.saw, netem.saw
        assert netem.missing == "output matching /netem .*loss/"
        ex.lab.node("server").run(["tc", "qdisc", "del", "dev", "eth1", "root"], timeout=30)
        solve_all(ex)
