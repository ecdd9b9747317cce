"""What the CLI prints: whole lines in pipes, help that reads as written, counts that agree,
`--version`, and no verb silently missing."""

from __future__ import annotations

import importlib
import inspect
import io
import os
import pkgutil
import sys
from pathlib import Path

import pytest
import typer

from labkit.cli import main, output
from tests.conftest import ROOT, run_cli

LONG_LINES = """name: t
nodes:
  a-node-with-a-rather-long-name-x: {}
  b: {}
links:
  - endpoints: [a-node-with-a-rather-long-name-x:eth1, b:eth1]
lans:
  lan1:
    endpoints: [a-node-with-a-rather-long-name-x:eth2, b:eth2]
"""


def test_pipes_get_whole_lines(tmp_path) -> None:
    """Before: rich wrapped at 80 columns in pipes and split address lines in two."""
    topo = tmp_path / "t.yaml"
    topo.write_text(LONG_LINES)
    result = run_cli("validate", str(topo))  # stdout is a pipe here
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("2 nodes, 1 link, 1 LAN, 0 checks."), lines[0]
    node_line = next(line for line in lines if "a-node-with" in line)
    assert "eth1=198.19.0.1/30 fd00:1ab:0:8000::1/64" in node_line
    assert "eth2=198.18.0.1/24 fd00:1ab::1/64" in node_line, node_line
    assert len(node_line) > 80, "the control: this line is longer than a default terminal"


def test_pipe_console_never_wraps_or_truncates() -> None:
    buf = io.StringIO()
    console = output.make_console()
    assert not console.is_terminal  # pytest captures stdout: a pipe-like file
    console.file = buf
    console.print("x" * 300)
    output.columns(("NAME", "ADDRESSES"), [("n" * 120, "198.18.0.1/24 " * 10)], out=console)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "x" * 300
    assert lines[2].startswith("n" * 120) and "…" not in buf.getvalue()


def test_terminal_console_still_wraps() -> None:
    """The control: at a terminal rich wraps to the terminal's width, as it should."""
    console = output.make_console(force_terminal=True)
    assert console.is_terminal and not console.soft_wrap


@pytest.mark.parametrize(("count", "word", "text"), [
    (0, "link", "0 links"), (1, "link", "1 link"), (2, "LAN", "2 LANs"),
    (1, "process", "1 process"), (3, "process", "3 processes"),
    (2, "namespace", "2 namespaces"), (2, "index", "2 indices"),
])
def test_plural(count: int, word: str, text: str) -> None:
    many = "indices" if word == "index" else None
    assert output.plural(count, word, many) == text


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("labkit ") and f"kernel {os.uname().release}" in result.stdout


def test_help_paragraphs_are_not_broken_mid_sentence() -> None:
    """Before: a docstring's line breaks showed up in --help and in the verb list, cutting
    sentences ("print bytes/s" / "and messages/s"). With a wide terminal nothing else
    wraps, so each command's first paragraph must appear on one line."""
    env = {**os.environ, "TERMINAL_WIDTH": "400"}
    listing = run_cli("--help", env=env)
    assert listing.returncode == 0, listing.stderr
    for cmd in main.app.registered_commands:
        first = main.reflow(cmd.help or "").split("\n\n")[0]
        assert first and first in listing.stdout, f"{cmd.callback.__name__}: {first!r}"
    doc = inspect.getdoc(importlib.import_module("labkit.cli.doctor").doctor) or ""
    body = main.reflow(doc).split("\n\n")[1]
    assert "\n" in doc.split("\n\n")[1], "the control: the source paragraph has line breaks"
    shown = run_cli("doctor", "--help", env=env)
    assert body in shown.stdout, shown.stdout


def test_reflow_keeps_examples_and_lists() -> None:
    text = ("First line\ncontinued.\n\nAn example:\n    labkit up x.yaml\n    labkit down x\n\n"
            "- one\n- two\n\fhidden\ntext")
    out = main.reflow(text)
    assert out.startswith("First line continued.\n\n")
    assert "    labkit up x.yaml\n    labkit down x" in out
    assert "- one\n- two" in out and out.endswith("\fhidden\ntext")


def test_every_verb_module_is_registered() -> None:
    """A verb module that exists but is not listed would be a verb users cannot reach."""
    import labkit.cli as cli

    verbs = {m.name for m in pkgutil.iter_modules(cli.__path__)
             if hasattr(importlib.import_module(f"labkit.cli.{m.name}"), "register")}
    assert verbs, "the control: verb modules were found"
    listed = set(main.VERBS) | set(main.LAST_VERBS)
    assert verbs <= listed, f"not in main.VERBS: {verbs - listed}"


def test_feature_verbs_come_from_the_registry() -> None:
    """A feature's verbs live in its folder and reach the CLI through the registry alone."""
    from labkit import features

    mods = features.cli_modules()
    assert "labkit.features.tipc.cli" in mods  # the control: TIPC has verbs
    assert all(m.startswith("labkit.features.") for m in mods)
    assert set(mods) <= set(main.all_verbs())
    names = {c.name or c.callback.__name__ for c in main.app.registered_commands} | \
        {g.name for g in main.app.registered_groups}
    assert {"tipc", "inject", "wireshark"} <= names


def test_a_verb_that_fails_to_import_is_an_error_not_a_missing_verb() -> None:
    """Before: ModuleNotFoundError for a verb module was swallowed and the verb vanished."""
    with pytest.raises(main.BrokenVerb) as info:
        main.register_verbs(typer.Typer(), ["validate", "no_such_verb"])
    assert "labkit.cli.no_such_verb" in info.value.render()
    code = ("import sys; import labkit.cli.main as m\n"
            "try:\n    m.register_verbs(m.typer.Typer(), ['no_such_verb'])\n"
            "except m.BrokenVerb as e:\n    m.BROKEN = e\n"
            "sys.argv = ['labkit', 'validate', 'x.yaml']; m.main()\n")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert "cannot be loaded" in result.stderr and "Traceback" not in result.stderr


def test_text_is_printed_as_written_not_as_emoji(capsys: pytest.CaptureFixture[str]) -> None:
    """rich would turn `{ipv4:b:eth1}` (a repro placeholder) into a symbol by default."""
    from labkit.cli.output import make_console

    make_console().print("{ipv4:b:eth1} :smile:")
    assert "{ipv4:b:eth1} :smile:" in capsys.readouterr().out


def test_feature_notes_are_said_at_validate(tmp_path: Path) -> None:
    """A feature's note (offload: TLS 1.3 stays in software) is printed by validate; the
    same lab with TLS 1.2 (the control) has none."""
    source = (ROOT / "topologies" / "offload.yaml").read_text()
    assert 'version: "1.2"' in source
    for version, expected in (("1.3", 1), ("1.2", 0)):
        path = tmp_path / f"tls{version}.yaml"
        path.write_text(source.replace('version: "1.2"', f'version: "{version}"'))
        res = run_cli("validate", str(path))
        assert res.returncode == 0, res.stderr
        assert res.stdout.count("note: offload: TLS 1.3 is not offloaded") == expected
