"""Feature visualization against its peers: lucent, torch-dreams and horama, on the same weights.

    python benchmarks/peers_optvis.py [--steps 32] [--units 8] [--device cuda] [--quick]

Same network (InceptionV1 with seeded random weights, and the bundled demo model), same units,
same number of steps. Each library runs with its own defaults for parameterisation, transforms,
optimiser and learning rate, rendering one unit per call and, where it documents one, a batch
of units in one call:

* circuitsviz ``visualize`` (128 px, FFT param, Lucid's transforms, Adam 0.05); batch only:
  one call per unit is the same code with ``batch_size=1``;
* lucent ``render_vis`` on lucent's own InceptionV1 loaded with the same state dict (128 px,
  upsampled to 224 as lucent does); batch via ``param.image(.., batch=n)`` and
  ``objectives.channel(.., batch=i)`` summed. InceptionV1 only: lucent's net is that model;
* torch-dreams ``Dreamer.render`` (its default FFT image param, lr 9e-3, affine + resize
  transforms, 128 px); batch via ``BatchedAutoImageParam`` and ``BatchedObjective``;
* horama ``fourier`` (Lucid-style FFT) and ``maco`` (maco only where its downloaded ImageNet
  magnitude spectrum, ``spectrum_decorrelated.npy``, is in the working folder), at their defaults (a 1280-px image, 6
  random crops resized to 224 px per step, NAdam lr 1.0); one unit per call, as documented.

torch-dreams and horama take any module and feed it ImageNet-normalised images; they get a
module that undoes that normalisation and returns the wanted layer from circuitsviz's network
(the same weights). So they run circuitsviz's own fast InceptionV1 (channels-last, its LRN and
stem, the truncated forward), and the ratio against them measures the rendering loop and what
each library feeds the net, not the network's implementation. What is fed differs: torch-dreams'
default transforms resize the 128 px image by a random 0.5-1.2 per axis (about 0.72x the pixels
on average), circuitsviz's Lucid transforms hand the net about 140 px (1.2x the pixels). Horama pushes 6 x 224^2 pixels per step, so it renders ``--slow-units``
units (default 1) to keep the run short; the rate is per unit either way.

Scores, the same for every library: each final image, in [0, 1], resized to the model's natural
size, goes through circuitsviz's network without transforms; the score is the unit's mean
activation. *Time to objective*: every library also renders at 1/4 and 1/2 of the steps; the
target is the lowest score any library reaches at the full steps; the time is the first of
those budgets that reaches it, times that library's seconds per unit-step.

Last line: circuitsviz's channel-steps/s at mixed4e over the fastest peer's (any mode).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from torch import nn

from _common import add_retain_memory_flag, apply_retain_memory, missing_peer, sync
from circuitsviz.models import load_model
from circuitsviz.optvis import visualize

UNITS = {"mixed4e": [55, 56, 60, 61, 62, 63, 64, 65], "mixed3b": [379, 406, 385, 343, 342, 388, 340, 330]}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class LayerOutput(nn.Module):
    """``x`` (ImageNet-normalised, as torch-dreams and horama feed it) -> one layer of circuitsviz's net."""

    def __init__(self, model, layer: str) -> None:
        super().__init__()
        self.model, self.layer = model, layer
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.activations(x * self.std + self.mean, self.layer, grad=True, check=False)[self.layer]


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(-1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(-1, 3, 1, 1)
    return (x.detach().cpu() * std + mean).clamp(0, 1)


# Each renderer: (ctx, layer, channels, steps, batch) -> list of (3, H, W) images in [0, 1].
def render_circuitsviz(ctx, layer, channels, steps, batch):
    res = visualize(ctx["model"], [f"{layer}:{c}" for c in channels], size=ctx["size"], steps=steps,
                    batch_size=len(channels) if batch else 1, progress=False)
    return [torch.from_numpy(r.image).permute(2, 0, 1).float() / 255 for r in res]


def render_lucent(ctx, layer, channels, steps, batch):
    from lucent.optvis import objectives, param, render

    lmodel, size = ctx["lucent_net"], ctx["size"]
    kw = dict(thresholds=(steps,), show_image=False, progress=False)
    if batch:
        obj = sum(objectives.channel(layer, c, batch=i) for i, c in enumerate(channels))
        out = render.render_vis(lmodel, obj, param_f=lambda: param.image(size, batch=len(channels)), **kw)
        _drop_hooks(lmodel)
        return [torch.from_numpy(im).permute(2, 0, 1) for im in out[-1]]
    images = []
    for c in channels:
        out = render.render_vis(lmodel, f"{layer}:{c}", param_f=lambda: param.image(size), **kw)
        _drop_hooks(lmodel)
        images.append(torch.from_numpy(out[-1][0]).permute(2, 0, 1))
    return images


def _drop_hooks(lmodel) -> None:
    """render_vis leaves a hook on every module; clear them so later calls are not slowed."""
    for m in lmodel.modules():
        m._forward_hooks.clear()


def render_torch_dreams(ctx, layer, channels, steps, batch):
    from torch_dreams import Dreamer
    from torch_dreams.batched_image_param import BatchedAutoImageParam
    from torch_dreams.batched_objective import BatchedObjective

    module, device, size = LayerOutput(ctx["model"], layer).to(ctx["device"]), ctx["device"], ctx["size"]
    dreamy = Dreamer(module, quiet=True, device=device)
    loss_of = lambda c: lambda outs: -outs[0][:, c].mean()  # noqa: E731
    if batch:
        param = BatchedAutoImageParam(batch_size=len(channels), height=size, width=size, device=device)
        out = dreamy.render(layers=[module], image_parameter=param, iters=steps,
                            custom_func=BatchedObjective([loss_of(c) for c in channels]))
        return [p.postprocess(device=device)[0].detach().cpu().clamp(0, 1) for p in out.image_params]
    return [dreamy.render(layers=[module], width=size, height=size, iters=steps, custom_func=loss_of(c))
            .postprocess(device=device)[0].detach().cpu().clamp(0, 1) for c in channels]


def _horama(method: str):
    def render(ctx, layer, channels, steps, batch):
        import horama

        module = LayerOutput(ctx["model"], layer).to(ctx["device"])
        images = []
        for c in channels:
            with _quiet_tqdm():
                image, _ = getattr(horama, method)(lambda x: module(x)[:, c].mean(), total_steps=steps,
                                                   device=ctx["device"])
            images.append(unnormalize(image)[0])
        return images

    return render


class _quiet_tqdm:
    """horama always draws a progress bar; silence it for the timed loop."""

    def __enter__(self):
        import functools

        import horama.fourier_fv as f
        import horama.maco_fv as m

        self.saved = [(mod, mod.tqdm) for mod in (f, m)]
        for mod, tq in self.saved:
            mod.tqdm = functools.partial(tq, disable=True)

    def __exit__(self, *exc):
        for mod, tq in self.saved:
            mod.tqdm = tq


# name, module to import (None: ours), renderer, modes, InceptionV1 only, slow (renders --slow-units)
PEERS = [
    ("circuitsviz", None, render_circuitsviz, ("batch",), False, False),
    ("lucent", "lucent", render_lucent, ("single", "batch"), True, False),
    ("torch-dreams", "torch_dreams", render_torch_dreams, ("single", "batch"), False, False),
    ("horama fourier", "horama", _horama("fourier"), ("single",), False, True),
    ("horama maco", "horama", _horama("maco"), ("single",), False, True),
]


def score(model, layer: str, channels: list[int], images: list[torch.Tensor]) -> float:
    """Mean over units of the unit's mean activation on its image at the model's natural size."""
    x = torch.stack(images).float().to(model.device)
    size = model.input_size
    if x.shape[-1] != size:
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    with torch.no_grad():
        acts = model.activations(x, layer)[layer]
    return float(acts[torch.arange(len(channels)), channels].mean())


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 8 units and 32 steps by default: with fewer, each call's one-off setup (hooks, parameters,
    # warm kernels) weighs on the per-step rate, and circuitsviz's batch has less to batch.
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--units", type=int, default=8, help="units per layer (default: %(default)s)")
    ap.add_argument("--slow-units", type=int, default=1, help="units horama renders (default: %(default)s)")
    ap.add_argument("--models", default="inceptionv1,demo")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 steps, 2 units, demo model")
    add_retain_memory_flag(ap)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.units, args.models = 2, 2, "demo"
    retained = apply_retain_memory(args)
    warnings.filterwarnings("ignore")
    print(f"device={args.device} threads={torch.get_num_threads()} steps={args.steps} units={args.units} "
          f"retain_freed_memory={retained}")
    peers = [p for p in PEERS if p[1] is None or not missing_peer(p[1], p[0])]
    if any(p[0] == "horama maco" for p in peers) and not os.path.isfile("spectrum_decorrelated.npy"):
        # maco downloads an ImageNet magnitude spectrum at run time; this project runs offline.
        print("skipping horama maco: it needs spectrum_decorrelated.npy (downloaded by horama) in the working folder")
        peers = [p for p in peers if p[0] != "horama maco"]
    headline: dict[str, float] = {}
    for model_name in args.models.split(","):
        torch.manual_seed(0)
        model = load_model(model_name, pretrained=False, device=args.device)
        ctx = {"model": model, "device": args.device, "size": 128 if model_name == "inceptionv1" else model.input_size}
        if model_name == "inceptionv1" and any(p[0] == "lucent" for p in peers):
            from lucent.modelzoo import inceptionv1

            ctx["lucent_net"] = inceptionv1(pretrained=False).to(args.device).eval()
            ctx["lucent_net"].load_state_dict(model.net.state_dict())
        layers = {"inceptionv1": ["mixed4e"], "demo": ["mixed3b"]}.get(model_name, ["mixed4e"])
        for layer in layers:
            all_channels = UNITS.get(layer, list(range(8))) if model_name == "inceptionv1" else list(range(8))
            rows = []
            for name, _, render, modes, lucent_only, slow in peers:
                if lucent_only and "lucent_net" not in ctx:
                    continue
                channels = all_channels[:min(args.units, args.slow_units) if slow else args.units]
                for mode in modes:
                    fn = lambda s: render(ctx, layer, channels, s, mode == "batch")  # noqa: E731
                    torch.manual_seed(0)
                    np.random.seed(0)
                    fn(1)  # warm-up: kernels are built per shape on first use
                    budgets = sorted({max(args.steps // 4, 1), max(args.steps // 2, 1), args.steps})
                    scores, t_full = {}, None
                    for s in budgets:
                        t, images = timed(lambda: fn(s), args.device)
                        scores[s] = score(model, layer, channels, images)
                        t_full = t if s == args.steps else t_full
                    rows.append(dict(peer=name, mode=mode, units=len(channels), rate=len(channels) * args.steps / t_full,
                                     scores=scores, sec_per_unit_step=t_full / (len(channels) * args.steps)))
                    print(f"  {model_name}/{layer} {name:15} {mode:6} {rows[-1]['rate']:7.2f} ch-steps/s  "
                          f"score@{args.steps} {scores[args.steps]:.4f}", flush=True)
            target = min(r["scores"][args.steps] for r in rows)
            print(f"{model_name} {layer}: target score for time-to-objective {target:.4f} (the lowest at {args.steps} steps)")
            print(f"{'peer':15} {'mode':6} {'units':>5} {'ch-steps/s':>10} {'score':>8} {'time to target':>15}")
            for r in rows:
                reach = min((s for s, v in r["scores"].items() if v >= target), default=None)
                ttt = f"{reach * r['sec_per_unit_step']:.2f} s/unit" if reach else "not reached"
                print(f"{r['peer']:15} {r['mode']:6} {r['units']:5d} {r['rate']:10.2f} {r['scores'][args.steps]:8.4f} {ttt:>15}")
            ours = max(r["rate"] for r in rows if r["peer"] == "circuitsviz")
            others = [r for r in rows if r["peer"] != "circuitsviz"]
            if others:
                best = max(others, key=lambda r: r["rate"])
                print(f"{model_name} {layer}: circuitsviz {ours:.2f} ch-steps/s = {ours / best['rate']:.2f}x "
                      f"{best['peer']} ({best['mode']}, {best['rate']:.2f})")
                if layer == "mixed4e" or not headline:
                    headline = {"ratio": ours / best["rate"], "peer": f"{best['peer']} {best['mode']}, {model_name} {layer}"}
    if headline:
        print(f"ratio vs best peer: {headline['ratio']:.2f}x ({headline['peer']})")
    else:
        print("ratio vs best peer: n/a (no peer installed)")


if __name__ == "__main__":
    main()
