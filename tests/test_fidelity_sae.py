"""Pins circuitsviz's SAE reconstruction loss against openai/sparse_autoencoder's (see FIDELITY.md).

openai/sparse_autoencoder divides the MSE by the per-element variance of the activations around
their mean (``mse_scale``, fixed from a sample). circuitsviz scales the inputs once so that the
mean ``||x||^2`` is ``d`` and takes the plain MSE of the scaled inputs: the MSE over the mean
*second moment*. The two differ by the factor ``E[x^2] / Var(x)``, which is large for post-ReLU
activations with a big mean; AuxK is normalised by the variance in both.
"""

import pytest
import torch

from circuitsviz.sae.model import TopKSAE
from circuitsviz.sae.train import _init_from_data


def test_topk_reconstruction_loss_is_mse_over_the_second_moment_not_the_variance():
    g = torch.Generator().manual_seed(0)
    d = 8
    x = 5.0 + torch.randn(512, d, generator=g)                     # a large mean, as after a ReLU
    sae = TopKSAE(d, 32, k=2)
    with torch.no_grad():
        _init_from_data(sae, x)
        _, parts, _ = sae.training_loss(sae.normalize(x))
        x_hat = sae.reconstruct(x)
    mse = float((x_hat - x).pow(2).mean())
    second_moment = float(x.pow(2).mean())
    variance = float((x - x.mean(0)).pow(2).mean())
    assert parts["mse"] == pytest.approx(mse / second_moment, rel=1e-4)
    # openai/sparse_autoencoder's main term would be ~26x larger here (E[x^2] / Var = 26 / 1)
    assert mse / variance > 20 * parts["mse"]

