"""``circuitsviz serve``: open a run (or a folder of runs) in the Streamlit viewer.

The viewer ships inside the package (``circuitsviz/viewer/app.py``), so this works from an
installed wheel. ``serve`` replaces itself with the Streamlit server (``exec``), so a signal sent
to it (Ctrl+C, ``kill PID``, a process manager's SIGTERM) stops the server; nothing is orphaned.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from ..errors import BadInputError

VIEWER = Path(__file__).resolve().parents[1] / "viewer" / "app.py"


def viewer_command(run: str | Path, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line that serves ``run`` on ``host:port``.

    >>> viewer_command("runs/demo")[-2:]
    ['--', 'runs/demo']
    """
    return [sys.executable, "-m", "streamlit", "run", str(VIEWER),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
            "--server.fileWatcherType", "none", "--", str(run)]


def check_address(port: int, host: str) -> None:
    if not 1 <= int(port) <= 65535:
        raise BadInputError(f"--port {port} is out of range; valid: 1..65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise BadInputError(f"--host {host!r} is not an IP address; e.g. 127.0.0.1 (this machine) "
                                "or 0.0.0.0 (every interface)") from None


def serve(run: str | Path, port: int = 8501, host: str = "127.0.0.1", url_path: str = "") -> int:
    """Check that ``run`` is a run (or holds runs) and opens, then become the viewer's server.

    Only that run, or the runs directly under that folder, can be viewed: the URL selects among
    them by name and cannot name any other path. Does not return on POSIX (the process becomes
    Streamlit); elsewhere it waits for Streamlit and returns its exit code.
    """
    from ..store import open_run
    from ..viewer.served import Served

    check_address(port, host)
    served = Served.at(run)  # a bad path fails here with a clear message, not inside the browser
    for name in served.names:
        open_run(served.resolve(name)).close()
    if not VIEWER.is_file():
        raise BadInputError(f"the viewer app is missing at {VIEWER}; reinstall circuitsviz")
    what = served.root if served.single else f"{len(served.names)} runs under {served.root}"
    print(f"circuitsviz viewer for {what}: http://{host}:{port}/{url_path}  (Ctrl+C to stop)",
          file=sys.stderr, flush=True)
    cmd = viewer_command(served.root, port, host)
    if os.name == "posix":
        os.execv(sys.executable, cmd)  # the server takes this process's id and its signals
    return subprocess.call(cmd)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="browse a run in the viewer (layers, units, SAE features, compare)",
        description="Serve the Streamlit viewer for one run directory, or for the runs directly under a "
        "folder. Only those runs can be viewed. It binds to 127.0.0.1, so only this machine can see "
        "it; pass --host 0.0.0.0 to expose it on the network.",
        epilog="example: circuitsviz serve runs/demo --port 8502\n"
               "deep link: http://127.0.0.1:8502/compare?unit=mixed3b:7",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a run directory (made by `circuitsviz study` or the other jobs), or a folder of runs")
    p.add_argument("--port", type=int, default=8501, help="port (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return serve(args.run, port=args.port, host=args.host)
