"""The judge classifier, the SAE feature objective, and the FV-recovery plumbing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from circuitsviz.data.procedural import CONCEPTS, ConceptDataset
from circuitsviz.demo.judge import JUDGE_FILE, JUDGE_SEED, judge_labels, judge_record, load_judge
from circuitsviz.demo.train import HELDOUT_SEED
from circuitsviz.errors import BadInputError, WeightsError
from circuitsviz.evaluate import Target, fv_recovery
from circuitsviz.models.weights import default_weights_dir
from circuitsviz.optvis.sae_objectives import sae_feature, topk_margin_value
from circuitsviz.sae.model import TopKSAE

JUDGE = default_weights_dir() / JUDGE_FILE
shipped = pytest.mark.skipif(not JUDGE.is_file(), reason=f"{JUDGE} not present")


@pytest.fixture(scope="module")
def judge():
    return load_judge()


# ------------------------------------------------------------------------------ judge
@shipped
def test_judge_classifies_heldout_procedural_images(judge):
    ds = ConceptDataset(n=130, seed=HELDOUT_SEED)           # 10 of each concept; a seed training never saw
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds.label(i) for i in range(len(ds))])
    pred, conf = judge_labels(judge, images)
    assert float((pred == labels).float().mean()) >= 0.93
    assert conf.min() > 0 and conf.max() <= 1


@shipped
def test_judge_record_and_architecture():
    rec = judge_record()
    assert rec["seed"] == JUDGE_SEED != 0 and rec["train"]["dataset_seed"] != HELDOUT_SEED
    assert rec["heldout"]["dataset"]["seed"] == HELDOUT_SEED and rec["heldout"]["accuracy"] >= 0.95
    assert rec["size"] == JUDGE.stat().st_size < 1_000_000
    assert rec["architecture"]["classes"] == list(CONCEPTS)
    # no bottleneck: every conv is wider than the number of concepts
    assert min(c[0] for c in rec["architecture"]["convs"]) > len(CONCEPTS)


@shipped
def test_judge_refuses_weights_that_do_not_match_the_record(tmp_path):
    shutil.copy(JUDGE.with_name(JUDGE.name + ".json"), tmp_path / f"{JUDGE_FILE}.json")
    state = torch.load(JUDGE, weights_only=True)
    state["logits.bias"] += 1.0
    torch.save(state, tmp_path / JUDGE_FILE)
    with pytest.raises(WeightsError, match="SHA-256"):
        load_judge(tmp_path / JUDGE_FILE)


# ------------------------------------------------------------------------------ SAE feature objective
def test_topk_margin_value_by_hand():
    pre = torch.tensor([3.0, 1.0, 2.0])[None, :, None, None]      # one position, three latents
    assert float(topk_margin_value(pre, 0, 1)) == 3.0                # wins: its pre-activation
    assert float(topk_margin_value(pre, 1, 1)) == 1.0 + (1.0 - 3.0)  # loses to 3: margin added
    assert float(topk_margin_value(pre, 1, 2)) == 1.0 + (1.0 - 2.0)  # k=2: the bar is the 2nd largest other
    assert float(topk_margin_value(pre, 2, 2)) == 2.0


def _hand_sae() -> TopKSAE:
    # Feature 0 decodes along e1 but its encoder reads e1 + e2; feature 1's encoder reads 2 e1.
    sae = TopKSAE(2, 2, k=1, layer="L")
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        sae.W_enc.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        sae.b_enc.zero_(), sae.b_pre.zero_(), sae.scale.fill_(1.0)
    return sae


def _ascend(obj, steps: int = 60) -> torch.Tensor:
    # plain gradient ascent (a torch.optim optimizer would import dynamo: seconds for nothing)
    acts = torch.full((1, 2, 2, 2), 0.1)
    for _ in range(steps):
        acts.requires_grad_(True)
        (grad,) = torch.autograd.grad(obj({"L": acts.clamp(0, 1)}).sum(), acts)
        acts = (acts + 0.2 * grad).detach()
    return acts.clamp(0, 1)


def test_encoder_objective_makes_the_feature_win_its_topk_where_the_decoder_direction_does_not():
    sae = _hand_sae()
    enc = _ascend(sae_feature(sae, 0, mode="encoder"))
    dec = _ascend(sae_feature(sae, 0, mode="decoder"))
    assert bool((sae.encode(enc)[:, 0] > 0).all())                  # x2 > x1 everywhere: feature 0 fires
    assert bool((sae.encode(dec)[:, 0] == 0).all())                 # along e1, feature 1 takes the TopK
    # the objective's value where the feature wins is its pre-activation, x1 + x2
    with torch.no_grad():
        value = sae_feature(sae, 0)({"L": torch.tensor([0.2, 0.9])[None, :, None, None]})
    assert float(value) == pytest.approx(1.1)


def test_sae_feature_checks_its_arguments():
    sae = _hand_sae()
    with pytest.raises(BadInputError, match="mode"):
        sae_feature(sae, 0, mode="cosine")
    with pytest.raises(BadInputError, match="out of range"):
        sae_feature(sae, 5)


# ------------------------------------------------------------------------------ FV recovery plumbing
@shipped
def test_fv_recovery_scores_the_judge_on_its_own_class_logits(judge):
    # Optimising the judge's own logit for a class must make the judge say that class: a known answer
    # for the rendering -> labelling -> scoring path (with other models the answer is the measurement).
    from circuitsviz.optvis import objective

    targets = [Target(f"logit:{c}", objective(lambda a, c=c: a["logits"][:, c], layers=["logits"]), c)
               for c in (CONCEPTS.index("checkerboard"), CONCEPTS.index("grating_vertical"))]
    rec = fv_recovery(judge, targets, judge=judge, steps=48, kind="judge logits", transforms=None)
    assert rec.recovery == 1.0 and [r["hit"] for r in rec.rows] == [True, True]
    assert json.dumps(rec.to_dict())


def test_sae_feature_at_one_position_reads_only_that_position():
    sae = _hand_sae()
    acts = torch.zeros(1, 2, 3, 3)
    acts[0, :, 1, 1] = torch.tensor([0.2, 0.9])                      # the centre: feature 0 wins, value 1.1
    acts[0, :, 0, 0] = torch.tensor([5.0, 0.0])                      # elsewhere: feature 1 wins by far
    with torch.no_grad():
        assert float(sae_feature(sae, 0, at="center")({"L": acts})) == pytest.approx(1.1)
        assert float(sae_feature(sae, 0, at=(0, 0))({"L": acts})) == pytest.approx(5.0 + (5.0 - 10.0))
        assert float(sae_feature(sae, 0, mode="decoder", at="center")({"L": acts})) == pytest.approx(0.2)
