"""The model zoo: fidelity to lucent/Lucid, layer access, truncation, hooks and errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from circuitsviz.errors import BadInputError, ChannelOutOfRangeError, UnknownNameError
from circuitsviz.models import list_layers, load_model, wrap_model
from circuitsviz.models.blocks import LocalResponseNorm
from circuitsviz.models.inceptionv1 import LRN, LUCENT_LRN

LUCID_CHANNELS = {
    "conv2d0": 64, "conv2d1": 64, "conv2d2": 192, "mixed3a": 256, "mixed3b": 480, "mixed4a": 508,
    "mixed4b": 512, "mixed4c": 512, "mixed4d": 528, "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024,
}


@pytest.fixture(scope="module")
def lucent_net():
    from lucent.modelzoo import inceptionv1

    torch.manual_seed(1)
    return inceptionv1(pretrained=False).eval()


def test_state_dict_keys_and_shapes_equal_lucents(inception, lucent_net):
    ours = inception.net.state_dict()
    theirs = lucent_net.state_dict()
    assert list(ours) == list(theirs)  # the same names in the same order: lucent checkpoints load as they are
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def _lucent_activations(lucent_net, x, names, lrn):
    """Run lucent's InceptionV1, swapping its LRN constants for ``lrn``, and hook ``names``."""
    from lucent.optvis.render import hook_model

    original = F.local_response_norm

    def lrn_override(t, size, alpha=1e-4, beta=0.75, k=1.0):
        assert (size, k) == (LUCENT_LRN["size"], LUCENT_LRN["k"])  # lucent's call site is what we think
        return original(t, **lrn)

    hook = hook_model(lucent_net, lambda: x)
    F.local_response_norm = lrn_override
    try:
        with torch.no_grad():
            try:
                lucent_net(x * 255 - 117)
            except RuntimeError:  # lucent's fixed 7x7 average pool needs 224 px; earlier layers ran
                assert x.shape[-1] < 224
    finally:
        F.local_response_norm = original
    return {n: hook(n).clone() for n in names}


PARITY_LAYERS = [
    "conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d",
    "mixed4e", "mixed5a", "mixed5b", "mixed4e_3x3_bottleneck", "mixed4e_5x5", "softmax2",
]


@pytest.mark.parametrize("size", [224])  # lucent's hard-coded pads are TF SAME only at even sizes
def test_every_layer_matches_lucent_given_the_same_lrn(inception, lucent_net, size):
    inception.net.load_state_dict(lucent_net.state_dict())
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    layers = PARITY_LAYERS if size == 224 else [n for n in PARITY_LAYERS if n != "softmax2"]
    theirs = _lucent_activations(lucent_net, x, layers + ["mixed4e_1x1_pre_relu_conv"], LRN)
    ours = inception.activations(x, layers + ["mixed4e_1x1_pre_relu"])
    theirs["mixed4e_1x1_pre_relu"] = theirs.pop("mixed4e_1x1_pre_relu_conv")
    for name, t in theirs.items():
        # float32 rounding differs between conv algorithms (ours run channels-last on the CPU),
        # so the absolute tolerance scales with the layer's range: ~1e-7 of it is rounding,
        # while a wrong constant or op moves values by 1e-2 or more (see the LRN test below).
        atol = 1e-5 * max(1.0, t.abs().max().item())
        torch.testing.assert_close(ours[name], t, rtol=1e-5, atol=atol, msg=f"layer {name} differs")


def _tf_same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad as TensorFlow's SAME does, from its definition: out = ceil(n / s), total pad =
    max((out - 1) * s + k - n, 0), floor of half before, the rest after."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad lists the last axis first
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def _tf_same_inceptionv1(net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Lucid's graph op by op with explicit SAME pads (convs pad 0, max pools -inf) and torch's
    own LRN: an independent reference for every input size."""
    from circuitsviz.models.inceptionv1 import MIXED

    def conv(name, t, stride=1):
        m = getattr(net, f"{name}_pre_relu_conv")
        return F.relu(F.conv2d(_tf_same_pad(t, m.kernel_size[0], stride), m.weight, m.bias, stride))

    def pool(t, stride):
        return F.max_pool2d(_tf_same_pad(t, 3, stride, float("-inf")), 3, stride)

    acts = {}
    t = acts["conv2d0"] = conv("conv2d0", x * 255 - 117, stride=2)
    t = F.local_response_norm(pool(t, 2), **LRN)
    t = acts["conv2d2"] = conv("conv2d2", conv("conv2d1", t))
    t = pool(F.local_response_norm(t, **LRN), 2)
    for name in MIXED:
        if name in ("mixed4a", "mixed5a"):
            t = pool(t, 2)
        branches = [conv(f"{name}_1x1", t), conv(f"{name}_3x3", conv(f"{name}_3x3_bottleneck", t)),
                    conv(f"{name}_5x5", conv(f"{name}_5x5_bottleneck", t)), conv(f"{name}_pool_reduce", pool(t, 1))]
        t = acts[name] = torch.cat(branches, dim=1)
    return acts


@pytest.mark.parametrize("size", [129, 140, 224, 236])
def test_every_layer_matches_a_tf_same_reference_at_odd_and_even_sizes(inception, size):
    # 140 px is what a 128 px render feeds; 236 what a 224 px one feeds; 129 is odd at the stem.
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    layers = ["conv2d0", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4e", "mixed5a", "mixed5b"]
    ours = inception.activations(x, layers)
    with torch.no_grad():
        ref = _tf_same_inceptionv1(inception.net, x)
    for name in layers:
        assert ours[name].shape == ref[name].shape, name
        atol = 1e-5 * max(1.0, ref[name].abs().max().item())
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=atol, msg=f"layer {name} differs")


def test_lucids_spatial_sizes_at_140_px_where_lucent_is_a_pixel_short(inception, lucent_net):
    shapes = inception.layer_shapes(["mixed3a", "mixed3b", "mixed4a", "mixed4e", "mixed5a", "mixed5b"], 140)
    assert {n: s[1:] for n, s in shapes.items()} == {
        "mixed3a": (18, 18), "mixed3b": (18, 18), "mixed4a": (9, 9), "mixed4e": (9, 9),
        "mixed5a": (5, 5), "mixed5b": (5, 5)}
    # lucent pads conv2d0 (2, 3) and pools with the window over the far edge only: 17x17 here
    theirs = _lucent_activations(lucent_net, torch.rand(1, 3, 140, 140), ["mixed3a"], LRN)["mixed3a"]
    assert tuple(theirs.shape[-2:]) == (17, 17)


@pytest.mark.parametrize("h, w", [(35, 35), (36, 36), (35, 36), (7, 4), (1, 2)])
def test_same_max_pool_equals_an_explicit_minus_inf_pad_forward_and_backward(h, w):
    from circuitsviz.models.blocks import SameMaxPool2d

    x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    ours = SameMaxPool2d(3, 2)(x)
    ref = F.max_pool2d(_tf_same_pad(x, 3, 2, float("-inf")), 3, 2)
    assert ours.shape == ref.shape == (2, 3, math.ceil(h / 2), math.ceil(w / 2))
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_lrn_differs_from_lucents_by_design(inception, lucent_net):
    # Lucid: depth_radius 5, bias 2, alpha 1e-4, beta 0.5  ->  torch size 11, alpha 1.1e-3, k 2
    assert LRN == dict(size=11, alpha=1e-4 * 11, beta=0.5, k=2.0)
    assert (LUCENT_LRN["size"], LUCENT_LRN["k"]) == (9, 1.0)
    inception.net.load_state_dict(lucent_net.state_dict())
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    lucent_as_shipped = _lucent_activations(lucent_net, x, ["conv2d1"], LUCENT_LRN)["conv2d1"]
    ours = inception.activations(x, "conv2d1")["conv2d1"]
    assert (ours - lucent_as_shipped).abs().max() > 1e-2


def test_lrn_matches_tensorflow_formula():
    # TF: x / (bias + alpha * sum_{|d'-d| <= r} x_{d'}^2) ** beta, written out directly.
    x = torch.randn(1, 20, 3, 3)
    r, bias, alpha, beta = 5, 2.0, 1e-4, 0.5
    sq = F.pad(x.pow(2), (0, 0, 0, 0, r, r))
    window = torch.stack([sq[:, d : d + 2 * r + 1].sum(1) for d in range(20)], dim=1)
    expected = x / (bias + alpha * window) ** beta
    torch.testing.assert_close(F.local_response_norm(x, **LRN), expected)
    torch.testing.assert_close(LocalResponseNorm(r, bias, alpha, beta)(x), expected)


@pytest.mark.parametrize("beta", [0.5, 0.75])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_lrn_hand_written_backward_equals_autograd_of_the_formula(beta, layout):
    # Activation-sized values (up to ~300) so the normaliser matters, in float64 so only the
    # maths can differ; beta 0.75 covers the general (non-rsqrt) path; both memory layouts.
    x = (torch.randn(2, 24, 4, 5, dtype=torch.float64) * 150).contiguous(memory_format=layout).requires_grad_()
    r, bias, alpha = 5, 2.0, 1e-4
    grad_out = torch.randn(2, 24, 4, 5, dtype=torch.float64)
    sq = F.pad(x.pow(2), (0, 0, 0, 0, r, r))
    window = torch.stack([sq[:, d : d + 2 * r + 1].sum(1) for d in range(24)], dim=1)
    (expected,) = torch.autograd.grad(x / (bias + alpha * window) ** beta, x, grad_out)
    (ours,) = torch.autograd.grad(LocalResponseNorm(r, bias, alpha, beta)(x), x, grad_out)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 5, 7])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_channel_window_sum_equals_the_definition(radius, layout):
    from circuitsviz.models.blocks import _channel_window_sum

    x = torch.randn(2, 13, 3, 4, dtype=torch.float64)
    expected = torch.stack([x[:, max(0, d - radius): d + radius + 1].sum(1) for d in range(13)], dim=1)
    torch.testing.assert_close(_channel_window_sum(x.contiguous(memory_format=layout), radius), expected)


@pytest.mark.parametrize("size", [145, 146, 35])
def test_space_to_depth_stem_conv_equals_the_plain_stride_2_conv(size):
    from circuitsviz.models.blocks import StemConv2d

    plain = nn.Conv2d(3, 64, 7, stride=2).double()
    folded = StemConv2d(3, 64, 7, stride=2).double()
    folded.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn_like(plain(x))
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        expected, got = plain(xl), folded(xl)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(torch.autograd.grad(got, x, grad_out)[0],
                                   torch.autograd.grad(expected, x, grad_out)[0])


def test_stem_pools_before_its_relu_only_when_nobody_reads_conv2d0(inception):
    # Max pooling commutes with ReLU, so without a hook on conv2d0 the stem rectifies after
    # pooling; asking for conv2d0 forces Lucid's order. Both must give the same later
    # activations and the same image gradient.
    x = torch.rand(2, 3, 99, 99, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = []
    for layers in (["mixed3a"], ["conv2d0", "mixed3a"]):
        act = inception.activations(x, layers, grad=True, check=False)["mixed3a"]
        (g,) = torch.autograd.grad(act[:, 5].square().mean(), x)
        out.append((act.detach(), g))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-7)


def test_lrn_without_autograd_equals_the_autograd_path_across_its_batch_chunks():
    # 6 images of 64x64x64 = 262k values each: the inference path takes them 4 at a time.
    lrn = LocalResponseNorm(5, 2.0, 1e-4, 0.5)
    x = (torch.randn(6, 64, 64, 64, generator=torch.Generator().manual_seed(0)) * 100)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = lrn(x)
    torch.testing.assert_close(fast, lrn(x.clone().requires_grad_()).detach(), rtol=0, atol=0)
    torch.testing.assert_close(fast, F.local_response_norm(x, **LRN))


def test_layer_table_has_lucids_channel_counts_and_branches(inception):
    for name, c in LUCID_CHANNELS.items():
        assert inception.channels(name) == c
    mixed4e = inception.layer("mixed4e")
    assert [(b.name, b.start, b.stop) for b in mixed4e.branches] == [
        ("1x1", 0, 256), ("3x3", 256, 576), ("5x5", 576, 704), ("pool_reduce", 704, 832)]
    assert mixed4e.branch_of(55).name == "1x1"
    assert inception.channels("mixed4e_3x3") == 320 and inception.channels("mixed4e_pre_relu") == 832


def test_list_layers_reports_shapes_that_match_real_activations(inception):
    rows = {r.name: r for r in list_layers(inception)}
    x = torch.rand(1, 3, 224, 224)
    for name in ("conv2d0", "mixed3b", "mixed4e", "mixed5b"):
        act = inception.activations(x, name)[name]
        assert (rows[name].channels, rows[name].height, rows[name].width) == tuple(act.shape[1:])


def test_pre_relu_concat_is_relu_free_version_of_mixed_layer(inception):
    acts = inception.activations(torch.rand(1, 3, 224, 224), ["mixed3b", "mixed3b_pre_relu"])
    torch.testing.assert_close(acts["mixed3b"], acts["mixed3b_pre_relu"].clamp(min=0))
    assert (acts["mixed3b_pre_relu"] < 0).any()


def test_each_requested_layer_is_bit_identical_to_the_full_forwards(inception):
    # Asked for alone, a layer is computed with the pre-ReLU maps nobody reads overwritten (ReLU
    # and LRN in place) and the forward stopped after it; asking for every layer keeps them all
    # and runs to the end. Not one bit may differ, nor may the output of a forward with no hook.
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    full = inception.activations(x, inception.layer_names, _stop=False)
    for name in ("conv2d0", "conv2d1_pre_relu", "conv2d2", "mixed3a", "mixed3b_3x3", "mixed4a_pre_relu",
                 "mixed4e", "mixed5b", "softmax2_pre_activation_matmul", "softmax2"):
        alone = inception.activations(x, [name])[name]
        assert torch.equal(alone, full[name]), name
    with torch.no_grad():
        assert torch.equal(inception(x), full["softmax2"])


def test_the_image_gradient_is_the_same_with_the_pre_relu_maps_overwritten_or_kept(inception):
    # Requesting every conv's pre-ReLU map keeps them (ReLU out of place); a plain request
    # rectifies in place. ReLU's backward reads its output, so the gradients must agree exactly.
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(6), requires_grad=True)
    kept = [n for n in inception.layer_names if n.endswith("_pre_relu") and n.startswith(("conv2d", "mixed3"))]
    grads = []
    for layers in (["mixed3b"], ["mixed3b"] + kept):
        act = inception.activations(x, layers, grad=True, check=False)["mixed3b"]
        grads.append(torch.autograd.grad(act[:, 7].square().mean(), x)[0])
    assert torch.equal(grads[0], grads[1])


def test_a_forward_keeps_no_pre_relu_map_that_nobody_asked_for(inception, monkeypatch):
    # Wrap every conv's forward (a hook would make the net keep its output) to hold a weak
    # reference to what it returns, and look at what is still alive when mixed3b is computed.
    import weakref

    refs = {}
    for name, module in inception.net.named_modules():
        if name.endswith("_pre_relu_conv"):
            def forward(x, _orig=module.forward, _name=name[:-len("_pre_relu_conv")]):
                out = _orig(x)
                refs[_name] = weakref.ref(out)
                return out
            monkeypatch.setattr(module, "forward", forward)
    seen = {}

    def probe(_module, _inputs, _output):
        for name, ref in refs.items():
            if ref() is not None:
                seen[name] = bool((ref() >= 0).all())

    handle = inception.net.mixed3b.register_forward_hook(probe)
    try:
        inception.activations(torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(7)), ["mixed3b"])
    finally:
        handle.remove()
    # Only the four maps the concat reads are alive, and each was rectified in place: the stem's
    # conv2d0 map, the bottlenecks and every distinct pre-ReLU map are gone.
    assert seen == {f"mixed3b_{b}": True for b in ("1x1", "3x3", "5x5", "pool_reduce")}
    assert len(refs) == 15 and all(ref() is None for ref in refs.values())  # and nothing outlives the call


def test_pre_relu_maps_that_someone_reads_are_not_overwritten(inception):
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(8))
    acts = inception.activations(x, ["conv2d2_pre_relu", "conv2d2", "mixed3b_1x1_pre_relu", "mixed3b_1x1"])
    for name in ("conv2d2", "mixed3b_1x1"):
        assert (acts[f"{name}_pre_relu"] < 0).any()
        assert torch.equal(acts[name], acts[f"{name}_pre_relu"].clamp(min=0))
    # An intervention that returns a tensor of its own gets it back untouched.
    shape = inception.activations(x, ["mixed3a_1x1_pre_relu"])["mixed3a_1x1_pre_relu"].shape
    mine = torch.randn(shape, generator=torch.Generator().manual_seed(9))
    before = mine.clone()
    inception.run_with_hooks(x, {"mixed3a_1x1_pre_relu": lambda a: mine})
    assert torch.equal(mine, before)


def test_the_linearised_net_gives_the_same_maps_with_pre_relu_maps_overwritten_or_kept(inception):
    # circuits.linearised swaps each ReLU's forward for the identity, which must take the
    # in-place call too; its maps must not depend on which pre-ReLU layers are read.
    from circuitsviz.circuits.linear import linearised

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    kept = [n for n in inception.layer_names if n.endswith("_pre_relu") and n.startswith(("conv2d", "mixed3a"))]
    with linearised(inception.net):
        plain = inception.activations(x, ["mixed3a"])["mixed3a"]
        full = inception.activations(x, ["mixed3a"] + kept)["mixed3a"]
    assert (plain < 0).any()  # the ReLUs really were the identity
    assert torch.equal(plain, full)


def test_an_fx_trace_of_the_net_keeps_every_relu_out_of_place(inception):
    # torchvision's create_feature_extractor freezes the forward into a graph that may return a
    # conv's output (a *_pre_relu layer): the traced ReLUs must not overwrite it.
    from torchvision.models.feature_extraction import create_feature_extractor

    from circuitsviz.models import blocks

    leaves = [blocks.LocalResponseNorm, blocks.StemConv2d, blocks.Concat, blocks.SamePad2d, blocks.SameMaxPool2d]
    net = inception.net
    extractor = create_feature_extractor(net, return_nodes={"mixed3a_1x1_pre_relu_conv": "pre", "conv2d2": "post"},
                                         tracer_kwargs={"leaf_modules": leaves})
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        got = extractor(inception.preprocess(images))
    want = inception.activations(images, ["mixed3a_1x1_pre_relu", "conv2d2"])
    assert (got["pre"] < 0).any()
    torch.testing.assert_close(got["pre"], want["mixed3a_1x1_pre_relu"])
    torch.testing.assert_close(got["post"], want["conv2d2"])
    assert not any(node.target is torch.relu_ for node in extractor.graph.nodes)


def test_skipped_branches_change_nothing_that_is_read_forward_or_backward(inception):
    # mixed3b:379 and :330 lie in the 5x5 branch (channels 320..415); the 1x1, 3x3 and pool
    # branches are skipped. The read channels and the image gradient must be what a full pass gives.
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grads = []
    for channels in (None, {"mixed3b": [379, 330]}):
        act = inception.activations(x, "mixed3b", grad=True, check=False, channels=channels)["mixed3b"]
        (g,) = torch.autograd.grad(act[:, [379, 330]].mean(), x)
        grads.append((act.detach(), g))
    (full, g_full), (pruned, g_pruned) = grads
    torch.testing.assert_close(pruned[:, 320:416], full[:, 320:416], rtol=0, atol=0)
    assert pruned[:, :320].abs().max() == 0 and pruned[:, 416:].abs().max() == 0  # really skipped
    torch.testing.assert_close(g_pruned, g_full, rtol=1e-5, atol=1e-9)


def test_branches_are_skipped_only_when_nothing_else_needs_them():
    from circuitsviz.models.inceptionv1 import unread_branches

    assert unread_branches(["mixed3b"], {"mixed3b": [379]}) == {"mixed3b": {"1x1", "3x3", "pool_reduce"}}
    assert unread_branches(["mixed4e"], {"mixed4e": [55, 300]}) == {"mixed4e": {"5x5", "pool_reduce"}}
    assert unread_branches(["conv2d2", "mixed4e"], {"mixed4e": [55]}) == {"mixed4e": {"3x3", "5x5", "pool_reduce"}}
    assert unread_branches(["mixed3b"], {"mixed3b": None}) == {}               # all channels read
    assert unread_branches(["mixed3b", "mixed4a"], {"mixed3b": [379]}) == {}  # a deeper layer needs them all
    assert unread_branches(["mixed3b", "mixed3b_3x3"], {"mixed3b": [379]}) == {}  # a branch layer is read
    assert unread_branches(["mixed3b_pre_relu"], {"mixed3b_pre_relu": [379]}) == {}
    assert unread_branches(["mixed3b"], {"mixed3b": range(480)}) == {}


def test_forward_to_mixed3b_runs_nothing_deeper(inception):
    ran = []
    handles = [inception.net.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: ran.append(n))
               for n in ("mixed3b", "maxpool4", "mixed4a_1x1_pre_relu_conv", "mixed5b", "softmax2")]
    try:
        inception.activations(torch.rand(1, 3, 224, 224), ["mixed3a", "mixed3b"])
    finally:
        for h in handles:
            h.remove()
    assert ran == ["mixed3b"]


def test_no_hook_outlives_a_call_even_on_error(inception, monkeypatch):
    def hook_count():
        return sum(len(m._forward_hooks) for m in inception.modules())

    def broken(_x):
        raise RuntimeError("mid-forward failure")

    before = hook_count()
    inception.activations(torch.rand(1, 3, 224, 224), ["mixed3a", "mixed4a"])
    assert hook_count() == before
    monkeypatch.setattr(inception.net.mixed4a_1x1_pre_relu_conv, "forward", broken)
    with pytest.raises(RuntimeError, match="mid-forward"):  # after mixed3a's hook has fired
        inception.activations(torch.rand(1, 3, 64, 64), ["mixed3a", "mixed5b"])
    assert hook_count() == before


def test_unknown_layer_error_suggests_nearest_names(inception):
    with pytest.raises(UnknownNameError) as e:
        inception.activations(torch.rand(1, 3, 224, 224), ["mixed4f"])
    msg = str(e.value)
    assert "mixed4f" in msg and "mixed4e" in msg and "Did you mean" in msg


def test_unknown_model_lists_the_zoo():
    with pytest.raises(UnknownNameError, match="inceptionv1.*googlenet"):
        load_model("inceptionv2", pretrained=False)


def test_channel_out_of_range_names_valid_range(inception):
    with pytest.raises(ChannelOutOfRangeError, match="832 channels.*0..831"):
        inception.check_channel("mixed4e", 832)
    inception.check_channel("mixed4e", 831)


@pytest.mark.parametrize("bad, match", [
    (torch.rand(3, 224, 224, 1), "N x 3 x H x W"),
    (torch.rand(1, 1, 64, 64), "N x 3 x H x W"),
    (torch.rand(1, 3, 64, 64) * 255, r"\[0, 1\]"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating point"),
])
def test_bad_images_are_refused_with_the_expected_convention(inception, bad, match):
    with pytest.raises(BadInputError, match=match):
        inception.activations(bad, "conv2d0")


def test_input_convention_is_lucids_x255_minus_117(inception):
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(inception.preprocess(x), x * 255 - 117)


def test_any_module_works_with_module_paths():
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    model = wrap_model(net, input_size=64)
    x = torch.rand(2, 3, 64, 64)
    acts = model.activations(x, ["layer3.1.conv2", "layer1.0"])
    with torch.no_grad():
        y = net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
    assert acts["layer3.1.conv2"].shape == (2, 256, 4, 4)
    assert model.channels("layer3.1.conv2") == 256
    assert y.shape[1:] == (256, 4, 4)
    with pytest.raises(UnknownNameError, match="layer3.1.conv2"):
        model.layer("layer3.1.conv3")


def test_googlenet_builds_with_module_path_layers():
    model = load_model("googlenet", pretrained=False)
    acts = model.activations(torch.rand(1, 3, 224, 224), ["inception4e", "inception3b.branch2"])
    assert acts["inception4e"].shape == (1, 832, 14, 14)


def test_device_follows_the_model_not_import_time(inception):
    assert inception.device == torch.device("cpu")
    x = torch.rand(1, 3, 224, 224)
    assert inception.activations(x, "conv2d0")["conv2d0"].device == inception.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_runs_on_cuda():
    model = load_model("inceptionv1", pretrained=False, device="cuda")
    acts = model.activations(torch.rand(1, 3, 224, 224), "mixed4e")
    assert acts["mixed4e"].is_cuda


def test_redirected_relu_passes_gradient_to_dead_units_only_inside_the_block(inception):
    x = torch.full((1, 3, 224, 224), 0.5, requires_grad=True)
    # A channel pushed negative by a huge negative bias gets no ordinary gradient.
    conv = inception.net.conv2d0_pre_relu_conv
    saved = conv.bias.data.clone()
    conv.bias.data.fill_(-1e4)
    try:
        act = inception.activations(x, "conv2d0", grad=True, check=False)["conv2d0"]
        assert torch.autograd.grad(act[:, 0].mean(), x)[0].abs().sum() == 0
        with inception.redirected_relu():
            act = inception.activations(x, "conv2d0", grad=True, check=False)["conv2d0"]
            # Optimisation minimises the loss -objective; redirection lets that loss move x.
            g = torch.autograd.grad(-act[:, 0].mean(), x)[0]
        assert g.abs().sum() > 0
        assert not any(getattr(m, "redirect", False) for m in inception.modules())
    finally:
        conv.bias.data.copy_(saved)


def test_redirected_relu_backward_follows_lucids_rule_per_example():
    from circuitsviz.models.blocks import _RedirectedReLUFn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g)
    x[1] = -x[1].abs() - 0.1          # example 1: every unit dead, so its gradient is redirected
    x[3] = -x[3].abs() - 0.1          # example 3 too
    grad = torch.randn(4, 3, 5, 5, generator=g)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    (ours,) = torch.autograd.grad(_RedirectedReLUFn.apply(x), x, grad)
    # The rule, written per example: alive examples get the ReLU gradient; a dead one gets the
    # incoming gradient except where it would push an already negative input further down.
    for i in range(4):
        relu = torch.where(x[i] > 0, grad[i], 0.0)
        want = relu if relu.abs().sum() > 0 else torch.where((x[i] < 0) & (grad[i] > 0), 0.0, grad[i])
        assert torch.equal(ours[i], want.detach()), f"example {i}"
    assert ours[1].abs().sum() > 0 and ours[0].abs().sum() > 0


def test_random_weights_come_from_the_seed_not_the_global_rng():
    state = torch.random.get_rng_state()
    a = load_model("inceptionv1", pretrained=False, seed=3)
    torch.rand(10)  # moving the global RNG must not matter
    b = load_model("inceptionv1", pretrained=False, seed=3)
    c = load_model("inceptionv1", pretrained=False, seed=4)
    w = "mixed4e_1x1_pre_relu_conv.weight"
    assert torch.equal(a.net.state_dict()[w], b.net.state_dict()[w])
    assert not torch.equal(a.net.state_dict()[w], c.net.state_dict()[w])
    torch.random.set_rng_state(state)
    load_model("inceptionv1", pretrained=False)
    assert torch.equal(torch.random.get_rng_state(), state)
