"""Feature circuits on the planted polysemantic channel of the SAE tests.

``mix`` channel 0 = red-blob detector (``detect`` 0, family A) + green-vertical-line detector
(``detect`` 1, family B); the B images' dark patch also lights the dark detector (2), and the
gray detector (3) fires on both families' backgrounds. An SAE on ``mix`` splits channel 0 into
single-family features; their circuits must lead back to their family's detectors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from circuitsviz.circuits import ablate, attribute, circuit
from circuitsviz.sae import Sampler, fit_sae, split_channel
from tests.test_sae_groundtruth import PatternDataset, auroc, planted_model

FAMILY_DETECTORS = {"A": {"detect_relu:0"}, "B": {"detect_relu:1", "detect_relu:2"}}
SHARED = "detect_relu:3"  # gray: fires on both families


@pytest.mark.slow
def test_single_family_features_lead_back_to_their_familys_detectors(tmp_path):
    model = planted_model()
    train, test = PatternDataset(240, seed=0), PatternDataset(80, seed=1)   # the split test's setup
    sae = fit_sae(model, train, "mix", expansion=4, k=2, steps=300, batch_size=256,
                  sampler=Sampler("per_image", per_image=64), cache_root=tmp_path, progress=False)
    split = split_channel(sae, 0, data=test, model=model, top=4)
    images = torch.stack([test[i][0] for i in range(len(test))])
    labels = np.array([test[i][1] for i in range(len(test))])
    scores = sae.encode(model.activations(images, "mix")["mix"]).amax(dim=(2, 3)).numpy()
    checked = {"A": 0, "B": 0}
    for f in split.features:
        a_vs_b = auroc(scores[labels == 0, f.feature], scores[labels == 1, f.feature])
        family = "A" if a_vs_b >= 0.95 else "B" if a_vs_b <= 0.05 else None
        if family is None:
            continue
        # Data: on its family's images, its top attributed input is one of that family's detectors.
        own = images[labels == (0 if family == "A" else 1)]
        att = attribute(model, f.unit_id, source="detect_relu", data=own, sae=sae)
        assert att.top(1)[0] in FAMILY_DETECTORS[family], (f.unit_id, family, att.table())
        # Ablating that family's detectors silences the feature on those images.
        cut = ablate(model, f.unit_id, sorted(FAMILY_DETECTORS[family]), data=own, sae=sae)
        assert cut.relative_drop > 0.9, (f.unit_id, family, cut.relative_drop)
        # Weights (encoder composed with the 1x1 conv): where the strongest input is
        # family-specific at all, it is this family's.
        top = circuit(model, f.unit_id, source="detect_relu", sae=sae, top=1).positive[0].unit
        if top != SHARED:
            assert top in FAMILY_DETECTORS[family], (f.unit_id, family, top)
            checked[family] += 1
    assert checked["A"] >= 1 and checked["B"] >= 1, checked     # both families were tested by weight


def test_a_channels_outputs_through_an_sae_are_the_features_that_read_it():
    """Outputs into SAE features: a unit's connection to feature f is the feature's encoder row
    composed with the weights, so a dictionary holding exactly the mix conv's rows reads it back."""
    model = planted_model()
    mix = model.net.mix.weight.detach()[:, :, 0, 0]            # (6 mix channels, 4 detectors)
    from circuitsviz.sae import TopKSAE

    sae = TopKSAE(6, 6, k=6, layer="mix", name="eye")
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(6))
        sae.W_dec.copy_(torch.eye(6))
    for d in range(4):
        out = circuit(model, f"detect_relu:{d}", target="mix/eye", sae=sae, top=6)
        torch.testing.assert_close(out.totals, mix[:, d].double())
        assert {c.unit for c in out.positive} == {f"mix/eye:{t}" for t in range(6) if mix[t, d] > 0}
