"""Receptive fields computed from the module graph agree with where gradients actually reach."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from circuitsviz.mining import receptive_field
from circuitsviz.models import load_model, wrap_model
from circuitsviz.models.blocks import Concat


class TwoBranch(nn.Module):
    """A 1x1 and a dilated 3x3 branch, concatenated: the field is the union of both."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 2, 1)
        self.b = nn.Conv2d(4, 2, 3, padding=2, dilation=2)
        self.cat = Concat()

    def forward(self, x):
        return self.cat(self.a(x), self.b(x))


def _positive_weights(net: nn.Module) -> None:
    """Every weight positive, every bias zero: with positive input, every path carries gradient."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()


def _gradient(model, layer: str, unit: int, y: int, x: int, size: int) -> torch.Tensor:
    """|d act[unit, y, x] / d input|, summed over colour: an H x W map."""
    images = (0.5 + 0.5 * torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))).double()
    images.requires_grad_(True)
    act = model.activations(images, layer, grad=True, check=False)[layer]
    (grad,) = torch.autograd.grad(act[0, unit, y, x], images)
    return grad[0].abs().sum(0)


def _support(grad: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (top, left, bottom, right) of the pixels with nonzero gradient."""
    rows, cols = grad.nonzero(as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def _dense(grad: torch.Tensor, box) -> bool:
    """Every pixel inside ``box`` has nonzero gradient (the support fills the rectangle)."""
    top, left, bottom, right = box
    return bool((grad[top:bottom, left:right] > 0).all())


def test_field_equals_gradient_support_on_conv_and_avgpool_net():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1),
        nn.ZeroPad2d((1, 2, 1, 2)), TwoBranch(), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2),
    )
    _positive_weights(net)
    model = wrap_model(net.double(), input_size=64)
    rf = receptive_field(model, "6")
    # Hand-derived: conv5/s2/p2 -> (5, 2, -2); avg3/s2/p1 -> (9, 4, -4); pad 1 -> (9, 4, -8);
    # union(1x1, dilated 3x3 p2) -> (25, 4, -16); conv3/s2 -> (33, 8, -16).
    assert (rf.size, rf.stride, rf.offset) == ((33, 33), (8, 8), (-16, -16))
    _, _, h, w = model.activations(torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64), "6")["6"].shape
    for y, x in [(0, 0), (h // 2, w // 2), (h - 1, 1), (h - 1, w - 1)]:  # corners clip at the image edge
        box, grad = rf.box(y, x, image_size=64), _gradient(model, "6", 1, y, x, 64)
        assert _support(grad) == box
        assert _dense(grad, box)


def _average_pool_twin(model):
    """InceptionV1 with each max pool made an average pool (same window), -inf pads made zero, LRN
    removed: the same geometry, but every pixel of the field now reaches the output."""
    twin = copy.deepcopy(model)
    for name, m in list(twin.net.named_modules()):
        parent = twin.net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else twin.net
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(m, nn.MaxPool2d):
            setattr(parent, leaf, nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode))
        elif isinstance(m, nn.ConstantPad2d):
            setattr(parent, leaf, nn.ConstantPad2d(m.padding, 0.0))
        elif isinstance(m, nn.LocalResponseNorm):
            setattr(parent, leaf, nn.Identity())
    _positive_weights(twin.net)
    return twin.double()


@pytest.fixture(scope="module")
def inception():
    return load_model("inceptionv1", pretrained=False)


def test_inceptionv1_fields_are_exact_on_its_average_pool_twin(inception):
    twin = _average_pool_twin(inception)
    # A layer's field is the union of its branches'; a 5x5-branch unit sees all of it.
    for layer, y in [("mixed3a", 14), ("mixed4a", 7)]:
        unit = inception.layer(layer).branches[2].start + 3
        rf = receptive_field(inception, layer)
        assert receptive_field(twin, layer) == rf          # the swap keeps the geometry
        box = rf.box(y, y, image_size=224)
        assert box == rf.box(y, y)                         # the whole field lies inside the image
        grad = _gradient(twin, layer, unit, y, y, 224)
        assert _support(grad) == box
        assert _dense(grad, box)


def test_inceptionv1_max_pool_gradients_stay_within_the_field(inception):
    model = copy.deepcopy(inception).double()
    rf = receptive_field(model, "mixed3b")
    # The most active unit there, so the gradient is not zero (the weights are random).
    probe = (0.5 + 0.5 * torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))).double()
    unit = int(model.activations(probe, "mixed3b", check=False)["mixed3b"][0, :, 14, 14].argmax())
    top, left, bottom, right = _support(_gradient(model, "mixed3b", unit, 14, 14, 224))
    t, l, b, r = rf.box(14, 14, image_size=224)
    assert t <= top and l <= left and bottom <= b and right <= r


def test_unreachable_layer_is_refused_with_its_name(inception):
    from circuitsviz.errors import BadInputError

    with pytest.raises(BadInputError, match="softmax2"):
        receptive_field(inception, "softmax2")


def test_a_stored_examples_crop_is_exactly_the_pixels_its_activation_has_gradient_on(tmp_path):
    """Mining records the field, the run stores it, the crop is cut from it: all one convention."""
    import numpy as np
    from PIL import Image

    from circuitsviz.data import ImageFolderDataset, preprocess_image
    from circuitsviz.mining import mine
    from circuitsviz.store import open_run
    from circuitsviz.store.synthetic import write_image_folder

    net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1),
                        nn.ZeroPad2d((1, 2, 1, 2)), TwoBranch(), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2))
    _positive_weights(net)
    model = wrap_model(net.double(), input_size=64)
    write_image_folder(tmp_path / "imgs", n=4)
    data = ImageFolderDataset(tmp_path / "imgs", size=64)
    run = open_run(tmp_path / "run", create=True)
    run.add_mining(mine(model, data, "6", k=4, batch_size=4, progress=False), data, model=model)
    seen = set()
    for unit in range(3):
        for ex in run.examples(f"6:{unit}"):
            image = preprocess_image(Image.open(tmp_path / "imgs" / ex.image_id), 64)
            x = torch.from_numpy(np.asarray(image, dtype=np.float64) / 255).permute(2, 0, 1)[None].requires_grad_(True)
            act = model.activations(x, "6", grad=True, check=False)["6"]
            (grad,) = torch.autograd.grad(act[0, unit, ex.y, ex.x], x)
            top, left, bottom, right = _support(grad[0].abs().sum(0))
            crop = np.asarray(Image.open(run.example_image(ex, "crop", size=max(bottom - top, right - left))))
            np.testing.assert_array_equal(crop, np.asarray(image)[top:bottom, left:right])
            seen.add((ex.y, ex.x))
    assert len(seen) > 1  # more than one position was checked
