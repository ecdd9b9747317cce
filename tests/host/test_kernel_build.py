"""`labkit kernel build` without building a kernel (too long for a test: benchmarks/kbuild.py
does the real build): the configuration derived from the feature registry, patches that
do not apply, the cache key, missing tools, the cache entry and how names resolve."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from labkit import capabilities as doctor
from labkit import features
from labkit.errors import LabkitError, UsageError
from labkit.hosts.vm import agent, build, kconfig, kernels, sourcetree
from tests.host.test_vm_units import _fake_bzimage as _bzimage

# -- the configuration -------------------------------------------------------------------


def test_fragment_has_every_symbol_the_registry_names(monkeypatch: pytest.MonkeyPatch) -> None:
    fragment = kconfig.parse(kconfig.features_fragment())
    named = {s for _, syms in doctor.capabilities().values() for s in syms}
    named |= {s for f in features.all_features() for s in f.kconfig}
    assert "CONFIG_TIPC" in named and "CONFIG_TLS_DEVICE" in named  # the registry's own
    assert all(fragment.get(s) == "y" for s in named), named - set(fragment)
    # derived, not listed: a symbol a feature gains shows up in the fragment
    tipc = features.get("tipc")
    assert "CONFIG_LABKIT_TEST_SYMBOL" not in fragment
    monkeypatch.setattr(tipc, "kconfig", (*tipc.kconfig, "CONFIG_LABKIT_TEST_SYMBOL"))
    assert kconfig.parse(kconfig.features_fragment())["CONFIG_LABKIT_TEST_SYMBOL"] == "y"


def test_bad_fragment_line_names_file_and_line(tmp_path: Path) -> None:
    frag = tmp_path / "my.config"
    frag.write_text("CONFIG_TIPC=y\n# a comment\n# CONFIG_X is not set\nTIPC=y\n")
    with pytest.raises(UsageError, match=r"my\.config:4: 'TIPC=y'"):
        kconfig.read_fragment(frag)
    frag.write_text("CONFIG_TIPC=y\n# CONFIG_X is not set\n")
    assert kconfig.parse(kconfig.read_fragment(frag)) == {"CONFIG_TIPC": "y", "CONFIG_X": "n"}


def test_unmet_options_say_which_dependency(tmp_path: Path) -> None:
    (tmp_path / "Kconfig").write_text(
        "config FOO\n\tbool \"foo\"\n\tdepends on BAR && NET\n\nconfig BAR\n\tbool \"bar\"\n"
        "\nconfig NET\n\tbool \"net\"\n")
    config = "# CONFIG_FOO is not set\n# CONFIG_BAR is not set\nCONFIG_NET=y\n"
    asked = {"CONFIG_FOO": ("y", "feature x"), "CONFIG_NET": ("y", "base"),
             "CONFIG_GONE": ("y", "your fragment #1")}
    problems = kconfig.unmet(config, asked, tmp_path)
    assert len(problems) == 2  # CONFIG_NET is as asked: not reported
    assert "CONFIG_FOO=y (feature x) ended n: it depends on CONFIG_BAR" in problems[0]
    assert "CONFIG_GONE" in problems[1] and "no such option" in problems[1]


# -- patches -----------------------------------------------------------------------------


def _tree(root: Path) -> Path:
    tree = root / "linux"
    (tree / "net/tipc").mkdir(parents=True)
    (tree / "Makefile").write_text("all:\n")
    (tree / "net/tipc/core.c").write_text("".join(f"line {i}\n" for i in range(1, 21)))
    return tree


def _patch(path: Path, old: str, new: str, at: int = 5) -> Path:
    path.write_text(
        "--- a/net/tipc/core.c\n+++ b/net/tipc/core.c\n"
        f"@@ -{at},3 +{at},3 @@\n line {at}\n-{old}\n+{new}\n line {at + 2}\n")
    return path


def _digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


def test_patch_that_does_not_apply_names_hunk_and_touches_nothing(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    before = _digest(tree)
    good = _patch(tmp_path / "good.patch", "line 6", "line six")
    bad = _patch(tmp_path / "bad.patch", "line 7 that is not there", "x", at=6)
    sourcetree.check_patches(tree, [good])  # the control: it applies
    with pytest.raises(UsageError) as err:
        sourcetree.check_patches(tree, [good, bad])
    text = str(err.value)
    assert "bad.patch" in text and "good.patch" not in text.split(":")[0]
    assert "@@ -6,3 +6,3 @@" in text and "net/tipc/core.c" in text
    assert _digest(tree) == before


def test_patch_given_by_a_relative_path_is_checked(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`--patch fix.patch` names a file where the user is, not in the kernel tree."""
    tree = _tree(tmp_path / "src")
    (tmp_path / "here").mkdir()
    _patch(tmp_path / "here" / "fix.patch", "line 6", "line six")
    monkeypatch.chdir(tmp_path / "here")
    sourcetree.check_patches(tree, [Path("fix.patch")])
    _patch(tmp_path / "here" / "stale.patch", "not line 6", "x")
    with pytest.raises(UsageError, match=r"stale\.patch.*@@ -5,3 \+5,3 @@"):
        sourcetree.check_patches(tree, [Path("stale.patch")])


def test_work_tree_patches_a_copy_and_restores_it(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    before = _digest(tree)
    src = sourcetree.Source("t", "t=1", tree, True)
    slot = tmp_path / "slot"
    slot.mkdir()
    patch = _patch(tmp_path / "p.patch", "line 6", "line six")
    work = sourcetree.work_tree(src, slot, [patch], lambda _: None)
    assert "line six\n" in (work / "net/tipc/core.c").read_text()
    assert _digest(tree) == before  # the unpacked original is intact (no write through a link)
    assert os.stat(work / "Makefile").st_ino == os.stat(tree / "Makefile").st_ino  # linked
    work = sourcetree.work_tree(src, slot, [], lambda _: None)  # the next build: no patch
    assert _digest(work) == before and _digest(tree) == before


# -- the cache key -----------------------------------------------------------------------


def test_name_changes_with_patch_content_only(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_CACHE_DIR", str(tmp_path / "cache"))
    (sourcetree.kbuild_dir() / "src" / "linux-source-7.2_7.2.13-1").mkdir(parents=True)
    a = _patch(tmp_path / "a.patch", "line 6", "line six")
    same = tmp_path / "elsewhere.patch"
    same.write_bytes(a.read_bytes())
    other = _patch(tmp_path / "b.patch", "line 6", "line 6!")
    plain = build.default_name("7.2")
    assert plain is not None and plain.startswith("built:7.2-")
    assert build.default_name("7.2") == plain
    assert build.default_name("7.2", [a]) == build.default_name("7.2", [same]) != plain
    assert build.default_name("7.2", [other]) != build.default_name("7.2", [a])
    frag = tmp_path / "f.config"
    frag.write_text("CONFIG_X=y\n")
    assert build.default_name("7.2", [], [frag]) != plain


# -- tools -------------------------------------------------------------------------------


def test_missing_tool_names_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in build.TOOLS:
        if tool != "flex":
            (bin_ / tool).write_text("#!/bin/sh\n")
            (bin_ / tool).chmod(stat.S_IRWXU)
    header = tmp_path / "gelf.h"
    header.write_text("")
    monkeypatch.setenv("PATH", str(bin_))
    monkeypatch.setattr(build, "HEADERS", {str(header): "libelf-dev"})
    with pytest.raises(LabkitError, match=r"not installed: flex\.") as err:
        build.check_tools()
    assert "apt-get install flex" in err.value.hint
    (bin_ / "flex").write_text("#!/bin/sh\n")
    (bin_ / "flex").chmod(stat.S_IRWXU)
    build.check_tools()  # the control: everything there
    header.unlink()
    with pytest.raises(LabkitError, match="libelf-dev"):
        build.check_tools()


# -- the cache entry and names -----------------------------------------------------------


def test_built_name_and_its_image_resolve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_KERNELS_DIR", str(tmp_path / "kernels"))
    obj = tmp_path / "obj"
    _bzimage(obj / "arch/x86/boot/bzImage", "7.2.13")
    (obj / ".config").write_text("CONFIG_TIPC=y\nCONFIG_NET_NS=y\n")
    (obj / "modules.builtin").write_text("kernel/net/tipc/tipc.ko\n")
    k = build.install("built:t1", "7.2.13", obj, {"key": "k" * 64, "source": "s=1"})
    assert (k.name, k.source, k.version) == ("built:t1", "built", "7.2.13")
    assert kernels.resolve("built:t1") == k
    mods = Path(k.modules_dir)
    assert (mods / "modules.builtin").read_text() == "kernel/net/tipc/tipc.ko\n"
    assert (mods / "modules.dep").is_file()  # depmod ran: modprobe tipc succeeds in a guest
    by_path = kernels.resolve(k.image)  # the same kernel given as a bzImage path
    assert (by_path.version, by_path.modules_dir) == ("7.2.13", k.modules_dir)
    leftovers = [p.name for p in (tmp_path / "kernels").iterdir() if p.name.startswith(".")]
    assert leftovers in ([], [".lock"])  # no temporary entry left beside it


def test_failed_install_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_KERNELS_DIR", str(tmp_path / "kernels"))
    obj = tmp_path / "obj"
    obj.mkdir()
    (obj / ".config").write_text("")  # no bzImage: the build did not finish
    with pytest.raises(OSError):
        build.install("built:half", "7.2.13", obj, {})
    assert list((tmp_path / "kernels").iterdir()) == []


def test_built_in_modules_count_as_present() -> None:
    present = sorted(os.listdir("/sys/module"))[0]
    assert agent.built_in(present)
    assert not agent.built_in("labkit_no_such_module")


def test_a_users_tree_is_built_out_of_tree_only_when_clean(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    (tree / "Kconfig").write_text("mainmenu \"Linux\"\n")
    src = sourcetree.user_source(tree)  # the control: a clean tree is taken as it is
    assert (src.identity, src.pristine) == (f"dir:{tree}", False)
    (tree / ".config").write_text("CONFIG_TIPC=y\n")  # configured in place: O= would refuse
    with pytest.raises(UsageError, match="mrproper"):
        sourcetree.user_source(tree)
    with pytest.raises(UsageError, match="not a kernel source tree"):
        sourcetree.user_source(tmp_path)
    with pytest.raises(UsageError, match="--patch works with --source 7.2"):
        build.build(str(tree), patches=[_patch(tmp_path / "p.patch", "line 6", "x")])
