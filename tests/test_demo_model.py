"""The bundled demo model: architecture, zoo entry, shipped weights and their record, training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from circuitsviz.data.procedural import CONCEPTS, ConceptDataset
from circuitsviz.demo.model import MIXED, SUPERPOSITION_LAYER, WEIGHTS_FILE
from circuitsviz.demo.train import FIRING_FLOOR, HELDOUT_SEED, build_model, channel_profile, evaluate, train
from circuitsviz.models import load_model
from circuitsviz.models.weights import default_weights_dir, sha256_of

WEIGHTS = default_weights_dir() / WEIGHTS_FILE
RECORD = WEIGHTS.with_name(WEIGHTS.name + ".json")
shipped = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"{WEIGHTS} not present")


@pytest.fixture(autouse=True)
def one_thread():
    # On a busy shared CPU, two intra-op threads run these small convs about 10x slower than one
    # (threads wait on each other); the setting is restored after each test.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained():
    return load_model("demo")


@pytest.fixture(scope="module")
def record():
    return json.loads(RECORD.read_text())


def test_mixed_layers_concatenate_branches_in_1x1_3x3_5x5_pool_order():
    model = build_model(seed=0)
    x = torch.rand(2, 3, 64, 64)
    for name in MIXED:
        info = model.layer(name)
        assert [b.name for b in info.branches] == ["1x1", "3x3", "5x5", "pool_reduce"]
        acts = model.activations(x, [name] + [f"{name}_{b.name}" for b in info.branches])
        assert acts[name].shape[1] == info.channels == info.branches[-1].stop
        for b in info.branches:
            assert torch.equal(acts[name][:, b.start:b.stop], acts[f"{name}_{b.name}"])


def test_pre_relu_layers_are_the_relu_inputs():
    model = build_model(seed=1)
    x = torch.rand(2, 3, 64, 64)
    for name in ("conv2d2", "mixed3a", SUPERPOSITION_LAYER):
        acts = model.activations(x, [name, f"{name}_pre_relu"])
        assert torch.equal(acts[name], acts[f"{name}_pre_relu"].clamp(min=0))
        assert (acts[f"{name}_pre_relu"] < 0).any()


def test_layer_table_widths_match_the_network():
    model = build_model(seed=0)
    shapes = model.layer_shapes()
    for name in model.layer_names:
        if model.layer(name).channels is not None:
            assert shapes[name][0] == model.layer(name).channels, name
    assert shapes[SUPERPOSITION_LAYER] == (8, 8, 8)


def test_superposition_layer_is_narrower_than_the_concepts_and_sees_a_whole_object():
    model = build_model(seed=0)
    assert model.channels(SUPERPOSITION_LAYER) < len(CONCEPTS)
    # Receptive field of the centre position, measured by gradient: it must span the largest
    # object (radius 0.36 * 64 px, so about 46 px across) in both directions.
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    act = model.activations(x, SUPERPOSITION_LAYER, grad=True, check=False)[SUPERPOSITION_LAYER]
    act[0, :, 4, 4].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero(), seen.any(0).nonzero()
    assert rows.max() - rows.min() + 1 >= 46 and cols.max() - cols.min() + 1 >= 46


def test_init_and_training_are_seeded_and_leave_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a, _ = train(steps=3, seed=3, batch_size=16, pool=32)
    b, _ = train(steps=3, seed=3, batch_size=16, pool=32)
    c = build_model(seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv2d0_pre_relu_conv.weight"], c.net.state_dict()["conv2d0_pre_relu_conv.weight"])


def test_short_training_run_lowers_the_loss_from_chance():
    _, metrics = train(steps=80, seed=1, batch_size=32, pool=640, lr=1e-2, log_every=1)
    first, last = sum(metrics.losses[:5]) / 5, sum(metrics.losses[-5:]) / 5
    assert abs(first - math.log(len(CONCEPTS))) < 0.05  # near-zero initial logits: chance level
    assert last < first - 0.25, (first, last)


def test_training_refuses_the_heldout_seed():
    from circuitsviz.errors import BadInputError

    with pytest.raises(BadInputError, match=str(HELDOUT_SEED)):
        train(steps=1, seed=HELDOUT_SEED)


def test_channel_profile_counts_concepts_of_a_planted_channel():
    # Plant a network whose one output channel is 1 on images of labels {0, 1, 2} and 0.2 on others,
    # by faking activations: concept count is then 3, firing rate 1.
    class Planted:
        def activations(self, images, layer):
            labels = images[:, 0, 0, 0].round().long()
            values = torch.where(labels < 3, 1.0, 0.2)
            return {layer: values.view(-1, 1, 1, 1).expand(-1, 1, 2, 2)}

    class Data(torch.utils.data.Dataset):
        classes = [str(k) for k in range(6)]

        def __len__(self):
            return 60

        def __getitem__(self, i):
            return torch.full((3, 4, 4), float(i % 6)), i % 6

    profile = channel_profile(Planted(), Data(), layer="x")
    assert profile.concept_counts == [3] and profile.firing == [1.0] and profile.dead == []


@shipped
def test_shipped_json_matches_the_shipped_weights_file(record):
    assert record["sha256"] == sha256_of(WEIGHTS) and record["size"] == WEIGHTS.stat().st_size
    assert record["size"] <= 5 * 1024 * 1024
    assert record["model"] == "demo" and record["architecture"]["classes"] == CONCEPTS
    for key in ("seed", "dataset_version", "trainer_version", "heldout"):
        assert key in record
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(state) == set(build_model().net.state_dict())


@shipped
def test_zoo_demo_loads_the_shipped_weights_with_labels_and_default_layer(trained):
    assert trained.weights_sha256 == sha256_of(WEIGHTS)
    assert trained.labels == CONCEPTS and trained.input_size == 64
    assert trained.default_layer == SUPERPOSITION_LAYER and not trained.training


@shipped
def test_shipped_weights_reproduce_recorded_accuracy_on_a_fresh_heldout_sample(trained, record):
    # Same size as the recorded sample, another seed. With n = 5000 and accuracy near 0.97, each
    # estimate has a standard error of about 0.25 points, their difference about 0.35: a 1-point
    # tolerance is about 3 standard errors.
    n = record["heldout"]["dataset"]["n"]
    assert n >= 5000
    fresh = ConceptDataset(n=n, seed=HELDOUT_SEED + 1, size=64)
    assert abs(evaluate(trained, fresh) - record["heldout"]["accuracy"]) <= 0.01


@shipped
def test_shipped_superposition_layer_has_no_dead_channel_and_is_polysemantic(trained, record):
    profile = channel_profile(trained, ConceptDataset(n=50 * len(CONCEPTS), seed=HELDOUT_SEED + 2))
    assert len(profile.firing) < len(CONCEPTS)
    assert min(profile.firing) >= FIRING_FLOOR, profile.firing
    assert profile.mean_concept_count >= 3, profile.concept_counts
    assert record["superposition"]["dead"] == []
