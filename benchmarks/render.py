"""Feature-visualization throughput and quality: circuitsviz ``visualize`` vs lucent ``render_vis``.

    python benchmarks/render.py [--steps 4] [--layers mixed3b,mixed4e] [--device cpu]

Both render the same 8 channels at 128 px with the same settings (FFT param, standard transforms,
Adam lr 0.05, the same number of steps), on InceptionV1 with the same random weights (speed does
not depend on the weights). Lucent renders one unit per ``render_vis`` call, as its users do;
circuitsviz renders all 8 in one batch, with the forward pass stopped at the layer.

Two pairings, because the two libraries feed the network differently:

* ``lucid``: circuitsviz's default (the ~140 px transformed image goes to the net, as in Lucid),
  against lucent with ``fixed_image_size=140`` so both push the same number of pixels;
* ``lucent``: circuitsviz with ``upsample=True`` against lucent's default (upsampled to 224).

The process applies :func:`circuitsviz.retain_freed_memory` first, as the ``circuitsviz`` command
does; it holds for both libraries (``--no-retain-memory`` measures without it).

Reported per pairing: channel-steps per second for both and their ratio, and the mean final
objective (channel mean on the final image, scored on circuitsviz's Lucid-faithful net and on
lucent's own net, at the size each pipeline feeds). Lucent's net keeps its own LRN constants and
redirects ReLU gradients at every step; that is what a lucent user gets.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import add_retain_memory_flag, apply_retain_memory
from circuitsviz.models import load_model
from circuitsviz.optvis import visualize

UNITS = {"mixed3b": [379, 406, 385, 343, 342, 388, 340, 330], "mixed4e": [55, 56, 60, 61, 62, 63, 64, 65]}


def lucent_render(lmodel, layer: str, channels: list[int], steps: int, fixed: int | None) -> tuple[float, list]:
    from lucent.optvis import param, render

    images = []
    t = time.perf_counter()
    for c in channels:
        out = render.render_vis(lmodel, f"{layer}:{c}", param_f=lambda: param.image(128), thresholds=(steps,),
                                show_image=False, progress=False, fixed_image_size=fixed)
        images.append(torch.from_numpy(out[-1][0]).permute(2, 0, 1))
        _drop_hooks(lmodel)
    return time.perf_counter() - t, images


def _drop_hooks(lmodel) -> None:
    """render_vis never removes the hook it puts on every module; clear them between calls so
    lucent's later renders are not slowed by earlier ones."""
    for m in lmodel.modules():
        m._forward_hooks.clear()


def ours_render(model, layer: str, channels: list[int], steps: int, upsample: bool) -> tuple[float, list]:
    t = time.perf_counter()
    res = visualize(model, [f"{layer}:{c}" for c in channels], size=128, steps=steps, batch_size=len(channels),
                    progress=False, upsample=upsample)
    elapsed = time.perf_counter() - t
    return elapsed, [torch.from_numpy(r.image).permute(2, 0, 1).float() / 255 for r in res]


def score(model, lmodel, layer: str, channels: list[int], images: list, size: int) -> tuple[float, float]:
    """Mean channel activation of each image on its own channel: (our net, lucent's net)."""
    from lucent.optvis.render import hook_model

    x = torch.stack(images).float().to(model.device)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) \
        if x.shape[-1] != size else x
    idx = torch.arange(len(channels))
    with torch.no_grad():
        ours = model.activations(x, layer)[layer][idx, channels].mean().item()
        hook = hook_model(lmodel, lambda: x)
        try:
            lmodel(x * 255 - 117)
        except RuntimeError:  # lucent's net cannot finish below 224 px; the layer was reached
            pass
        finally:
            _drop_hooks(lmodel)
        theirs = hook(layer)[idx, channels].mean().item()
    return ours, theirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="steps per render (default: %(default)s; 512 is Lucid's)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each, median reported (default: %(default)s)")
    ap.add_argument("--layers", default="mixed3b,mixed4e")
    ap.add_argument("--pairings", default="lucid,lucent")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_retain_memory_flag(ap)
    args = ap.parse_args()
    retained = apply_retain_memory(args)

    from lucent.modelzoo import inceptionv1

    model = load_model("inceptionv1", pretrained=False, device=args.device)
    lmodel = inceptionv1(pretrained=False).to(args.device).eval()
    lmodel.load_state_dict(model.net.state_dict())
    torch.manual_seed(0)  # lucent draws from the global RNGs; seed them for a repeatable benchmark
    np.random.seed(0)
    print(f"device={args.device} threads={torch.get_num_threads()} steps={args.steps} units=8 size=128 "
          f"repeats={args.repeats} retain_freed_memory={retained}")
    print(f"{'layer':8} {'pairing':7} {'cv ch-steps/s':>13} {'lucent ch-steps/s':>17} {'ratio':>6}  "
          f"{'objective cv / lucent (our net)':>31}  {'(lucent net)':>16}")
    for layer in args.layers.split(","):
        channels = UNITS[layer]
        for pairing in args.pairings.split(","):
            upsample = pairing == "lucent"
            net_size = 224 if upsample else 128
            # Warm both up at the measured batch shapes (oneDNN builds its kernels per shape on
            # first use), then alternate the two and keep the median time of each.
            ours_render(model, layer, channels, 2, upsample)
            lucent_render(lmodel, layer, channels[:1], 2, None if upsample else 140)
            ours_ts, luc_ts = [], []
            for _ in range(args.repeats):
                ours_t, ours_imgs = ours_render(model, layer, channels, args.steps, upsample)
                luc_t, luc_imgs = lucent_render(lmodel, layer, channels, args.steps, None if upsample else 140)
                ours_ts.append(ours_t)
                luc_ts.append(luc_t)
            ours_t, luc_t = float(np.median(ours_ts)), float(np.median(luc_ts))
            work = len(channels) * args.steps
            o_cv, l_cv = score(model, lmodel, layer, channels, ours_imgs, net_size)
            o_lu, l_lu = score(model, lmodel, layer, channels, luc_imgs, net_size)
            print(f"{layer:8} {pairing:7} {work / ours_t:13.2f} {work / luc_t:17.2f} {luc_t / ours_t:6.2f}  "
                  f"{o_cv:14.3f} / {o_lu:<14.3f}  {l_cv:7.3f} / {l_lu:<7.3f}", flush=True)


if __name__ == "__main__":
    main()
