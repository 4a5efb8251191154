"""Fixtures shared by the engine's tests."""

import docker
import pytest


@pytest.fixture(scope="module")
def engine():
    """The Docker engine, answering (the tests that use it are marked docker)."""
    client = docker.from_env()
    client.ping()
    return client
