"""The held-out evaluation protocol: intervals, k-means, the split, and a planted superposition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from circuitsviz.errors import BadInputError
from circuitsviz.evaluate import evaluate_split, hash_split, kmeans, mean_interval, t_quantile
from circuitsviz.models.wrapper import LayerInfo, VisionModel


# ------------------------------------------------------------------------------ intervals
@pytest.mark.parametrize("df, table", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantile_matches_printed_table(df, table):
    assert t_quantile(0.975, df) == pytest.approx(table, abs=2e-4)


def test_t_quantile_is_antisymmetric_and_checks_input():
    assert t_quantile(0.025, 3) == pytest.approx(-t_quantile(0.975, 3))
    with pytest.raises(BadInputError):
        t_quantile(1.0, 3)


def test_interval_by_hand():
    # values 0.5, 0.7, 0.9: mean 0.7, sd 0.2, half width t(0.975, 2) * 0.2 / sqrt(3)
    iv = mean_interval([0.5, 0.7, 0.9])
    half = 4.302653 * 0.2 / math.sqrt(3)
    assert iv.mean == pytest.approx(0.7)
    assert iv.low == pytest.approx(0.7 - half, abs=1e-5)
    assert iv.high == pytest.approx(0.7 + half, abs=1e-5)
    lone = mean_interval([0.3, float("nan")])
    assert lone.mean == pytest.approx(0.3) and math.isnan(lone.low)


# ------------------------------------------------------------------------------ k-means
def test_kmeans_finds_separable_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [4.0, 4.0, 4.0]])
    labels = torch.arange(4).repeat_interleave(100)
    x = centres[labels] + 0.1 * torch.randn(400, 3, generator=gen)
    km = kmeans(x, 4, seed=3)
    dist = torch.cdist(centres, km.centroids)
    assert float(dist.min(1).values.max()) < 0.05                    # every true centre has a centroid on it
    assign = km.assign(x)
    for lab in range(4):                                              # each cluster is one centroid, alone
        assert len(set(assign[labels == lab].tolist())) == 1
    assert len(set(assign.tolist())) == 4
    assert km.inertia == pytest.approx(float((x - centres[labels]).pow(2).sum(1).mean()), rel=0.05)


def test_kmeans_code_is_one_hot_projection_and_centroid_reconstruction():
    km = kmeans(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.1, 0.0], [0.0, 2.1]]), 2, seed=0)
    z = km.encode(torch.tensor([[3.0, 0.5]]))
    j = int(km.assign(torch.tensor([[3.0, 0.5]]))[0])
    c = km.centroids[j]
    assert (z != 0).sum() == 1
    assert float(z[0, j]) == pytest.approx(float(torch.tensor([3.0, 0.5]) @ c / c.norm()))
    assert torch.equal(km.reconstruct(torch.tensor([[3.0, 0.5]]))[0], c)


# ------------------------------------------------------------------------------ split
class _Ids:
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def image_id(self, i):
        return self.ids[i]


def test_hash_split_is_deterministic_disjoint_and_stable_under_additions():
    ids = [f"img{i}.png" for i in range(500)]
    train, held = hash_split(_Ids(ids), 0.25)
    assert sorted(train + held) == list(range(500))
    assert 90 < len(held) < 160
    again = hash_split(_Ids(ids + [f"new{i}.png" for i in range(100)]), 0.25)
    assert set(held) <= set(again[1]) and set(train) <= set(again[0])
    with pytest.raises(BadInputError):
        hash_split(_Ids(ids), 1.5)


# ------------------------------------------------------------------------------ planted superposition
# Six concepts written into three non-negative channels: each channel responds to several concepts
# (known concept counts), while each concept is one direction, which a k=1 dictionary can isolate.
DIRS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                     [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
DIRS = DIRS / DIRS.norm(dim=1, keepdim=True)
N_CONCEPTS = len(DIRS)


class PlantedNet(nn.Module):
    """Reads the concept from pixel (0, 0, 0) and writes ``amplitude * DIRS[concept]`` at every position."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Identity()

    def forward(self, x):
        concept = (x[:, 0, 0, 0] * N_CONCEPTS).floor().long().clamp(0, N_CONCEPTS - 1)
        amp = x[:, 1:2]                                              # N x 1 x H x W, in [0.5, 1]
        return self.act(DIRS[concept][:, :, None, None] * amp)


class PlantedData:
    classes = [f"c{i}" for i in range(N_CONCEPTS)]

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def image_id(self, i):
        return str(i)

    def spec(self):
        return {"kind": "planted", "n": self.n, "seed": self.seed}

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + i)
        label = i % N_CONCEPTS
        img = torch.zeros(3, 4, 4)
        img[0] = (label + 0.5) / N_CONCEPTS
        img[1] = 0.5 + 0.5 * torch.rand(4, 4, generator=gen)
        return img, label


def planted_model() -> VisionModel:
    return VisionModel(PlantedNet(), name="planted", layers=[LayerInfo("act", "act", 3)], input_size=4)


def expected_channel_concepts() -> list[int]:
    # mean image-level activation of channel c on concept l is DIRS[l, c] * E[max amplitude]
    d = DIRS.T
    return ((d >= 0.5 * d.amax(1, keepdim=True)) & (d > 0)).sum(1).tolist()


@pytest.fixture(scope="module")
def planted():
    return evaluate_split(planted_model(), PlantedData(300, 1), eval_data=PlantedData(300, 2), expansion=4,
                          ks=(1,), seeds=(0, 1), per_image=8, top=16, sae_steps=300)


def test_planted_channels_score_their_known_concept_counts(planted):
    # channel 0 carries concepts 0, 3, 5 at weights 1, 1/sqrt2, 1/sqrt2: three concepts, and so on
    assert planted.channels.concept_count == expected_channel_concepts() == [3, 3, 3]
    assert planted.channels.monosemantic == 0.0


def test_planted_sae_recovers_monosemantic_features_and_beats_random(planted):
    sae = planted.figures("sae", 1)
    rnd = planted.figures("random", 1)
    km = planted.figures("kmeans")
    assert sae["monosemantic"].mean == 1.0 and km["monosemantic"].mean == 1.0
    assert sae["concept_count"].mean == 1.0
    assert sae["fvu"].mean < 0.05 and km["fvu"].mean < 0.05
    assert rnd["fvu"].mean > 5 * sae["fvu"].mean
    assert rnd["concept_count"].mean > sae["concept_count"].mean
    # every true direction is some scored feature's concept (the SAE found all six)
    for run in planted.runs_of("sae"):
        found = {run.concept[u] for u in run.monosemantic_units()}
        assert found == set(range(N_CONCEPTS))
    assert all(r.l0 == pytest.approx(1.0) for r in planted.runs_of("sae"))


def test_rare_units_are_not_scored(planted):
    for run in planted.runs:
        fires = np.asarray(run.fires)
        assert run.n_rare == int(((fires > 0) & (fires < 16)).sum())
        assert int(run.scored.sum()) + run.n_rare + run.n_silent == len(fires)
        mono = run.monosemantic_units()
        assert all(fires[u] >= 16 for u in mono)


def test_table_and_json_hold_every_group(planted):
    text = planted.table()
    for name in ("channels", "SAE features", "k-means", "random TopK"):
        assert name in text
    d = planted.to_dict()
    assert set(d["summary"]) == {"sae_k1", "kmeans", "random_k1"}
    assert len(d["summary"]["sae_k1"]["fvu"]["values"]) == 2


def test_bad_settings_fail_before_work():
    with pytest.raises(BadInputError, match="eval_seed"):
        evaluate_split(planted_model(), "procedural", eval_seed=1, data_seed=1)
    with pytest.raises(BadInputError, match="baseline"):
        evaluate_split(planted_model(), PlantedData(10, 1), baselines=("pca",))


@pytest.mark.slow
def test_evidence_is_saved_and_reused_only_for_the_same_settings(tmp_path):
    from circuitsviz.evaluate import evidence

    said = []
    kw = dict(out=tmp_path, ks=(1,), seeds=(0,), per_image=4, top=8, sae_steps=50, expansion=2, log=said.append)
    first = evidence(planted_model(), PlantedData(200, 1), **kw)     # a folder-like set: hash split
    assert (tmp_path / "evidence.json").is_file() and first.recovery == []   # FV needs the demo model
    assert first.evaluation["n_train_images"] + first.evaluation["n_eval_images"] == 200
    again = evidence(planted_model(), PlantedData(200, 1), **kw)
    assert said[-1] == "held-out evaluation: done already" and again.table == first.table
    evidence(planted_model(), PlantedData(200, 1), **{**kw, "top": 4})
    assert said[-1] != "held-out evaluation: done already"


def test_dead_fraction_target_is_met_by_beating_or_tying_at_zero():
    from circuitsviz.evaluate.protocol import _better

    assert _better("dead_fraction", 0.0, 0.0)          # none dead on both sides: the floor, matched
    assert _better("dead_fraction", 0.01, 0.02)
    assert not _better("dead_fraction", 0.02, 0.02)    # a tie above zero is no win
    assert not _better("dead_fraction", 0.021, 0.0)
    assert not _better("fvu", 0.0, 0.0)                # only the dead fraction has a floor to tie at


def test_judge_view_shows_the_centre_crop_resized_to_the_judges_input():
    from circuitsviz.evaluate.fv import judge_view

    img = torch.zeros(1, 3, 8, 8)
    img[..., 2:6, 2:6] = 1.0                         # a white centre square on a black border
    img[0, 0, 2, 2] = 0.5                             # one marked pixel: the crop's top-left corner
    centre = judge_view(img, 4, 0.5)                  # the centre 4 x 4, already the judge's size
    assert centre.shape == (1, 3, 4, 4)
    torch.testing.assert_close(centre, img[..., 2:6, 2:6])
    whole = judge_view(img, 16)                       # no crop: only resized
    assert whole.shape == (1, 3, 16, 16) and float(whole[..., 0, 0].max()) == 0.0
    assert judge_view(img, 8) is img                  # nothing to do


def test_fv_recovery_labels_a_unit_by_the_judges_mean_probability_over_its_renders():
    # The planted net's "judge" reads only its own output: the label is the argmax of the mean of
    # each render's softmax, computed here by hand from the same renders.
    from circuitsviz.evaluate import Target, fv_recovery
    from circuitsviz.evaluate.fv import judge_probabilities, judge_view
    from circuitsviz.optvis import objective, visualize

    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = nn.Identity()

        def forward(self, x):
            return self.logits(x.mean((2, 3)))                         # 3 "logits": the colour means

    judge = VisionModel(Pool(), name="pool", layers=[LayerInfo("logits", "logits", 3)], input_size=8)
    targets = [Target(f"t{c}", objective(lambda a, c=c: a["logits"][:, c], layers=["logits"]), c) for c in range(3)]
    kw = dict(steps=3, size=8, transforms=None, seed=5, lr=0.01)
    rec = fv_recovery(judge, targets, judge=judge, images_per_unit=3, judge_crop=0.5, **kw)
    renders = visualize(judge, [t.objective for t in targets], images_per_unit=3, progress=False, **kw)
    images = torch.stack([torch.from_numpy(r.image.copy()).permute(2, 0, 1) for r in renders]).float() / 255
    mean = judge_probabilities(judge, judge_view(images, 8, 0.5)).reshape(3, 3, 3).mean(1)
    assert [r["judged"] for r in rec.rows] == mean.argmax(1).tolist()
    assert [r["confidence"] for r in rec.rows] == pytest.approx(mean.max(1).values.tolist())
    assert rec.settings["images_per_unit"] == 3 and rec.settings["judge_crop"] == 0.5


def test_evidence_summary_averages_feature_recovery_over_the_sae_seeds():
    from circuitsviz.evaluate import Evidence

    def rec(kind, hits):
        return {"kind": kind, "rows": [{"hit": h} for h in hits], "recovery": float(np.mean(hits)), "fires": None}

    ev = Evidence({}, {}, "table", [rec("SAE features, seed 0", [1, 0]), rec("SAE features, seed 1", [1, 1, 1, 0]),
                                    rec("SAE features, seed 2", [1, 1]), rec("class logits", [0, 0, 1])])
    half = 4.302653 * 0.25 / math.sqrt(3)            # values 0.5, 0.75, 1.0: sd 0.25, t(0.975, 2)
    assert f"SAE features over 3 SAE seeds: 75.0% ± {100 * half:.1f}%" in ev.summary()
    assert "class logits: 1/3 = 33%" in ev.summary()
