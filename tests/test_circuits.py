"""Circuits against known answers: a planted two-layer network, an independent Jacobian
reference on InceptionV1, and interventions whose effect is known in advance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from circuitsviz.circuits import ablate, attribute, circuit, expanded_weights, faithfulness, splice_sae
from circuitsviz.circuits.hooks import ablate_channels
from circuitsviz.errors import BadInputError, CircuitsvizError
from circuitsviz.models import wrap_model
from circuitsviz.models.blocks import Concat
from circuitsviz.models.wrapper import Branch, LayerInfo
from circuitsviz.sae import TopKSAE

# ------------------------------------------------------------------ the planted network
A, B = 1, 4                 # the source channels the target reads: red above, green below
TARGET = 1                  # target channel: the first of the 3x3 branch
TOP_ROW = torch.tensor([0.5, 1.0, 0.5])       # the target's kernel from A (through bottleneck 0)
BOTTOM_ROW = torch.tensor([0.75, 0.75, 0.75])    # from B (through bottleneck 1)
BIAS = -0.3


class Planted(nn.Module):
    """``src`` (1x1 colour detectors + ReLU, 6 channels) -> ``target`` = concat of a 1x1 branch
    (1 channel) and a 3x3 branch (1x1 bottleneck to 2 channels, ReLU, 3x3 conv to 2 channels).

    Target channel 1 reads source A (red) through the top row of its 3x3 kernel and source B
    (green) through the bottom row; two other sources leak into the bottlenecks a little.
    """

    def __init__(self) -> None:
        super().__init__()
        self.src_conv = nn.Conv2d(3, 6, 1)
        self.src = nn.ReLU()
        self.t1x1_conv = nn.Conv2d(6, 1, 1)
        self.t1x1 = nn.ReLU()
        self.bottleneck_conv = nn.Conv2d(6, 2, 1)
        self.bottleneck = nn.ReLU()
        self.t3x3_conv = nn.Conv2d(2, 2, 3, padding=1)
        self.t3x3 = nn.ReLU()
        self.target = Concat()
        with torch.no_grad():
            r, g, b = torch.eye(3)
            self.src_conv.weight.copy_(torch.stack([
                b - r - g,               # 0 blue
                r - g - b,               # 1 red (A)
                (r + g + b) / 3,         # 2 brightness
                -(r + g + b) / 3,        # 3 darkness
                g - r - b,               # 4 green (B)
                r + g - 2 * b,           # 5 yellow
            ])[:, :, None, None])
            self.src_conv.bias.copy_(torch.tensor([0.0, 0, 0, 1, 0, 0]))
            self.t1x1_conv.weight.fill_(0.3)
            self.bottleneck_conv.weight.zero_()
            self.bottleneck_conv.weight[0, A] = 1.0
            self.bottleneck_conv.weight[0, 2] = 0.125
            self.bottleneck_conv.weight[1, B] = 1.0
            self.bottleneck_conv.weight[1, 5] = 0.0625
            self.bottleneck_conv.bias.zero_()
            self.t3x3_conv.weight.zero_()
            self.t3x3_conv.weight[0, 0, 0] = TOP_ROW
            self.t3x3_conv.weight[0, 1, 2] = BOTTOM_ROW
            self.t3x3_conv.weight[1] = 0.1
            self.t3x3_conv.bias.copy_(torch.tensor([BIAS, 0.0]))

    def forward(self, x):
        s = self.src(self.src_conv(x))
        one = self.t1x1(self.t1x1_conv(s))
        three = self.t3x3(self.t3x3_conv(self.bottleneck(self.bottleneck_conv(s))))
        return self.target(one, three)


def planted(dtype=torch.float32):
    layers = [LayerInfo("src", "src", 6), LayerInfo("target", "target", 3, (Branch("1x1", 0, 1), Branch("3x3", 1, 3)))]
    return wrap_model(Planted().to(dtype), name="planted", input_size=16, layers=layers)


def red_over_green(n=8, size=16, seed=0):
    """Gray images with a red band directly above a green band (rows vary): A above B.
    Leak constants and kernels are exact in binary, so float64 results can be compared exactly."""
    g = torch.Generator().manual_seed(seed)
    images = 0.5 + 0.05 * torch.rand(n, 3, size, size, generator=g)
    for i in range(n):
        row = int(torch.randint(3, size - 4, (1,), generator=g))
        images[i, :, row - 2:row] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
        images[i, :, row:row + 2] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]
    return images


# ------------------------------------------------------------------ weights
def test_circuit_recovers_planted_sources_with_analytic_kernels_in_float64():
    model = planted(torch.float64)
    c = circuit(model, f"target:{TARGET}", source="src", top=3)
    assert [x.unit for x in c.positive[:2]] == [f"src:{B}", f"src:{A}"]   # totals 2.25 and 2.0
    expect_a = torch.zeros(3, 3, dtype=torch.float64)
    expect_a[0] = TOP_ROW.double()
    expect_b = torch.zeros(3, 3, dtype=torch.float64)
    expect_b[2] = BOTTOM_ROW.double()
    by_unit = {x.unit: x for x in c.positive}
    torch.testing.assert_close(by_unit[f"src:{A}"].kernel, expect_a, rtol=0, atol=1e-15)
    torch.testing.assert_close(by_unit[f"src:{B}"].kernel, expect_b, rtol=0, atol=1e-15)
    # The leaks: 1/8 of A's kernel from brightness (the constants are exact in binary).
    torch.testing.assert_close(by_unit["src:2"].kernel, 0.125 * expect_a, rtol=0, atol=1e-15)
    assert by_unit[f"src:{A}"].branch == "3x3" and not by_unit[f"src:{A}"].direct
    assert by_unit[f"src:{A}"].path == ("bottleneck_conv", "t3x3_conv")
    assert c.negative == []
    # The 1x1 branch is a single conv: direct weights, its own 1x1 kernels.
    d = circuit(model, "target:0", source="src", top=6)
    assert all(x.direct and x.branch == "1x1" and x.kernel.shape == (1, 1) for x in d.positive)
    torch.testing.assert_close(d.totals, torch.full((6,), 0.3, dtype=torch.float64))


def test_outputs_of_a_source_are_the_same_kernels_seen_from_the_other_end():
    model = planted(torch.float64)
    out = circuit(model, f"src:{A}", target="target", top=3)
    assert out.positive[0].unit == f"target:{TARGET}"
    assert float(out.totals[TARGET]) == pytest.approx(float(TOP_ROW.sum()), abs=1e-12)


# Independent reference: InceptionV1's mixed blocks written out with F.conv2d and F.avg_pool2d
# (ReLUs dropped, max pools averaged), and a per-unit autograd Jacobian of that.
def _linear_mixed(net, name, x):
    def conv(branch, t):
        m = getattr(net, f"{name}_{branch}_pre_relu_conv")
        return F.conv2d(t, m.weight, m.bias, padding=m.padding)

    pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return torch.cat([conv("1x1", x), conv("3x3", conv("3x3_bottleneck", x)), conv("5x5", conv("5x5_bottleneck", x)),
                      conv("pool_reduce", pooled)], dim=1)


def _reference(net, target, x_shape, centre, channel):
    x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
    if target == "mixed4a":  # the stride-2 pool before it, averaged
        y = _linear_mixed(net, target, F.avg_pool2d(x, 3, 2, ceil_mode=True, count_include_pad=False))
    else:
        y = _linear_mixed(net, target, x)
    (g,) = torch.autograd.grad(y[0, channel, centre[0], centre[1]], x)
    return g[0]


# Kernel sizes in source positions: mixed4a sits behind a stride-2 3x3 pool.
SIZES = {"1x1": 1, "3x3": 3, "5x5": 5, "pool_reduce": 3}
STRIDED_SIZES = {"1x1": 3, "3x3": 7, "5x5": 11, "pool_reduce": 7}


@pytest.mark.parametrize("target,source,channels", [
    ("mixed4c", "mixed4b", [3, 127, 130, 383, 400, 447, 450, 511]),       # 1x1, 3x3, 5x5, pool
    ("mixed3b", "mixed3a", [0, 200, 400, 479]),
    ("mixed4a", "mixed3b", [0, 250, 400, 500]),                            # through a stride-2 pool
])
def test_expanded_weights_equal_a_per_unit_autograd_reference_on_inceptionv1(inception, target, source, channels):
    net = inception.net.double()
    try:
        ew = expanded_weights(inception, target, source, channels=channels)
        assert not ew.truncated
        chunked = expanded_weights(inception, target, source, channels=channels, batch_size=3)
        assert torch.equal(chunked.weights, ew.weights) and chunked.paths == ew.paths
        kh, kw = ew.weights.shape[-2:]
        r0, c0 = ew.origin
        for i, c in enumerate(channels):
            ref = _reference(net, target, (1, inception.channels(source), *ew.source_size), ew.centre, c)
            torch.testing.assert_close(ew.weights[i], ref[:, r0:r0 + kh, c0:c0 + kw], rtol=1e-9, atol=1e-12)
            outside = torch.ones_like(ref, dtype=torch.bool)
            outside[:, r0:r0 + kh, c0:c0 + kw] = False
            assert not ref[outside].any()
            branch = inception.layer(target).branch_of(c).name
            assert ew.direct[i] == (branch == "1x1" and target != "mixed4a")
            assert ew.kernels(c).shape[-2:] == (((STRIDED_SIZES if target == "mixed4a" else SIZES)[branch],) * 2)
    finally:
        net.float()


# ------------------------------------------------------------------ interventions
def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_zero_ablating_a_whole_layer_gives_the_next_layers_response_to_zeros(inception):
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    acts = inception.activations(images, ["mixed3a", "mixed3b"],
                                 hooks={"mixed3a": ablate_channels(range(256))})
    assert not acts["mixed3a"].any()                      # the capture sees the intervention
    with torch.no_grad():
        expect = inception.net._mixed("mixed3b", torch.zeros_like(acts["mixed3a"]))
    torch.testing.assert_close(acts["mixed3b"], expect, rtol=0, atol=0)
    plain = inception.activations(images, "mixed3b")["mixed3b"]
    assert (plain - expect).abs().max() > 1e-3            # so the check above could fail


def test_hooks_on_layers_past_the_deepest_requested_one_never_run(inception):
    calls = []
    images = torch.rand(1, 3, 32, 32)
    inception.activations(images, "mixed3a", hooks={"mixed4a": lambda a: calls.append(1)})
    assert calls == []
    inception.run_with_hooks(images, {"mixed4a": lambda a: calls.append(1)})
    assert calls == [1]


def test_splicing_an_identity_dictionary_sae_changes_nothing(inception):
    c = inception.channels("mixed3a")
    sae = TopKSAE(c, 2 * c, k=2 * c, layer="mixed3a")
    with torch.no_grad():  # features e_i and -e_i: relu(x) - relu(-x) = x, FVU 0
        eye = torch.eye(c)
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    x = inception.activations(images, "mixed3a")["mixed3a"]
    assert torch.equal(sae.reconstruct(x), x)
    spliced = inception.run_with_hooks(images, {"mixed3a": splice_sae(sae)})
    torch.testing.assert_close(spliced, inception(images), rtol=0, atol=0)
    shifted = TopKSAE(c, 2 * c, k=c, layer="mixed3a")   # a random dictionary does change it
    assert (inception.run_with_hooks(images, {"mixed3a": splice_sae(shifted)}) - inception(images)).abs().max() > 0


def test_no_hook_is_left_behind_after_an_error(inception):
    images = torch.rand(1, 3, 32, 32)
    before = _hook_count(inception)

    def broken(acts):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        inception.run_with_hooks(images, {"mixed3a": broken, "conv2d2": lambda a: a * 2})
    with pytest.raises(BadInputError, match="shape"):
        inception.activations(images, "mixed3b", hooks={"mixed3a": lambda a: a[:, :3]})
    with pytest.raises(CircuitsvizError, match="unknown layer"):
        inception.activations(images, "mixed3b", hooks={"mixed3z": lambda a: a})
    assert _hook_count(inception) == before
    torch.testing.assert_close(inception.run_with_hooks(images, {}), inception(images), rtol=0, atol=0)


# ------------------------------------------------------------------ attribution and ablation
@pytest.mark.parametrize("method", ["act_x_grad", "integrated_gradients"])
def test_attribution_ranks_the_planted_sources_first(method):
    model = planted()
    images = red_over_green()
    att = attribute(model, f"target:{TARGET}", source="src", data=images, method=method, steps=32)
    assert set(att.top(2)) == {f"src:{A}", f"src:{B}"}
    assert att.per_image.shape == (8, 6) and att.maps.shape == (8, 6, 16, 16)
    # Where: A contributes on the rows of the red band, just above the boundary, B below it.
    rows_a = att.maps[:, A].sum(dim=2).argmax(dim=1)
    rows_b = att.maps[:, B].sum(dim=2).argmax(dim=1)
    assert bool((rows_a < rows_b).all())
    if method == "integrated_gradients":  # completeness: the contributions add up to target(a) - target(0)
        zero_source = model.activations(images, "target", hooks={"src": lambda a: torch.zeros_like(a)})["target"]
        gap = att.target - zero_source[:, TARGET].mean(dim=(1, 2)).double()
        torch.testing.assert_close(att.per_image.sum(1), gap, rtol=0.05, atol=1e-3)


def test_ablating_the_planted_sources_kills_the_target_and_random_pairs_do_not():
    model = planted()
    images = red_over_green()
    both = ablate(model, f"target:{TARGET}", [f"src:{A}", f"src:{B}"], data=images)
    assert float(both.before.min()) > 0.05 and not both.after.any()
    assert both.relative_drop == pytest.approx(1.0)
    others = [c for c in range(6) if c not in (A, B)]
    for i in others:
        for j in others:
            if i < j:
                drop = ablate(model, f"target:{TARGET}", [f"src:{i}", f"src:{j}"], data=images).relative_drop
                assert drop < 0.2, (i, j, drop)
    mean = ablate(model, f"target:{TARGET}", [f"src:{A}", f"src:{B}"], data=images, mode="mean")
    assert 0 < mean.relative_drop < 1     # the bands' mean colour still drives it a little


def test_faithfulness_of_the_planted_circuit():
    model = planted()
    f = faithfulness(model, f"target:{TARGET}", source="src", data=red_over_green(16), n=2, draws=20)
    assert set(f.top_sources) == {f"src:{A}", f"src:{B}"}
    assert f.top_drop == pytest.approx(f.baseline) and f.top_interval[0] == pytest.approx(f.baseline)
    # Random pairs come from the whole layer: those that miss both A and B barely move the target.
    missed = [d for d, units in zip(f.random_drops, f.random_sources) if not {f"src:{A}", f"src:{B}"} & set(units)]
    assert missed and max(missed) < 0.2 * f.baseline


def test_features_of_an_identity_dictionary_attribute_and_ablate_like_their_channels():
    model = planted()
    sae = TopKSAE(6, 6, k=6, layer="src", name="eye")
    with torch.no_grad():   # src is post-ReLU, so the identity code is exact
        sae.W_enc.copy_(torch.eye(6))
        sae.W_dec.copy_(torch.eye(6))
    images = red_over_green()
    by_channel = attribute(model, f"target:{TARGET}", source="src", data=images)
    by_feature = attribute(model, f"target:{TARGET}", source="src/eye", data=images, sae=sae)
    assert by_feature.units[A] == f"src/eye:{A}"
    torch.testing.assert_close(by_feature.per_image, by_channel.per_image)
    inputs = circuit(model, f"target:{TARGET}", source="src/eye", sae=sae)
    assert [c.unit for c in inputs.positive[:2]] == [f"src/eye:{B}", f"src/eye:{A}"]
    torch.testing.assert_close(inputs.totals, circuit(model, f"target:{TARGET}", source="src").totals)
    outputs = circuit(model, f"src/eye:{A}", target="target", sae=sae)   # through its decoder direction
    torch.testing.assert_close(outputs.totals, circuit(model, f"src:{A}", target="target").totals)
    cut = ablate(model, f"target:{TARGET}", [f"src/eye:{A}", f"src/eye:{B}"], data=images, sae=sae)
    assert not cut.after.any()
    with pytest.raises(BadInputError, match="sae="):
        attribute(model, f"target:{TARGET}", source="src/eye", data=images)


def test_cli_prints_the_same_ranking_as_the_api(capsys):
    from circuitsviz.cli import main
    from circuitsviz.models import load_model

    assert main(["circuit", "--model", "demo", "--device", "cpu", "--unit", "mixed3b:4", "--source", "mixed3a",
                 "--top", "3"]) == 0
    printed = capsys.readouterr().out
    expect = circuit(load_model("demo"), "mixed3b:4", source="mixed3a", top=3)
    rows = [line.split()[1] for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [c.unit for c in expect.positive + expect.negative]
    assert main(["circuit", "--model", "demo", "--device", "cpu", "--unit", "mixed3b:99", "--source", "mixed3a"]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.mark.parametrize("call,message", [
    (lambda m, im: circuit(m, "src:1", source="target"), "must come earlier"),
    (lambda m, im: circuit(m, "target:1", source="target"), "same layer"),
    (lambda m, im: circuit(m, "target:1", source="src", target="src"), "exactly one"),
    (lambda m, im: circuit(m, "target:7", source="src"), r"valid: 0\.\.2"),
    (lambda m, im: circuit(m, "target/x:1", source="src"), "sae="),
    (lambda m, im: attribute(m, "src:1", source="target", data=im), "earlier layer"),
    (lambda m, im: attribute(m, "target:1", source="src", data=im, method="ig"), "act_x_grad, integrated_gradients"),
    (lambda m, im: ablate(m, "target:1", ["src:1", "target:0"], data=im), "one layer"),
    (lambda m, im: ablate(m, "target:1", ["src:9"], data=im), r"valid: 0\.\.5"),
    (lambda m, im: ablate(m, "target:1", ["src:1"], data=im, mode="mean_"), "zero, mean"),
])
def test_bad_requests_fail_with_one_clear_line(call, message):
    with pytest.raises(CircuitsvizError, match=message):
        call(planted(), red_over_green(2))
