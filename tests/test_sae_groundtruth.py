"""SAEs against ground truth: planted superposition, and a channel made polysemantic by hand.

Data sizes and seeds are stated in each test; the bars are the issue's (MMCS >= 0.9 for TopK,
AUROC >= 0.95 for the split) plus our own stated bars for the L1 variant and the split's share.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from circuitsviz.models import wrap_model
from circuitsviz.sae import Sampler, fit_sae, split_channel


def superposition(d=64, n=128, active=5, samples=16000, seed=0):
    """``n`` random unit directions in ``d`` dims; each sample has ~``active`` on, magnitudes U(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n, d, generator=g)
    truth /= truth.norm(dim=1, keepdim=True)
    on = torch.rand(samples, n, generator=g) < active / n
    return (torch.rand(samples, n, generator=g) * on) @ truth, truth


def mmcs(truth: torch.Tensor, decoder: torch.Tensor) -> float:
    """Mean over true directions of the best cosine with any learned decoder row (Sharkey et al.)."""
    w = decoder / decoder.norm(dim=1, keepdim=True)
    return float((truth @ w.T).max(1).values.mean())


def test_topk_sae_recovers_planted_directions_with_mmcs_above_0_9():
    x, truth = superposition()  # 16k samples of d=64 from n=128 directions, seed 0
    sae = fit_sae(None, x, "toy", expansion=2, k=5, steps=150, batch_size=512, progress=False)
    assert mmcs(truth, sae.W_dec.detach()) >= 0.9
    assert sae.metrics["fvu"] < 0.2 and abs(sae.metrics["l0"] - 5) < 0.5


def test_relu_l1_sae_recovers_planted_directions_with_mmcs_above_0_85():
    # Our stated bar for the L1 variant: MMCS >= 0.85 (it reaches ~0.98 with more steps).
    x, truth = superposition()
    sae = fit_sae(None, x, "toy", kind="relu", l1_coef=1.0, expansion=2, steps=200, batch_size=512, progress=False)
    assert mmcs(truth, sae.W_dec.detach()) >= 0.85


def test_random_directions_give_low_mmcs_so_the_bar_means_something():
    _, truth = superposition()
    assert mmcs(truth, torch.randn(128, 64, generator=torch.Generator().manual_seed(1))) < 0.5


# ------------------------------------------------------------------ planted polysemantic channel
SIZE = 32


class PatternDataset(torch.utils.data.Dataset):
    """Gray images holding either red disks (family A, label 0) or green vertical gratings (B, label 1)."""

    classes = ["red disks", "green gratings"]

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def image_id(self, i: int) -> str:
        return str(i)

    def spec(self) -> dict:
        return {"kind": "test-patterns", "n": self.n, "seed": self.seed}

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, i])
        img = 0.5 + rng.uniform(-0.04, 0.04, (3, SIZE, SIZE))
        label = i % 2
        yy, xx = np.mgrid[:SIZE, :SIZE]
        if label == 0:
            for _ in range(rng.integers(1, 3)):
                cy, cx, r = rng.integers(6, SIZE - 6), rng.integers(6, SIZE - 6), rng.integers(3, 6)
                disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                img[:, disk] = np.array([0.9, 0.1, 0.1])[:, None]
        else:
            y0, x0, h, w = rng.integers(0, 12), rng.integers(0, 12), rng.integers(10, 20), rng.integers(10, 20)
            patch = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
            phase = rng.integers(3)
            img[:, patch] = 0.1
            img[1, patch & ((xx + phase) % 3 == 0)] = 0.9
        return torch.tensor(img, dtype=torch.float32).clamp(0, 1), label


def planted_model():
    """``mix`` channel 0 = red-blob detector + green-vertical-line detector: polysemantic by construction.

    ``detect`` (3x3 conv + ReLU) has four hand-set detectors: red, green vertical line, dark, gray.
    ``mix`` (1x1 conv) writes them into 6 channels; channel 0 sums the red and green-line ones.
    """
    detect = nn.Conv2d(3, 4, 3, padding=1)
    mix = nn.Conv2d(4, 6, 1, bias=False)
    with torch.no_grad():
        detect.weight.zero_()
        detect.weight[0, 0] = 1 / 9                     # red minus green and blue, averaged 3x3
        detect.weight[0, 1:] = -1 / 9
        detect.bias[0] = -0.2
        detect.weight[1, 1] = torch.tensor([[-1.0, 2, -1]] * 3) / 3   # bright green column between dark ones
        detect.bias[1] = -0.6
        detect.weight[2] = -1 / 27                       # dark
        detect.bias[2] = 0.3
        detect.weight[3] = 1 / 27                        # gray-ish brightness
        detect.bias[3] = -0.35
        mix.weight.copy_(torch.tensor([
            [1.0, 1.0, 0.0, 0.0],   # channel 0: red OR green lines
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 1.0, 1.0],
            [1.0, 0.0, 0.0, 1.0],
        ])[:, :, None, None])
    net = nn.Sequential(OrderedDict(detect=detect, detect_relu=nn.ReLU(), mix=mix))
    return wrap_model(net, name="planted", input_size=SIZE)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def test_split_of_planted_polysemantic_channel_separates_its_two_meanings(tmp_path):
    model = planted_model()
    train, test = PatternDataset(240, seed=0), PatternDataset(80, seed=1)
    sae = fit_sae(model, train, "mix", expansion=4, k=2, steps=300, batch_size=256,
                  sampler=Sampler("per_image", per_image=64), cache_root=tmp_path, progress=False)
    result = split_channel(sae, 0, data=test, model=model, top=4)

    # Image-level score of a feature: its max over positions. Family A = even labels.
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = np.array([test[i][1] for i in range(len(test))])
    scores = sae.encode(model.activations(images, "mix")["mix"]).amax(dim=(2, 3)).numpy()
    family = {}
    for f in result.features:
        s = scores[:, f.feature]
        a_vs_b = auroc(s[labels == 0], s[labels == 1])
        family[f.feature] = "A" if a_vs_b >= 0.95 else "B" if 1 - a_vs_b >= 0.95 else None
    # At least two top features, one per family, each separating A from B with AUROC >= 0.95
    # (B, the stronger and wider pattern, is often split further into several B-only features).
    assert {"A", "B"} <= set(family.values()), (family, result.table())
    # Stated share: the single-family features among the top 4 write >= 80% of channel 0's activation.
    assert sum(f.share for f in result.features if family[f.feature]) >= 0.8, (family, result.table())
    # The channel itself is polysemantic: it fires on both families.
    ch = model.activations(images, "mix")["mix"][:, 0].amax(dim=(1, 2)).numpy()
    assert (ch[labels == 0] > 0).mean() > 0.9 and (ch[labels == 1] > 0).mean() > 0.9
