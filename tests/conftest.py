import pytest
import torch

# The suite's models are small: one intra-op thread avoids the thread start-up and contention
# that make tiny convolutions 10x slower on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def inception():
    """InceptionV1 with random weights (seeded), shared by tests that only read from it."""
    from circuitsviz.models import load_model

    torch.manual_seed(0)
    return load_model("inceptionv1", pretrained=False)
