"""`labkit notebook [LAB]`: JupyterLab on this machine with the guided lab notebooks.

JupyterLab and the notebook kernels run here, never in a VM (Jupyter inside an emulated VM
takes minutes to start); labs whose kernel features this machine lacks still run in VMs,
reached through the lab API. The server listens on 127.0.0.1 with a random token (passed
in its environment, never on a command line); `--ip` serves another address (a Vagrant box,
where VirtualBox forwards a host port to the box's NAT address). Ctrl-C stops the server,
which shuts its kernels down (each brings down the labs it built); any process of it still
alive after that is stopped, so nothing is left.

The server works on copies of the notebooks in a directory of the user's (--dir,
~/labkit-labs by default): a trainee's answers and outputs are saved there, never into the
checkout, and a notebook already copied is never overwritten.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import typer

from labkit.base import procs
from labkit.base.wait import wait_until
from labkit.cli.output import console, info
from labkit.errors import LabkitError, UsageError

LABS = Path(__file__).resolve().parent.parent.parent / "labs"
START_TIMEOUT = 180.0  # s for the server to answer (a cold start on a loaded machine)
STOP_GRACE = 90.0  # s for the server to shut kernels down (each may take a VM lab down)
KERNEL_SHUTDOWN = 60.0  # s a kernel gets to exit cleanly (its labs go down at exit)


def notebooks() -> list[str]:
    return sorted(p.name for p in LABS.glob("*.ipynb"))


def resolve(lab: str | None) -> str:
    """The notebook file name for LAB: 01, 01-first-lab, first-lab, or the file name."""
    found = notebooks()
    if not found:
        raise UsageError(f"there are no lab notebooks in {LABS}.",
                         hint="Run from a labkit checkout (the notebooks live in labs/).")
    if lab is None:
        return found[0]
    key = Path(lab).name.removesuffix(".ipynb")
    matches = [n for n in found if n.removesuffix(".ipynb") == key] or \
        [n for n in found if n.startswith(f"{key}-") or n.removesuffix(".ipynb")
         .split("-", 1)[-1] == key]
    if len(matches) != 1:
        names = ", ".join(n.removesuffix(".ipynb") for n in found)
        raise UsageError(f"no single lab notebook matches '{lab}'"
                         + (f" ({', '.join(matches)} do)" if matches else "") + ".",
                         hint=f"Choose one of: {names}.")
    return matches[0]


def workdir(path: str | None) -> Path:
    """The directory served, holding a copy of every lab notebook (missing ones copied)."""
    target = Path(path).expanduser() if path else Path.home() / "labkit-labs"
    try:
        target.mkdir(parents=True, exist_ok=True)
        for nb in notebooks():
            if not (target / nb).exists():
                shutil.copyfile(LABS / nb, target / nb)
    except OSError as exc:
        raise UsageError(f"cannot prepare the notebook directory {target}: {exc.strerror}.",
                         hint="Choose a writable directory with --dir.") from None
    return target


def check_address(ip: str, port: int) -> None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise UsageError(f"--ip {ip} is not an IP address.",
                         hint="Use 127.0.0.1 (the default), or the address a forwarded port "
                              "reaches, e.g. 0.0.0.0 in a Vagrant box.") from None
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {ip} port {port}: {exc.strerror}.",
                             hint="Another server may use that port; choose one with "
                                  "--port.") from None


def settings_dir() -> str:
    """JupyterLab user settings for labkit's server: news polling off (no pop-up over the
    lab panels, no request leaving the machine); the user's own changes persist there."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "labkit" / "jupyterlab-settings"
    news = path / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    if not news.exists():
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text('{"fetchNews": "false", "checkForUpdates": false}\n')
    return str(path)


def server_argv(name: str, ip: str, port: int, root: Path) -> list[str]:
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ip={ip}",
            f"--port={port}", "--port-retries=0", f"--ServerApp.root_dir={root}",
            f"--ServerApp.default_url=/lab/tree/{name}",
            f"--KernelManager.shutdown_wait_time={KERNEL_SHUTDOWN:g}"]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # labs need root; the server runs as the user asked
    return argv


def answers(base: str, token: str) -> bool:
    req = urllib.request.Request(f"{base}/api/status",
                                 headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below pid, kernels included (they run
    in sessions of their own, so a process group would miss them)."""
    children: dict[int, list[int]] = {}
    stats = {}
    for p in procs.all_pids():
        st = procs.stat(p)
        if st is not None and not st.zombie:
            children.setdefault(st.ppid, []).append(p)
            stats[p] = st.starttime
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append((child, stats[child]))
            todo.append(child)
    return out


def stop_server(proc: subprocess.Popen[bytes]) -> list[int]:
    """SIGTERM the server (it shuts its kernels down), wait, then stop whatever of it is
    left; returns the pids that had to be stopped by force."""
    below = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE)
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    left = [p for p, started in below if procs.alive(p, started)]
    if left:
        procs.stop(left, grace=5.0)
    return left


def _tail(path: str, lines: int = 5) -> str:
    with contextlib.suppress(OSError), open(path, errors="replace") as fh:
        return " / ".join(line.strip() for line in fh.readlines()[-lines:] if line.strip())
    return ""


def notebook(
    lab: str = typer.Argument(None, help="The lab notebook to open: 01, 01-first-lab or "
                              "first-lab (default: the first one)."),
    ip: str = typer.Option("127.0.0.1", "--ip", help="Address to listen on (127.0.0.1; in a "
                           "Vagrant box 0.0.0.0, which VirtualBox forwards to)."),
    port: int = typer.Option(8888, "--port", min=1, max=65535, help="TCP port."),
    directory: str = typer.Option(None, "--dir", help="Where the notebooks you work on are "
                                  "kept (default ~/labkit-labs; copied there from labs/)."),
) -> None:
    """Start JupyterLab here with the guided lab notebooks and open LAB; print its URL.

    The notebooks' kernels run on this machine; labs that need kernel features it lacks
    run in VMs, reached through the lab API. Ctrl-C stops JupyterLab and its kernels (a
    lab a notebook built goes down with its kernel); nothing is left running.
    """
    if importlib.util.find_spec("jupyterlab") is None or \
            importlib.util.find_spec("ipywidgets") is None:
        raise UsageError("JupyterLab and ipywidgets are not installed in labkit's "
                         "environment.", hint="Run `bash scripts/setup.sh`, which installs "
                         "them (or `.venv/bin/pip install jupyterlab ipywidgets matplotlib`).")
    name = resolve(lab)
    check_address(ip, port)
    root = workdir(directory)
    token = secrets.token_urlsafe(24)
    log_fd, log_path = tempfile.mkstemp(prefix="labkit-jupyter-", suffix=".log")
    env = {**os.environ, "JUPYTER_TOKEN": token, "PYTHONUNBUFFERED": "1",
           "JUPYTERLAB_SETTINGS_DIR": os.environ.get("JUPYTERLAB_SETTINGS_DIR") or
           settings_dir()}
    started = time.monotonic()
    # SIGTERM to the server when this process dies, even by SIGKILL: it then shuts its
    # kernels down, and nothing keeps serving on the port.
    proc = subprocess.Popen(server_argv(name, ip, port, root), stdin=subprocess.DEVNULL,
                            stdout=log_fd, stderr=log_fd, env=env, start_new_session=True,
                            preexec_fn=procs.die_with_parent())
    os.close(log_fd)
    shown = "127.0.0.1" if ip in ("0.0.0.0", "::") else ip
    host = f"[{shown}]" if ":" in shown else shown
    base = f"http://{host}:{port}"
    try:
        info(f"starting JupyterLab on {base}: waiting for it to answer (up to "
             f"{START_TIMEOUT:g} s)...")

        def serving() -> bool:
            if proc.poll() is not None:
                raise LabkitError(f"JupyterLab exited at start (status {proc.returncode}): "
                                  f"{_tail(log_path) or 'no output'}.",
                                  hint=f"Its log is {log_path}.")
            return answers(base, token)

        wait_until(serving, START_TIMEOUT, f"JupyterLab to answer on {base}", interval=0.25,
                   hint=f"Its log is {log_path}.")
        url = f"{base}/lab/tree/{name}?token={token}"
        console.print(f"JupyterLab is serving the lab notebooks ({time.monotonic() - started:.1f}"
                      f" s). Open:\n  {url}", soft_wrap=True, markup=False)
        if not ipaddress.ip_address(ip).is_loopback:
            info(f"listening on {ip}: anyone who reaches port {port} and has the token can "
                 "run commands as this user.")
        info(f"Notebooks (your copies): {root}. Ctrl-C stops JupyterLab and its kernels. "
             f"Server log: {log_path}")
        proc.wait()  # until it ends, or Ctrl-C
        raise LabkitError(f"JupyterLab exited (status {proc.returncode}): "
                          f"{_tail(log_path) or 'no output'}.", hint=f"Its log is {log_path}.")
    except KeyboardInterrupt:
        info("stopping JupyterLab and its kernels...")
        forced = stop_server(proc)
        info("JupyterLab stopped" + (f" ({len(forced)} processes had to be killed)"
                                     if forced else "") + ".")
    except BaseException:
        stop_server(proc)
        raise


def register(app: typer.Typer) -> None:
    app.command()(notebook)
