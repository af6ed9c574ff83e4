"""Hostile and damaged inputs (issue 15): each test plants one defect and checks the clean refusal.

No test here trusts the code under test for its expected answer: the payloads, damaged files and
bad values are built by hand, and what must not happen (a marker file written by a pickle, a byte
changed in a foreign file, a download kept) is checked directly on disk.
"""

import contextlib
import http.server
import io
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from circuitsviz.data.folder import ImageFolderDataset
from circuitsviz.data.procedural import export
from circuitsviz.errors import BadInputError, CircuitsvizError, DamagedRunError, WeightsError
from circuitsviz.models import load_model, zoo
from circuitsviz.models.weights import WeightsSpec, remove_stale_parts
from circuitsviz.sae import fit_sae
from circuitsviz.sae.cache import SampleSource
from circuitsviz.store import open_run
from circuitsviz.store.blobs import BlobStore

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ 1. no code runs from a file
class _Payload:
    """Unpickling this writes a marker file: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_a_hostile_pickled_sae_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    out, marker = tmp_path / "sae", tmp_path / "MARKER"
    out.mkdir()
    torch.save({"settings_hash": "x", "evil": _Payload(str(marker))}, out / "checkpoint.pt")
    x = torch.randn(400, 4, generator=torch.Generator().manual_seed(0)).relu()
    with pytest.raises(BadInputError, match="refused to load .*checkpoint.pt"):
        fit_sae(None, x, "toy", expansion=2, k=2, steps=5, batch_size=50, out=out, progress=False)
    assert not marker.exists()


def test_sae_checkpoint_is_safetensors_and_its_settings_are_checked_from_the_header(tmp_path):
    from safetensors import safe_open

    x = torch.randn(400, 4, generator=torch.Generator().manual_seed(0)).relu()
    kw = dict(expansion=2, k=2, steps=6, batch_size=50, checkpoint_every=3, progress=False)
    fit_sae(None, x, "toy", out=tmp_path / "s", **kw)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert "checkpoint.safetensors" in names and not any(n.endswith((".pt", ".pkl")) for n in names)
    with safe_open(str(tmp_path / "s" / "checkpoint.safetensors"), framework="pt") as f:
        assert '"step": 6' in f.metadata()["checkpoint"]
    with pytest.raises(BadInputError, match="different settings"):
        fit_sae(None, x, "toy", out=tmp_path / "s", **{**kw, "k": 1})


def test_no_source_file_unpickles():
    pattern = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True")
    hits = [f"{p}:{i}" for d in ("circuitsviz", "apps") for p in (ROOT / d).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


# ------------------------------------------------------------------ 3. path traversal
def test_blob_hashes_must_be_64_hex_digits(tmp_path):
    store = BlobStore(tmp_path / "images")
    for bad in ("/etc/passwd", "../../" + "a" * 58, "A" * 64, "a" * 63, "", "a" * 62 + "/x"):
        with pytest.raises(BadInputError, match="not 64 hex digits"):
            store.path(bad)
    assert store.path("ab" * 32).parent.name == "ab"


def test_image_ids_that_climb_out_of_the_data_folder_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(data / "cat" / "a.png")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(tmp_path / "secret.png")
    ds = ImageFolderDataset(data, size=8)
    assert ds.load_image("cat/a.png").getpixel((0, 0)) == (1, 2, 3)
    for bad in ("../secret.png", "cat/../../secret.png", str(tmp_path / "secret.png"), "..", ""):
        with pytest.raises(BadInputError, match="inside the data folder|not a relative path"):
            ds.load_image(bad)


def _hostile_run(tmp_path):
    """A run whose records point outside it: an absolute-path hash and a ../ image id."""
    from circuitsviz.data import ImageFolderDataset as DS
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "a.png")
    run = open_run(tmp_path / "run", create=True)
    run.set_data_source(DS(data, size=8).spec())
    run.put_examples("l:0", [dict(rank=0, image_id="../secret.png", value=1.0, y=0, x=0),
                             dict(rank=1, image_id="a.png", value=0.5, y=0, x=0)])
    run.put_visualization("l:1", np.zeros((4, 4, 3), np.uint8))
    run.close()
    with sqlite3.connect(tmp_path / "run" / "index.sqlite") as conn:  # what an attacker would edit
        conn.execute("INSERT INTO visualizations VALUES ('l:0', 'positive', 0, '/etc/passwd', 4, 4, NULL, '{}')")
    return tmp_path / "run"


def test_verify_reports_traversal_records_and_the_reader_refuses_them(tmp_path):
    path = _hostile_run(tmp_path)
    run = open_run(path)
    problems = run.verify()
    assert any("'/etc/passwd' is not 64 hex digits" in p for p in problems)
    assert any("'../secret.png'" in p and "inside the data folder" in p for p in problems)
    assert len(problems) == 2  # the healthy records are not reported
    with pytest.raises(BadInputError, match="not 64 hex digits"):
        run.visualizations("l:0")
    with pytest.raises(BadInputError, match="inside the data folder"):
        run.example_image(run.examples("l:0")[0])
    assert run.visualizations("l:1")[0].path.is_file()


# ------------------------------------------------------------------ 4. downloads
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``routes``: path -> (mode, body). Modes mimic what broken servers do."""

    routes: dict[str, tuple[str, bytes]] = {}
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        mode, body = self.routes.get(self.path, ("missing", b""))
        if mode == "missing":
            self.send_error(404)
            return
        self.send_response(200)
        if mode == "ok":
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif mode == "html":
            page = b"<html><body>Sign in to continue</body></html>"
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
        elif mode == "no-length-early-close":  # no Content-Length: the end is the close
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif mode == "chunked-cut":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(f"{len(body):x}\r\n".encode() + half)  # announces more than it sends
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    _Handler.routes = {}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler.routes
    srv.shutdown()
    srv.server_close()


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)


def _tiny_entry(monkeypatch, urls, **spec):
    from circuitsviz.models.wrapper import LayerInfo

    entry = zoo.ZooEntry(name="tiny", build=_Tiny, description="test", layers=lambda: [LayerInfo("conv", "conv", 4)],
                         weights=WeightsSpec("tiny.pth", urls=tuple(urls), **spec), input_size=8)
    monkeypatch.setitem(zoo.ZOO, "tiny", lambda: entry)


def _tiny_bytes(seed: int = 3) -> bytes:
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(_Tiny().state_dict(), buf)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["html", "no-length-early-close", "chunked-cut"])
def test_a_bad_download_is_never_kept_and_the_next_url_is_tried(http_server, tmp_path, monkeypatch, mode):
    url, routes = http_server
    good = _tiny_bytes()
    routes["/bad.pth"], routes["/good.pth"] = (mode, good), ("ok", good)
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    _tiny_entry(monkeypatch, [url + "/bad.pth", url + "/good.pth"])
    model = load_model("tiny", progress=False)
    expected = torch.load(io.BytesIO(good), weights_only=True)
    torch.testing.assert_close(model.net.conv.weight, expected["conv.weight"])
    assert (tmp_path / "tiny.pth").read_bytes() == good
    import json

    assert json.loads((tmp_path / "tiny.pth.json").read_text())["url"] == url + "/good.pth"


@pytest.mark.parametrize("mode", ["html", "no-length-early-close", "chunked-cut"])
def test_when_every_url_is_bad_nothing_is_recorded_and_the_error_is_clean(http_server, tmp_path, monkeypatch, mode):
    url, routes = http_server
    routes["/bad.pth"] = (mode, _tiny_bytes())
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    _tiny_entry(monkeypatch, [url + "/bad.pth"])
    with pytest.raises(WeightsError, match="nothing was saved"):
        load_model("tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_state_dict_of_the_wrong_shapes_is_not_kept(http_server, tmp_path, monkeypatch):
    url, routes = http_server
    buf = io.BytesIO()
    torch.save({"conv.weight": torch.zeros(4, 3, 5, 5), "conv.bias": torch.zeros(4)}, buf)
    routes["/w.pth"] = ("ok", buf.getvalue())
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    _tiny_entry(monkeypatch, [url + "/w.pth"])
    with pytest.raises(WeightsError, match=r"conv.weight has shape \(4, 3, 5, 5\), expected \(4, 3, 3, 3\)"):
        load_model("tiny", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_part_files_older_than_a_day_are_removed(tmp_path):
    old, new = tmp_path / "a.pth.part-123", tmp_path / "a.pth.part-456"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert remove_stale_parts(tmp_path) == [old]
    assert not old.exists() and new.exists()


# ------------------------------------------------------------------ 6. an archive that declares gigabytes
def _declare_huge(path: Path, size: int = 2_100_000_000) -> None:
    """Rewrite the central directory so a stored member declares ``size`` bytes (a zip bomb's lie)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = int.from_bytes(data[at + 28:at + 30], "little")
        if b"/data/" in bytes(data[at + 46:at + 46 + name_len]):
            data[at + 24:at + 28] = size.to_bytes(4, "little")
            break
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_an_archive_declaring_more_than_the_budget_is_refused_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pth"
    path.write_bytes(_tiny_bytes())
    _declare_huge(path)
    _tiny_entry(monkeypatch, [])
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(WeightsError, match=r"declares 2,100,0\d\d,\d\d\d bytes"):
        load_model("tiny", weights=path)
    assert loads == []  # refused from the directory alone


# ------------------------------------------------------------------ 5. damaged stores
def _small_run(path: Path) -> Path:
    run = open_run(path, create=True)
    for u in range(50):
        run.put_examples(f"l:{u}", [dict(rank=r, image_id=f"{u}-{r}", value=r, y=0, x=0) for r in range(20)])
    run.put_visualization("l:0", np.full((8, 8, 3), 7, np.uint8))
    run._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    run.close()
    return path


def test_a_garbage_index_is_a_one_line_error_naming_the_file_and_the_repair(tmp_path):
    path = _small_run(tmp_path / "r")
    (path / "index.sqlite").write_bytes(b"this is not sqlite " * 50)
    for create in (False, True):
        with pytest.raises(DamagedRunError) as e:
            open_run(path, create=create)
        msg = str(e.value)
        assert "\n" not in msg and str(path / "index.sqlite") in msg and ".recover" in msg


def test_a_truncated_index_is_refused(tmp_path):
    path = _small_run(tmp_path / "r")
    index = path / "index.sqlite"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2 + 100])
    with pytest.raises(DamagedRunError, match="truncated"):
        open_run(path)


@pytest.mark.parametrize("empty", [True, False])
def test_an_empty_or_missing_index_beside_run_files_is_damage_not_a_new_run(tmp_path, empty):
    path = _small_run(tmp_path / "r")
    (path / "index.sqlite").unlink()
    for side in ("-wal", "-shm"):
        (path / f"index.sqlite{side}").unlink(missing_ok=True)
    if empty:
        (path / "index.sqlite").write_bytes(b"")
    for create in (False, True):
        with pytest.raises(DamagedRunError, match="images"):
            open_run(path, create=create)
    assert (path / "index.sqlite").exists() == empty  # nothing was re-created


def test_opening_a_foreign_sqlite_file_for_reading_changes_nothing(tmp_path):
    folder = tmp_path / "foreign"
    folder.mkdir()
    with sqlite3.connect(folder / "index.sqlite") as conn:
        conn.execute("CREATE TABLE secrets (x)")
        conn.execute("INSERT INTO secrets VALUES ('keep me')")
    conn.close()
    before = (folder / "index.sqlite").read_bytes()
    with pytest.raises(DamagedRunError, match="not a circuitsviz run index.*left unchanged"):
        open_run(folder)
    assert (folder / "index.sqlite").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["index.sqlite"]


def test_opening_a_run_for_reading_changes_no_byte_of_its_index(tmp_path):
    path = _small_run(tmp_path / "r")
    before = (path / "index.sqlite").read_bytes()
    run = open_run(path)
    assert len(run.examples("l:3")) == 20 and run.verify() == []
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        run.mark_done("x", "y")
    run.close()
    assert (path / "index.sqlite").read_bytes() == before


def test_a_missing_blob_is_reported_by_verify_and_the_cli(tmp_path):
    path = _small_run(tmp_path / "r")
    [png] = list((path / "images").rglob("*.png"))
    png.unlink()
    assert open_run(path).verify() == [f"visualization l:0 positive #0: missing image {png}"]
    from circuitsviz.cli import main

    assert main(["verify", str(path)]) == 1


def test_cli_verify_on_a_damaged_index_is_one_line_without_a_traceback(tmp_path):
    path = _small_run(tmp_path / "r")
    (path / "index.sqlite").write_bytes(b"\0" * 4096)
    proc = subprocess.run([sys.executable, "-m", "circuitsviz", "verify", str(path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "index.sqlite" in proc.stderr


def test_the_next_writer_removes_stale_temporary_files(tmp_path):
    path = _small_run(tmp_path / "r")
    sub = next((path / "images").iterdir())
    old, fresh = sub / ".tmp-old.png", sub / ".tmp-fresh.png"
    old.write_bytes(b"half a png")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 7200,) * 2)
    open_run(path).close()
    assert old.exists()  # a reader removes nothing
    open_run(path, create=True).close()
    assert not old.exists() and fresh.exists()


# ------------------------------------------------------------------ 7. the hang
def test_a_negative_batch_size_is_refused_not_an_endless_loop():
    source = SampleSource.from_tensor(torch.rand(100, 4))
    with pytest.raises(BadInputError, match="batch_size must be an integer >= 1, got -5"):
        next(source.batches(-5))
    with pytest.raises(BadInputError, match="batch_size"):
        fit_sae(None, torch.rand(100, 4), "toy", batch_size=-5, steps=3, progress=False)


# ------------------------------------------------------------------ 11. the weights folder
def test_the_weights_dir_variable_comes_before_the_checkout_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    model = load_model("demo", progress=False, download=False)
    assert Path(model.weights_path) == ROOT / "weights" / "demo.pt"


def test_a_wrong_weights_file_for_demo_is_not_told_to_redownload(tmp_path):
    path = tmp_path / "mine.pt"
    torch.save({"x": torch.zeros(3)}, path)
    with pytest.raises(WeightsError) as e:
        load_model("demo", weights=path)
    assert "re-download" not in str(e.value) and "--weights" in str(e.value)


# ------------------------------------------------------------------ 8/9. values
@pytest.mark.parametrize("kwargs, match", [
    (dict(expansion=0), "expansion must be an integer in \\[1, 1024\\], got 0"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=math.nan), "lr must be a finite number"),
    (dict(lr=-1.0), "lr must be a finite number in \\(0, 1\\]"),
    (dict(steps=-1), "steps must be an integer"),
    (dict(steps=0), "steps must be an integer"),
    (dict(l1_coef=math.nan, kind="relu"), "l1_coef must be a finite number"),
    (dict(name="my sae"), "not a valid name"),
    (dict(name="../../x"), "not a valid name"),
    (dict(k=100), "k must be at most the number of features"),
])
def test_fit_sae_refuses_bad_values_by_name(kwargs, match, tmp_path):
    base = dict(expansion=2, k=2, steps=3, batch_size=20, progress=False, out=tmp_path / "s")
    with pytest.raises(BadInputError, match=match):
        fit_sae(None, torch.rand(200, 4), "toy", **{**base, **kwargs})
    assert not (tmp_path / "s").exists()


def test_fit_sae_refuses_a_layer_that_is_not_spatial():
    model = load_model("demo", pretrained=False)
    with pytest.raises(BadInputError, match="softmax2_pre_activation_matmul.*spatial"):
        fit_sae(model, "procedural", "softmax2_pre_activation_matmul", n_images=4, steps=2, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size must be an integer in \\[1, 65536\\], got 0"),
    (dict(num_workers=-1), "num_workers must be an integer in \\[0"),
    (dict(hist_range=(math.nan, math.nan)), "hist_range must be a finite number"),
    (dict(hist_range=(-math.inf, math.inf)), "hist_range must be a finite number"),
    (dict(hist_range=(5.0, 1.0)), "ascending"),
])
def test_mine_refuses_bad_values_by_name(kwargs, match):
    from circuitsviz.mining import mine

    model = load_model("demo", pretrained=False)
    with pytest.raises(BadInputError, match=match):
        mine(model, "procedural", "mixed3a", progress=False, **kwargs)


def test_nan_images_are_refused_and_float64_images_equal_float32(inception):
    model = load_model("demo", pretrained=False)
    x = torch.rand(2, 3, 64, 64)
    bad = x.clone()
    bad[0, 1, 2, 3] = math.nan
    with pytest.raises(BadInputError, match="NaN"):
        model.activations(bad, "mixed3a")
    a32 = model.activations(x, "mixed3a")["mixed3a"]
    a64 = model.activations(x.double(), "mixed3a")["mixed3a"]
    torch.testing.assert_close(a64, a32)


def test_data_export_bounds_its_size_and_names_a_bad_folder(tmp_path):
    with pytest.raises(BadInputError, match="size .* in \\[8, 1024\\], got 20000"):
        export(tmp_path / "x", n=2, size=20000)
    with pytest.raises(BadInputError, match="cannot create the export folder '/proc/nope'"):
        export("/proc/nope", n=2)
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInputError, match="not a folder"):
        export(tmp_path / "file", n=2)


@pytest.mark.parametrize("device", ["banana", "cuda:99"])
def test_load_model_names_a_device_this_machine_lacks(device):
    with pytest.raises(BadInputError, match=f"{re.escape(device)}.*valid here: cpu"):
        load_model("demo", pretrained=False, device=device)


@pytest.mark.parametrize("size", [-5, 0, 10**6])
def test_list_layers_refuses_an_input_size_the_model_cannot_take(size):
    from circuitsviz.models import list_layers

    with pytest.raises(CircuitsvizError, match=f"input_size.*{size}"):
        list_layers(load_model("demo", pretrained=False), input_size=size)


def test_a_corrupt_mining_checkpoint_or_a_file_that_is_not_a_result_is_a_clean_error(tmp_path):
    from circuitsviz.mining import MiningResult, mine

    bad = tmp_path / "ckpt.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadInputError, match="not a readable mining result"):
        mine(load_model("demo", pretrained=False), tiny_concepts(), "mixed3a", k=1, batch_size=2,
             calibration=1, checkpoint=bad, progress=False)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError, match="not a readable mining result"):
        MiningResult.load(tmp_path / "notes.txt")


def tiny_concepts():
    from circuitsviz.data import ConceptDataset

    return ConceptDataset(n=2, size=64)


def test_an_out_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "taken"
    f.write_text("keep")
    with pytest.raises(BadInputError, match="is a file, not a run folder"):
        open_run(f, create=True)
    with pytest.raises(BadInputError, match="not a folder"):
        fit_sae(None, torch.rand(200, 4), "toy", expansion=1, k=1, steps=2, batch_size=20, out=f, progress=False)
    assert f.read_text() == "keep"


def test_a_channel_range_is_checked_before_it_is_built():
    from circuitsviz.units import parse_channels

    with pytest.raises(BadInputError, match="channel 100000000 .* out of range \\(valid: 0..831\\)"):
        parse_channels("0-100000000", total=832)
    assert parse_channels("3-5", total=8) == [3, 4, 5]


@pytest.mark.parametrize("top", [0, -1])
def test_split_refuses_a_top_that_would_record_an_empty_or_clipped_split(top):
    from circuitsviz.sae import split_channel

    x = torch.rand(300, 4)
    sae = fit_sae(None, x, "toy", expansion=1, k=1, steps=2, batch_size=20, progress=False)
    with pytest.raises(BadInputError, match=f"top must be an integer >= 1, got {top}"):
        split_channel(sae, 0, data=x, top=top)


# ------------------------------------------------------------------ a hostile run directory, end to end
# A run received from someone else, opened by `study` (API and CLI), `fit-sae`, `open_run` and the
# viewer. Every file Python opens while it runs is recorded by an audit hook, so "nothing outside
# the run is read" is checked directly, not inferred from what is shown.
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is None or event not in ("open", "sqlite3.connect") or not args:
        return
    path = args[0]
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.fsdecode(path)
        if path.startswith("file:"):  # an SQLite URI
            from urllib.parse import unquote

            path = unquote(path[5:].split("?")[0])
        _OPENED.append(os.path.abspath(path))


_HOOKED = False


@contextlib.contextmanager
def files_opened():
    """The absolute paths of every file opened (``open``, ``os.open``, ``sqlite3.connect``) inside."""
    global _OPENED, _HOOKED
    if not _HOOKED:  # an audit hook cannot be removed: one, switched on only inside this block
        sys.addaudithook(_audit)
        _HOOKED = True
    _OPENED = opened = []
    try:
        yield opened
    finally:
        _OPENED = None


def _outside_of(opened: list[str], root: Path, allowed: list[Path]) -> list[str]:
    """The paths under ``root`` (the test's folder) that lie in none of ``allowed``."""
    return sorted({p for p in opened if Path(p).is_relative_to(root)
                   and not any(Path(p).is_relative_to(a) for a in allowed)})


def _snapshot(folder: Path) -> dict:
    """Bytes and mtime of every file, but the -shm/-wal side files a WAL reader shares by design."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("index.sqlite-")}


class _Marker:
    """Unpickling this writes ``path``: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "pwned"))


TINY_STUDY = dict(n_images=4, vis_size=16, vis_steps=2, k=2, batch_size=4, sae_expansion=1, sae_k=1, sae_steps=2,
                  sae_per_image=64, n_split=1, split_top=2, feature_vis=1)
SAE_DIR = Path("saes/mixed3a/topk1x_k1")


@pytest.fixture(scope="module")
def received(tmp_path_factory):
    """A finished tiny study (the run someone sends), its data, and a sentinel folder beside it:
    a PNG of unique bytes and a foreign SQLite file, which nothing may read or change."""
    from PIL import Image

    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    for i, name in enumerate(("cat", "dog")):
        (data / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), (40 * i + 10 * j, 90, 160)).save(data / name / f"{j}.png")
    outside = root / "outside"
    outside.mkdir()
    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3) * 3 + 1).save(outside / "secret.png")
    foreign = root / "foreign"
    foreign.mkdir()
    with contextlib.closing(sqlite3.connect(foreign / "index.sqlite")) as conn, conn:
        conn.execute("CREATE TABLE secrets (x)")
        conn.execute("INSERT INTO secrets VALUES ('keep me')")
    _study_api(root / "clean", data)
    assert (root / "clean" / SAE_DIR / "checkpoint.safetensors").is_file()  # what a tampered copy replaces
    return root


def _study_api(out: Path, data: Path):
    from circuitsviz.study import StudySettings, study

    return study("demo", str(data), out=out, layers=["mixed3a"], channels=[0], vis_channels=[0], pretrained=False,
                 settings=StudySettings(**TINY_STUDY), progress=False)


def _study_cli(out: Path, data: Path) -> tuple[int, str]:
    from circuitsviz.cli import main

    flags = [x for k, v in TINY_STUDY.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["study", "--model", "demo", "--no-pretrained", "--data", str(data), "--layers", "mixed3a",
                   "--channels", "0", "--vis-channels", "0", "--out", str(out), *flags])
    return rc, err.getvalue()


def _one_error_line(text: str) -> str:
    """The error line of a failed command, checked to be the only one and traceback-free."""
    assert "Traceback" not in text
    errors = [ln for ln in text.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0] == text.strip().splitlines()[-1], text
    return errors[0]


def _tampered(received: Path, name: str, tamper) -> Path:
    import shutil

    run = received / name
    shutil.copytree(received / "clean", run)
    with contextlib.closing(sqlite3.connect(run / "index.sqlite")) as conn, conn:
        tamper(conn, run)
    return run


def _pickled_checkpoint(conn, run: Path) -> None:
    """The SAE step left unfinished, its checkpoint a pickle whose payload writes a marker."""
    (run / SAE_DIR / "checkpoint.safetensors").unlink()
    torch.save({"settings_hash": "x", "evil": _Marker(run.parent / f"MARKER-{run.name}")}, run / SAE_DIR / "checkpoint.pt")
    conn.execute("UPDATE done SET complete = 0 WHERE step = 'sae'")


def _traversal_records(conn, run: Path) -> None:
    """Records that name the sentinel PNG: an absolute blob hash and image ids that climb out."""
    secret = run.parent / "outside" / "secret.png"
    conn.execute("UPDATE visualizations SET sha256 = ?", (str(secret),))
    conn.execute("UPDATE examples SET image_id = ?", ("../outside/secret.png",))
    conn.execute("UPDATE quantile_examples SET image_id = ?", (str(secret),))


def _sae_recorded_outside(conn, run: Path) -> None:
    """The finished SAE's record points at a copy of it outside the run."""
    import shutil

    elsewhere = run.parent / "outside" / f"sae-{run.name}"
    shutil.copytree(run / SAE_DIR, elsewhere)
    conn.execute("UPDATE saes SET path = ?", (str(elsewhere),))


@pytest.mark.parametrize("entry", ["api", "cli"])
@pytest.mark.parametrize("tamper, refusal", [(_pickled_checkpoint, "refused to load .*checkpoint.pt"),
                                             (_traversal_records, "is not 64 hex digits"),
                                             (_sae_recorded_outside, "outside the run; a run is read only from its own folder")])
def test_study_on_a_hostile_run_refuses_it_runs_no_code_and_touches_nothing_outside(received, entry, tamper,
                                                                                    refusal):
    """``refusal``: the one-line error expected (None: a refusal or a result, reading only the run)."""
    run = _tampered(received, f"{tamper.__name__}-{entry}", tamper)
    outside = _snapshot(received / "outside") | _snapshot(received / "foreign") | _snapshot(received / "data")
    with files_opened() as opened:
        if entry == "api":
            with pytest.raises(CircuitsvizError, match=refusal) if refusal else contextlib.suppress(CircuitsvizError):
                _study_api(run, received / "data")
        else:
            rc, err = _study_cli(run, received / "data")
            assert (rc, refusal) == (0, None) or rc == 2 and re.search(refusal or "", _one_error_line(err))
    assert not list(received.glob("MARKER-*"))
    assert str(run / "index.sqlite") in opened  # the hook saw the study's reads ...
    assert _outside_of(opened, received, [run, received / "data"]) == []  # ... and none outside the run
    assert _snapshot(received / "outside") | _snapshot(received / "foreign") | _snapshot(received / "data") == outside


def test_a_foreign_sqlite_file_is_refused_by_every_entry_point_and_left_byte_identical(received, tmp_path,
                                                                                       monkeypatch):
    from circuitsviz.cli import main

    monkeypatch.setenv("CIRCUITSVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CIRCUITSVIZ_RUN", "")  # restored after the viewer sets it

    foreign = received / "foreign"
    before = _snapshot(foreign)
    with files_opened() as opened:
        with pytest.raises(DamagedRunError, match="not a circuitsviz run index.*left unchanged"):
            _study_api(foreign, received / "data")
        rc, err = _study_cli(foreign, received / "data")
        assert rc == 2 and "not a circuitsviz run index" in _one_error_line(err)
        for create in (False, True):
            with pytest.raises(DamagedRunError, match="not a circuitsviz run index"):
                open_run(foreign, create=create)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["fit-sae", "--model", "demo", "--no-pretrained", "--data", str(received / "data"), "--layer",
                       "mixed3a", "--out", str(foreign), "--expansion", "1", "--k", "1", "--steps", "2",
                       "--batch-size", "16", "--images", "4", "--no-progress"])
        assert rc == 2 and "not a circuitsviz run index" in _one_error_line(err.getvalue())
        at = _viewer(foreign, "layer")
        assert not at.exception and any("not a circuitsviz run index" in str(e.value) for e in at.error)
    assert _snapshot(foreign) == before  # bytes and mtimes
    assert sorted(p.name for p in foreign.iterdir()) == ["index.sqlite"]  # no journal, lock or run folder
    assert _outside_of(opened, received, [foreign, received / "data"]) == []


def _viewer(run: Path, page: str, **params):
    from streamlit.testing.v1 import AppTest

    os.environ["CIRCUITSVIZ_RUN"] = str(run)  # what `circuitsviz serve RUN` passes on
    at = AppTest.from_file(str(ROOT / "apps" / "viewer.py"), default_timeout=60)
    at.query_params.update({"page": page, **params})
    return at.run()


def test_the_viewer_on_a_hostile_run_shows_nothing_from_outside_it_and_runs_no_code(tmp_path, monkeypatch):
    import base64

    from circuitsviz.store.synthetic import write_synthetic_run

    monkeypatch.setenv("CIRCUITSVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CIRCUITSVIZ_RUN", "")
    outside = tmp_path / "outside"
    outside.mkdir()
    from PIL import Image

    Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3) * 5 + 2).save(outside / "secret.png")
    secret = (outside / "secret.png").read_bytes()
    fake = write_synthetic_run(tmp_path / "run", channels={"mixed4e": 5}, n_features=2)
    (outside / "evidence.json").write_text("{}")
    (fake.path / "evidence.json").symlink_to(outside / "evidence.json")  # the Evidence page must not follow it
    sae_dir = fake.path / "saes" / "mixed4e" / fake.sae
    sae_dir.mkdir(parents=True)
    for name in ("checkpoint.pt", "sae.pt", "model.pt"):
        torch.save({"evil": _Marker(tmp_path / "MARKER")}, sae_dir / name)
    with contextlib.closing(sqlite3.connect(fake.path / "index.sqlite")) as conn:
        with conn:
            conn.execute("UPDATE visualizations SET sha256 = ? WHERE unit_id = 'mixed4e:1' AND kind = 'positive'",
                         (str(outside / "secret.png"),))
            conn.execute("UPDATE visualizations SET sha256 = ? WHERE unit_id = 'mixed4e:2' AND kind = 'positive'",
                         ("../../../outside/secret",))
            conn.execute("UPDATE examples SET image_id = ? WHERE unit_id = 'mixed4e:3' AND rank = 0",
                         ("../../outside/secret.png",))
            conn.execute("UPDATE examples SET image_id = ? WHERE unit_id = 'mixed4e:3' AND rank = 1",
                         (str(outside / "secret.png"),))
            conn.execute("UPDATE quantile_examples SET image_id = ? WHERE unit_id = 'mixed4e:3'",
                         ("../../outside/secret.png",))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # so that "unchanged" below is about the index file
    before, sentinel = _snapshot(fake.path), _snapshot(outside)
    shown = []
    with files_opened() as opened:
        for page, params in [("layer", {}), ("unit", {"unit": "mixed4e:1"}), ("unit", {"unit": "mixed4e:2"}),
                             ("unit", {"unit": "mixed4e:3"}), ("compare", {}), ("feature", {"unit": fake.features[0]}),
                             ("circuit", {"unit": "mixed4e:3"}), ("evidence", {})]:
            at = _viewer(fake.path, page, **params)
            shown.append((page, params, at))
    assert not (tmp_path / "MARKER").exists()
    assert any(Path(p).is_relative_to(fake.path / "images") for p in opened)  # the hook saw the pages' reads
    assert _outside_of(opened, tmp_path, [fake.path, tmp_path / "cache"]) == []
    assert _snapshot(outside) == sentinel and _snapshot(fake.path) == before
    b64 = base64.b64encode(secret).decode()
    for page, params, at in shown:
        body = "\n".join(str(e.proto) for kind in ("html", "imgs", "markdown") for e in at.main.get(kind))
        assert b64 not in body, (page, params)
    # the refused records are named where they are shown, not silently swapped for other files
    unit1 = " ".join(str(e.value) for e in [*shown[1][2].error, *shown[1][2].exception])
    assert "is not 64 hex digits" in unit1
    assert "not a plain file" in " ".join(str(e.value) for e in shown[-1][2].error)
    # ... in one line on every page, never as a traceback
    assert all(not at.exception for _, _, at in shown), [(p, q) for p, q, at in shown if at.exception]
