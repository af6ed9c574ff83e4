"""A fake but complete run, for tests, benchmarks and trying the viewer without a model.

It writes a small labelled image folder (procedural shapes) as the data source, two layers with
InceptionV1-style branches and receptive fields, channel units with visualizations, examples
(with activation maps), quantile examples and statistics, an SAE with features, and channel
splits. Some units are left bare on purpose, so the viewer's placeholders can be seen.

>>> fake = write_synthetic_run("runs/fake", channels={"mixed4e": 32})    # doctest: +SKIP
>>> fake.split_channel, fake.bare_channel                                # doctest: +SKIP
('mixed4e:0', 'mixed4e:31')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data import ImageFolderDataset
from .run import Run, open_run

CLASSES = ("ball", "car", "cat", "curve")
INPUT_SIZE = 64
GRID = 8  # the layers' spatial size at INPUT_SIZE
RF = (40.0, 8.0, -16.0)  # receptive field (size, stride, first pixel of position 0) of every grid position


@dataclass
class SyntheticRun:
    path: Path
    channels: list[str] = field(default_factory=list)       # channel ids with every record
    bare_channel: str = ""                                   # a channel with no records at all
    split_channel: str = ""                                  # a channel with an SAE split
    features: list[str] = field(default_factory=list)        # SAE feature ids
    sae: str = "sae"


def _shape_image(label: int, rng: np.random.Generator, size=(96, 80)) -> Image.Image:
    """A non-square image of one class's shape on a noisy background."""
    bg = (rng.random((size[1], size[0], 3)) * 60 + 40).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(img)
    cx, cy, r = rng.integers(25, size[0] - 25), rng.integers(25, size[1] - 25), int(rng.integers(10, 20))
    colour = tuple(int(c) for c in rng.integers(120, 256, 3))
    if CLASSES[label] == "ball":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif CLASSES[label] == "car":
        d.rectangle((cx - r, cy - r // 2, cx + r, cy + r // 2), fill=colour)
    elif CLASSES[label] == "cat":
        d.polygon([(cx - r, cy + r), (cx, cy - r), (cx + r, cy + r)], fill=colour)
    else:
        d.arc((cx - r, cy - r, cx + r, cy + r), 180, 360, fill=colour, width=4)
    return img


def write_image_folder(root: Path, n: int = 24, seed: int = 0) -> ImageFolderDataset:
    """``n`` labelled PNGs in class subfolders of ``root`` (an ImageFolder data source)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % len(CLASSES)
        path = Path(root) / CLASSES[label] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _shape_image(label, rng).save(path)
    return ImageFolderDataset(root, size=INPUT_SIZE)


def _pattern(seed: int, size: int = 64) -> np.ndarray:
    """A deterministic stripy image standing in for a feature visualization."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq, angle = rng.uniform(2, 8), rng.uniform(0, np.pi)
    wave = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
    colour = rng.uniform(0.2, 1.0, 3)
    img = 0.5 + 0.5 * wave[..., None] * colour
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _actmap(y: int, x: int, peak: float) -> np.ndarray:
    yy, xx = np.mgrid[0:GRID, 0:GRID]
    return (peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 4.0)).astype(np.float32)


def _write_channel(run: Run, uid: str, seed: int, dataset: ImageFolderDataset, k: int) -> None:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(k, len(dataset)), replace=False)
    values = np.sort(rng.uniform(1, 10, len(picks)))[::-1]
    rows = []
    for rank, (i, v) in enumerate(zip(picks, values)):
        y, x = (int(c) for c in rng.integers(0, GRID, 2))
        rows.append(dict(rank=rank, image_id=dataset.image_id(int(i)), value=float(v), y=y, x=x,
                         label=dataset.label(int(i)), actmap=_actmap(y, x, float(v))))
    labels = [CLASSES[r["label"]] for r in rows]
    counts = {c: labels.count(c) for c in CLASSES if c in labels}
    p = np.array(list(counts.values()), dtype=float) / len(labels)
    hist, edges = np.histogram(rng.gamma(1.5, 1.0, 500), bins=20)
    means = {c: float(rng.uniform(0.2, 5.0)) for c in CLASSES}  # mean activation per concept
    with run.batch():  # one transaction: a reader sees this unit whole or not at all
        run.put_visualization(uid, _pattern(seed), kind="positive", objective=float(values[0]))
        run.put_visualization(uid, _pattern(seed + 10_000), kind="negative")
        if "/" not in uid:  # SAE features have no spatial-neuron twin
            run.put_visualization(uid + "@4,4", _pattern(seed + 20_000), kind="neuron")
        for j in range(3):
            run.put_visualization(uid, _pattern(seed + 30_000 + j), kind="diversity", index=j)
        run.put_examples(uid, rows)
        run.put_quantile_examples(uid, [dict(bin=b, image_id=dataset.image_id(int(rng.integers(len(dataset)))),
                                             value=float(b), y=int(rng.integers(GRID)), x=int(rng.integers(GRID)))
                                        for b in range(4) for _ in range(2)])
        run.put_stats(uid, mean=float(rng.uniform(0, 1)), max=float(values[0]), frac_positive=float(rng.uniform(0, 1)),
                      hist_counts=hist, hist_edges=edges, label_counts=counts,
                      scores={"purity": float(p.max()), "entropy": float(-(p * np.log(p)).sum()),
                              "concept_count": sum(m >= 0.5 * max(means.values()) for m in means.values()),
                              "concept_means": means})


def write_synthetic_run(path: str | Path, channels: dict[str, int] | None = None, n_features: int = 8,
                        k: int = 8, n_images: int = 24, seed: int = 0) -> SyntheticRun:
    """Write a complete fake run at ``path``; ``channels`` maps layer name -> channel count.

    The last channel of every layer is left bare; channel 0 of the last layer is split into
    the SAE's first three features.
    """
    channels = channels or {"mixed3b": 12, "mixed4e": 16}
    path = Path(path)
    dataset = write_image_folder(path / "source", n=n_images, seed=seed)
    run = open_run(path, create=True)
    out = SyntheticRun(path)
    run.set_info(model="demo", weights_sha256="0" * 64, input_size=INPUT_SIZE, settings={"synthetic": True})
    run.set_data_source(dataset.spec(), classes=dataset.classes)
    for li, (layer, n) in enumerate(channels.items()):
        quarter = max(1, n // 4)
        branches = [("1x1", 0, quarter), ("3x3", quarter, 2 * quarter), ("5x5", 2 * quarter, 3 * quarter),
                    ("pool_reduce", 3 * quarter, n)]
        run.put_layer(layer, n, GRID, GRID, branches=branches, rf=RF)
        run.add_units([{"id": f"{layer}:{c}", "layer": layer, "index": c, "kind": "channel"} for c in range(n)])
        for c in range(n - 1):
            uid = f"{layer}:{c}"
            _write_channel(run, uid, seed * 1_000_003 + li * 10_007 + c, dataset, k)
            out.channels.append(uid)
        out.bare_channel = f"{layer}:{n - 1}"
    layer, n = list(channels.items())[-1]
    out.split_channel = f"{layer}:0"
    run.put_sae(out.sae, layer, config={"kind": "topk", "k": 4, "n_latents": n_features},
                metrics={"fvu": 0.12, "l0": 4.0, "dead_fraction": 0.0, "dense_fraction": 0.0}, path=None)
    rng = np.random.default_rng(seed + 7)
    for f in range(n_features):
        uid = f"{layer}/{out.sae}:{f}"
        # the first three features write most strongly into channel 0: they are its split
        top = [(0, 0.9 - 0.1 * f)] if f < 3 else []
        top += [(int(c), float(w)) for c, w in zip(rng.choice(np.arange(1, n), 3, replace=False), rng.uniform(0.05, 0.5, 3))]
        top.sort(key=lambda t: -t[1])
        run.put_feature(uid, sae=out.sae, decoder_top=top, freq=float(rng.uniform(0.001, 0.1)),
                        mean_act=float(rng.uniform(0.5, 3)))
        if f < n_features - 1:  # the last feature stays bare (no visualization / examples)
            _write_channel(run, uid, seed * 7 + 50_000 + f, dataset, k)
        out.features.append(uid)
    # shares 0.4, 0.25, 0.1; all features write 0.85 of the channel, the bias 0.1, the error is the rest
    run.put_split(layer, 0, out.sae, [dict(unit_id=f"{layer}/{out.sae}:{f}", share=0.4 - 0.15 * f,
                                           cosine=0.9 - 0.1 * f, freq=0.05) for f in range(min(3, n_features))],
                  totals=dict(explained=0.85, bias_share=0.1, n_samples=1000, n_firing=400))
    run.close()
    return out
