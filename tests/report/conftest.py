"""The synthetic dataset (tests/report/fixtures.py) loaded as the report reads it, shared by
the report's tests: full, failed points only, and empty."""

from __future__ import annotations

import pytest

from tests.report.fixtures import synthetic_dataset
from tcplimits.report.data import Data, load


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture(scope="session")
def d(data_dir) -> Data:
    return load(data_dir)


@pytest.fixture(scope="session")
def empty(tmp_path_factory) -> Data:
    return load(synthetic_dataset(tmp_path_factory.mktemp("empty"), "empty"))


@pytest.fixture(scope="session")
def failed_only(tmp_path_factory) -> Data:
    return load(synthetic_dataset(tmp_path_factory.mktemp("failed"), "failed"))
