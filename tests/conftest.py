from __future__ import annotations

import gc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from helpers.corpus import make_corpus

# No deadlines anywhere: a loaded machine makes any example slow, and a slow
# example is not a failure.  Individual tests may still lower max_examples.
settings.register_profile("h5pool", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("h5pool")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what importing the test modules made (torch, moto, lightning...) out
    of the collector's sight.  DataLoader workers collect garbage once (see
    helpers.corpus.open_hdf5_descriptors); over every object of those libraries
    that touched each page of a forked child and cost seconds per worker."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def small_corpus(tmp_path: Path) -> list[str]:
    """Five files of 10 rows each, contiguous float32 data and an int64 label."""
    return make_corpus(tmp_path / "corpus", files=5, rows=10, width=4)


@pytest.fixture
def corpus_50(tmp_path: Path) -> list[str]:
    return make_corpus(tmp_path / "corpus50", files=50, rows=20, width=4)


@pytest.fixture(scope="session")
def corpus_5000(tmp_path_factory: pytest.TempPathFactory) -> str:
    """5,000 small files: more than a 256-descriptor process could hold open."""
    directory = tmp_path_factory.mktemp("corpus5000")
    make_corpus(directory, files=5000, rows=4, width=4)
    return str(directory)
