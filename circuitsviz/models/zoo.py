"""The model zoo: one entry per model, holding everything about it in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import BadInputError, UnknownNameError, WeightsError
from . import inceptionv1 as _inc
from .weights import WeightsSpec, load_state_dict, resolve, sha256_of
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


def zoo_entry(name: str) -> ZooEntry:
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = entry.build()
    path = sha = None
    if pretrained or weights is not None:
        if entry.weights is None:
            raise WeightsError(f"model {name!r} has no pretrained weights; use pretrained=False")
        path = resolve(entry.weights, weights, progress=progress, download_ok=download)
        state = entry.adapt_state(load_state_dict(path))
        missing, unexpected = _compare_keys(net, state)
        if missing or unexpected:
            raise WeightsError(
                f"weights file {path} does not fit model {name!r}: "
                f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
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
    mean = mean or [0.0, 0.0, 0.0]
    std = std or [1.0, 1.0, 1.0]
    model = VisionModel(net, name=name, layers=layers, input_size=input_size,
                        input_scale=[1 / s for s in std], input_shift=[-m / s for m, s in zip(mean, std)])
    model.default_layer = None
    return model.eval()


def _compare_keys(net: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    own = set(net.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


def list_layers(model: VisionModel, input_size: int | None = None) -> list[LayerShape]:
    """Name, channels, spatial size and branch ranges of every named layer.

    >>> rows = list_layers(load_model("inceptionv1", pretrained=False))
    >>> [(r.name, r.channels, r.height) for r in rows if r.name == "mixed3b"]
    [('mixed3b', 480, 28)]
    """
    shapes = model.layer_shapes(input_size=input_size)
    rows = []
    for name, shape in shapes.items():
        h, w = (shape[1], shape[2]) if len(shape) == 3 else (None, None)
        rows.append(LayerShape(name, shape[0], h, w, model.layer(name).branches))
    return rows
