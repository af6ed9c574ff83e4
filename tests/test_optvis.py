"""Feature visualization, checked on tiny networks whose weights are set by hand.

Rendering settings are kept small (32-48 px, 32-64 steps) so the file runs in well under a minute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from circuitsviz.errors import BadInputError, ChannelOutOfRangeError, UnknownNameError
from circuitsviz.models import wrap_model
from circuitsviz.models.blocks import ReLU
from circuitsviz.optvis import channel, direction, diversity, fft_image, neuron, objective, visualize
from circuitsviz.optvis.objectives import stack
from circuitsviz.optvis.transforms import StandardTransforms

RED = torch.tensor([1.0, -0.5, -0.5])  # the colour direction the planted detector looks for
PERIOD = 8  # pixels per cycle of the planted grating (horizontal stripes)


def _grating(size: int, horizontal: bool = True) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32)
    wave = torch.cos(2 * math.pi * coords / PERIOD)
    return wave[:, None].expand(size, size) if horizontal else wave[None, :].expand(size, size)


class Planted(nn.Module):
    """conv (3->3, 9x9) -> ReLU -> 2x2 max pool -> 1x1 conv (3->4): channel 0 of ``conv`` sees
    red, channel 1 sees horizontal stripes of period 8, channel 2 vertical ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 9, padding=4)
        self.relu = ReLU()
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0] = RED[:, None, None] / 81
            self.conv.weight[1] = _grating(9)[None] / 27
            self.conv.weight[2] = _grating(9, horizontal=False)[None] / 27
            g = torch.Generator().manual_seed(0)
            self.head.weight.copy_(torch.randn(4, 3, 1, 1, generator=g))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.pool(self.relu(self.conv(x))))


@pytest.fixture(scope="module")
def planted():
    return wrap_model(Planted(), name="planted", input_size=32)


def _random_net() -> nn.Module:
    """A small random conv net whose weights come from an explicit generator."""
    net = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 16, 3, padding=1), ReLU(), nn.Conv2d(16, 8, 3, padding=1))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.05))
    return net


@pytest.fixture(scope="module")
def randnet():
    return wrap_model(_random_net(), name="randnet", input_size=32)


def _render(model, units, **kw):
    kw = {"size": 32, "steps": 48, "progress": False, **kw}
    return visualize(model, units, **kw)


def _float(result) -> torch.Tensor:
    return torch.from_numpy(result.image).float().permute(2, 0, 1) / 255


# --------------------------------------------------------------------------- planted detectors
def test_colour_detector_renders_its_colour_and_negative_renders_the_opposite(planted):
    def colour_cosine(result) -> float:
        mean_rgb = _float(result).mean(dim=(1, 2)) - 0.5
        return float(torch.nn.functional.cosine_similarity(mean_rgb, RED, dim=0))

    # Threshold 0.75: the colour matrix makes luminance move faster than chroma, so after 128
    # steps the image is red but also somewhat darker (observed cosine about 0.85).
    [pos] = _render(planted, "conv:0", steps=128)
    [neg] = _render(planted, "conv:0", steps=128, negative=True)
    assert colour_cosine(pos) > 0.75      # the image is red
    assert colour_cosine(neg) < -0.75     # ... and its opposite is cyan
    assert pos.objective > 0 and neg.objective > 0  # both maximised what they were asked to
    assert neg.kind == "negative"


def _orientation_share(result) -> tuple[float, float]:
    """Share of the grey image's energy at the planted frequency, horizontal vs vertical stripes."""
    gray = _float(result).mean(0)
    gray = gray - gray.mean()
    spec = torch.fft.fft2(gray).abs() ** 2
    total = float(spec.sum())
    k = gray.shape[0] // PERIOD
    band = lambda ys, xs: float(spec[ys][:, xs].sum())  # noqa: E731
    near = [k - 1, k, k + 1, -k - 1, -k, -k + 1]
    horizontal = band(near, [0, 1, -1])  # varies along y
    vertical = band([0, 1, -1], near)
    return horizontal / total, vertical / total


def test_grating_detector_renders_stripes_of_its_orientation(planted):
    # lr 0.2 instead of 0.05 so that 64 steps suffice. The image also keeps low-frequency colour
    # blobs, so the share at the planted frequency is modest (observed ~0.25) but dominates the
    # other orientation's share by ~9x; the thresholds are 0.1 and 4x.
    [horiz, vert] = _render(planted, ["relu:1", "relu:2"], steps=64, lr=0.2)
    h_share, v_share = _orientation_share(horiz)
    assert h_share > 0.1 and h_share > 4 * v_share  # horizontal stripes of period 8 dominate
    h_share, v_share = _orientation_share(vert)
    assert v_share > 0.1 and v_share > 4 * h_share


def test_rendered_image_beats_random_fft_images(randnet):
    [r] = _render(randnet, "5:3")
    gens = [torch.Generator().manual_seed(100 + i) for i in range(16)]
    random_images = torch.cat([fft_image(16, 32, gens, sd=sd)().detach() for sd in (0.01, 0.1)])
    acts = randnet.activations(random_images, "5")
    random_values = channel("5", 3)(acts)
    assert r.objective > float(random_values.max())
    # the reported value is the channel mean on the returned image
    recomputed = channel("5", 3)(randnet.activations(_float(r)[None], "5"))
    assert float(recomputed) == pytest.approx(r.objective, rel=0.05, abs=1e-3)


# --------------------------------------------------------------------------- batching, seeds
def test_batch_of_8_channels_matches_each_channel_rendered_alone(randnet):
    units = [f"5:{c}" for c in range(8)]
    together = _render(randnet, units, steps=32, batch_size=8)
    for unit, batched in zip(units, together):
        [alone] = _render(randnet, unit, steps=32, batch_size=1)
        a, b = batched.image.astype(float).ravel(), alone.image.astype(float).ravel()
        # Tolerance: batched convolutions round differently; the last-bit differences are
        # bit-identical for ~16 steps, then a max-pool tie or ReLU edge can flip and move a few
        # pixels. Observed worst case at 32 steps: mean |diff| 1.1 levels of 255.
        assert np.abs(a - b).mean() < 3, unit
        assert np.corrcoef(a, b)[0, 1] > 0.98, unit


def test_same_seed_gives_identical_images_and_another_seed_differs(randnet):
    a = _render(randnet, ["5:0", "5:1"], steps=16)
    b = _render(randnet, ["5:0", "5:1"], steps=16)
    c = _render(randnet, ["5:0", "5:1"], steps=16, seed=1)
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.image, y.image)
        assert np.abs(x.image.astype(int) - z.image.astype(int)).mean() > 2
    assert a[0].settings["seed"] == 0 and "torch" in a[0].settings["versions"]


def test_rendering_leaves_global_rng_untouched(randnet):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    _render(randnet, "5:0", steps=4)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_lucent_transforms_draw_from_the_global_numpy_rng_unlike_ours():
    # Pinned difference: lucent's jitter calls np.random.choice, so two lucent runs differ unless
    # the global state is reset; ours draw from per-image generators only.
    from lucent.optvis import transform

    state = np.random.get_state()
    transform.jitter(8)(torch.zeros(1, 3, 16, 16))
    assert not np.array_equal(np.random.get_state()[1], state[1]) or np.random.get_state()[2] != state[2]
    np.random.set_state(state)
    plan_a = StandardTransforms().plan(8, [torch.Generator().manual_seed(3)])
    np.random.seed(12345)                      # disturb every global generator between the two plans
    torch.manual_seed(12345)
    transform.jitter(8)(torch.zeros(1, 3, 16, 16))
    plan_b = StandardTransforms().plan(8, [torch.Generator().manual_seed(3)])
    np.random.set_state(state)
    assert torch.equal(plan_a, plan_b)
    other = StandardTransforms().plan(8, [torch.Generator().manual_seed(4)])
    assert not torch.equal(plan_a, other)      # the plan does depend on the per-image generator


# --------------------------------------------------------------------------- objectives
def test_diversity_lowers_pairwise_gram_similarity(planted):
    def mean_similarity(results) -> float:  # mean pairwise cosine of the images' Gram matrices
        imgs = torch.stack([_float(r) for r in results])
        sim = -diversity("head")(planted.activations(imgs, "head"))  # image i: sum_{j!=i} cos / B
        return float(sim.sum()) / (len(results) - 1)

    plain = _render(planted, "head:0", images_per_unit=4, lr=0.2)
    diverse = _render(planted, "head:0", images_per_unit=4, diversity=10.0, lr=0.2)
    assert [r.kind for r in diverse] == ["diversity"] * 4 and [r.index for r in diverse] == [0, 1, 2, 3]
    assert mean_similarity(plain) > 0.95                        # four seeds, nearly the same picture
    assert mean_similarity(diverse) < mean_similarity(plain) - 0.2


def test_one_hot_direction_equals_channel_objective(randnet):
    g = torch.Generator().manual_seed(0)
    acts = {"5": torch.randn(3, 8, 5, 7, generator=g)}
    one_hot = torch.zeros(8)
    one_hot[6] = 1
    assert torch.allclose(direction("5", one_hot)(acts), channel("5", 6)(acts))
    assert torch.allclose(direction("5", one_hot)(acts), acts["5"][:, 6].mean(dim=(1, 2)))
    # rendered under the same name (hence the same seeds), the two give the same image
    [d] = _render(randnet, direction("5", one_hot, name="5:6"), steps=16)
    [c] = _render(randnet, channel("5", 6), steps=16)
    assert np.abs(d.image.astype(int) - c.image.astype(int)).max() <= 1
    assert d.objective == pytest.approx(c.objective, rel=1e-3)


def test_objective_algebra_matches_the_arithmetic():
    g = torch.Generator().manual_seed(0)
    acts = {"a": torch.randn(4, 5, 3, 3, generator=g), "b": torch.randn(4, 2, 6, 6, generator=g)}
    ch = lambda layer, c: acts[layer][:, c].mean(dim=(1, 2))  # noqa: E731
    obj = channel("a", 1) + 2 * channel("b", 0) - channel("a", 4) / 4
    assert torch.allclose(obj(acts), ch("a", 1) + 2 * ch("b", 0) - ch("a", 4) / 4)
    assert torch.allclose((-obj)(acts), -obj(acts))
    assert set(obj.layers) == {"a", "b"}
    only_2 = channel("a", 1, batch=2)(acts)
    assert torch.allclose(only_2, torch.tensor([0, 0, 1, 0.0]) * ch("a", 1))
    assert torch.allclose(neuron("b", 1)(acts), acts["b"][:, 1, 3, 3])
    assert torch.allclose(neuron("b", 1, x=5, y=0)(acts), acts["b"][:, 1, 0, 5])

    @objective(layers=["b"])
    def peak(a):
        return a["b"][:, 1].amax(dim=(1, 2))

    assert torch.allclose((peak + channel("b", 1))(acts), acts["b"][:, 1].amax(dim=(1, 2)) + ch("b", 1))


def test_objectives_declare_only_the_channels_they_read():
    v = torch.tensor([0.0, 2.0, 0.0, -1.0])
    assert channel("a", 3).channels == {"a": {3}}
    assert neuron("a", 2, x=1, y=1).channels == {"a": {2}}
    assert direction("a", v).channels == {"a": {1, 3}}
    assert (channel("a", 3) - 0.5 * channel("b", 1) + 1).channels == {"a": {3}, "b": {1}}
    assert stack([(channel("a", 3), 1), (direction("a", v), 1)]).channels == {"a": {1, 3}}
    # anything that may read every channel says so, and sums with it do too
    assert diversity("a").channels is None
    assert (channel("a", 3) + diversity("a")).channels is None
    assert objective(lambda acts: acts["a"].mean((1, 2, 3)), layers=["a"]).channels is None
    assert stack([(channel("a", 3), 1), (channel("a", 0) + diversity("a"), 2)]).channels is None


def test_stacked_batch_objective_scores_each_image_by_its_own_unit():
    g = torch.Generator().manual_seed(0)
    acts = {"a": torch.randn(5, 6, 4, 4, generator=g)}
    v = torch.randn(6, generator=g)
    parts = [(channel("a", 2), 1), (direction("a", v), 1), (-channel("a", 5), 1), (diversity("a"), 2)]
    got = stack(parts)(acts)
    ch = acts["a"].mean(dim=(2, 3))
    expected_head = torch.stack([ch[0, 2], (ch[1] * v).sum(), -ch[2, 5]])
    assert torch.allclose(got[:3], expected_head, atol=1e-6)
    assert torch.allclose(got[3:], diversity("a")({"a": acts["a"][3:]}))


def test_lucent_objective_and_param_are_accepted(planted):
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam

    [r] = _render(planted, lobj.channel("conv", 0), param=lambda: lparam.image(32), steps=128)
    mean_rgb = _float(r).mean(dim=(1, 2)) - 0.5
    assert float(torch.nn.functional.cosine_similarity(mean_rgb, RED, dim=0)) > 0.75
    # a lucent loss is the negative of our objective
    acts = {"conv": torch.rand(2, 3, 4, 4)}
    loss = lobj.channel("conv", 0)(lambda name: acts[name])
    assert float(channel("conv", 0)(acts).mean()) == pytest.approx(-float(loss), rel=1e-5)


# --------------------------------------------------------------------------- transforms
def test_standard_transforms_at_centre_draws_are_lucids_pad_and_centre_crop():
    t = StandardTransforms()
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 20, 20, generator=g)
    centre = torch.tensor([[4, 4, t.scales.index(1.0), t.angles.index(0), 12]])  # offsets 4, 4, 2, 2
    out = t(img, centre, t.window(20))
    padded = torch.nn.functional.pad(img, [12] * 4, value=0.5)
    assert torch.allclose(out, padded[..., 6:-6, 6:-6], atol=1e-5)
    shifted = t(img, torch.tensor([[5, 4, 5, t.angles.index(0), 12]]), t.window(20))
    assert torch.allclose(shifted, padded[..., 7:-5, 6:-6], atol=1e-5)  # +1 jitter in y


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("units, kw, error", [
    ("nope:0", {}, UnknownNameError),
    ("conv:3", {}, ChannelOutOfRangeError),
    (None, {}, BadInputError),  # wrong-length direction, built below
    ("conv:0", {"size": 0}, BadInputError),
    ("conv:0", {"steps": -1}, BadInputError),
    ("conv:0", {"param": "cppn"}, BadInputError),
])
def test_bad_input_raises_a_clear_error(planted, units, kw, error):
    units = units if units is not None else direction("conv", [1.0, 0.0])
    with pytest.raises(error) as info:
        _render(planted, units, **kw)
    assert str(info.value)


def test_nan_in_direction_is_rejected():
    with pytest.raises(BadInputError, match="NaN"):
        direction("conv", [1.0, float("nan"), 0.0])


# --------------------------------------------------------------------------- Lucid fidelity
def _lucid_diversity(acts_nchw: torch.Tensor) -> torch.Tensor:
    """Lucid's diversity, written out as its objectives.py defines it (NHWC, to subtract)."""
    a = acts_nchw.permute(0, 2, 3, 1)                               # NHWC, as TensorFlow holds it
    b, c = a.shape[0], a.shape[-1]
    flat = a.reshape(b, -1, c)
    grams = flat.transpose(1, 2) @ flat                             # C x C per image
    grams = grams / grams.flatten(1).norm(dim=1).clamp_min(1e-10)[:, None, None]
    return sum(sum((grams[i] * grams[j]).sum() for j in range(b) if j != i) for i in range(b)) / b


def test_diversity_weight_means_lucids_weight_with_a_batch_of_4():
    from circuitsviz.optvis.render import _group

    g = torch.Generator().manual_seed(0)
    acts = {"a": torch.randn(4, 6, 3, 5, generator=g, dtype=torch.float64).requires_grad_()}
    w = 100.0
    # Lucid: channel(...) - w * diversity(...), where channel averages over the batch too.
    lucid = acts["a"][:, 2].mean() - w * _lucid_diversity(acts["a"])
    group = _group("a:2", channel("a", 2), False, w, 4)
    ours = stack([(group.objective, 4)])(acts).mean()
    torch.testing.assert_close(ours, lucid)
    # ... and lucent's own objectives agree (its loss is minus Lucid's objective)
    from lucent.optvis import objectives as lobj

    lucent_loss = (lobj.channel("a", 2) - w * lobj.diversity("a"))(lambda name: acts[name].float())
    assert float(ours.detach()) == pytest.approx(-float(lucent_loss.detach()), rel=1e-5)
    # the gradients, which are what the optimiser sees, agree too
    (g_ours,) = torch.autograd.grad(ours, acts["a"])
    (g_lucid,) = torch.autograd.grad(lucid, acts["a"])
    torch.testing.assert_close(g_ours, g_lucid)


def test_neuron_x_is_the_column_as_in_lucent_and_lucids_x_is_the_row():
    from lucent.optvis import objectives as lobj

    g = torch.Generator().manual_seed(0)
    acts = {"b": torch.randn(2, 3, 5, 7, generator=g)}
    ours = neuron("b", 1, x=6, y=2)(acts)
    assert torch.equal(ours, acts["b"][:, 1, 2, 6])                 # row y=2, column x=6
    lucent_loss = lobj.neuron("b", 1, x=6, y=2)(lambda name: acts[name])
    assert float(ours.mean()) == pytest.approx(-float(lucent_loss))
    lucid_nhwc = acts["b"].permute(0, 2, 3, 1)
    lucid_neuron = lambda x, y: lucid_nhwc[:, x, y, 1]  # noqa: E731 - Lucid indexes [:, x, y, c]
    assert torch.equal(ours, lucid_neuron(x=2, y=6))               # Lucid's x is the row


def test_redirected_relu_covers_lucids_first_17_steps(randnet, monkeypatch):
    # Lucid's override returns the plain gradient once global_step > 16; the step counter starts
    # at 0 and each optimiser step increments it, so steps 0..16 are redirected.
    import contextlib

    seen = []

    @contextlib.contextmanager
    def recording(enabled=True):
        seen.append(enabled)
        yield

    monkeypatch.setattr(randnet, "redirected_relu", recording)
    _render(randnet, "5:0", steps=20)
    assert seen == [True] * 17 + [False] * 3


def test_random_scale_magnifies_like_lucids_resize_on_a_fixed_grid():
    # Lucid resizes the image by s (so a ramp's slope per pixel becomes slope / s) and the next
    # crop is then 4 px smaller than the resized image; here the window stays window(size) px and
    # zooms by 1/s, which magnifies the content exactly as the resize does.
    t = StandardTransforms()
    size = 40
    ramp = (torch.arange(size, dtype=torch.float32) / (2 * size))[None, None, None, :].expand(1, 3, size, size)
    for scale in (0.9, 1.1):
        draws = torch.tensor([[4, 4, t.scales.index(scale), t.angles.index(0), 12]])
        out = t(ramp + 0.25, draws, t.window(size))
        assert out.shape[-1] == t.window(size)                      # Lucid's would be int(s * 56) - 4
        mid = out[0, 0, t.window(size) // 2, 20:32]
        slope = float((mid[1:] - mid[:-1]).mean())
        assert slope == pytest.approx(1 / (2 * size) / scale, rel=1e-3)


def test_rotation_corners_read_the_pad_value_where_lucid_fills_black():
    # Pinned difference: Lucid's rotate (nearest neighbour) fills the corners it uncovers with 0
    # (black); here everything outside the image reads as the pad value 0.5, and sampling is bilinear.
    t = StandardTransforms()
    img = torch.zeros(1, 3, 32, 32)
    draws = torch.tensor([[4, 4, t.scales.index(1.0), t.angles.index(10), 12]])
    out = t(img, draws, t.window(32))
    assert torch.allclose(out[0, :, 0, 0], torch.full((3,), 0.5))   # Lucid: 0.0
    assert float(out[0, :, 10:34, 10:34].abs().max()) < 1e-6       # the image itself is untouched


# --------------------------------------------------------------------------- lucent param_f, batches
def _gram_similarity(model, layer: str, results) -> float:
    """Mean pairwise cosine of the images' Gram matrices at ``layer``."""
    imgs = torch.stack([_float(r) for r in results])
    sim = -diversity(layer)(model.activations(imgs, layer))         # image i: sum_{j != i} cos
    return float(sim.mean()) / (len(results) - 1)


def test_lucents_readme_example_renders_one_image_per_batch_element_with_diversity(inception):
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam

    def run(weight: float):
        with torch.random.fork_rng():
            torch.manual_seed(0)  # lucent's param draws from the global RNG
            obj = lobj.channel("mixed4a", 476) - weight * lobj.diversity("mixed4a")
            return _render(inception, obj, param=lambda: lparam.image(32, batch=4), size=None, steps=8)

    diverse, plain = run(1e2), run(0.0)
    assert len(diverse) == 4 and [r.index for r in diverse] == [0, 1, 2, 3]
    assert all(r.image.shape == (32, 32, 3) for r in diverse)
    # the term acts across the four images: they end up less alike than without it
    # (observed 0.83 against 0.98)
    assert _gram_similarity(inception, "mixed4a", diverse) < _gram_similarity(inception, "mixed4a", plain) - 0.05


def test_lucent_param_with_a_batch_takes_circuitsviz_diversity_across_it(planted):
    from lucent.optvis import param as lparam

    with torch.random.fork_rng():
        torch.manual_seed(0)
        results = _render(planted, "head:0", param=lambda: lparam.image(32, batch=3), diversity=10.0, steps=16)
    assert [r.kind for r in results] == ["diversity"] * 3 and [r.index for r in results] == [0, 1, 2]
    assert [r.settings["images_per_unit"] for r in results] == [3] * 3
    with pytest.raises(BadInputError, match="size=40"):
        _render(planted, "head:0", param=lambda: lparam.image(32), size=40)


# --------------------------------------------------------------------------- layers without space
class PlantedHead(nn.Module):
    """redness (mean of RED . rgb over the image) -> logits [r, -r, 0.5 r]: an (N, C) layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(1, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(RED[None, :, None, None])
            self.head.weight.copy_(torch.tensor([[1.0], [-1.0], [0.5]]))

    def forward(self, x):
        return self.head(self.flat(self.pool(self.conv(x))))


def test_objectives_on_a_layer_without_space_read_the_planted_logits():
    from circuitsviz.optvis import class_logit

    model = wrap_model(PlantedHead(), name="head", input_size=32)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    r = torch.einsum("bchw,c->b", x, RED) / 256                    # the planted redness
    acts = model.activations(x, "head")
    assert acts["head"].shape == (3, 3)
    torch.testing.assert_close(class_logit("head", 0)(acts), r)
    torch.testing.assert_close(channel("head", 1)(acts), -r)
    torch.testing.assert_close(neuron("head", 2)(acts), 0.5 * r)
    torch.testing.assert_close(direction("head", [1.0, 1.0, 2.0])(acts), r)
    torch.testing.assert_close(stack([(class_logit("head", 0), 1), (direction("head", [0, 0, 4.0]), 1),
                                      (channel("head", 1), 1)])(acts), torch.stack([r[0], 2 * r[1], -r[2]]))
    assert class_logit("head", "minus", labels=["plus", "minus", "half"]).channels == {"head": {1}}
    with pytest.raises(BadInputError, match="without spatial"):
        neuron("head", 0, x=1, y=1)(acts)
    with pytest.raises(BadInputError, match="labels"):
        class_logit("head", "minus")
    with pytest.raises(BadInputError, match="plus, minus"):
        class_logit("head", "car", labels=["plus", "minus"])


def test_class_logit_renders_its_colour_and_the_negated_class_the_opposite():
    from circuitsviz.optvis import class_logit

    model = wrap_model(PlantedHead(), name="head", input_size=32)
    results = _render(model, [class_logit("head", 0), class_logit("head", 1)], steps=64, lr=0.1)
    cos = [float(torch.nn.functional.cosine_similarity(_float(r).mean(dim=(1, 2)) - 0.5, RED, dim=0))
           for r in results]
    assert cos[0] > 0.75 and cos[1] < -0.75
    assert [r.unit for r in results] == ["head:0", "head:1"]


# --------------------------------------------------------------------------- usability (#14)
def test_a_unit_id_and_its_channel_objective_draw_the_same_image(inception):
    [by_id] = _render(inception, "mixed4e:55", size=24, steps=2)
    [by_objective] = _render(inception, channel("mixed4e", 55), size=24, steps=2)
    assert by_id.unit == by_objective.unit == "mixed4e:55"
    assert np.array_equal(by_id.image, by_objective.image)
    [neuron_id] = _render(inception, "mixed4e:55@1,0", size=24, steps=2)
    [neuron_obj] = _render(inception, neuron("mixed4e", 55, x=0, y=1), size=24, steps=2)
    assert neuron_obj.unit == "mixed4e:55@1,0" and np.array_equal(neuron_id.image, neuron_obj.image)


def test_default_size_is_the_models_natural_input_size():
    net = _random_net()
    for natural in (24, 40):
        [r] = visualize(wrap_model(net, input_size=natural), "5:0", steps=1, progress=False)
        assert r.image.shape == (natural, natural, 3) and r.settings["size"] == natural


def test_vis_result_repr_names_the_unit_not_the_pixels(randnet):
    [r] = _render(randnet, "5:1", steps=1)
    text = repr(r)
    assert "5:1" in text and "32x32" in text and "array" not in text and len(text) < 120


def test_progress_bar_counts_units_and_steps_for_the_whole_job(randnet, capsys):
    visualize(randnet, ["5:0", "5:1", "5:2"], size=32, steps=3, batch_size=2, progress=True)
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "unit 3 of 3, step 3/3" in final and "100%" in final and "<" in final  # "<" precedes the ETA
    from circuitsviz.optvis.render import _Progress               # the first batch, as it is drawn

    bar = _Progress(units=3, steps=3, images=3)
    bar.start_batch(2, 2)
    bar.step(1)
    assert bar.bar.desc == "visualize units 1-2 of 3, step 1/3" and bar.bar.n == 2
    bar.close()


def test_save_grid_tiles_every_image_unscaled_with_its_id_underneath(randnet, tmp_path):
    from PIL import Image

    from circuitsviz.optvis import save_grid
    from circuitsviz.optvis.grid import CAPTION_HEIGHT, tile_origin

    results = _render(randnet, ["5:0", "5:1", "5:2"], steps=2) + _render(randnet, "5:3", images_per_unit=2, steps=2)
    path = save_grid(results, tmp_path / "sheet.png", columns=2)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    cell_w = (sheet.shape[1] - 4) // 2 - 4
    cell_h = 32 + CAPTION_HEIGHT
    assert sheet.shape[0] == 4 + 3 * (cell_h + 4)                   # 5 results, 2 columns: 3 rows
    captions = []
    for i, r in enumerate(results):
        left, top = tile_origin(i, 2, cell_w, cell_h)
        assert np.array_equal(sheet[top:top + 32, left:left + 32], r.image), i
        strip = sheet[top + 32:top + cell_h, left:left + cell_w]
        assert (strip < 128).any(), f"no caption under tile {i}"    # dark text on white
        captions.append(strip)
    assert not np.array_equal(captions[0], captions[1])            # each tile has its own id
    assert not np.array_equal(captions[3], captions[4])            # 5:3 #0 and 5:3 #1
    with pytest.raises(BadInputError):
        save_grid([], tmp_path / "empty.png")


def test_class_logit_by_name_on_the_demo_models_logits_reports_that_logit():
    from circuitsviz.models import load_model
    from circuitsviz.optvis import class_logit

    demo = load_model("demo")
    logits = "softmax2_pre_activation_matmul"
    [r] = visualize(demo, class_logit(logits, "rings", labels=demo.labels), steps=4, progress=False)
    assert r.unit == f"{logits}:{demo.labels.index('rings')}" and r.image.shape == (64, 64, 3)
    with torch.no_grad():
        direct = demo.net(demo.preprocess(_float(r)[None]))  # the demo net returns its logits
    assert direct.shape == (1, len(demo.labels))
    # the score is taken on the float image, the check on its uint8 rounding
    assert r.objective == pytest.approx(float(direct[0, demo.labels.index("rings")]), rel=0.02, abs=0.02)
