"""Fitting an SAE to a layer: the recipe of openai/sparse_autoencoder and SAELens, in one loop.

1. Inputs are scaled so that their mean squared norm is ``C`` (the scale is stored in the SAE).
2. The pre-encoder bias starts at the geometric median of the samples.
3. The decoder starts as random unit rows and the encoder as its transpose.
4. Each step: Adam, with warm-up and a linear decay to zero over the last 20% of steps, gradient
   clipping at 1.0, the gradient along each decoder row removed and rows renormalised (TopK).
5. Features that have not fired for ``dead_after`` samples are "dead"; AuxK trains them on the
   residual the live features left (coefficient 1/32, ``k_aux = C/2``).
6. TopK, ``resample=True`` (default): before the learning-rate decay, a dead feature is also
   re-initialised on a sample the SAE reconstructs badly (drawn with probability proportional to
   its squared error, as in Anthropic's 2023 resampling): its decoder and encoder rows become
   that sample's centred direction, its bias 0 and its Adam moments 0. AuxK alone cannot revive a
   feature whose direction the data never reaches (at k = 1 it must win the top-1 somewhere,
   and its pre-activation gradient is zero wherever it loses); resampling gives it a region it wins.

>>> sae = fit_sae(model, "procedural", "mixed4e", expansion=8, k=32, out="runs/x/saes/topk")  # doctest: +SKIP
>>> sae.metrics["fvu"], sae.metrics["l0"]                                                    # doctest: +SKIP
(0.11, 32.0)

``out`` holds ``checkpoint.safetensors`` (tensors, with the settings, step and curve as JSON in
its header; written every ``checkpoint_every`` steps),
``train_log.jsonl`` (the training curve) and the saved SAE; calling ``fit_sae`` again with the
same arguments resumes from the checkpoint and gives the same SAE as an uninterrupted fit.
Nothing in ``out`` is unpickled: the settings are checked from the header before any tensor is read,
and an old pickled ``checkpoint.pt`` is read only with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..errors import BadInputError, CircuitsvizError, check_float, check_int, check_name
from ..hashing import config_hash
from ..progress import progress_bar
from ..units import sae_name
from .cache import SampleSource, Sampler, build_cache, check_finite, open_cache
from .io import save_sae
from .metrics import evaluate
from .model import ReluSAE, SparseAutoencoder, TopKSAE

CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"  # pickled, by circuitsviz <= 0.1.0
LOG = "train_log.jsonl"


def default_lr(n_latents: int) -> float:
    """openai's scaling ``2e-4 / sqrt(F / 2^14)``, capped so tiny SAEs stay stable."""
    return min(2e-4 / math.sqrt(n_latents / 2**14), 4e-3)


def geometric_median(x: torch.Tensor, iters: int = 50, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of distances to the rows of ``x``."""
    m = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - m).norm(dim=1).clamp_min(eps)
        new = (w[:, None] * x).sum(0) / w.sum()
        if (new - m).norm() < eps * (1 + m.norm()):
            return new
        m = new
    return m


def resolve_samples(model, data, layer: str, *, sampler: Sampler, seed: int, n_images: int,
                    cache_root: str | Path | None, dtype: str, heldout: float, progress: bool) -> SampleSource:
    """Turn ``data`` into samples of ``layer``: a tensor, a cache, or a dataset to sample from.

    ``data`` may be ``(N, C)`` samples, ``(N, C, H, W)`` activations, a :class:`SampleSource`,
    an activation-cache directory, or anything :func:`circuitsviz.data.as_dataset` accepts.
    """
    if isinstance(data, SampleSource):
        return data
    if isinstance(data, torch.Tensor):
        if data.dim() == 4:
            check_finite(data)
            n, c, h, w = data.shape
            data = data.permute(0, 2, 3, 1).reshape(-1, c)
        return SampleSource.from_tensor(data, heldout=heldout)
    if isinstance(data, (str, Path)) and (Path(data) / "metadata.json").exists():
        return open_cache(data, heldout=heldout)
    if model is None:
        raise BadInputError("sampling activations from images needs a model; pass model=... or activation samples")
    from ..data import as_dataset

    dataset = as_dataset(data, model, n=n_images, seed=seed)
    root = cache_root or Path("~/.cache/circuitsviz/activations").expanduser()
    return build_cache(model, dataset, layer, sampler, root=root, seed=seed, dtype=dtype,
                       heldout=heldout, progress=progress)


def fit_sae(
    model,
    data,
    layer: str,
    *,
    expansion: int = 8,
    k: int = 32,
    kind: str = "topk",
    l1_coef: float = 5.0,
    n_latents: int | None = None,
    steps: int | None = None,
    batch_size: int = 4096,
    lr: float | None = None,
    warmup: float = 0.05,
    decay: float = 0.2,
    grad_clip: float = 1.0,
    dead_after: int | None = None,
    aux_k: int | None = None,
    resample: bool = True,
    seed: int = 0,
    sampler: Sampler = Sampler(),
    n_images: int = 2000,
    cache_root: str | Path | None = None,
    dtype: str = "float16",
    heldout: float = 0.05,
    out: str | Path | None = None,
    name: str | None = None,
    checkpoint_every: int = 500,
    device: str | torch.device | None = None,
    progress: bool = True,
    callback: Callable[[int, SparseAutoencoder, dict], None] | None = None,
) -> SparseAutoencoder:
    """Fit a TopK (default) or ReLU+L1 SAE with ``expansion * C`` features on ``layer``'s activations.

    Returns the SAE with ``sae.metrics`` (held-out FVU, L0, dead and dense fractions) and
    ``sae.history`` (the training curve). ``model`` may be ``None`` when ``data`` already holds
    activation samples. Runs where the model (or the sample tensor) lives unless ``device`` says.
    ``batch_size`` is lowered to a quarter of the training samples for small data; ``steps``
    defaults to about ten passes over the samples (500 to 20000 steps). Activation samples of images
    are cached under ``cache_root`` (default ``~/.cache/circuitsviz/activations``) and reused.
    """
    _check_fit_args(model, data, layer, expansion=expansion, k=k, kind=kind, l1_coef=l1_coef, n_latents=n_latents,
                    steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, decay=decay, grad_clip=grad_clip,
                    dead_after=dead_after, aux_k=aux_k, resample=resample, seed=seed, n_images=n_images,
                    heldout=heldout, name=name, checkpoint_every=checkpoint_every, sampler=sampler, out=out, device=device)
    source = resolve_samples(model, data, layer, sampler=sampler, seed=seed, n_images=n_images,
                             cache_root=cache_root, dtype=dtype, heldout=heldout, progress=progress)
    c = source.d_in
    if model is not None:
        model.layer(layer)
        if model.channels(layer) != c:
            raise BadInputError(f"samples have {c} channels but {model.name}:{layer} has {model.channels(layer)}")
    f = int(n_latents or expansion * c)
    if kind == "topk" and k > f:
        raise BadInputError(f"k must be at most the number of features ({f}), got {k}")
    if kind == "topk" and k > f // 4:
        warnings.warn(f"k={k} active of {f} features: so large a share makes a dense SAE whose features are "
                      f"hard to read; try k <= {max(1, f // 16)}", stacklevel=2)
    if source.n_train < f:
        raise BadInputError(
            f"only {source.n_train} training samples for {f} features; an SAE needs more samples than "
            "features (use more images, a denser sampler, or a smaller expansion)"
        )
    if out is not None:
        _check_writable(Path(out))
    batch_size = min(batch_size, max(1, source.n_train // 4))
    steps = int(steps if steps is not None else min(max(10 * source.n_train // batch_size, 500), 20000))
    lr = lr if lr is not None else default_lr(f)
    dead_after = int(dead_after if dead_after is not None else min(10_000_000, max(steps * batch_size // 20, batch_size)))
    if device is None:
        device = model.device if model is not None else (data.device if isinstance(data, torch.Tensor) else "cpu")
    name = name or sae_name(kind, f // c, k)

    common = dict(layer=layer, model=getattr(model, "name", None), name=name)
    sae = (TopKSAE(c, f, k, aux_k=aux_k, **common) if kind == "topk" else ReluSAE(c, f, l1_coef, **common))
    sae.config.weights_sha256 = getattr(model, "weights_sha256", None)
    sae.config.data_hash = source.meta.get("data_hash")
    settings = dict(kind=kind, n_latents=f, k=k, l1_coef=l1_coef, steps=steps, batch_size=batch_size, lr=lr,
                    warmup=warmup, decay=decay, grad_clip=grad_clip, dead_after=dead_after, seed=seed,
                    data_hash=sae.config.data_hash, layer=layer)
    resample = resample and kind == "topk"
    if resample:  # only then: a fit with resample=False keeps the settings hash (and checkpoints) of earlier versions
        settings["resample"] = True
    sae.config.extra["fit"] = settings
    sae.config.extra["cache"] = source.meta.get("directory")  # where split can find samples again

    out = Path(out) if out is not None else None
    state = _load_checkpoint(out, settings) if out is not None else None
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    sae.to(device)
    if state is None:
        _init_from_data(sae, source.first(min(source.n_train, 16384)).to(device))
    opt = make_optimizer(sae, lr)
    since_fired = torch.zeros(f, dtype=torch.long, device=device)
    history: list[dict] = []
    start = 0
    if state is not None:
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["opt"])
        since_fired = state["since_fired"].to(device)
        history, start = state["history"], state["step"]
        _rewrite_log(out, history)  # drop curve rows logged after the checkpoint

    def schedule(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, int(warmup * steps)))
        tail = int(decay * steps)
        return warm * (min(1.0, (steps - step) / tail) if tail else 1.0)

    bar = progress_bar(steps, desc=f"fit-sae {layer}", unit="step", initial=start, enabled=progress)
    batches = source.batches(batch_size, seed=seed, start_step=start)
    log_every = max(1, steps // 200)
    for step in range(start, steps):
        x = next(batches).to(device)
        for g in opt.param_groups:
            g["lr"] = lr * schedule(step)
        loss, parts, fired = train_step(sae, opt, x, since_fired >= dead_after, grad_clip)
        if not math.isfinite(loss):
            raise CircuitsvizError(f"the SAE loss became {loss} at step {step}; lower the learning rate (now {lr:g})"
                                   + (f" or the L1 coefficient (now {l1_coef:g})" if kind == "relu" else ""))
        since_fired += x.shape[0]
        since_fired[fired] = 0
        if resample and step < steps - dead_after // batch_size:  # a later one could not be seen dying again
            revived = resample_dead_(sae, opt, x, since_fired >= dead_after, seed=seed * 1_000_003 + step)
            since_fired[revived] = 0
        if step % log_every == 0 or step == steps - 1:
            row = {"step": step, "loss": loss, **parts, "lr": lr * schedule(step),
                   "dead_fraction": float((since_fired >= dead_after).float().mean())}
            history.append(row)
            _append_log(out, row)
            bar.set_postfix(mse=f"{parts['mse']:.4f}", dead=f"{row['dead_fraction']:.2f}")
        bar.update(1)
        done = step + 1
        if out is not None and (done % checkpoint_every == 0 or done == steps):
            _save_checkpoint(out, sae, opt, since_fired, history, done, settings)
        if callback is not None:
            callback(done, sae, parts)
    bar.close()

    sae.eval()
    held = source.heldout_batches() if source.n_heldout else [source.first(min(source.n_train, 65536))]
    metrics = evaluate(sae, held)
    sae.metrics = {**metrics.summary(), "n_train": source.n_train, "steps": steps}
    sae.history = history
    sae.heldout_metrics = metrics
    if out is not None:
        save_sae(sae, out)
    return sae


def _check_fit_args(model, data, layer, *, expansion, k, kind, l1_coef, n_latents, steps, batch_size, lr, warmup,
                    decay, grad_clip, dead_after, aux_k, resample, seed, n_images, heldout, name, checkpoint_every,
                    sampler, out, device) -> None:
    """Every argument of :func:`fit_sae` in its valid range, before any work starts."""
    if kind not in ("topk", "relu"):
        raise BadInputError(f"unknown SAE kind {kind!r}; valid: topk, relu")
    if not isinstance(layer, str) or not layer:
        raise BadInputError(f"layer must be a layer name, got {layer!r}")
    check_int("expansion", expansion, 1, 1024)
    check_int("n_latents", n_latents, 1, 1 << 24, optional=True)
    check_int("k", k, 1)
    check_float("l1_coef", l1_coef, 0)
    check_int("steps", steps, 1, 10**9, optional=True)
    check_int("batch_size", batch_size, 1, 1 << 24)
    check_float("lr", lr, 0, 1, lo_open=True, optional=True)
    check_float("warmup", warmup, 0, 1)
    check_float("decay", decay, 0, 1)
    check_float("grad_clip", grad_clip, 0, lo_open=True)
    check_int("dead_after", dead_after, 1, optional=True)
    check_int("aux_k", aux_k, 1, optional=True)
    if not isinstance(resample, bool):
        raise BadInputError(f"resample must be True or False, got {resample!r:.80}")
    check_int("seed", seed, 0, 2**63 - 1)
    check_int("n_images", n_images, 1)
    check_float("heldout", heldout, 0, 0.9)
    check_int("checkpoint_every", checkpoint_every, 1)
    if name is not None:
        check_name("SAE name", name)
    if not isinstance(sampler, Sampler):
        raise BadInputError(f"sampler must be a circuitsviz.sae.Sampler, got {type(sampler).__name__}")
    from ..models.zoo import check_device

    check_device(device)
    if out is not None:
        if not isinstance(out, (str, Path)) or not str(out) or "\x00" in str(out):
            raise BadInputError(f"out must be a folder path, got {out!r}")
        if Path(out).exists() and not Path(out).is_dir():
            raise BadInputError(f"out {str(out)!r} exists and is not a folder; give a folder for the SAE's files")
    if model is not None and not isinstance(data, (torch.Tensor, SampleSource)):
        model.layer(layer)  # unknown -> UnknownNameError with the valid names
        shape = model.layer_shapes([layer])[layer]
        if len(shape) != 3:
            raise BadInputError(f"layer {layer!r} has shape {shape}, not a C x H x W feature map; "
                                "SAEs here are fit on the positions of a spatial (convolutional) layer")


def _check_writable(out: Path) -> None:
    """Make ``out`` and write a probe file there, so an unwritable folder fails before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise BadInputError(f"cannot write the SAE's files into {str(out)!r}: {e.strerror or e}") from None


def make_optimizer(sae: SparseAutoencoder, lr: float) -> torch.optim.Adam:
    """Adam; the fused kernel where this torch has it (about 10x faster than the loop on CPU)."""
    try:
        return torch.optim.Adam(sae.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(sae.parameters(), lr=lr)


def train_step(sae: SparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor, dead: torch.Tensor | None,
               grad_clip: float = 1.0) -> tuple[float, dict, torch.Tensor]:
    """One optimiser step on raw samples ``x``: (loss, loss parts, bool mask of features that fired)."""
    loss, parts, fired = sae.training_loss(sae.normalize(x), dead)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.remove_parallel_grad_()
    torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
    opt.step()
    sae.post_step_()
    return float(loss.detach()), parts, fired


@torch.no_grad()
def resample_dead_(sae: SparseAutoencoder, opt: torch.optim.Optimizer, x: torch.Tensor, dead: torch.Tensor,
                   seed: int) -> torch.Tensor:
    """Re-initialise the ``dead`` features on badly reconstructed samples of the raw batch ``x``.

    Each dead feature gets one sample, drawn without replacement with probability proportional
    to its squared reconstruction error: decoder row = encoder row = the sample's unit direction
    from ``b_pre`` (the fit's own initialisation, encoder = decoder transpose), encoder bias 0,
    Adam moments of those rows 0. Returns the indices of the features it re-initialised.
    """
    idx = dead.nonzero().flatten()
    if len(idx) == 0:
        return idx
    xn = sae.normalize(x)
    err = (sae.code(xn) @ sae.W_dec + sae.b_pre - xn).pow(2).sum(1)
    centred = xn - sae.b_pre
    ok = (err > 0) & (centred.norm(dim=1) > 1e-6)
    idx = idx[: int(ok.sum())]
    if len(idx) == 0:
        return idx
    gen = torch.Generator().manual_seed(seed)
    pick = torch.multinomial((err.pow(2) * ok).double().cpu(), len(idx), replacement=False, generator=gen)
    d = centred[pick.to(centred.device)]
    d = d / d.norm(dim=1, keepdim=True)
    for p, value in ((sae.W_dec, d), (sae.W_enc, d), (sae.b_enc, 0.0)):
        p[idx] = value
        for moment in opt.state.get(p, {}).values():
            if isinstance(moment, torch.Tensor) and moment.shape == p.shape:
                moment[idx] = 0
    return idx


@torch.no_grad()
def _init_from_data(sae: SparseAutoencoder, x: torch.Tensor) -> None:
    sae.scale.fill_(math.sqrt(sae.d_in / float(x.double().pow(2).sum(1).mean().clamp_min(1e-12))))
    sae.b_pre.copy_(geometric_median(sae.normalize(x)))


def _load_checkpoint(out: Path, settings: dict) -> dict | None:
    """The checkpoint in ``out`` if it matches ``settings`` (checked before any tensor is read)."""
    path = out / CHECKPOINT
    if not path.exists():
        return _load_legacy_checkpoint(out / LEGACY_CHECKPOINT, settings)
    try:
        with safe_open(str(path), framework="pt") as f:
            doc = json.loads((f.metadata() or {})["checkpoint"])
            _check_settings(path, doc.get("settings_hash"), doc.get("settings"), settings)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return _unflatten(tensors, doc)
    except BadInputError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise BadInputError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); "
                            "delete it to start over") from None


def _load_legacy_checkpoint(path: Path, settings: dict) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never runs pickled code
    except Exception as e:  # torch raises several types; a refused pickle is one of them
        raise BadInputError(
            f"refused to load {path}: it is not a plain checkpoint ({type(e).__name__}); "
            "delete it to start over (circuitsviz never runs code from a file it reads)"
        ) from None
    if not isinstance(state, dict):
        raise BadInputError(f"{path} does not hold a checkpoint; delete it to start over")
    _check_settings(path, state.get("settings_hash"), state.get("settings"), settings)
    return state


def _check_settings(path: Path, saved_hash, saved: dict | None, settings: dict) -> None:
    if saved_hash != config_hash(settings):
        raise BadInputError(
            f"{path} belongs to a fit with different settings ({saved}); "
            "use another --out directory, or delete the checkpoint to start over"
        )


def _flatten(sae, opt, since_fired) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors for safetensors and the JSON-able rest of the optimiser state."""
    tensors = {f"sae.{k}": v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    tensors["since_fired"] = since_fired.detach().cpu().contiguous()
    opt_state = opt.state_dict()
    scalars: dict = {}
    for idx, entry in opt_state["state"].items():
        for key, val in entry.items():
            if isinstance(val, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": opt_state["param_groups"], "opt_scalars": scalars}


def _unflatten(tensors: dict[str, torch.Tensor], doc: dict) -> dict:
    sae = {k[4:]: v for k, v in tensors.items() if k.startswith("sae.")}
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for name, v in doc.get("opt_scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in doc["param_groups"]]
    return {"sae": sae, "opt": {"state": state, "param_groups": groups}, "since_fired": tensors["since_fired"],
            "history": doc["history"], "step": int(doc["step"]), "settings": doc.get("settings")}


def _save_checkpoint(out: Path, sae, opt, since_fired, history, step: int, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors, rest = _flatten(sae, opt, since_fired)
    doc = {"step": step, "history": history, "settings": settings,
           "settings_hash": config_hash(settings), **rest}
    tmp = out / (CHECKPOINT + ".tmp")
    save_file(tensors, tmp, metadata={"checkpoint": json.dumps(doc, default=str)})
    os.replace(tmp, out / CHECKPOINT)
    (out / LEGACY_CHECKPOINT).unlink(missing_ok=True)


def _append_log(out: Path | None, row: dict) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOG, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def _rewrite_log(out: Path, history: list[dict]) -> None:
    (out / LOG).write_text("".join(json.dumps(row) + "\n" for row in history))


