"""Weights resolution and download, against a real HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import json
import subprocess
import sys
import threading

import pytest
import torch

from circuitsviz.errors import WeightsError
from circuitsviz.models import load_model
from circuitsviz.models.weights import WeightsSpec, download, resolve


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    truncate_to: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A truncated transfer: announce the full length, send less, close the connection.
        self.wfile.write(body[: self.truncate_to.get(self.path, len(body))])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.files, _Handler.truncate_to = {}, {}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Handler
    srv.shutdown()
    srv.server_close()


def _free_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.pth"  # nothing listens there any more


def _state_dict_bytes() -> bytes:
    net = load_model("inceptionv1", pretrained=False).net
    buf = io.BytesIO()
    torch.save({k: v for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def weights_bytes():
    return _state_dict_bytes()


def test_download_succeeds_and_checks_hash(server, tmp_path):
    url, handler = server
    body = b"x" * 3_000_000
    handler.files["/w.bin"] = body
    sha = hashlib.sha256(body).hexdigest()
    out = download(url + "/w.bin", tmp_path / "w.bin", sha256=sha, progress=False)
    assert out.read_bytes() == body
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]  # no temp file left


def test_truncated_download_leaves_nothing_behind(server, tmp_path):
    url, handler = server
    handler.files["/w.bin"] = b"y" * 2_000_000
    handler.truncate_to["/w.bin"] = 700_000
    with pytest.raises(WeightsError, match="stopped after 700000 bytes"):
        download(url + "/w.bin", tmp_path / "w.bin", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_hash_leaves_nothing_behind(server, tmp_path):
    url, handler = server
    handler.files["/w.bin"] = b"z" * 1000
    with pytest.raises(WeightsError, match="SHA-256"):
        download(url + "/w.bin", tmp_path / "w.bin", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_leaves_nothing_behind(server, tmp_path):
    url, handler = server
    handler.files["/w.bin"] = b"z" * 1000
    with pytest.raises(WeightsError, match="1001"):
        download(url + "/w.bin", tmp_path / "w.bin", size=1001, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_no_server_gives_an_error_naming_url_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    url = _free_port_url()
    spec = WeightsSpec("inception5h.pth", urls=(url,))
    with pytest.raises(WeightsError) as e:
        resolve(spec, progress=False)
    msg = str(e.value)
    assert url in msg and "inception5h.pth" in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []


def test_first_download_records_size_and_hash_and_later_damage_is_caught(server, tmp_path, monkeypatch):
    url, handler = server
    body = b"w" * 5000
    handler.files["/m.pth"] = body
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    spec = WeightsSpec("m.pth", urls=(url + "/m.pth",))
    path = resolve(spec, progress=False)
    record = json.loads((tmp_path / "m.pth.json").read_text())
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["size"] == 5000
    path.write_bytes(body[:4000])  # e.g. a copy that was cut short later
    with pytest.raises(WeightsError, match="truncated"):
        resolve(spec, progress=False)


def test_load_model_downloads_verifies_and_loads_weights(server, tmp_path, monkeypatch, weights_bytes):
    url, handler = server
    handler.files["/inception5h.pth"] = weights_bytes
    monkeypatch.setenv("CIRCUITSVIZ_WEIGHTS_DIR", str(tmp_path))
    from circuitsviz.models import zoo

    entry = zoo._inceptionv1()
    patched = type(entry)(**{**entry.__dict__, "weights": WeightsSpec("inception5h.pth", urls=(url + "/inception5h.pth",))})
    monkeypatch.setitem(zoo.ZOO, "inceptionv1", lambda: patched)
    model = load_model("inceptionv1", progress=False)
    expected = torch.load(io.BytesIO(weights_bytes), weights_only=True)
    torch.testing.assert_close(model.net.conv2d0_pre_relu_conv.weight, expected["conv2d0_pre_relu_conv.weight"])
    assert model.weights_sha256 == hashlib.sha256(weights_bytes).hexdigest()


def test_explicit_weights_path_wins_and_a_truncated_file_is_refused(tmp_path, weights_bytes):
    good = tmp_path / "good.pth"
    good.write_bytes(weights_bytes)
    model = load_model("inceptionv1", weights=good)
    assert model.weights_path == str(good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(weights_bytes[: len(weights_bytes) // 2])
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_model("inceptionv1", weights=bad)


def test_weights_for_another_model_are_refused_by_key(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="does not fit model 'inceptionv1'"):
        load_model("inceptionv1", weights=path)


def test_pickled_code_never_runs(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": object()}, path)  # not loadable with weights_only=True
    with pytest.raises(WeightsError, match="cannot read"):
        load_model("inceptionv1", weights=path)


def test_cli_offline_message_is_clean_not_a_traceback(tmp_path):
    env = {"CIRCUITSVIZ_WEIGHTS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = (
        "import sys; from circuitsviz.models import zoo; from circuitsviz.models.weights import WeightsSpec;"
        "e = zoo._inceptionv1();"
        f"zoo.ZOO['inceptionv1'] = lambda: type(e)(**{{**e.__dict__, 'weights': WeightsSpec('inception5h.pth', urls=({_free_port_url()!r},))}});"
        "from circuitsviz.cli import main; sys.exit(main(['layers', '--model', 'inceptionv1']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "inception5h.pth" in proc.stderr and str(tmp_path) in proc.stderr and "--weights" in proc.stderr
