import os

import pytest
import torch

from sparsecore.bench import load_task

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """A slice of sklearn digits (fast enough for unit tests)."""
    return load_task("digits").subset(num_train=128, num_test=128)
