"""The top-level Vagrantfile, judged by Vagrant itself (Debian's vagrant 2.3, no box needed).

`vagrant validate` runs on a copy in a temporary directory (it writes .vagrant/ beside the
Vagrantfile) with VAGRANT_HOME there too. It checks the provider block of the provider in
use only (libvirt here, with Debian's vagrant-libvirt), so the settings a user relies on
(the VirtualBox block, the port forward, the provisioning order) are read back through
Vagrant's own loader as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import skips

ROOT = Path(__file__).resolve().parent.parent.parent
VAGRANTFILE = ROOT / "Vagrantfile"
VAGRANT = shutil.which("vagrant")

pytestmark = pytest.mark.skipif(
    VAGRANT is None, reason="vagrant is not installed (Debian: apt-get install vagrant)")

# Loads a Vagrantfile with Vagrant's own classes and prints the settings as JSON.
DUMP_RB = r'''
require "json"
require "vagrant"
Vagrant.plugins_init! if Vagrant.respond_to?(:plugins_init!)
env = Vagrant::Environment.new(cwd: ARGV[0], home_path: ARGV[1], ui_class: Vagrant::UI::Silent)
vm = env.vagrantfile.config.vm
vb = vm.get_provider_config(:virtualbox)
lv = vm.get_provider_config(:libvirt)
puts JSON.generate(
  "box" => vm.box,
  "forwards" => vm.networks.select { |t, _| t == :forwarded_port }.map { |_, o|
    o.slice(:guest, :host, :host_ip, :id).transform_keys(&:to_s) },
  "virtualbox" => vb.customizations.map { |_, c| c.map(&:to_s) },
  "libvirt" => { "memory" => lv.memory, "cpus" => lv.cpus },
  "provisioners" => vm.provisioners.map { |p|
    { "name" => p.name.to_s, "run" => p.run.to_s, "reboot" => p.config.reboot,
      "inline" => p.config.inline } },
  "synced" => vm.synced_folders.transform_values { |o|
    { "type" => o[:type].to_s, "exclude" => o[:rsync__exclude] } },
)
'''


def copy(tmp_path: Path, text: str | None = None) -> Path:
    d = tmp_path / "box"
    d.mkdir()
    (d / "Vagrantfile").write_text(text if text is not None else VAGRANTFILE.read_text())
    return d


def vagrant(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert VAGRANT is not None
    env = {**os.environ, "VAGRANT_HOME": str(d.parent / "vagrant-home"),
           "VAGRANT_CHECKPOINT_DISABLE": "1", "NO_COLOR": "1"}
    return subprocess.run([VAGRANT, *args, "--no-color"], cwd=d, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def settings(tmp_path: Path) -> dict[str, Any]:
    d = copy(tmp_path)
    script = tmp_path / "dump.rb"
    script.write_text(DUMP_RB)
    home = tmp_path / "vagrant-home"
    loader = ('gem "vagrant"; $LOAD_PATH.unshift(Gem::Specification.find_by_name("vagrant")'
              f'.full_gem_path + "/lib"); load "{script}"')
    proc = subprocess.run(["ruby", "-rrubygems", "-e", loader, str(d), str(home)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "VAGRANT_HOME": str(home),
                               "VAGRANT_CHECKPOINT_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_vagrantfile_validates(tmp_path: Path) -> None:
    proc = vagrant(copy(tmp_path), "validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_ruby_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    lines = VAGRANTFILE.read_text().splitlines()
    n = next(i for i, ln in enumerate(lines) if "config.vm.hostname" in ln)
    lines[n] += " do"  # a block opened on an assignment: a Ruby syntax error on line n+1
    d = copy(tmp_path, "\n".join(lines) + "\n")
    proc = vagrant(d, "validate")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "syntax error" in out and f"{d / 'Vagrantfile'}:{n + 1}:" in out, out


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    """Vagrant names an unknown setting and its section (it gives no line for these)."""
    text = VAGRANTFILE.read_text().replace(
        'config.vm.hostname = "labkit"', 'config.vm.hostname = "labkit"\n  config.vm.boxx = "x"')
    proc = vagrant(copy(tmp_path, text), "validate")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert re.search(r"vm:\s*\n\* The following settings shouldn't exist: boxx", out), out


def test_unknown_libvirt_setting_is_named(tmp_path: Path) -> None:
    d = copy(tmp_path, VAGRANTFILE.read_text().replace("lv.cpus =", "lv.cpuz ="))
    if "vagrant-libvirt" not in vagrant(d, "plugin", "list").stdout:
        pytest.skip("vagrant-libvirt is not installed (Debian: apt-get install vagrant-libvirt);"
                    " without it Vagrant does not check the libvirt block")
    proc = vagrant(d, "validate")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "shouldn't exist: cpuz" in out, out


def test_settings_a_user_relies_on(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s["box"] == "debian/bookworm64"
    assert {"guest": 8888, "host": 8888, "host_ip": "127.0.0.1", "id": "jupyterlab"} \
        in s["forwards"]
    assert ["modifyvm", "id", "--memory", "4096"] in s["virtualbox"]
    assert ["modifyvm", "id", "--cpus", "2"] in s["virtualbox"]
    assert s["libvirt"] == {"memory": 4096, "cpus": 2}
    prov = {p["name"]: p for p in s["provisioners"]}
    assert [p["name"] for p in s["provisioners"]] == ["kernel", "labkit", "check"]
    assert prov["kernel"]["reboot"] is True and "linux-image-6.12-amd64" in prov["kernel"][
        "inline"]
    assert "LABKIT_NO_VM=1 bash scripts/setup.sh" in prov["labkit"]["inline"]
    assert prov["check"]["run"] == "always"
    assert s["synced"]["/vagrant"]["type"] == "rsync"
    assert ".venv/" in s["synced"]["/vagrant"]["exclude"]


def test_provisioning_scripts_parse_and_the_check_refuses_another_kernel(
        tmp_path: Path) -> None:
    """bash -n on every provisioning script; the check, run on this host (not 6.12),
    must fail and say what to do."""
    s = settings(tmp_path)
    for p in s["provisioners"]:
        proc = subprocess.run(["bash", "-n"], input=p["inline"], capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, (p["name"], proc.stderr)
    running = os.uname().release
    if running.startswith("6.12."):
        skips.skip("host-kernel", f"this host runs {running}: the check would pass, so it "
                   "cannot be shown refusing another kernel here")
    check = next(p["inline"] for p in s["provisioners"] if p["name"] == "check")
    proc = subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 1
    assert f"runs kernel {running}, not 6.12" in proc.stderr and "vagrant reload" in proc.stderr
