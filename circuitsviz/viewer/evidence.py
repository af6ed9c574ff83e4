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

from ..errors import BadInputError, check_int
from ..store import Run, Split, Stats

CONCEPT_RATIO = 0.5  # a concept counts when its mean activation reaches half the best concept's


def concept_means(stats: Stats | None) -> dict[str, float]:
    """Mean image-level activation per concept (label), as mining recorded it; ``{}`` when absent."""
    means = (stats.scores or {}).get("concept_means") if stats else None
    return {str(k): float(v) for k, v in (means or {}).items() if v is not None}


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
