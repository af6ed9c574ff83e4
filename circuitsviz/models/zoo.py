"""The model zoo: one entry per model, holding everything about it in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInputError, UnknownNameError, WeightsError, check_float, check_int
from . import inceptionv1 as _inc
from .weights import WeightsSpec, check_state_dict, load_state_dict, resolve, sha256_of
from .wrapper import LayerInfo, LayerShape, VisionModel

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class ZooEntry:
    """A model builder plus its weights, input convention and layer table."""

    name: str
    build: Callable[[], nn.Module]
    description: str
    weights: WeightsSpec | None = None
    layers: Callable[[], list[LayerInfo]] = list
    input_size: int = 224
    input_scale: float | list[float] = 1.0
    input_shift: float | list[float] = 0.0
    default_layer: str | None = None
    labels: Callable[[], list[str] | None] = lambda: None
    # Turns a raw checkpoint into this builder's state dict (e.g. drop unused heads).
    adapt_state: Callable[[dict], dict] = lambda sd: sd


def _inceptionv1() -> ZooEntry:
    return ZooEntry(
        name="inceptionv1",
        build=_inc.InceptionV1,
        description="Lucid's InceptionV1 (inception5h, 1008 classes), the model of the Distill Circuits thread",
        weights=WeightsSpec(
            filename="inception5h.pth",
            urls=(
                "https://pytorch.s3.amazonaws.com/models/captum/inception5h.pth",
                "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth",
            ),
            how_to_get="It is the state dict that lucent's and captum's InceptionV1 load (about 27 MB).",
        ),
        layers=_inc.layer_table,
        input_size=224,
        input_scale=255.0,
        input_shift=-117.0,
        default_layer="mixed4e",
    )


def _googlenet() -> ZooEntry:
    import torchvision

    w = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    fname = w.url.rsplit("/", 1)[-1]

    def build() -> nn.Module:
        # transform_input=True is how torchvision runs these weights (they were trained on
        # Google's input scaling); the wrapper feeds ImageNet-normalised images as torchvision does.
        return torchvision.models.googlenet(weights=None, aux_logits=False, transform_input=True, init_weights=False)

    return ZooEntry(
        name="googlenet",
        build=build,
        description="torchvision's GoogLeNet (ImageNet-1k, batch norm); a different run from Lucid's, channels do not match",
        weights=WeightsSpec(filename=fname, urls=(w.url,), sha256=fname.rsplit("-", 1)[-1].split(".")[0]),
        input_size=224,
        input_scale=[1 / s for s in IMAGENET_STD],
        input_shift=[-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)],
        default_layer="inception4e",
        labels=lambda: list(w.meta["categories"]),
        adapt_state=lambda sd: {k: v for k, v in sd.items() if not k.startswith(("aux1.", "aux2."))},
    )


def _demo() -> ZooEntry:
    from ..demo.model import zoo_entry  # the bundled model lives with its trainer

    return zoo_entry()


ZOO: dict[str, Callable[[], ZooEntry]] = {"inceptionv1": _inceptionv1, "googlenet": _googlenet, "demo": _demo}


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` this machine has, or a one-line error naming the valid ones.

    >>> check_device("cpu")
    device(type='cpu')
    """
    if device is None:
        return None
    valid = "cpu" + (", cuda, cuda:0..%d" % (torch.cuda.device_count() - 1) if torch.cuda.is_available() else "")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise BadInputError(f"unknown device {device!r}; valid here: {valid}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise BadInputError(f"device {device!r} is not available on this machine; valid here: {valid}")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise BadInputError(f"device {device!r} is not available on this machine; valid here: {valid}")
    return dev


def zoo_entry(name: str) -> ZooEntry:
    if not isinstance(name, str):
        raise BadInputError(f"model must be a zoo name ({', '.join(ZOO)}), got {type(name).__name__}")
    if name not in ZOO:
        raise UnknownNameError("model", name, list(ZOO))
    return ZOO[name]()


def load_model(
    name: str = "inceptionv1",
    pretrained: bool = True,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    *,
    progress: bool = True,
    download: bool = True,
    seed: int = 0,
) -> VisionModel:
    """Build a zoo model, load its weights, and return it wrapped, in eval mode.

    >>> model = load_model("inceptionv1", pretrained=False)   # random weights, no download
    >>> model.channels("mixed4e")
    832
    >>> model.layer("mixed4e").branch_of(55).name
    '1x1'

    ``weights`` is an explicit file; otherwise see :mod:`circuitsviz.models.weights` for where
    the file is looked for and when it is downloaded. ``device=None`` keeps the model on the CPU.
    Random weights (``pretrained=False``) are drawn from ``seed``: the same seed gives the same
    network, and the global RNG is left as it was.
    """
    entry = zoo_entry(name)
    device = check_device(device)
    if weights is not None and not isinstance(weights, (str, Path)):
        raise BadInputError(f"weights must be a file path, got {type(weights).__name__}")
    check_int("seed", seed, 0, 2**63 - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = entry.build()
    path = sha = None
    if pretrained or weights is not None:
        if entry.weights is None:
            raise WeightsError(f"model {name!r} has no pretrained weights; use pretrained=False")
        expected = net.state_dict()
        budget = entry.weights.max_bytes or weights_budget(expected)

        def load_checked(p) -> dict:
            state = entry.adapt_state(load_state_dict(p, max_bytes=budget))
            check_state_dict(state, expected, p, name)
            return state

        # A download is kept only if it loads as this state dict (not an HTML page or a cut file).
        path = resolve(entry.weights, weights, progress=progress, download_ok=download, check=load_checked)
        state = load_checked(path)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise WeightsError(f"weights file {path} does not fit model {name!r}: {e}") from None
        path, sha = str(path), sha256_of(path)
    model = VisionModel(
        net, name=name, layers=entry.layers(), input_size=entry.input_size,
        input_scale=entry.input_scale, input_shift=entry.input_shift, labels=entry.labels(),
        weights_path=path, weights_sha256=sha,
    )
    model.default_layer = entry.default_layer
    if device is not None:
        model.to(device)
    return model.eval()


def wrap_model(net: nn.Module, *, name: str = "custom", input_size: int = 224,
               mean: list[float] | None = None, std: list[float] | None = None,
               layers: list[LayerInfo] = ()) -> VisionModel:
    """Wrap any ``nn.Module``; layers are its module paths (``layer3.1.conv2``).

    ``mean``/``std`` describe the normalisation the network expects (default: none, it takes [0, 1]).

    >>> import torchvision
    >>> model = wrap_model(torchvision.models.resnet18(), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    >>> model.channels("layer3.1.conv2")
    256
    """
    if not isinstance(net, nn.Module):
        raise BadInputError(f"wrap_model needs a torch.nn.Module, got {type(net).__name__}")
    check_int("input_size", input_size, 1, 4096)
    for what, values in (("mean", mean), ("std", std)):
        if values is not None and not (isinstance(values, (list, tuple)) and len(values) == 3
                                       and all(check_float(what, v) is not None for v in values)):
            raise BadInputError(f"{what} must be 3 numbers (one per RGB channel), got {values!r}")
    if std is not None and not all(v > 0 for v in std):
        raise BadInputError(f"std must be > 0 for every channel, got {std!r}")
    if not isinstance(layers, (list, tuple)) or not all(isinstance(li, LayerInfo) for li in layers):
        raise BadInputError(f"layers must be a list of LayerInfo, got {layers!r:.80}")
    mean = mean or [0.0, 0.0, 0.0]
    std = std or [1.0, 1.0, 1.0]
    model = VisionModel(net, name=name, layers=layers, input_size=input_size,
                        input_scale=[1 / s for s in std], input_shift=[-m / s for m, s in zip(mean, std)])
    model.default_layer = None
    return model.eval()


def weights_budget(expected: dict[str, torch.Tensor]) -> int:
    """The most bytes a weights archive for this state dict may declare: twice its tensors
    (room for heads a checkpoint carries and ``adapt_state`` drops) plus 16 MiB."""
    return 2 * sum(t.numel() * t.element_size() for t in expected.values()) + (16 << 20)


def list_layers(model: VisionModel, input_size: int | None = None) -> list[LayerShape]:
    """Name, channels, spatial size and branch ranges of every named layer.

    >>> rows = list_layers(load_model("inceptionv1", pretrained=False))
    >>> [(r.name, r.channels, r.height) for r in rows if r.name == "mixed3b"]
    [('mixed3b', 480, 28)]
    """
    check_int("input_size", input_size, 1, 4096, optional=True)
    try:
        shapes = model.layer_shapes(input_size=input_size)
    except RuntimeError as e:  # a size the network cannot take, e.g. smaller than its pooling
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"input_size {input_size} does not fit model {model.name!r} "
                            f"(default {model.input_size}): {first}") from None
    rows = []
    for name, shape in shapes.items():
        h, w = (shape[1], shape[2]) if len(shape) == 3 else (None, None)
        rows.append(LayerShape(name, shape[0], h, w, model.layer(name).branches))
    return rows
