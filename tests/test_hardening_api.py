"""A generated bad-input suite over every public API function (issue 15).

The table is built from the signatures: for each public function and class (``circuitsviz.__all__``)
a cheap valid call is written by hand once (and checked to succeed), and every parameter of its
signature is then replaced, one at a time, by each value of ``BAD`` (zero, negative, NaN, inf, huge,
wrong-type and path-shaped values). One test item tries every value of one parameter, so the
suite's time goes to the calls, not to pytest's set-up of a few thousand items. The contract
checked for every value:

- the call returns, or raises a :class:`CircuitsvizError` subclass: never another exception type,
  which would reach a user as a traceback;
- a numeric parameter given NaN, inf, a string or an arbitrary object raises (it is never
  silently used);
- no case hangs: each runs under a timer (``CASE_SECONDS``).

Each value runs in its own scratch working directory, so a relative path-shaped value lands there.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import signal
from collections.abc import Callable

import pytest
import torch
from torch import nn

import circuitsviz as cv
from circuitsviz.errors import BadInputError, CircuitsvizError

CASE_SECONDS = 8


class _Opaque:
    def __repr__(self) -> str:
        return "<object>"


BAD = [0, -1, -5, math.nan, math.inf, -math.inf, 10**12, "banana", "../../x/y", "/proc/self", b"\x00", _Opaque()]
MUST_RAISE = [math.nan, math.inf, -math.inf, "banana", _Opaque()]  # for int/float parameters


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).relu()


_cache: dict = {}


def demo():
    if "demo" not in _cache:
        torch.manual_seed(0)
        _cache["demo"] = cv.load_model("demo", pretrained=False)
    return _cache["demo"]


def tiny_data(n: int = 2):
    from circuitsviz.data import ConceptDataset

    return ConceptDataset(n=n, seed=0, size=64)


def samples():
    return torch.rand(240, 8, generator=torch.Generator().manual_seed(0))


def _mining_results():
    r = cv.mine(demo(), tiny_data(), "mixed3a", k=1, batch_size=2, calibration=1, progress=False)
    return [r]


def _saved_sae(tmp):
    if "sae" not in _cache:
        sae = cv.fit_sae(None, samples(), "toy", expansion=1, k=2, steps=2, batch_size=40, progress=False)
        from circuitsviz.sae import save_sae

        _cache["sae"] = save_sae(sae, tmp / "sae")
    return _cache["sae"]


def _empty_run(tmp):
    cv.open_run(tmp / "empty-run", create=True).close()
    return cv.open_run(tmp / "empty-run")


def _fv_targets():
    from circuitsviz.evaluate import Target

    return [Target("mixed3a:0", cv.channel("mixed3a", 0), 0)]


# 2 images x 64 sampled positions: more SAE samples than mixed3a's 64 features, as the study requires
STUDY_SETTINGS = dict(n_images=4, vis_size=16, vis_steps=2, k=2, batch_size=4, sae_expansion=1, sae_k=1, sae_steps=2,
                      sae_per_image=64, n_split=1, split_top=2, feature_vis=1)


def _study_settings():
    return cv.StudySettings(**STUDY_SETTINGS)


# name -> (function, valid positional/keyword arguments given a scratch folder). Every
# parameter of the signature not named here keeps its default and is fuzzed all the same.
def table(tmp) -> dict[str, tuple[Callable, dict]]:
    return {
        "load_model": (cv.load_model, dict(name="demo", pretrained=False, progress=False)),
        "wrap_model": (cv.wrap_model, dict(net=_Net(), input_size=16)),
        "list_layers": (cv.list_layers, dict(model=demo(), input_size=None)),
        "parse_channels": (cv.parse_channels, dict(spec="1,3-5", total=8)),
        "visualize": (cv.visualize, dict(model=demo(), units="mixed3a:0", size=16, steps=2, progress=False)),
        "channel": (cv.channel, dict(layer="mixed3a", c=0)),
        "neuron": (cv.neuron, dict(layer="mixed3a", c=0)),
        "direction": (cv.direction, dict(layer="mixed3a", vector=torch.ones(4))),
        "diversity": (cv.diversity, dict(layer="mixed3a")),
        "class_logit": (cv.class_logit, dict(layer="softmax2_pre_activation_matmul", label=0)),
        "save_grid": (cv.save_grid, dict(results=cv.visualize(demo(), "mixed3a:0", size=16, steps=1, progress=False),
                                         path=tmp / "grid.png")),
        "mine": (cv.mine, dict(model=demo(), data=tiny_data(), layers="mixed3a", k=1, batch_size=2, calibration=1,
                               progress=False)),
        "merge": (cv.merge, dict(results=_mining_results())),
        "receptive_field": (cv.receptive_field, dict(model=demo(), layer="mixed3a")),
        "fit_sae": (cv.fit_sae, dict(model=None, data=samples(), layer="toy", expansion=1, k=2, steps=2,
                                     batch_size=40, progress=False)),
        "load_sae": (cv.load_sae, dict(path=_saved_sae(tmp))),
        "split_channel": (cv.split_channel, dict(sae=cv.load_sae(_saved_sae(tmp)), channel=0, data=samples())),
        "open_run": (cv.open_run, dict(path=tmp / "run", create=True)),
        "study": (_function("study"),
                  dict(model=demo(), data=tiny_data(), out=tmp / "study", layers=["mixed3a"], channels=[0],
                       vis_channels=[0], settings=_study_settings(), pretrained=False, progress=False)),
        "ablate": (cv.ablate, dict(model=demo(), unit="mixed3b:0", sources=["mixed3a:0"], data=tiny_data(),
                                   batch_size=2, limit=2)),
        "attribute": (cv.attribute, dict(model=demo(), unit="mixed3b:0", source="mixed3a", data=tiny_data(), steps=2,
                                         batch_size=2, limit=2)),
        "circuit": (cv.circuit, dict(model=demo(), unit="mixed3b:0", source="mixed3a", top=2)),
        "expanded_weights": (cv.expanded_weights, dict(model=demo(), target="mixed3b", source="mixed3a",
                                                       channels=[0])),
        "faithfulness": (cv.faithfulness, dict(model=demo(), unit="mixed3b:0", source="mixed3a", data=tiny_data(4),
                                               n=1, draws=2, batch_size=2, limit=4)),  # 4: half rank, half measure
        "feature_objective": (cv.feature_objective, dict(unit="toy/topk1x_k2:0", sae=cv.load_sae(_saved_sae(tmp)))),
        "sae_feature": (cv.sae_feature, dict(sae=cv.load_sae(_saved_sae(tmp)), feature=0)),
        "sae_name": (cv.sae_name, dict(kind="topk", expansion=8, k=32)),
        "clearest_split": (cv.clearest_split, dict(run=_empty_run(tmp))),
        "split_summary": (cv.split_summary, dict(run=_empty_run(tmp), features=2)),
        "ConceptDataset": (cv.ConceptDataset, dict(n=4, size=16)),
        "ImageFolderDataset": (cv.ImageFolderDataset, dict(root=tmp / "images", size=16)),
        "StudySettings": (cv.StudySettings, STUDY_SETTINGS),
        "retain_freed_memory": (cv.retain_freed_memory, dict()),
        "evaluate_split": (cv.evaluate_split, dict(model=cv.wrap_model(_Net(), input_size=16), layer="conv", n_images=13,
                                                   eval_images=13, expansion=1, ks=[1], seeds=[0], per_image=4, top=2,
                                                   sae_steps=2, baselines=[])),
        "fv_recovery": (cv.fv_recovery, dict(model=demo(), targets=_fv_targets(), steps=2, size=16, progress=False)),
    }


# Parameters that are not values a user types (callbacks, objects they build in code).
SKIP_PARAMS = {"callback", "transform", "net", "model", "sae", "settings", "sampler", "param", "transforms"}


def _is_numeric(param: inspect.Parameter) -> bool:
    ann = str(param.annotation)
    return ("int" in ann or "float" in ann) and not any(t in ann for t in ("str", "Callable", "bool", "slice", "list"))


class _Hang(Exception):
    pass


def _function(name: str):
    if name == "study":  # cv.study is shadowed by the circuitsviz.study module once it is imported
        from circuitsviz.study import study

        return study
    return getattr(cv, name)


PUBLIC_FUNCTIONS = [n for n in cv.__all__ if (inspect.isfunction(getattr(cv, n)) or n == "study")]
PUBLIC_CLASSES = ["ConceptDataset", "ImageFolderDataset", "StudySettings"]  # built from values a user types


def _cases():
    for name in PUBLIC_FUNCTIONS + PUBLIC_CLASSES:
        if name in NOT_FUZZED:
            continue
        params = inspect.signature(_function(name)).parameters
        for p in params.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in SKIP_PARAMS:
                continue
            yield pytest.param(name, p.name, id=f"{name}-{p.name}")


# Public functions left out of the generated cases. fv_recovery and evaluate_split have table rows
# with tiny settings (a 16 px input, 2 render steps, a 13-image split), so they are fuzzed too.
NOT_FUZZED: set[str] = set()


def test_the_table_covers_every_public_function(calls):
    assert sorted({*calls, *NOT_FUZZED}) == sorted(PUBLIC_FUNCTIONS + PUBLIC_CLASSES)


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "images").mkdir()
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp / "images" / "a.png")
    return table(tmp)


def _call(fn, kwargs: dict):
    pos = [kwargs.pop(p.name) for p in inspect.signature(fn).parameters.values()
           if p.kind == p.POSITIONAL_ONLY and p.name in kwargs]
    return fn(*pos, **kwargs)


def test_every_base_call_succeeds(calls, tmp_path, monkeypatch):
    """The fuzzed cases change one value of a call that works: a base that failed would make every
    case 'raise a CircuitsvizError' without checking anything."""
    monkeypatch.chdir(tmp_path)
    failed = {}
    for name, (fn, base) in calls.items():
        try:
            _call(fn, dict(base))
        except Exception as e:  # noqa: BLE001 - reported below, by row
            failed[name] = f"{type(e).__name__}: {e}"
    assert failed == {}


def _problem(fname: str, fn, base: dict, param: inspect.Parameter, bad) -> str | None:
    """What is wrong with calling ``fn`` with ``param`` set to ``bad`` (None: nothing)."""

    def on_alarm(*_):
        raise _Hang

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        _call(fn, {**base, param.name: bad})
    except _Hang:
        return f"{fname}({param.name}={bad!r}) ran for more than {CASE_SECONDS} s"
    except CircuitsvizError as e:
        return None if str(e).strip() else f"{fname}({param.name}={bad!r}) raised an error without a message"
    except Exception as e:  # noqa: BLE001 - the point of the test
        return f"{fname}({param.name}={bad!r}) raised {type(e).__name__}: {e}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if _is_numeric(param) and any(bad is v or (isinstance(v, float) and isinstance(bad, float) and
                                              (bad == v or math.isnan(bad) and math.isnan(v))) for v in MUST_RAISE):
        return f"{fname}({param.name}={bad!r}) was accepted; a {param.annotation} parameter must refuse it"
    return None


@pytest.mark.parametrize("fname, pname", list(_cases()))
def test_bad_values_give_a_circuitsviz_error_or_a_result_and_never_hang(fname, pname, calls, tmp_path, monkeypatch):
    fn, base = calls[fname]
    param = inspect.signature(fn).parameters[pname]
    problems = []
    for i, bad in enumerate(BAD):
        scratch = tmp_path / str(i)
        scratch.mkdir()
        monkeypatch.chdir(scratch)  # relative path-shaped values land in a scratch folder of their own
        problems.append(_problem(fname, fn, base, param, bad))
    assert [p for p in problems if p] == []


# ------------------------------------------------------------------ StudySettings, field by field
# Each field's valid range, written from what the field means (not read from the code): counts of
# things the study makes are >= 1, counts it may skip (channels to split, features to render,
# loader workers) >= 0, seeds >= 0; a render of under 16 px shows nothing. None only where it means
# "from the data".
STUDY_RANGES = dict(n_images=1, data_seed=0, vis_size=16, vis_steps=1, seed=0, k=1, batch_size=1, num_workers=0,
                    sae_expansion=1, sae_k=1, sae_steps=1, sae_images=1, sae_per_image=1, n_split=0, split_top=1,
                    feature_vis=0)
OPTIONAL = {"sae_steps", "sae_images"}
SEEDS = {"seed", "data_seed"}


def _refused(field: str) -> list:
    lo = STUDY_RANGES[field]
    huge = 2**64 if field in SEEDS else 10**12  # a seed may be any 64-bit value; nothing else is that big
    return [lo - 1, -5, huge, True, False, 2.0, math.nan, math.inf, "3", _Opaque()] + ([] if field in OPTIONAL else [None])


def test_study_settings_ranges_cover_every_field():
    from dataclasses import fields

    assert sorted(f.name for f in fields(cv.StudySettings)) == sorted(STUDY_RANGES)


@pytest.mark.parametrize("field", sorted(STUDY_RANGES))
def test_every_study_setting_refuses_a_bad_value_when_made_naming_it(field):
    lo = STUDY_RANGES[field]
    assert getattr(cv.StudySettings(**{**STUDY_SETTINGS, field: lo}), field) == lo  # the bound itself is valid
    for bad in _refused(field):
        with pytest.raises(BadInputError) as e:
            cv.StudySettings(**{**STUDY_SETTINGS, field: bad})
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{field} must be an integer in [{lo}, ") and repr(bad) in msg


@pytest.mark.parametrize("field", sorted(STUDY_RANGES))
def test_a_study_setting_changed_after_it_was_made_is_refused_before_the_run_exists(field, tmp_path):
    from circuitsviz.cli import main
    from circuitsviz.study import study

    settings = cv.StudySettings(**STUDY_SETTINGS)
    setattr(settings, field, STUDY_RANGES[field] - 1)  # a dataclass field can be set after the check
    with pytest.raises(BadInputError, match=f"^{field} must be an integer in \\[{STUDY_RANGES[field]}, "):
        study(demo(), tiny_data(), out=tmp_path / "api", layers=["mixed3a"], settings=settings, progress=False)
    flag = "--" + field.replace("_", "-")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["study", "--model", "demo", "--no-pretrained", "--data", "procedural", "--out", str(tmp_path / "cli"),
                   f"{flag}={STUDY_RANGES[field] - 1}"])
    line = err.getvalue().strip()
    assert rc == 2 and "\n" not in line and line.endswith(f"got {STUDY_RANGES[field] - 1}")
    assert line.startswith(f"circuitsviz study: error: {flag} must be an integer in [{STUDY_RANGES[field]}, ")
    assert list(tmp_path.iterdir()) == []  # neither run folder was made
