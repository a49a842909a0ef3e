import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

# ../shared/datasets next to the repository: present for developers and CI, never for users.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "summary.json").exists():
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS
