import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    """../shared/data beside the repository (or $RESTORE_SHARED_DATA), or None when absent."""
    env = os.environ.get("RESTORE_SHARED_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one intra-op thread (restored afterwards): the tiny networks and tensors of the tests
    gain nothing from a second thread and lose several-fold when the other core is busy. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared():
    path = shared_data()
    if path is None:
        pytest.skip("../shared/data is not present (a user's clone has none)")
    return path
