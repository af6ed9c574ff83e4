"""Activations of named layers against torchvision's ``create_feature_extractor``.

    python benchmarks/peers_activations.py [--batch 16] [--device cuda] [--quick]

InceptionV1 with seeded random weights, a batch of 224-px images. Three requests: ``mixed3b``
alone, three layers (``mixed3b``, ``mixed4a``, ``mixed4e``), and the full network (every mixed
layer and ``softmax2``). Contenders:

* circuitsviz ``model.activations(images, layers)``: forward hooks, stopped after the deepest
  requested layer;
* torchvision ``create_feature_extractor(net, return_nodes=...)``: an FX-traced graph of the
  network, pruned to the nodes the requested outputs depend on.

So both stop after the deepest requested layer and run the same convolutions (~75% of the time
on a CPU); what differs is what each keeps alive and allocates. The traced graph frees each
value after its last use, but its ReLUs are out of place: a trace is frozen, so it cannot know
that no hook reads a conv's output. circuitsviz decides per call, and rectifies (and
normalises) in place what nobody reads.

torchlens and nnsight are not measured: torchlens 2.x replaced ``log_forward_pass`` with a
``trace`` API whose layer selection this script does not yet drive; nnsight pulls in
transformers for what is, on a vision net, a forward hook.

All run without autograd on the same module (circuitsviz's InceptionV1) with the same
channels-last input on the CPU. Reported: img/s (median of alternating rounds) and peak memory:
each contender runs once more in a fresh subprocess, which reports how far its peak resident set
(``VmHWM``, reset first through ``/proc/self/clear_refs``) rose above its resident set with the
model loaded; on CUDA it reports ``torch.cuda.max_memory_allocated`` growth instead. The timed process applies
``retain_freed_memory()``, as the ``circuitsviz`` command does (``--no-retain-memory``: not); the
memory subprocesses do not, so their peaks are the libraries' own.

Last line: circuitsviz's img/s for ``mixed3b`` over the fastest peer's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings

import torch

from _common import add_retain_memory_flag, apply_retain_memory, sync
from circuitsviz.models import load_model

MIXED = ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]
REQUESTS = {"mixed3b": ["mixed3b"], "3 layers": ["mixed3b", "mixed4a", "mixed4e"],
            "full network": MIXED + ["softmax2"]}


def contenders(model, layers: list[str]) -> dict:
    """name -> callable(images) returning {layer: tensor}, each set up once for ``layers``."""
    net = model.net
    out = {"circuitsviz": lambda x: model.activations(x, layers, check=False)}
    prep = lambda x: model.preprocess(model._layout(x))  # noqa: E731  what circuitsviz feeds the net

    from torchvision.models.feature_extraction import create_feature_extractor

    # circuitsviz's LRN, stem conv and concat branch on shapes, which FX cannot trace: they enter
    # the graph as leaf modules (torchvision's documented ``tracer_kwargs``); the rest is traced.
    leaves = list({type(m) for m in net.modules() if type(m).__name__ in ("LocalResponseNorm", "StemConv2d", "Concat", "SamePad2d", "SameMaxPool2d")})
    extractor = create_feature_extractor(net, return_nodes={model.layer(n).module: n for n in layers},
                                         tracer_kwargs={"leaf_modules": leaves})
    out["torchvision create_feature_extractor"] = lambda x: extractor(prep(x))
    return out


def peak_memory(name: str, request: str, batch: int, device: str) -> float | None:
    """MB a fresh process grows by (or CUDA allocates at peak) while ``name`` runs once."""
    code = f"""
import json, sys, torch
sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
from peers_activations import contenders, REQUESTS
from circuitsviz.models import load_model
torch.manual_seed(0)
model = load_model("inceptionv1", pretrained=False, device={device!r})
x = torch.rand({batch}, 3, 224, 224).to({device!r})
fn = contenders(model, REQUESTS[{request!r}])[{name!r}]
with torch.no_grad():
    if {device!r}.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated(); fn(x); torch.cuda.synchronize()
        grow = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:  # Linux: writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one
        rss = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
        base = rss("VmRSS:"); open("/proc/self/clear_refs", "w").write("5"); fn(x)
        grow = (rss("VmHWM:") - base) / 1024
print(json.dumps(grow))
"""
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001 - memory is a side figure; a failure shows as n/a
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--quick", action="store_true", help="smoke run: batch 2, 1 round, no memory")
    add_retain_memory_flag(ap)
    args = ap.parse_args()
    retained = apply_retain_memory(args)
    if args.quick:
        args.batch, args.rounds, args.no_memory = 2, 1, True
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = load_model("inceptionv1", pretrained=False, device=args.device)
    x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(args.device)
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} rounds={args.rounds} "
          f"retain_freed_memory={retained} memory: {'CUDA max_memory_allocated' if args.device.startswith('cuda') else 'peak RSS (VmHWM) growth'} "
          "in a fresh subprocess")
    headline = None
    for request, layers in REQUESTS.items():
        fns = contenders(model, layers)
        with torch.no_grad():
            ref = fns["circuitsviz"](x)
            for name, fn in fns.items():  # warm-up, and the same values from everyone
                got = fn(x)
                for n in layers:
                    if not torch.allclose(got[n].float(), ref[n].float(), atol=1e-4, rtol=1e-4):
                        print(f"warning: {name} gives different {n} activations")
            times: dict[str, list[float]] = {n: [] for n in fns}
            for r in range(args.rounds):  # alternate the order, so neither always runs after the other
                for name, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
                    sync(args.device)
                    t = time.perf_counter()
                    fn(x)
                    sync(args.device)
                    times[name].append(time.perf_counter() - t)
        rate = {n: args.batch / sorted(v)[len(v) // 2] for n, v in times.items()}
        print(f"\n{request} ({', '.join(layers)})")
        print(f"{'contender':38} {'img/s':>8} {'peak MB':>8}")
        for name in fns:
            mem = None if args.no_memory else peak_memory(name, request, args.batch, args.device)
            print(f"{name:38} {rate[name]:8.1f} {'n/a' if mem is None else f'{mem:8.0f}':>8}", flush=True)
        peers = {n: r for n, r in rate.items() if n != "circuitsviz"}
        if peers:
            best = max(peers, key=peers.get)
            print(f"{request}: circuitsviz = " + ", ".join(f"{rate['circuitsviz'] / r:.2f}x {n}" for n, r in peers.items()))
            if request == "mixed3b":
                headline = (rate["circuitsviz"] / peers[best], best)
    print(f"ratio vs best peer: {headline[0]:.2f}x ({headline[1]})" if headline else "ratio vs best peer: n/a (no peer installed)")


if __name__ == "__main__":
    main()
