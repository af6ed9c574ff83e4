"""What a run shows about polysemanticity, in words: each unit's concepts and the clearest split.

These read only the store, so the demo's terminal summary, the viewer and scripts agree.

>>> run = open_run("runs/demo")                          # doctest: +SKIP
>>> clearest_split(run).channel_id                       # doctest: +SKIP
'mixed3b:7'
>>> print(split_summary(run))                            # doctest: +SKIP
mixed3b:7 -> star, rings, wheel
  mixed3b/topk8x_k1:17  share 31.0%  star (1 concept)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInputError, check_int
from ..store import Run, Split, Stats

CONCEPT_RATIO = 0.5  # a concept counts when its mean activation reaches half the best concept's


def concept_means(stats: Stats | None) -> dict[str, float]:
    """Mean image-level activation per concept (label), as mining recorded it; ``{}`` when absent."""
    means = (stats.scores or {}).get("concept_means") if stats else None
    return {str(k): float(v) for k, v in (means or {}).items() if v is not None}


@dataclass(frozen=True)
class ConceptMax:
    """The largest image-level activation of one concept, as far as the run's records tell."""

    value: float
    exact: bool   # False: a lower bound (the true maximum lies between ``value`` and ``bound``)
    bound: float | None = None


def concept_maxima(stats: Stats | None, examples, quantiles, classes: list[str] | None) -> dict[str, ConceptMax]:
    """Max image-level activation per concept. Recorded by mining (``scores["concept_max"]``)
    where it is; else read off the unit's examples: the top-k are the k images with the largest
    image-level activation, so a concept with an image among them has its maximum there (exact);
    any other concept's maximum lies between the larger of its best example across the activation
    range and its mean, and the top-k cut-off (a lower bound, shown as such).

    >>> from circuitsviz.store import Example, QuantileExample
    >>> top = [Example("u", "max", 0, "a", 9.0, 0, 0, label=0), Example("u", "max", 1, "b", 7.0, 0, 0, label=0)]
    >>> q = [QuantileExample("u", 2, "c", 3.0, 0, 0, label=1)]
    >>> m = concept_maxima(None, top, q, ["car", "cat"])
    >>> m["car"], m["cat"]
    (ConceptMax(value=9.0, exact=True, bound=None), ConceptMax(value=3.0, exact=False, bound=7.0))
    """
    recorded = (stats.scores or {}).get("concept_max") if stats else None
    if recorded:
        return {str(k): ConceptMax(float(v), True) for k, v in recorded.items() if v is not None}

    def name(label: int) -> str | None:
        if label is None or label < 0:
            return None
        return classes[label] if classes and label < len(classes) else str(label)

    out: dict[str, ConceptMax] = {}
    for e in examples:
        if (c := name(e.label)) is not None and (c not in out or e.value > out[c].value):
            out[c] = ConceptMax(float(e.value), True)
    cut = min((e.value for e in examples), default=None)
    bound = None if cut is None else float(cut)
    for q in quantiles:
        c = name(q.label)
        if c is not None and (c not in out or (not out[c].exact and q.value > out[c].value)):
            out[c] = ConceptMax(float(q.value), False, bound)
    for c, mean in concept_means(stats).items():  # a maximum is at least the mean
        if c not in out or (not out[c].exact and mean > out[c].value):
            out[c] = ConceptMax(mean, False, bound)
    return out


def concepts(stats: Stats | None, ratio: float = CONCEPT_RATIO) -> list[str]:
    """The concepts a unit responds to, strongest first: those whose mean activation reaches
    ``ratio`` of the best one's (the concept count's rule). Without recorded means, the most
    common label of its top examples.

    >>> concepts(Stats("u", None, None, None, [], [], {"concept_means": {"car": 4.0, "cat": 2.5, "dot": 1.0}}, {}))
    ['car', 'cat']
    """
    means = concept_means(stats)
    if means:
        best = max(means.values())
        if best <= 0:
            return []
        return [k for k, v in sorted(means.items(), key=lambda t: -t[1]) if v >= ratio * best]
    labels = stats.label_counts if stats else {}
    return [max(labels, key=labels.get)] if labels else []


def concept_count(stats: Stats | None) -> int | None:
    """The recorded concept count (mining's), else the number of :func:`concepts`."""
    cc = (stats.scores or {}).get("concept_count") if stats else None
    if cc is not None:
        return int(cc)
    found = concepts(stats)
    return len(found) if found else None


def dominant_concept(stats: Stats | None) -> str | None:
    found = concepts(stats)
    return found[0] if found else None


def monosemantic_concepts(run: Run, split: Split) -> list[str]:
    """The channel's concepts that some feature of the split has as its only concept (concept
    count 1), in rank order: the parts of the channel's mixture the split takes apart cleanly."""
    own = set(concepts(run.stats(split.channel_id)))
    out: list[str] = []
    for f in split.features:
        st = run.stats(f.unit_id)
        if concept_count(st) == 1 and (c := dominant_concept(st)) in own and c not in out:
            out.append(c)
    return out


def clearest_split(run: Run) -> Split | None:
    """The split that shows polysemanticity most plainly. Rule: the split channel with the most of
    its own concepts covered by a feature of concept count 1 (a monosemantic feature for that
    concept); ties go to the channel with the larger concept count, then to the larger total
    share of the split's features, then to the first channel."""
    _check_run(run)
    best, best_key = None, None
    for sp in run.splits():
        covered = len(monosemantic_concepts(run, sp))
        key = (covered, concept_count(run.stats(sp.channel_id)) or 0, sum(f.share or 0.0 for f in sp.features))
        if best_key is None or key > best_key:  # strictly better: the first channel wins ties
            best, best_key = sp, key
    return best


def split_summary(run: Run, features: int = 4) -> str:
    """One line per split channel naming its concepts, then its top features with theirs::

        mixed3b:7 -> star, rings, wheel
          mixed3b/topk8x_k1:17  share 31.0%  star (1 concept)
    """
    _check_run(run), check_int("features", features, 1)
    lines = []
    for sp in run.splits():
        lines.append(f"{sp.channel_id} -> {', '.join(concepts(run.stats(sp.channel_id))) or '(no labels)'}")
        for f in sp.features[:features]:
            st = run.stats(f.unit_id)
            cc = concept_count(st)
            lines.append(f"  {f.unit_id:<24} share {f.share or 0.0:6.1%}  {', '.join(concepts(st)) or '-'}"
                         + (f" ({cc} concept{'s' if cc != 1 else ''})" if cc is not None else ""))
    return "\n".join(lines)


def _check_run(run) -> None:
    if not isinstance(run, Run):
        raise BadInputError(f"run must be an open Run (circuitsviz.open_run(path)), got {run!r:.60}")
