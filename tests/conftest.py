import os

import pytest
import torch

# The suite runs on a 2-core machine; one intra-op thread per process keeps parallel
# DataLoader workers and subprocess tests from oversubscribing it.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def inception():
    """InceptionV1 with random weights (seeded), shared by tests that only read from it."""
    from circuitsviz.models import load_model

    torch.manual_seed(0)
    return load_model("inceptionv1", pretrained=False)
