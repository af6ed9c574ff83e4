"""A generated bad-input suite over every CLI subcommand (issue 15).

The table comes from the argparse definitions: for every leaf subcommand a cheap valid command
line is written by hand once (``BASE``, checked to succeed), and every option or positional that
takes a value is then given, one at a time, each string of ``BAD``. Every case runs
``circuitsviz.cli.main`` in-process and must either succeed, or exit non-zero with one error line
(the last on stderr, after argparse's usage or a job's progress lines) and no traceback; no case
may hang (``CASE_SECONDS``). Launching the viewer (``serve``, ``demo``) is intercepted: reaching
the launch counts as success. The values depend on the option's argparse type, so that text
argparse already refuses for an ``int`` option is tried once, not eleven times.

One test item tries every value of one option, each in a scratch folder of its own. A ``study``
or ``fit-sae`` case starts from a copy of the base command's finished run, as a user's second
command would: a value that keeps the settings reuses it, and a new ``--out`` or SAE name computes
afresh. A value the copy refuses as a changed setting runs again in an empty folder, so every value
still reaches the code a first run would. The parser is built once per item (``main`` would build
the same one per call). A few cases also run as real processes
(``test_a_real_process_writes_one_line_and_no_traceback``): in-process runs cannot see what the
interpreter itself prints on the way out.
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
pytestmark = pytest.mark.slow  # about 520 in-process commands and two real processes

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
            yield pytest.param(command, name, id=f"{command}-{name}")


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
    """A tiny image folder, a mining shard, a run with an SAE and a finished base study, made once."""
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
    (tmp / "base").mkdir()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for command in SEEDED:
            assert main([a.format(**{**fmt, "tmp": str(tmp / "base")}) for a in BASE[command]]) == 0
    return {**fmt, "base": tmp / "base"}


# command -> the folder its base command line writes, copied into a case's scratch folder first
SEEDED = {"study": "study", "fit-sae": "fit"}


@pytest.fixture
def no_launch(monkeypatch):
    """Starting the viewer or another process raises ``_Launched`` instead; and ``main`` reuses one
    parser (argparse keeps no state between parses; building it is most of a refused case's time)."""
    import circuitsviz.cli

    parser = circuitsviz.cli.build_parser()
    monkeypatch.setattr(circuitsviz.cli, "build_parser", lambda: parser)
    for target in ("call", "run", "Popen"):
        monkeypatch.setattr(subprocess, target, _launched)
    for target in ("execv", "execvp", "execvpe", "execve"):
        monkeypatch.setattr(os, target, _launched)


def _launched(*a, **k):
    raise _Launched


def _no_demo_study(monkeypatch) -> None:
    """The full demo study takes minutes; its checks are the study's, fuzzed as ``study``."""
    import circuitsviz.cli.study as cli_study

    monkeypatch.setattr(cli_study, "study", _launched)


def _in_scratch(command: str, world: dict, scratch: Path, monkeypatch, seed: bool = True) -> dict:
    """The format values for one case run in ``scratch`` (its working directory)."""
    import shutil

    scratch.mkdir()
    monkeypatch.chdir(scratch)  # relative path-shaped values land in the scratch folder
    if seed and command in SEEDED:  # a second command on the finished base run: see the module doc
        shutil.copytree(world["base"] / SEEDED[command], scratch / SEEDED[command])
    return {**world, "tmp": str(scratch)}


def _run(argv: list[str]) -> tuple[int | None, str]:
    """``main(argv)`` in this process: its exit code (0 where a launch was reached) and stderr."""
    from circuitsviz.cli import main

    def on_alarm(*_):
        raise TimeoutError

    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    except _Launched:
        rc = 0
    except TimeoutError:
        raise AssertionError(f"circuitsviz {' '.join(argv)} ran for more than {CASE_SECONDS} s") from None
    except Exception as e:  # noqa: BLE001 - this would reach the user as a traceback
        raise AssertionError(f"circuitsviz {' '.join(argv)} raised {type(e).__name__}: {e}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return rc, err.getvalue()


def _problem(argv: list[str], rc, text: str) -> str | None:
    """What is wrong with a command's exit and stderr (None: success, or one clean error line)."""
    if rc in (0, None):
        return None
    # Progress lines may come first (a study logs its steps); the error is one line, the last.
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if "Traceback" in text or len(errors) != 1 or errors[0] != last:
        return f"circuitsviz {' '.join(argv)} (exit {rc}) wrote:\n{text}"
    return None


def test_every_base_command_line_succeeds(world, tmp_path, monkeypatch, no_launch):
    """The cases change one value of a command that works: a failing base would check nothing."""
    failed = {}
    for command, template in BASE.items():
        with monkeypatch.context() as m:
            if command == "demo":
                _no_demo_study(m)
            fmt = _in_scratch(command, world, tmp_path / command.replace(" ", "-"), m)
            argv = [a.format(**fmt) for a in template]
            rc, err = _run(argv)
        if rc not in (0, None):
            failed[command] = err.strip()
    assert failed == {}


@pytest.mark.parametrize("command, option", list(_cases()))
def test_bad_values_exit_with_one_line_or_succeed_and_never_hang(command, option, world, tmp_path, monkeypatch,
                                                                 no_launch):
    if command == "demo":
        _no_demo_study(monkeypatch)
    parser = dict(leaves(_parser()))[command]
    action = next(a for a in value_actions(parser)
                  if (a.option_strings[0] if a.option_strings else a.dest) == option)
    from circuitsviz.store.steps import OVERWRITE_HINT

    problems = []
    for i, bad in enumerate(BAD.get(action.type, BAD[None])):
        fmt = _in_scratch(command, world, tmp_path / str(i), monkeypatch)
        argv = _with(BASE[command], [a.format(**fmt) for a in BASE[command]], action, bad)
        rc, err = _run(argv)
        if command in SEEDED and OVERWRITE_HINT in err:  # a changed setting: do what a first run does
            problems.append(_problem(argv, rc, err))
            fmt = _in_scratch(command, world, tmp_path / f"{i}-fresh", monkeypatch, seed=False)
            argv = _with(BASE[command], [a.format(**fmt) for a in BASE[command]], action, bad)
            rc, err = _run(argv)
        problems.append(_problem(argv, rc, err))
    assert [p for p in problems if p] == []


# Real processes, for what in-process runs cannot see: the interpreter's own output on the way out.
# Two, run side by side (each pays for importing torch): a study setting, and a value that used to
# hang. tests/test_hardening.py runs `verify` on a damaged index the same way.
REAL = [(["study", "--k", "0", "--out", "out"], "--k must be an integer in [1, "),
        (["fit-sae", "--model", "demo", "--no-pretrained", "--data", "procedural", "--layer", "mixed3a", "--batch-size", "-5",
          "--out", "out"], "--batch-size must be an integer >= 1, got -5")]


def test_a_real_process_writes_one_line_and_no_traceback(tmp_path):
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "circuitsviz", *argv], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv, _ in REAL]
    for (argv, expected), proc in zip(REAL, procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert expected in err, (argv, err)
    assert list(tmp_path.iterdir()) == []  # and nothing was made
