import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO_ROOT.parent / "shared" / "data" / "oxford-iiit-pet-sample"


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The real Oxford-IIIT Pet slice in ../shared/data (read-only, never copied)."""
    if not SAMPLE_ROOT.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide the real data sample at {SAMPLE_ROOT}")
        pytest.skip(f"real data sample not found at {SAMPLE_ROOT} (it lives in ../shared/data)")
    return SAMPLE_ROOT
