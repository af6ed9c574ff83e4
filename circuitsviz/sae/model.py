"""Sparse autoencoders over a conv layer's channel vectors: TopK (the default) and ReLU + L1.

An SAE sees one spatial position at a time: a vector of the layer's ``C`` channels. It writes
it as a sparse, non-negative combination of ``F = expansion * C`` learned unit directions::

    x_n   = x * scale                            # inputs scaled so that mean ||x_n||^2 = C
    z     = TopK(W_enc (x_n - b_pre) + b_enc)    # keep the k largest, then ReLU
    x_hat = (z W_dec + b_pre) / scale            # rows of W_dec are unit vectors

``encode`` and ``decode`` take and give *raw* layer activations, either ``(N, C)`` samples or
whole ``(N, C, H, W)`` feature maps, so ``sae.encode`` can stand in for a layer in mining.

>>> sae = TopKSAE(d_in=832, n_latents=6656, k=32, layer="mixed4e")
>>> sae.encode(torch.rand(2, 832, 14, 14)).shape
torch.Size([2, 6656, 14, 14])

The TopK decoder never forms the dense ``N x F`` code: it sums the k selected decoder rows with
``embedding_bag``, and both weight gradients touch only the k selected rows per sample
(``select_linear``, ``sparse_decode``, ``scatter_rows``).
That is the whole speed-up over a dense step, which ``benchmarks/sae.py`` measures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError


@dataclass
class SAEConfig:
    """Everything needed to rebuild an SAE and to check it is used on the right layer."""

    kind: str                 # "topk" or "relu"
    d_in: int                 # channels of the layer (C)
    n_latents: int            # features (F)
    k: int | None = None      # TopK only
    l1_coef: float | None = None  # ReLU only
    layer: str | None = None
    model: str | None = None
    weights_sha256: str | None = None
    name: str = "sae"
    data_hash: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class SparseAutoencoder(nn.Module):
    """Parameters and raw-space plumbing shared by both kinds; subclasses choose the code ``z``."""

    def __init__(self, config: SAEConfig) -> None:
        super().__init__()
        if config.d_in < 1 or config.n_latents < 1:
            raise BadInputError(f"an SAE needs d_in >= 1 and n_latents >= 1, got {config.d_in}, {config.n_latents}")
        self.config = config
        d, f = config.d_in, config.n_latents
        self.W_enc = nn.Parameter(torch.empty(f, d))
        self.b_enc = nn.Parameter(torch.zeros(f))
        self.W_dec = nn.Parameter(torch.empty(f, d))
        self.b_pre = nn.Parameter(torch.zeros(d))
        # Multiplies raw activations so that mean ||x * scale||^2 = d_in (set once from data).
        self.register_buffer("scale", torch.ones(()))
        self.metrics: dict = {}
        self.reset_parameters(torch.Generator().manual_seed(0))

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Random unit decoder rows; the encoder starts as the decoder's transpose."""
        w = torch.randn(self.W_dec.shape, generator=generator)
        self.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
        self.W_enc.copy_(self.W_dec)
        self.b_enc.zero_()

    @property
    def d_in(self) -> int:
        return self.config.d_in

    @property
    def n_latents(self) -> int:
        return self.config.n_latents

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def layer(self) -> str | None:
        return self.config.layer

    # --------------------------------------------------------------- raw I/O
    def _as_samples(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """(N, C) stays; (N, C, H, W) becomes (N*H*W, C) and remembers how to fold back."""
        if x.dim() == 4:
            n, c, h, w = x.shape
            self._check_width(c)
            return x.permute(0, 2, 3, 1).reshape(-1, c), (n, h, w)
        if x.dim() == 2:
            self._check_width(x.shape[1])
            return x, None
        raise BadInputError(f"SAE input must be (N, C) samples or (N, C, H, W) maps, got shape {tuple(x.shape)}")

    def _check_width(self, c: int) -> None:
        if c != self.d_in:
            raise BadInputError(
                f"this SAE was fit on {self.d_in}-channel activations (layer {self.layer!r}), got {c} channels"
            )

    @staticmethod
    def _fold(z: torch.Tensor, shape: tuple | None) -> torch.Tensor:
        if shape is None:
            return z
        n, h, w = shape
        return z.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.W_enc.dtype) * self.scale

    def pre_activations(self, xn: torch.Tensor) -> torch.Tensor:
        return (xn - self.b_pre) @ self.W_enc.T + self.b_enc

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations of raw activations: (N, C) -> (N, F), (N, C, H, W) -> (N, F, H, W)."""
        x = x.to(self.W_enc.device)
        samples, shape = self._as_samples(x)
        return self._fold(self.code(self.normalize(samples)), shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`, so the SAE itself is a mining transform: ``transform={"mixed4e": sae}``."""
        return self.encode(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Raw activations from feature activations: (N, F) -> (N, C), (N, F, H, W) -> (N, C, H, W)."""
        shape = None
        if z.dim() == 4:
            n, f, h, w = z.shape
            z, shape = z.permute(0, 2, 3, 1).reshape(-1, f), (n, h, w)
        return self._fold((z @ self.W_dec + self.b_pre) / self.scale, shape)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def decoder_direction(self, feature: int) -> torch.Tensor:
        """Feature ``feature``'s direction in the layer's raw activation space (length C).

        It is what one unit of the feature adds to the raw activations, the vector a
        ``direction`` visualization objective should follow.
        """
        if not 0 <= int(feature) < self.n_latents:
            raise BadInputError(f"feature {feature} is out of range; this SAE has {self.n_latents} (valid: 0..{self.n_latents - 1})")
        return (self.W_dec[int(feature)] / self.scale).detach()

    # --------------------------------------------------------- decoder norms
    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the gradient component along each (unit) decoder row, which would only change its norm."""
        g = self.W_dec.grad
        if g is not None:
            g.sub_((g * self.W_dec).sum(1, keepdim=True) * self.W_dec)

    # ----------------------------------------------------- subclass contract
    def code(self, xn: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Dense feature activations for normalised samples."""
        raise NotImplementedError

    def training_loss(self, xn: torch.Tensor, dead: torch.Tensor | None = None) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """(loss, {name: float}, fired) for a batch of normalised samples; ``fired`` is a bool per feature."""
        raise NotImplementedError  # pragma: no cover

    def post_step_(self) -> None:
        """Called after each optimiser step (TopK renormalises its decoder here)."""


def scatter_rows(idx: torch.Tensor, coef: torch.Tensor, v: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``out[idx[n, j]] += coef[n, j] * v[n]`` for all n, j: an (n_rows, C) matrix from N*k rows of work.

    Both weight gradients of a TopK step have this form. A sparse (n_rows x N) matrix times ``v``
    does it without forming the N x k x C products (an index_add would) and is several times
    faster on CPU than embedding_bag's own backward, which sorts the indices first.
    """
    n, k = idx.shape
    sample = torch.arange(n, device=idx.device).repeat_interleave(k)
    s = torch.sparse_coo_tensor(torch.stack([idx.reshape(-1), sample]), coef.reshape(-1).to(v.dtype),
                                (n_rows, n), check_invariants=False)
    return torch.sparse.mm(s, v)


class _SelectLinear(torch.autograd.Function):
    """``(x @ W.T + b).gather(1, idx)`` whose backward touches only the selected rows of W.

    The forward receives the selected values already computed (the dense pre-activations were
    needed anyway to choose ``idx``), so the encoder costs one dense matmul per step, not three.
    """

    @staticmethod
    def forward(ctx, selected, x, weight, bias, idx):
        ctx.save_for_backward(x, weight, idx)
        return selected.clone()

    @staticmethod
    def backward(ctx, g):
        x, weight, idx = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_w = scatter_rows(idx, g, x, weight.shape[0])
        if ctx.needs_input_grad[3]:
            grad_b = torch.zeros(weight.shape[0], dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        if ctx.needs_input_grad[1]:
            grad_x = F.embedding_bag(idx, weight, per_sample_weights=g, mode="sum")
        return None, grad_x, grad_w, grad_b, None


class _SparseDecode(torch.autograd.Function):
    """``sum_j vals[n, j] * W[idx[n, j]]`` (embedding_bag) with a backward that stays O(N k C)."""

    @staticmethod
    def forward(ctx, idx, vals, weight):
        ctx.save_for_backward(idx, vals, weight)
        return F.embedding_bag(idx, weight, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, g):
        idx, vals, weight = ctx.saved_tensors
        grad_vals = grad_w = None
        if ctx.needs_input_grad[1]:
            # d/d vals[n, j] = <g[n], W[idx[n, j]]>: embedding_bag's own per-sample-weight gradient.
            with torch.enable_grad():
                v = vals.detach().requires_grad_()
                out = F.embedding_bag(idx, weight.detach(), per_sample_weights=v, mode="sum")
                (grad_vals,) = torch.autograd.grad(out, v, grad_outputs=g)
        if ctx.needs_input_grad[2]:
            grad_w = scatter_rows(idx, vals, g, weight.shape[0])
        return None, grad_vals, grad_w


def select_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, idx: torch.Tensor,
                  pre: torch.Tensor) -> torch.Tensor:
    """Entries ``idx`` of ``x @ weight.T + bias`` (given as ``pre``), with a sparse backward."""
    return _SelectLinear.apply(pre.gather(1, idx), x, weight, bias, idx)


def sparse_decode(idx: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[n, j] * W_dec[idx[n, j]]`` without forming the dense N x F code."""
    return _SparseDecode.apply(idx, vals, W_dec)


def normalized_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error over the batch's own variance: a per-batch FVU, scale-free."""
    return (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)


class TopKSAE(SparseAutoencoder):
    """Keeps the ``k`` largest pre-activations per sample (then ReLU); the default SAE.

    Dead features (``dead`` mask, from the trainer) are revived by AuxK: the ``k_aux`` largest
    dead pre-activations must reconstruct the residual the live code left, weighted ``aux_coef``.
    """

    def __init__(self, d_in: int, n_latents: int, k: int = 32, *, layer: str | None = None,
                 model: str | None = None, name: str = "sae", aux_k: int | None = None,
                 aux_coef: float = 1 / 32, config: SAEConfig | None = None) -> None:
        config = config or SAEConfig("topk", d_in, n_latents, k=k, layer=layer, model=model, name=name)
        if not 1 <= config.k <= config.n_latents:
            raise BadInputError(f"k must be between 1 and n_latents={config.n_latents}, got {config.k}")
        config.extra.setdefault("aux_k", aux_k if aux_k is not None else max(1, config.d_in // 2))
        config.extra.setdefault("aux_coef", aux_coef)
        super().__init__(config)

    @property
    def k(self) -> int:
        return int(self.config.k)

    def topk(self, pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        vals, idx = pre.topk(k, dim=1, sorted=False)
        return vals.clamp_min(0), idx

    def code(self, xn: torch.Tensor) -> torch.Tensor:
        vals, idx = self.topk(self.pre_activations(xn), self.k)
        return torch.zeros(xn.shape[0], self.n_latents, dtype=vals.dtype, device=vals.device).scatter_(1, idx, vals)

    def training_loss(self, xn, dead=None):
        centred = xn - self.b_pre
        with torch.no_grad():
            pre = centred @ self.W_enc.T + self.b_enc
            _, idx = pre.topk(self.k, dim=1, sorted=False)
        vals = select_linear(centred, self.W_enc, self.b_enc, idx, pre).clamp_min(0)
        x_hat = sparse_decode(idx, vals, self.W_dec) + self.b_pre
        mse = (x_hat - xn).pow(2).sum(1).mean() / self.d_in
        loss, parts = mse, {"mse": float(mse.detach())}
        aux_k = min(int(self.config.extra["aux_k"]), self.n_latents)
        if dead is not None and bool(dead.any()):
            # AuxK: let the dead features explain what the live ones missed.
            n_dead = int(dead.sum())
            with torch.no_grad():
                masked = pre.masked_fill(~dead, float("-inf"))
                _, aux_idx = masked.topk(min(aux_k, n_dead), dim=1, sorted=False)
            aux_vals = select_linear(centred, self.W_enc, self.b_enc, aux_idx, pre).clamp_min(0)
            residual = (xn - x_hat).detach()
            aux = normalized_mse(sparse_decode(aux_idx, aux_vals, self.W_dec), residual)
            aux = torch.nan_to_num(aux, nan=0.0)
            loss = loss + float(self.config.extra["aux_coef"]) * aux
            parts["aux"] = float(aux.detach())
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=xn.device)
        fired[idx[vals > 0]] = True
        return loss, parts, fired

    def post_step_(self) -> None:
        self.normalize_decoder_()


class ReluSAE(SparseAutoencoder):
    """ReLU code with an L1 penalty on ``z_f * ||W_dec[f]||``, so shrinking the decoder cannot cheat it.

    The decoder rows are free (not renormalised); the penalty's decoder-norm weight is what keeps
    the code honest, as in Anthropic's 2024 ReLU SAE update.
    """

    def __init__(self, d_in: int, n_latents: int, l1_coef: float = 5.0, *, layer: str | None = None,
                 model: str | None = None, name: str = "sae", config: SAEConfig | None = None) -> None:
        config = config or SAEConfig("relu", d_in, n_latents, l1_coef=l1_coef, layer=layer, model=model, name=name)
        super().__init__(config)

    def code(self, xn: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pre_activations(xn))

    def training_loss(self, xn, dead=None):
        z = self.code(xn)
        x_hat = z @ self.W_dec + self.b_pre
        mse = (x_hat - xn).pow(2).sum(1).mean() / self.d_in
        l1 = (z * self.W_dec.norm(dim=1)).sum(1).mean() / self.d_in
        loss = mse + float(self.config.l1_coef) * l1
        return loss, {"mse": float(mse.detach()), "l1": float(l1.detach())}, (z > 0).any(0)

    def remove_parallel_grad_(self) -> None:
        """Decoder norms are free here (the L1 weight accounts for them); nothing to remove."""


def build_sae(config: SAEConfig) -> SparseAutoencoder:
    """The SAE class for ``config.kind`` (used when loading a saved SAE)."""
    if config.kind == "topk":
        return TopKSAE(config.d_in, config.n_latents, config=config)
    if config.kind == "relu":
        return ReluSAE(config.d_in, config.n_latents, config=config)
    raise BadInputError(f"unknown SAE kind {config.kind!r}; valid: topk, relu")
