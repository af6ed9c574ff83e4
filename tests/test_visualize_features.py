"""SAE features are units in ``visualize``: a feature id renders along the feature's decoder direction."""

import numpy as np
import pytest
import torch

import circuitsviz as cv
from circuitsviz.errors import CircuitsvizError
from circuitsviz.sae import TopKSAE, save_sae


@pytest.fixture(scope="module")
def model():
    return cv.load_model("demo", device="cpu")


def _one_hot_sae(channels: int) -> TopKSAE:
    """A hand-set dictionary whose feature f writes channel f alone."""
    sae = TopKSAE(channels, channels, k=1, layer="mixed3b", name="eye")
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(channels))
    return sae


def test_a_feature_id_renders_its_decoder_direction(model, tmp_path):
    sae = _one_hot_sae(model.channels("mixed3b"))
    kw = dict(size=32, steps=4, progress=False)
    by_id = cv.visualize(model, ["mixed3b/eye:3", "mixed3b:5"], sae=sae, **kw)
    by_hand = cv.visualize(model, cv.direction("mixed3b", sae.decoder_direction(3), name="mixed3b/eye:3"), **kw)
    assert by_id[0].unit == "mixed3b/eye:3" and by_id[1].unit == "mixed3b:5"
    np.testing.assert_array_equal(by_id[0].image, by_hand[0].image)
    # the decoder row is channel 3's axis, so the render is not the same as another feature's
    other = cv.visualize(model, "mixed3b/eye:4", sae=sae, **kw)
    assert not np.array_equal(other[0].image, by_id[0].image)
    # the SAE's directory works as well as the SAE
    from_dir = cv.visualize(model, "mixed3b/eye:3", sae=save_sae(sae, tmp_path / "eye"), **kw)
    np.testing.assert_array_equal(from_dir[0].image, by_id[0].image)


def test_a_feature_without_its_sae_or_with_another_is_a_clear_error(model):
    sae = _one_hot_sae(model.channels("mixed3b"))
    with pytest.raises(CircuitsvizError, match="sae=.*run="):
        cv.visualize(model, "mixed3b/eye:3", size=32, steps=1, progress=False)
    with pytest.raises(CircuitsvizError, match="names SAE mixed3b/other"):
        cv.visualize(model, "mixed3b/other:3", sae=sae, size=32, steps=1, progress=False)
    with pytest.raises(CircuitsvizError, match="fitted SAE or its directory"):
        cv.visualize(model, "mixed3b/eye:3", sae=42, size=32, steps=1, progress=False)
