"""``circuitsviz serve``: open a run in the Streamlit viewer (``apps/viewer.py``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..errors import BadInputError

VIEWER = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"


def viewer_command(run: str | Path, port: int = 8501, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line that serves ``run`` on ``host:port``.

    >>> viewer_command("runs/demo")[-2:]
    ['--', 'runs/demo']
    """
    return [sys.executable, "-m", "streamlit", "run", str(VIEWER),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--", str(run)]


def serve(run: str | Path, port: int = 8501, host: str = "127.0.0.1") -> int:
    """Check that ``run`` opens, then serve it until interrupted; returns Streamlit's exit code."""
    from ..store import open_run

    open_run(run).close()  # a bad path fails here with a clear message, not inside the browser
    if not VIEWER.is_file():
        raise BadInputError(f"the viewer app is missing at {VIEWER}; install circuitsviz from its source tree")
    print(f"circuitsviz viewer for {run}: http://{host}:{port}/  (Ctrl+C to stop)", file=sys.stderr)
    return subprocess.call(viewer_command(run, port, host))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="browse a run in the viewer (layers, units, SAE features, compare)",
        description="Serve the Streamlit viewer for one run directory. It binds to 127.0.0.1, so only "
        "this machine can see it; pass --host 0.0.0.0 to expose it on the network.",
        epilog="example: circuitsviz serve runs/demo --port 8502\n"
               "deep link: http://127.0.0.1:8502/compare?run=runs/demo&unit=mixed4e:55",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="the run directory (made by `circuitsviz study` or the other jobs)")
    p.add_argument("--port", type=int, default=8501, help="port (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return serve(args.run, port=args.port, host=args.host)
