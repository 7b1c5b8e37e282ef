import pytest
import torch

from sparsecore.bench import load_task

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """A small slice of sklearn digits (fast enough for unit tests)."""
    return load_task("digits").subset(num_train=256, num_test=128)
