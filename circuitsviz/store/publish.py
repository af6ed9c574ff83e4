"""The publishing API: the only code that writes results into a run.

``study``, every CLI command and Python users put results into a run with these methods of
:class:`~circuitsviz.store.Run`::

    run = cv.open_run("runs/mine", create=True)
    run.add_visualizations(cv.visualize(model, "mixed3b:*"), model=model)
    run.add_mining(cv.mine(model, data, ["mixed3b"]), data, model=model)
    run.add_sae(sae)                                  # and its features
    run.add_split(cv.split_channel(sae, 55, data=...))
    run.add_feature_examples(cv.mine(model, data, ["mixed3b"], transform=sae), data, sae)

Each records the settings its results were made with (see :mod:`circuitsviz.store.steps`). A
result made with other settings than the run already holds for the same thing is refused with
:class:`~circuitsviz.store.steps.SettingsChangedError` unless ``overwrite=True``, which first
removes the old results and everything derived from them, so a run never mixes the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..units import Unit
from .steps import (
    canonical, changed_error, config_hash, mining_key, sae_key_of, settings_diff, to_json, vis_key,
)

# Tables keyed by unit id that hold results (the units themselves stay registered).
_UNIT_TABLES = ("visualizations", "examples", "quantile_examples", "stats", "features", "feature_writes")


def model_fingerprint(model) -> str | None:
    """The weights' SHA-256 (as the zoo records it), or a hash of the parameters of other models."""
    from ..mining.mine import _fingerprint

    return getattr(model, "weights_sha256", None) or _fingerprint(model)


def vis_slot(unit: Unit, kind: str) -> str:
    """The step key of a unit's visualizations: its layer (``layer/sae`` for features) and kind."""
    return f"{_prefix(unit)}|{kind}"


def _prefix(unit: Unit) -> str:
    return unit.layer + (f"/{unit.sae}" if unit.sae else "")


class Publishing:
    """The write half of :class:`~circuitsviz.store.Run` (mixed into it)."""

    # ------------------------------------------------------------ run-wide inputs
    def check_inputs(self, model=None, data=None, *, overwrite: bool = False) -> None:
        """Refuse, before any work, a model or data other than those the run's results came from
        (unless ``overwrite``): the one-line error names what changed."""
        if model is not None:
            self._model_diff(model.name, model_fingerprint(model), model.input_size, overwrite)
        spec = data.spec() if hasattr(data, "spec") else data
        if isinstance(spec, dict):
            self._data_diff(spec, overwrite)

    def add_model(self, model, *, overwrite: bool = False) -> None:
        """Record the model (name, weights hash, input size). A run holds one model's results:
        another model is refused unless ``overwrite``, which first removes every result."""
        self._check_model(model.name, model_fingerprint(model), model.input_size, overwrite)

    def _model_diff(self, name, weights, input_size, overwrite: bool) -> list[str]:
        info = self.info()
        if info.model is None or not self._has_results():
            return []
        old = {"model": info.model, "weights_sha256": info.weights_sha256, "input_size": info.input_size}
        new = {"model": name, "weights_sha256": weights or info.weights_sha256, "input_size": input_size}
        diff = settings_diff(old, new)  # unknown weights (a result without its model) trust the run's
        if diff and not overwrite:
            raise changed_error("the model of this run", repr(str(self.path)), diff)
        return diff

    def _check_model(self, name: str | None, weights: str | None, input_size: int | None,
                     overwrite: bool) -> None:
        if self._model_diff(name, weights, input_size, overwrite):
            self._drop_all()
        info = self.info()
        if (info.model, info.input_size) != (name, input_size) or (weights and weights != info.weights_sha256):
            self._set_meta(model=name, weights_sha256=weights or info.weights_sha256,
                           input_size=None if input_size is None else int(input_size))

    def _data_diff(self, spec: dict, overwrite: bool) -> list[str]:
        old = self.info().data_source
        if old is None or canonical(old) == canonical(spec):
            return []
        if not (self._rows("SELECT 1 FROM examples LIMIT 1") or self.saes()):
            return []
        changed = {k for k in set(old) | set(spec) if old.get(k) != spec.get(k)}
        diff = [f"data {k}={old.get(k)!r} (now {spec.get(k)!r})" for k in sorted(changed)]
        if not overwrite:
            raise changed_error("the data of this run", repr(str(self.path)), diff)
        return diff

    def add_data(self, data, classes: list[str] | None = None, *, overwrite: bool = False) -> None:
        """Record the dataset (or its ``spec()``) that examples' image ids point into. A run holds
        one data source: another is refused unless ``overwrite``, which first removes everything
        computed from the old data (examples, statistics, SAEs, splits). A dataset without a
        ``spec()`` cannot be reopened or compared, and is not recorded."""
        spec = data.spec() if hasattr(data, "spec") else data
        if not isinstance(spec, dict):
            return
        if classes is None:
            classes = getattr(data, "classes", None)
        if self._data_diff(spec, overwrite):
            self._drop_data_results()
        old = self.info()
        if old.data_source is None or canonical(old.data_source) != canonical(spec) or old.classes != classes:
            self.set_data_source(spec, classes=classes)

    def set_settings(self, name: str, settings: dict) -> None:
        """Record the settings of the last ``name`` call (``study``, ``visualize``, ...) in
        ``meta.settings[name]``; each result's own settings are in its step record."""
        self._set_meta(settings={**self.info().settings, name: settings})

    def sae_dir(self, layer: str, name: str):
        """Where an SAE of this run is saved: ``saes/LAYER/NAME``."""
        return self.path / "saes" / layer / name

    @property
    def activations_dir(self):
        """Where activation caches for SAEs go: ``activations/<hash>``."""
        return self.path / "activations"

    def mining_checkpoint(self, layers: Sequence[str], settings: dict, sae: str | None = None,
                          shard: tuple[int, int] | None = None):
        """The checkpoint (and result) file of one mining job: ``mining/LAYERS[~SAE]-HASH[.I-of-N].npz``,
        so jobs on other layers or with other settings never share one."""
        info = self.info()
        job = "+".join(layers) + (f"~{sae}" if sae else "")
        tail = f".{shard[0]}-of-{shard[1]}" if shard else ""
        digest = config_hash([settings, info.weights_sha256, info.data_source], 10)
        return self.path / "mining" / f"{job}-{digest}{tail}.npz"

    def add_layers(self, model, layers: Iterable[str]) -> None:
        """Record layers' widths, spatial sizes, branch ranges and receptive fields (the layer table)."""
        from ..mining import receptive_fields

        layers = list(layers)
        shapes = model.layer_shapes(layers)
        try:
            fields = receptive_fields(model, layers)
        except (BadInputError, TypeError, RuntimeError):  # a graph the tracer cannot follow
            fields = {}
        with self.batch():
            for name in layers:
                shape = shapes[name]
                self._put_layer_row(model, name, shape[0], *(shape[1:3] if len(shape) == 3 else (None, None)),
                                    fields.get(name))

    def _put_layer_row(self, model, name: str, channels: int, height, width, rf) -> None:
        branches = [(b.name, b.start, b.stop) for b in model.layer(name).branches] if model is not None else []
        try:
            rf = None if rf is None else rf.as_tuple()  # the store keeps the field as mining computed it
        except BadInputError:  # not square: the store records square fields only
            rf = None
        self.put_layer(name, channels, height, width, branches=branches, rf=rf)

    # ------------------------------------------------------------ visualizations
    def add_visualizations(self, results: Sequence, *, model=None, units: Sequence[str] | None = None,
                           overwrite: bool = False) -> int:
        """Store :func:`~circuitsviz.visualize` results. Each result's ``unit`` must be a unit id
        (``mixed3b:0``, ``mixed3b/topk8x_k1:17``) unless ``units`` gives one id per result.
        ``model`` (optional) also records the layers. Returns the number of images stored.

        >>> run.add_visualizations(cv.visualize(model, ["mixed3b:0", "mixed3b:1"]), model=model)  # doctest: +SKIP
        2
        """
        results = list(results)
        if units is not None and len(units) != len(results):
            raise BadInputError(f"units= gives {len(units)} ids for {len(results)} results")
        ids = [Unit.parse(units[i] if units is not None else _unit_of(r)) for i, r in enumerate(results)]
        if model is not None:
            self.add_model(model, overwrite=overwrite)
        elif results:
            s = results[0].settings
            self._check_model(s.get("model"), s.get("weights_sha256"), s.get("input_size"), overwrite)
        slots: dict[str, dict] = {}
        for unit, r in zip(ids, results):
            key = vis_key(r.settings)
            slot = vis_slot(unit, r.kind)
            if slots.setdefault(slot, key) != key:
                raise BadInputError(f"results for {slot} were made with different settings: "
                                    f"{', '.join(settings_diff(slots[slot], key))}; store them in two calls")
        for slot, key in slots.items():
            if self._replacing("vis", slot, key, overwrite, f"the {slot} visualizations"):
                self._drop_visualizations(slot)
        if model is not None:
            known = {r.name for r in self.layers()}  # recorded once: a trace per chunk would be waste
            channel_layers = sorted({u.layer for u in ids if u.sae is None} - known)
            if channel_layers:
                self.add_layers(model, channel_layers)
        blobs = [self.blobs.put_image(r.image) for r in results]  # files exist before rows name them
        with self.batch():
            for unit, r, (sha, h, w) in zip(ids, results, blobs):
                uid = self._add_unit(unit.id)
                self._conn.execute(
                    "INSERT OR REPLACE INTO visualizations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (uid, r.kind, int(r.index), sha, h, w, float(r.objective), to_json(r.settings)),
                )
            for slot, key in slots.items():
                self.mark_done("vis", slot, key)
        return len(results)

    def visualize(self, model, units, *, chunk: int = 64, overwrite: bool = False, **kwargs) -> int:
        """Render ``units`` into this run, publishing every ``chunk`` units as they finish, so an
        interrupted call loses at most one chunk and the same call again renders only what is
        missing. ``units``: ids (``mixed3b:1``, ``mixed3b:*``, ``mixed3b/topk8x_k1:17``: an SAE
        feature the run holds) ; ``kwargs`` as for :func:`~circuitsviz.visualize`. Settings other
        than those the run holds for these units are refused before any work (unless
        ``overwrite``). Returns the number of images rendered now.

        >>> run.visualize(model, "mixed3b:*", steps=256)     # doctest: +SKIP
        8
        """
        import inspect

        from ..optvis import visualize
        from ..units import feature_objective, parse_channels
        from .steps import planned_vis_key

        ids = []
        for text in [units] if isinstance(units, str) else list(units):
            text = str(text).strip()
            if text.endswith(":*"):
                ids += [Unit(text[:-2], c) for c in parse_channels("*", model.channels(text[:-2]))]
            else:
                ids.append(Unit.parse(text))
        size = kwargs.get("size") or inspect.signature(visualize).parameters["size"].default or model.input_size
        plan = {k: kwargs[k] for k in ("steps", "seed", "param", "transforms", "lr", "diversity",
                                       "images_per_unit", "redirect_steps", "upsample") if k in kwargs}
        key = planned_vis_key(size=size, **{"steps": 512, **plan})
        negative, diverse = kwargs.get("negative", False), kwargs.get("diversity", 0.0) > 0
        kinds = {u: "diversity" if diverse else "negative" if negative else "neuron" if u.pos else "positive"
                 for u in ids}
        self.check_inputs(model, overwrite=overwrite)
        redo = set()
        for slot in {vis_slot(u, kinds[u]) for u in ids}:
            rec = self.step("vis", slot)
            if not self.check_step("vis", slot, key, overwrite=overwrite, what=f"the {slot} visualizations") \
                    and rec is not None and settings_diff(rec.settings, key):
                redo.add(slot)  # overwrite: every unit of the slot is rendered again
        todo = []
        for u in ids:
            have = [] if vis_slot(u, kinds[u]) in redo else self.visualizations(u.id, kinds[u])
            # An image stored without a step record (an older run) is judged by its own settings.
            diff = next((d for d in (settings_diff(vis_key(v.settings), key) for v in have) if d), None)
            if diff and not overwrite:
                raise changed_error(f"the {u.id} visualization", repr(str(self.path)), diff)
            if diff or not have:
                todo.append(u)
        rendered = 0
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            objectives = [feature_objective(u, run=self, model=model) if u.sae else u.id for u in part]
            results = visualize(model, objectives, **kwargs)
            rendered += self.add_visualizations(results, model=model, overwrite=overwrite and start == 0)
        return rendered

    def _drop_visualizations(self, slot: str) -> None:
        prefix, kind = slot.rsplit("|", 1)
        layer, _, sae = prefix.partition("/")
        with self.batch():
            self._conn.execute(
                "DELETE FROM visualizations WHERE kind = ? AND unit_id IN "
                "(SELECT id FROM units WHERE layer = ? AND coalesce(sae, '') = ?)", (kind, layer, sae))
            self.forget_steps("vis", slot)

    # ------------------------------------------------------------ dataset examples
    def add_mining(self, result, dataset=None, *, model=None, sae=None, actmaps: bool = False,
                   quantile_groups: int = 10, overwrite: bool = False) -> int:
        """Store a whole-dataset :func:`~circuitsviz.mine` result: every unit's top examples,
        quantile examples, statistics and label scores. ``dataset`` maps indices to image ids
        (default: reopened from the result's data spec). With ``sae`` (an SAE, or the name of one
        in the run) the units are its features. ``model`` supplies branch ranges and, with
        ``actmaps=True``, each top example's activation map for the viewer's heatmaps (one more
        forward pass over the top images). Returns the number of units written.

        >>> run.add_mining(cv.mine(model, data, ["mixed3b"]), data, model=model)    # doctest: +SKIP
        256
        """
        from ..mining.save import top_k_maps

        if not result.complete:
            raise BadInputError(f"the mining result covers {result.done} of {result.total} images; "
                                "finish it (run the same call again) or merge its shards first")
        config = result.config
        if dataset is None:
            from ..data import open_source

            dataset = open_source(config["data"])
        self._check_model(config.get("model"), config.get("weights"), config.get("input_size"), overwrite)
        self.add_data(dataset, classes=result.classes, overwrite=overwrite)
        sae_name, transform, sae_settings = None, None, None
        if sae is not None:
            sae_name = sae if isinstance(sae, str) else sae.name
            transform = None if isinstance(sae, str) else sae
        written = 0
        for key_name, r in result.layers.items():
            name, _, named = key_name.partition("/")  # mine(..., ["LAYER/SAE"]) keys features by their SAE
            if named and sae_name not in (None, named):
                raise BadInputError(f"the result's {key_name!r} holds features of SAE {named}, but sae= is {sae_name}")
            layer_sae = named or sae_name
            if layer_sae is not None:  # features of an SAE the run holds are keyed by its settings too
                rec = self.step("sae", f"{name}/{layer_sae}")
                sae_settings = rec.settings if rec is not None else None
            slot = name + (f"/{layer_sae}" if layer_sae else "")
            key = mining_key(config, sae_settings)
            if self._replacing("mine", slot, key, overwrite, f"the dataset examples of {slot}"):
                self._drop_unit_rows(name, layer_sae, ("examples", "quantile_examples", "stats"))
            maps = None
            if actmaps and model is not None:
                from ..units import resolve_sae

                encoder = resolve_sae(slot, sae=transform, run=self, model=model) if named else transform
                maps = top_k_maps(model, dataset, r, encoder)
            with self.batch():  # one transaction per layer: a reader sees all its units or none
                if layer_sae is None:
                    self._put_layer_row(model or _zoo_table(config.get("model")), name, r.units, r.height,
                                        r.width, r.rf)
                written += self._write_mined_layer(result, r, dataset, layer_sae, quantile_groups, maps)
                self.mark_done("mine", slot, key)
        return written

    def mine(self, model, data, layers, *, shard: tuple[int, int] | None = None, restart: bool = False,
             actmaps: bool = False, overwrite: bool = False, **kwargs) -> list:
        """Mine ``layers`` of ``model`` over ``data`` into this run: layers it holds with these
        settings are skipped (adding a layer is a normal call), each job checkpoints to its own
        file under ``mining/`` and resumes from it, and other settings are refused before any work
        (unless ``overwrite``). ``LAYER/SAE`` mines the features of an SAE the run holds.
        ``kwargs`` as for :func:`~circuitsviz.mine`. With ``shard`` the shard's result is only
        saved (``merge`` it). Returns the results of the jobs run now.

        >>> run.mine(model, "procedural", ["mixed3a", "mixed3b", "mixed3b/topk8x_k1"], k=16)   # doctest: +SKIP
        """
        from ..data import as_dataset
        from ..mining import mine
        from ..units import resolve_sae
        from .steps import planned_mining_key

        dataset = as_dataset(data, model, **({"n": kwargs.pop("n")} if "n" in kwargs else {}))
        self.check_inputs(model, dataset, overwrite=overwrite)
        jobs: dict[str | None, list[str]] = {}  # SAE name (None: channels) -> layers
        for name in [layers] if isinstance(layers, str) else list(layers):
            layer, _, sae = name.partition("/")
            model.layer(layer)
            jobs.setdefault(sae or None, []).append(layer)
        planned = []
        for sae_name, names in jobs.items():
            if sae_name and len(names) > 1:
                raise BadInputError(f"SAE {sae_name} reads one layer; name it once, as {names[0]}/{sae_name}")
            sae = resolve_sae(f"{names[0]}/{sae_name}", run=self, model=model) if sae_name else None
            sae_settings = self.step("sae", f"{names[0]}/{sae_name}").settings if sae else None
            key = planned_mining_key(**{k: kwargs[k] for k in ("k", "mean_top_k", "hist_bins", "hist_range",
                                                              "calibration", "per_bin") if k in kwargs},
                                     sae_settings=sae_settings)
            todo = [lay for lay in names if not self.check_step(
                "mine", lay + (f"/{sae_name}" if sae_name else ""), key, overwrite=overwrite,
                what=f"the dataset examples of {lay}" + (f"/{sae_name}" if sae_name else ""))]
            if todo:
                planned.append((todo, sae, key))
        self.add_model(model, overwrite=overwrite)
        self.add_data(dataset, overwrite=overwrite)
        results = []
        for todo, sae, key in planned:
            path = self.mining_checkpoint(todo, key, sae=sae.name if sae else None, shard=shard)
            with self.lock(f"mine:{path.name}"):  # a second miner of this job waits, then resumes from its file
                result = mine(model, dataset, todo, shard=shard, checkpoint=path, restart=restart, transform=sae,
                              **kwargs)
                if not shard:
                    self.add_mining(result, dataset, model=model, sae=sae, actmaps=actmaps, overwrite=overwrite)
            results.append(result)
        return results

    def add_feature_examples(self, result, dataset, sae, *, model=None, actmaps: bool = False,
                             overwrite: bool = False) -> int:
        """:meth:`add_mining` for ``mine(model, data, [sae.layer], transform=sae)``: its units are
        the SAE's features (``layer/name:i``)."""
        return self.add_mining(result, dataset, model=model, sae=sae, actmaps=actmaps, overwrite=overwrite)

    def _write_mined_layer(self, result, r, dataset, sae: str | None, quantile_groups: int,
                           maps: np.ndarray | None) -> int:
        name = r.name
        ids = [Unit(name.partition("/")[0], u, sae=sae).id for u in range(r.units)]
        for uid in ids:
            self._add_unit(uid)
        stats = result.stats(name)
        ys, xs = r.top_yx()
        classes = result.classes
        for u, uid in enumerate(ids):
            rows = _example_rows(dataset, r.top_value[u], r.top_index[u], ys[u], xs[u], r.top_label[u])
            if maps is not None:
                for row in rows:
                    row["actmap"] = maps[u, row["rank"]]
            self.put_examples(uid, rows, kind="max")
            if r.mean_value is not None:
                self.put_examples(uid, _example_rows(dataset, r.mean_value[u], r.mean_index[u],
                                                     r.mean_pos[u] // r.width, r.mean_pos[u] % r.width,
                                                     r.mean_label[u]), kind="mean")
            self.put_quantile_examples(uid, [
                dict(bin=g, image_id=_image_id(dataset, i), value=v, y=p // r.width, x=p % r.width,
                     label=dataset.label(i) if hasattr(dataset, "label") else -1)  # the viewer names concepts
                for g, i, v, p in result.quantile_examples(name, u, quantile_groups)
            ])
            top = r.top_label[u][(r.top_label[u] >= 0) & (r.top_index[u] >= 0)]
            labels = {(classes[lab] if classes and lab < len(classes) else str(lab)): int(n)
                      for lab, n in enumerate(np.bincount(top)) if n}
            self.put_stats(
                uid, mean=float(stats["mean"][u]), max=float(stats["max"][u]),
                frac_positive=float(stats["frac_positive"][u]), hist_counts=r.hist_counts[u].tolist(),
                hist_edges=r.hist_edges[u].tolist(),
                scores={**{key: _plain(stats[key][u]) for key in ("purity", "entropy", "concept_count")},
                        "concept_means": _per_concept(r.label_sum[u], result.label_count, classes, mean=True),
                        **({} if r.label_max is None else
                           {"concept_max": _per_concept(r.label_max[u], result.label_count, classes, mean=False)})},
                label_counts=labels,
            )
        return r.units

    # ------------------------------------------------------------ SAEs and splits
    def add_sae(self, sae, *, path=None, settings: dict | None = None, overwrite: bool = False) -> str:
        """Record an SAE and all its features (their strongest decoder weights). ``path``: where
        it is saved inside the run; without one, or with one outside the run, the SAE is saved
        into ``saes/LAYER/NAME``. ``settings``: what it was
        asked to be fit with (default: what ``fit_sae`` recorded). An SAE of the same layer and
        name fit with other settings is refused unless ``overwrite``, which first removes the old
        one's features, examples, visualizations and splits. Returns ``layer/name``.
        """
        from ..sae.split import decoder_top

        layer, name = sae.layer, sae.name
        if not layer:
            raise BadInputError("the SAE does not say which layer it reads (sae.config.layer); set it first")
        key = canonical(settings if settings is not None else sae_key_of(sae))
        slot = f"{layer}/{name}"
        if self._replacing("sae", slot, key, overwrite, f"SAE {slot}"):
            self._drop_sae(layer, name)
        if sae.config.model is not None and self.info().model not in (None, sae.config.model):
            raise BadInputError(f"SAE {slot} was fit on model {sae.config.model!r}, but this run holds "
                                f"{self.info().model!r}")
        metrics = sae.metrics.to_dict() if hasattr(sae.metrics, "to_dict") else dict(sae.metrics or {})
        if path is None or not Path(path).resolve().is_relative_to(self.path.resolve()):
            # A run holds its own SAEs, so it travels whole and is never read outside its folder.
            from ..sae import save_sae

            path = save_sae(sae, self.sae_dir(layer, name))
        with self.batch():
            self.put_sae(name, layer, config=sae.config.to_dict(), metrics=metrics, path=path)
            for f in range(sae.n_latents):
                uid = Unit(layer, f, sae=name).id
                old = self.feature(uid)
                self.put_feature(uid, sae=name, decoder_top=decoder_top(sae, f),
                                 freq=old.freq if old else None, mean_act=old.mean_act if old else None)
            self.mark_done("sae", slot, key)
        return slot

    def add_split(self, split, *, sae=None, settings: dict | None = None) -> None:
        """Record a :func:`~circuitsviz.split_channel` result: the channel's ranked features with
        their shares. Its SAE must be in the run (or be given as ``sae``, and is then added)."""
        slot = f"{split.layer}/{split.sae}"
        if self.step("sae", slot) is None:
            if sae is None:
                raise BadInputError(f"SAE {slot} is not in this run; add it first (run.add_sae(sae)) or pass sae=")
            self.add_sae(sae)
        with self.batch():
            for f in split.features:
                old = self.feature(f.unit_id)
                self.put_feature(f.unit_id, sae=split.sae, decoder_top=old.decoder_top if old else (),
                                 freq=f.freq, mean_act=f.mean_activation)
            self.put_split(split.layer, split.channel, sae=split.sae, features=split.to_store_rows(),
                           totals=_split_totals(split))
            self.mark_done("split", f"{slot}:{split.channel}",
                           settings if settings is not None else {"top": len(split.features)})

    # ------------------------------------------------------------ removing stale results
    def _replacing(self, step: str, key: str, settings: dict, overwrite: bool, what: str) -> bool:
        """True when the run holds ``step`` for ``key`` made with other settings and ``overwrite``
        allows replacing them (the caller removes them); without it that raises."""
        rec = self.step(step, key)
        if rec is None or not settings_diff(rec.settings, settings):
            return False
        self.check_step(step, key, settings, overwrite=overwrite, what=what)  # raises unless overwrite
        return True

    def _has_results(self) -> bool:
        return any(self._rows(f"SELECT 1 FROM {t} LIMIT 1") for t in ("visualizations", "examples", "saes"))

    def _drop_unit_rows(self, layer: str, sae: str | None, tables: Iterable[str]) -> None:
        with self.batch():
            for t in tables:
                self._conn.execute(f"DELETE FROM {t} WHERE unit_id IN "
                                   "(SELECT id FROM units WHERE layer = ? AND coalesce(sae, '') = ?)",
                                   (layer, sae or ""))

    def _drop_sae(self, layer: str, name: str) -> None:
        """Remove an SAE and everything derived from it: features, their results, splits, step records."""
        slot = f"{layer}/{name}"
        with self.batch():
            self._drop_unit_rows(layer, name, _UNIT_TABLES)
            self._conn.execute("DELETE FROM units WHERE layer = ? AND sae = ?", (layer, name))
            for table in ("splits", "split_totals"):
                self._conn.execute(f"DELETE FROM {table} WHERE layer = ? AND sae = ?", (layer, name))
            self._conn.execute("DELETE FROM saes WHERE layer = ? AND name = ?", (layer, name))
            self._conn.execute("DELETE FROM done WHERE key = ? OR substr(key, 1, ?) IN (?, ?)",
                               (slot, len(slot) + 1, slot + "|", slot + ":"))

    def _drop_data_results(self) -> None:
        """Remove everything computed from the data: examples, statistics, SAEs and their features."""
        with self.batch():
            for s in self.saes():
                self._drop_sae(s.layer, s.name)
            for t in ("examples", "quantile_examples", "stats"):
                self._conn.execute(f"DELETE FROM {t}")
            self._conn.execute("DELETE FROM done WHERE step IN ('mine', 'sae', 'split')")

    def _drop_all(self) -> None:
        with self.batch():
            for t in ("layers", "units", *_UNIT_TABLES, "saes", "splits", "split_totals", "circuits", "faithfulness",
                      "done"):
                self._conn.execute(f"DELETE FROM {t}")


def _split_totals(split) -> dict | None:
    """What all of a split's features and the bias write (``SplitResult``), or None when the
    result does not say (a hand-made split)."""
    explained, bias = getattr(split, "explained", None), getattr(split, "bias_share", None)
    if explained is None or bias is None:
        return None
    return dict(explained=explained, bias_share=bias, n_samples=getattr(split, "n_samples", None),
                n_firing=getattr(split, "n_firing", None))


def _unit_of(result) -> str:
    try:
        return Unit.parse(result.unit).id
    except BadInputError:
        raise BadInputError(f"result {result.unit!r} is not a unit id; pass units=[...] with one id per result, "
                            "e.g. 'mixed3b/topk8x_k1:17' for an SAE feature") from None


def _zoo_table(model_name: str | None):
    """Branch ranges from the zoo's layer table, without building or loading the model."""
    from ..models import ZOO, LayerInfo, zoo_entry

    table = {i.name: i for i in zoo_entry(model_name).layers()} if model_name in ZOO else {}

    class _Table:
        def layer(self, name: str):
            return table.get(name, LayerInfo(name, name))

    return _Table()


def _image_id(dataset, i: int) -> str:
    return dataset.image_id(i) if hasattr(dataset, "image_id") else str(i)


def _per_concept(per_label: np.ndarray, label_count: np.ndarray, classes, *, mean: bool) -> dict[str, float]:
    """A unit's per-label figure keyed by concept name, for labels with images: the mean image-level
    activation (``mean``: the sum over the count; what the concept count is computed from) or the max."""
    return {(classes[lab] if classes and lab < len(classes) else str(lab)):
            float(per_label[lab] / n if mean else per_label[lab])
            for lab, n in enumerate(label_count[:len(per_label)]) if n}


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and v != v else v


def _example_rows(dataset, values, index, ys, xs, labels) -> list[dict]:
    return [dict(rank=rank, image_id=_image_id(dataset, int(i)), value=float(v), y=int(y), x=int(x), label=int(lab))
            for rank, (v, i, y, x, lab) in enumerate(zip(values, index, ys, xs, labels)) if i >= 0]


__all__ = ["Publishing", "config_hash", "model_fingerprint", "vis_slot"]
