"""SAE internals against brute-force references, plus bad input, resume and save/load."""

from __future__ import annotations

import json
from pathlib import Path
from collections import OrderedDict

import pytest
import torch
from torch import nn

from circuitsviz.errors import BadInputError, ChannelOutOfRangeError, UnknownNameError
from circuitsviz.models import wrap_model
from circuitsviz.sae import (
    NonFiniteActivationError, ReluSAE, SampleSource, Sampler, TopKSAE, build_cache, evaluate, fit_sae, load_sae,
    open_cache, save_sae, split_channel,
)
from circuitsviz.sae.cache import Shard
from circuitsviz.sae.model import select_linear, sparse_decode


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ sparse step == dense step
def test_sparse_topk_step_has_the_same_gradients_as_the_dense_computation():
    torch.manual_seed(0)
    n, c, f, k = 16, 12, 40, 4
    x = torch.randn(n, c, dtype=torch.float64)
    W_enc = torch.randn(f, c, dtype=torch.float64, requires_grad=True)
    b_enc = torch.randn(f, dtype=torch.float64, requires_grad=True)
    W_dec = torch.randn(f, c, dtype=torch.float64, requires_grad=True)
    target = torch.randn(n, c, dtype=torch.float64)

    pre = (x @ W_enc.T + b_enc).detach()
    idx = pre.topk(k, dim=1).indices
    vals = select_linear(x, W_enc, b_enc, idx, pre).clamp_min(0)
    (sparse_decode(idx, vals, W_dec) - target).pow(2).sum().backward()
    sparse = [t.grad.clone() for t in (W_enc, b_enc, W_dec)]
    for t in (W_enc, b_enc, W_dec):
        t.grad = None

    dense_pre = x @ W_enc.T + b_enc                 # brute force: dense code, dense matmul
    mask = torch.zeros_like(dense_pre).scatter(1, idx, 1.0)
    z = (dense_pre * mask).clamp_min(0)
    (z @ W_dec - target).pow(2).sum().backward()
    for got, want in zip(sparse, (W_enc.grad, b_enc.grad, W_dec.grad)):
        torch.testing.assert_close(got, want)


def test_decoder_update_keeps_unit_rows_and_removes_the_parallel_gradient():
    sae = TopKSAE(8, 32, k=3)
    sae.W_dec.grad = sae.W_dec.detach() * 2.0 + torch.randn(32, 8, generator=_gen())
    sae.remove_parallel_grad_()
    assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(1), torch.zeros(32), atol=1e-5)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.post_step_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5)


def test_encode_of_feature_maps_matches_encoding_each_position():
    sae = TopKSAE(6, 24, k=2)
    maps = torch.rand(2, 6, 3, 4, generator=_gen())
    z = sae.encode(maps)
    assert z.shape == (2, 24, 3, 4)
    torch.testing.assert_close(z[1, :, 2, 3], sae.encode(maps[1:2, :, 2, 3])[0])
    assert int((z > 0).sum(1).max()) <= 2


def test_decoder_direction_is_what_one_unit_of_the_feature_adds_in_raw_space():
    sae = TopKSAE(5, 10, k=1)
    sae.scale.fill_(4.0)
    z = torch.zeros(1, 10)
    base = sae.decode(z)
    z[0, 7] = 1.0
    torch.testing.assert_close(sae.decode(z)[0] - base[0], sae.decoder_direction(7))


# ------------------------------------------------------------------ metrics
def test_fvu_uses_the_per_dimension_mean_and_matches_brute_force():
    sae = ReluSAE(4, 8)
    # Dimensions with very different means: a scalar mean would inflate the denominator.
    x = torch.randn(300, 4, generator=_gen()) + torch.tensor([100.0, -50.0, 0.0, 3.0])
    m = evaluate(sae, [x[:100], x[100:]])
    x64 = x.double()
    x_hat = sae.decode(sae.encode(x)).double()
    want = ((x64 - x_hat) ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum()
    assert m.fvu == pytest.approx(float(want), rel=1e-6)
    z = sae.encode(x)
    assert m.l0 == pytest.approx(float((z > 0).sum(1).float().mean()))
    assert m.dead_fraction == pytest.approx(float(((z > 0).sum(0) == 0).float().mean()))
    assert m.dense_fraction == pytest.approx(float(((z > 0).float().mean(0) > 0.1).float().mean()))


def test_perfect_reconstruction_has_zero_fvu_and_mean_prediction_has_fvu_one():
    from circuitsviz.sae.metrics import MetricsAccumulator

    x = torch.randn(50, 3, generator=_gen())
    acc = MetricsAccumulator(2)
    acc.update(x, x, torch.zeros(50, 2))
    assert acc.result().fvu == 0
    acc = MetricsAccumulator(2)
    acc.update(x, x.mean(0).expand_as(x), torch.zeros(50, 2))
    assert acc.result().fvu == pytest.approx(1.0)


# ------------------------------------------------------------------ a tiny model for pipelines
def tiny_model(c: int = 4) -> "wrap_model":
    conv = nn.Conv2d(3, c, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=_gen(3)) * 0.5)
    return wrap_model(nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU())), name="tiny", input_size=8)


class Images(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int = 0, nan_at: tuple | None = None):
        self.n, self.seed, self.nan_at = n, seed, nan_at
        self.images = torch.rand(n, 3, 8, 8, generator=_gen(seed))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.images[i], -1

    def image_id(self, i):
        return f"img{i}.png"

    def spec(self):
        return {"kind": "test", "n": self.n, "seed": self.seed}


def test_cache_records_origins_and_reuses_the_same_config(tmp_path):
    model, data = tiny_model(), Images(20)
    src = build_cache(model, data, "relu", Sampler("per_image", per_image=5), root=tmp_path, images_per_shard=8,
                      dtype="float32", progress=False)
    dirs = list(tmp_path.iterdir())
    assert len(dirs) == 1 and len(src.shards) == 3
    acts = model.activations(data.images, "relu")["relu"]
    for shard in src.shards:
        for row, (i, y, x) in zip(shard.acts, shard.pos):
            assert torch.allclose(torch.from_numpy(row.copy()), acts[i, :, y, x])
    mtime = (dirs[0] / "acts_00000.npy").stat().st_mtime_ns
    build_cache(model, data, "relu", Sampler("per_image", per_image=5), root=tmp_path, images_per_shard=8,
                dtype="float32", progress=False)
    assert (dirs[0] / "acts_00000.npy").stat().st_mtime_ns == mtime and len(list(tmp_path.iterdir())) == 1
    build_cache(model, data, "relu", Sampler("per_image", per_image=5), root=tmp_path, images_per_shard=8,
                dtype="float32", seed=1, progress=False)
    assert len(list(tmp_path.iterdir())) == 2  # another seed is another cache


def test_channel_sampler_prefers_positions_where_the_channel_fires(tmp_path):
    model, data = tiny_model(), Images(30)
    focused = build_cache(model, data, "relu", Sampler("channel", per_image=4, channel=2, mix=0.0), root=tmp_path,
                          dtype="float32", progress=False)
    uniform = build_cache(model, data, "relu", Sampler("per_image", per_image=4), root=tmp_path,
                          dtype="float32", progress=False)
    mean_c = lambda src: float(torch.cat([torch.from_numpy(s.acts[:, 2].copy()) for s in src.shards]).mean())
    assert mean_c(focused) > 1.3 * mean_c(uniform)


def test_reader_shuffles_within_epochs_and_resumes_at_any_step():
    x = torch.arange(200, dtype=torch.float32)[:, None].repeat(1, 3)
    src = SampleSource([Shard(x[i:i + 50], None) for i in range(0, 200, 50)], heldout=0.0)
    it = src.batches(20, seed=3, buffer=60)
    first_epoch = torch.cat([next(it) for _ in range(src.n_train // 20)])[:, 0]
    assert sorted(first_epoch.tolist()) == list(range(200))  # every sample once per epoch
    assert first_epoch.tolist() != list(range(200))          # ... in shuffled order
    full = [next(src.batches(20, seed=3, buffer=60, start_step=s)) for s in (0, 7, 13)]
    again = src.batches(20, seed=3, buffer=60)
    seq = [next(again) for _ in range(14)]
    for s, b in zip((0, 7, 13), full):
        assert torch.equal(b, seq[s])


# ------------------------------------------------------------------ bad input
def test_nan_in_activations_is_reported_with_its_image_and_position(tmp_path):
    model, data = tiny_model(), Images(6)
    with torch.no_grad():
        model.net.conv.bias[1] = float("nan")  # every position of channel 1 is NaN
    with pytest.raises(NonFiniteActivationError, match=r"image 0 \(img0.png\), channel 1, position y=0, x=0"):
        build_cache(model, data, "relu", root=tmp_path, progress=False)
    samples = torch.randn(40, 4)
    samples[17, 2] = float("inf")
    with pytest.raises(NonFiniteActivationError, match="sample 17, channel 2"):
        fit_sae(None, samples, "toy", expansion=1, k=1, progress=False)


def test_unknown_layer_tiny_data_and_bad_channel_raise_clear_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(UnknownNameError, match="conv"):
        fit_sae(model, Images(4), "nope", cache_root=tmp_path, progress=False)
    with pytest.raises(BadInputError, match="fewer|more samples than features"):
        fit_sae(None, torch.randn(20, 4), "toy", expansion=8, k=2, progress=False)
    with pytest.raises(BadInputError, match="empty"):
        fit_sae(model, Images(0), "relu", cache_root=tmp_path, progress=False)
    sae = TopKSAE(4, 16, k=2, layer="relu")
    with pytest.raises(ChannelOutOfRangeError, match="valid: 0..3"):
        split_channel(sae, 9, data=torch.rand(10, 4))
    with pytest.raises(BadInputError, match="never fires"):
        split_channel(sae, 1, data=-torch.rand(10, 4))


def test_loading_an_sae_on_another_layer_or_model_fails_clearly(tmp_path):
    sae = TopKSAE(4, 16, k=2, layer="relu", model="tiny")
    sae.scale.fill_(2.5)
    save_sae(sae, tmp_path / "s")
    back = load_sae(tmp_path / "s", model=tiny_model(), layer="relu")
    assert torch.equal(back.W_dec, sae.W_dec) and float(back.scale) == 2.5 and back.k == 2
    with pytest.raises(BadInputError, match="fit on tiny:relu, not on layer 'conv'"):
        load_sae(tmp_path / "s", layer="conv")
    other = tiny_model()
    other.name = "other"
    with pytest.raises(BadInputError, match="not on model 'other'"):
        load_sae(tmp_path / "s", model=other)
    with pytest.raises(BadInputError, match="4 inputs but tiny:relu has 6"):
        load_sae(tmp_path / "s", model=tiny_model(c=6))
    with pytest.raises(BadInputError, match="fit on 4-channel"):
        sae.encode(torch.rand(2, 6, 3, 3))


# ------------------------------------------------------------------ resume
def test_interrupted_fit_resumes_from_its_checkpoint_and_matches_an_uninterrupted_fit(tmp_path):
    x = torch.randn(3000, 8, generator=_gen()).relu()
    kw = dict(expansion=4, k=2, steps=60, batch_size=100, checkpoint_every=20, progress=False)
    whole = fit_sae(None, x, "toy", out=tmp_path / "whole", **kw)

    class Stop(Exception):
        pass

    def stop_at_45(step, sae, parts):
        if step == 45:
            raise Stop

    with pytest.raises(Stop):
        fit_sae(None, x, "toy", out=tmp_path / "cut", callback=stop_at_45, **kw)
    seen = []
    resumed = fit_sae(None, x, "toy", out=tmp_path / "cut", callback=lambda s, *_: seen.append(s), **kw)
    assert seen[0] == 41  # restarted after the step-40 checkpoint, not from scratch
    torch.testing.assert_close(resumed.W_dec, whole.W_dec)
    assert resumed.metrics["fvu"] == pytest.approx(whole.metrics["fvu"])
    log = [json.loads(l) for l in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == sorted({r["step"] for r in log})  # no duplicated curve rows
    with pytest.raises(BadInputError, match="different settings"):
        fit_sae(None, x, "toy", out=tmp_path / "cut", **{**kw, "k": 3})


def test_fit_on_a_cache_directory_saves_an_sae_that_loads_for_its_layer(tmp_path):
    model = tiny_model()
    sae = fit_sae(model, Images(40), "relu", expansion=2, k=2, steps=30, batch_size=64,
                  sampler=Sampler("all"), cache_root=tmp_path / "cache", out=tmp_path / "sae", progress=False)
    back = load_sae(tmp_path / "sae", model=model)
    assert back.layer == "relu" and back.metrics["fvu"] == pytest.approx(sae.metrics["fvu"])
    assert 0 <= back.metrics["fvu"] < 1 and back.metrics["l0"] <= 2
    cache_dir = next((tmp_path / "cache").iterdir())
    assert open_cache(cache_dir).n_train + open_cache(cache_dir).n_heldout == 40 * 64


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_fit_encode_and_split_run_where_the_data_lives(device):
    x = torch.randn(2000, 6, generator=_gen()).relu().to(device)
    sae = fit_sae(None, x, "toy", expansion=2, k=2, steps=20, batch_size=100, progress=False)
    assert sae.W_dec.device.type == device
    z = sae.encode(x[:10].reshape(10, 6, 1, 1))
    assert z.device.type == device and z.shape == (10, 12, 1, 1)
    assert split_channel(sae, 0, data=x, top=2).features[0].share > 0


def test_sae_is_a_mining_transform_whose_top_images_match_brute_force():
    mining = pytest.importorskip("circuitsviz.mining")
    model, data = tiny_model(), Images(12)
    sae = TopKSAE(4, 8, k=2, layer="relu")
    result = mining.mine(model, data, "relu", k=3, batch_size=4, progress=False, transform={"relu": sae})
    peak = sae.encode(model.activations(data.images, "relu")["relu"]).amax(dim=(2, 3))  # (12, 8)
    assert result.layers["relu"].units == 8
    for f in range(8):
        if float(peak[:, f].max()) > 0:
            assert int(result.layers["relu"].top_index[f, 0]) == int(peak[:, f].argmax())


def test_fit_sae_prints_where_it_caches_activations(tmp_path, monkeypatch, capsys):
    model, kw = tiny_model(), dict(expansion=1, k=1, steps=2, batch_size=16, sampler=Sampler("per_image", per_image=2))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the default cache root is under ~/.cache
    fit_sae(model, Images(8), "relu", **kw)
    err = capsys.readouterr().err
    [line] = [ln for ln in err.splitlines() if ln.startswith("activation cache: ")]
    where = Path(line.removeprefix("activation cache: "))
    assert where.parent == tmp_path / "home" / ".cache" / "circuitsviz" / "activations"
    assert (where / "metadata.json").is_file()       # the folder printed is the one written
    fit_sae(model, Images(8), "relu", cache_root=tmp_path / "c", **kw)
    fit_sae(model, Images(8), "relu", cache_root=tmp_path / "c", **kw)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("activation cache: ")]
    [made] = list((tmp_path / "c").iterdir())
    assert lines == [f"activation cache: {made}", f"activation cache: {made} (reused)"]
    fit_sae(model, Images(8), "relu", cache_root=tmp_path / "c", progress=False, **kw)
    assert "activation cache" not in capsys.readouterr().err


# ------------------------------------------------------------------ dead features
# Six non-negative concept directions with amplitudes in [0.5, 1]: at k = 1 with 12 latents,
# random unit rows that lose every top-1 competition stay dead under AuxK alone.
_PLANTED = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                         [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])


def _planted(n: int, seed: int) -> torch.Tensor:
    g = _gen(seed)
    d = _PLANTED / _PLANTED.norm(dim=1, keepdim=True)
    c = torch.randint(0, len(d), (n,), generator=g)
    return d[c] * (0.5 + 0.5 * torch.rand(n, 1, generator=g)) + 0.02 * torch.randn(n, 3, generator=g)


def test_resampling_revives_features_that_auxk_leaves_dead():
    train, held = _planted(4000, 1), _planted(4000, 2)
    kw = dict(expansion=4, k=1, steps=300, seed=0, progress=False)
    dead = lambda sae: int(((sae.encode(held) > 0).sum(0) == 0).sum())  # noqa: E731
    without = fit_sae(None, train, "toy", resample=False, **kw)
    with_ = fit_sae(None, train, "toy", **kw)
    assert dead(without) >= 2                      # the planted failure: AuxK alone leaves them dead
    assert dead(with_) == 0                        # every latent fires on held-out samples
    assert with_.metrics["fvu"] < without.metrics["fvu"]
    assert with_.config.extra["fit"]["resample"] is True and "resample" not in without.config.extra["fit"]


def test_resample_puts_dead_rows_on_badly_reconstructed_samples_and_clears_their_moments():
    from circuitsviz.sae.train import make_optimizer, resample_dead_, train_step

    x = torch.randn(64, 5, generator=_gen(3)).relu() + 0.1
    sae = TopKSAE(5, 10, k=1)
    opt = make_optimizer(sae, 1e-3)
    train_step(sae, opt, x, None)                  # Adam moments now nonzero everywhere touched
    dead = torch.zeros(10, dtype=torch.bool)
    dead[[2, 7]] = True
    before = {n: p.detach().clone() for n, p in sae.named_parameters()}
    xn = sae.normalize(x)
    err = (sae.code(xn) @ sae.W_dec + sae.b_pre - xn).pow(2).sum(1).detach()
    revived = resample_dead_(sae, opt, x, dead, seed=0)
    assert revived.tolist() == [2, 7]
    centred = (xn - sae.b_pre).detach()
    units = centred / centred.norm(dim=1, keepdim=True)
    for f in (2, 7):
        # the row is one sample's unit direction (encoder = decoder), and that sample was misfit
        match = (units - sae.W_dec[f].detach()).norm(dim=1).argmin()
        torch.testing.assert_close(sae.W_dec[f].detach(), units[match])
        torch.testing.assert_close(sae.W_enc[f].detach(), units[match])
        assert float(err[match]) > 0 and float(sae.b_enc[f].detach()) == 0.0
        for p in (sae.W_enc, sae.W_dec, sae.b_enc):
            assert all(float(m[f].abs().max()) == 0 for m in opt.state[p].values() if m.shape == p.shape)
    keep = [f for f in range(10) if f not in (2, 7)]
    for name in ("W_enc", "W_dec", "b_enc"):
        torch.testing.assert_close(getattr(sae, name).detach()[keep], before[name][keep])
    assert resample_dead_(sae, opt, x, torch.zeros(10, dtype=torch.bool), seed=0).numel() == 0
