"""A generated bad-input suite over every CLI subcommand (issue 15).

The table comes from the argparse definitions: for every leaf subcommand a cheap valid command
line is written by hand once (``BASE``), and every option or positional that takes a value is
then given, one at a time, each string of ``BAD``. Every case runs ``circuitsviz.cli.main``
in-process and must either succeed, or exit non-zero with one error line (the last on stderr,
after argparse's usage or a job's progress lines) and no traceback; no case may hang
(``CASE_SECONDS``). Launching the viewer (``serve``, ``demo``) is intercepted: reaching the launch
counts as success. The values depend on the option's argparse type, so that text argparse
already refuses for an ``int`` option is tried once, not eleven times.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess

import pytest
import torch

CASE_SECONDS = 30
BAD = {  # by argparse type; huge values are the API suite's (tests/test_hardening_api.py)
    int: ["0", "-1", "banana"],
    float: ["0", "-1", "nan", "inf"],
    None: ["0", "banana", "../../x/y", "/proc/nope", ""],
}
pytestmark = pytest.mark.slow  # about 600 in-process commands: ~2 min on a 2-core machine

DEMO = ["--model", "demo", "--no-pretrained"]
BASE = {
    "layers": ["layers", *DEMO],
    "visualize": ["visualize", *DEMO, "--layer", "mixed3a", "--channels", "0", "--size", "16", "--steps", "2",
                  "--out", "{tmp}/vis", "--quiet"],
    "mine": ["mine", *DEMO, "--data", "{data}", "--layers", "mixed3a", "--k", "1", "--batch-size", "2",
             "--num-workers", "0", "--out", "{tmp}/mine", "--n", "2", "--no-progress"],
    "merge": ["merge", "{shard}", "--out", "{tmp}/merged"],
    "fit-sae": ["fit-sae", *DEMO, "--data", "{data}", "--layer", "mixed3a", "--out", "{tmp}/fit", "--expansion", "1",
                "--k", "1", "--steps", "2", "--batch-size", "16", "--sampler", "all", "--images", "4",
                "--no-progress"],
    "split": ["split", "--run", "{run}", "--layer", "mixed3a", "--channel", "0", *DEMO, "--data", "{data}"],
    "serve": ["serve", "{run}"],
    "data export": ["data", "export", "--n", "2", "--size", "16", "--out", "{tmp}/export"],
    "data preview": ["data", "preview", "--size", "16", "--per-concept", "1", "--out", "{tmp}/p.png"],
    "study": ["study", *DEMO, "--data", "{data}", "--layers", "mixed3a", "--channels", "0", "--vis-channels", "0",
              "--out", "{tmp}/study", "--n-images", "4", "--vis-size", "16", "--vis-steps", "2", "--k", "2",
              "--batch-size", "4", "--sae-expansion", "1", "--sae-k", "1", "--sae-steps", "2", "--sae-per-image", "64",
              "--n-split", "1", "--split-top", "2", "--feature-vis", "1"],
    "circuit": ["circuit", *DEMO, "--unit", "mixed3b:0", "--source", "mixed3a", "--top", "2"],
    "demo": ["demo", "--out", "{tmp}/demo", "--no-serve"],
    "verify": ["verify", "{run}"],
}


class _Launched(Exception):
    """Raised where the command would start a long-running process (the viewer, the full demo)."""


def leaves(parser: argparse.ArgumentParser, path=()):
    """``(command path, parser)`` of every leaf subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser
    for a in subs:
        for name, sp in a.choices.items():
            yield from leaves(sp, (*path, name))


def value_actions(parser: argparse.ArgumentParser):
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction) or a.nargs == 0:
            continue
        yield a


def _parser():
    from circuitsviz.cli import build_parser

    return build_parser()


def _cases():
    for command, parser in leaves(_parser()):
        for action in value_actions(parser):
            name = action.option_strings[0] if action.option_strings else action.dest
            for bad in BAD.get(action.type, BAD[None]):
                yield pytest.param(command, name, bad, id=f"{command}-{name}-{bad!r}")


def test_every_subcommand_has_a_base_command_line():
    assert sorted(c for c, _ in leaves(_parser())) == sorted(BASE)


POSITIONAL_SLOTS = ("{run}", "{shard}")  # where BASE puts a positional argument


def _with(template: list[str], argv: list[str], action: argparse.Action, value: str) -> list[str]:
    """``argv`` with ``action``'s value replaced by ``value`` (an option not in it is added)."""
    if not action.option_strings:
        i = next(i for i, a in enumerate(template) if a in POSITIONAL_SLOTS)
        return argv[:i] + [value] + argv[i + 1:]
    out, i = [], 0
    while i < len(argv):
        if argv[i] in action.option_strings:
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out + [f"{action.option_strings[0]}={value}"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny image folder, a mining shard and a run with an SAE, made once."""
    from PIL import Image

    import circuitsviz as cv
    from circuitsviz.cli import main

    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "images"
    for i, name in enumerate(("cat", "dog")):
        (data / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), (40 * i + 10 * j, 90, 160)).save(data / name / f"{j}.png")
    torch.manual_seed(0)
    model = cv.load_model("demo", pretrained=False)
    shard = tmp / "shard.npz"
    cv.mine(model, str(data), "mixed3a", k=1, batch_size=2, calibration=1, progress=False).save(shard)
    run = tmp / "run"
    fmt = dict(tmp=str(tmp), data=str(data), run=str(run), shard=str(shard))
    assert main([a.format(**fmt) for a in BASE["fit-sae"]][:-1] + ["--out", str(run), "--no-progress"]) == 0
    return fmt


@pytest.mark.parametrize("command, option, bad", list(_cases()))
def test_bad_value_exits_with_one_line_or_succeeds_and_never_hangs(command, option, bad, world, tmp_path,
                                                                   monkeypatch):
    from circuitsviz.cli import main

    monkeypatch.chdir(tmp_path)  # relative path-shaped values land in the scratch folder

    def launched(*a, **k):
        raise _Launched

    for target in ("call", "run", "Popen"):
        monkeypatch.setattr(subprocess, target, launched)
    for target in ("execv", "execvp", "execvpe", "execve"):
        monkeypatch.setattr(os, target, launched)
    if command == "demo":  # the full demo study takes minutes; its checks are the study's
        import circuitsviz.study as study_module

        monkeypatch.setattr(study_module, "study", launched)
        for mod in ("circuitsviz.cli.study", "circuitsviz.cli.demo"):
            module = __import__(mod, fromlist=["x"]) if _importable(mod) else None
            if module is not None and hasattr(module, "study"):
                monkeypatch.setattr(module, "study", launched)

    parser = dict(leaves(_parser()))[command]
    action = next(a for a in value_actions(parser)
                  if (a.option_strings[0] if a.option_strings else a.dest) == option)
    fmt = {**world, "tmp": str(tmp_path)}
    argv = _with(BASE[command], [a.format(**fmt) for a in BASE[command]], action, bad)

    def on_alarm(*_):
        raise TimeoutError

    err, out = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    except _Launched:
        rc = 0
    except TimeoutError:
        pytest.fail(f"circuitsviz {' '.join(argv)} ran for more than {CASE_SECONDS} s")
    except Exception as e:  # noqa: BLE001 - this would reach the user as a traceback
        pytest.fail(f"circuitsviz {' '.join(argv)} raised {type(e).__name__}: {e}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if rc in (0, None):
        return
    text = err.getvalue()
    assert "Traceback" not in text
    # Progress lines may come first (a study logs its steps); the error is one line, the last.
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    last = text.strip().splitlines()[-1] if text.strip() else ""
    assert len(errors) == 1 and errors[0] == last, f"circuitsviz {' '.join(argv)} (exit {rc}) wrote:\n{text}"


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
