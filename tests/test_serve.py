"""``circuitsviz serve``: it serves only what it names, stops on SIGTERM, and works from a wheel."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from circuitsviz.cli import main
from circuitsviz.store.synthetic import write_synthetic_run

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc, port: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the viewer did not start: {proc.stdout.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("serve") / "run", channels={"mixed4e": 5}, n_features=2)


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port 70000 is out of range; valid: 1..65535"),
    (["--host", "999.1.1.1"], "--host '999.1.1.1' is not an IP address"),
])
def test_bad_addresses_are_refused_in_one_line(fake, capsys, args, message):
    assert main(["serve", str(fake.path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_folder_without_runs_is_refused_before_anything_starts(tmp_path, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "no circuitsviz run at" in capsys.readouterr().err


def test_sigterm_on_serve_stops_the_server(fake, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "circuitsviz", "serve", str(fake.path), "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "CIRCUITSVIZ_CACHE": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, port)
        proc.send_signal(signal.SIGTERM)  # what a process manager, `timeout` or `kill PID` sends
        proc.wait(20)
        deadline = time.time() + 10
        while listening(port) and time.time() < deadline:
            time.sleep(0.2)
        assert not listening(port), "the server kept listening after serve got SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_a_wheel_serves_the_viewer_from_a_fresh_venv(fake, tmp_path):
    """Build the wheel, install it alone into a new venv (its dependencies come from this
    interpreter's site-packages, no network), then serve from outside the source tree."""
    import shutil

    # build from a copy: a build writes build/ and *.egg-info into the tree it builds
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "runs",
                                                              "test-artifacts", "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), "-q"], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("circuitsviz-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    # This interpreter's packages (streamlit, torch, ...) as plain paths: their .pth files, such as a
    # development install of circuitsviz itself, are not processed, so only the wheel provides it.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --ignore-installed: the development install seen through deps.pth must not count as installed
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
                   check=True, env=env)
    env["CIRCUITSVIZ_CACHE"] = str(tmp_path / "cache")
    where = subprocess.check_output([py, "-c", "import circuitsviz.viewer.app as a; print(a.__file__)"], text=True,
                                    cwd=tmp_path, env=env).strip()
    assert where.startswith(str(site)), where
    port = free_port()
    proc = subprocess.Popen([venv / "bin" / "circuitsviz", "serve", str(fake.path), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, port)
        page = subprocess.run(
            [py, "-c", "import sys; from streamlit.testing.v1 import AppTest; "
             "at = AppTest.from_file(sys.argv[1], default_timeout=60); at.query_params['page'] = 'compare'; "
             "at.run(); print([t.value for t in at.title], len(at.exception))", where],
            cwd=tmp_path, env={**env, "CIRCUITSVIZ_RUN": str(fake.path)}, capture_output=True, text=True, timeout=120)
        assert page.stdout.strip().endswith("['mixed4e:0 and its SAE features'] 0"), page.stdout + page.stderr
    finally:
        proc.terminate()
        proc.wait(20)
