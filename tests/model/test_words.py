"""The plural rule of the model's sentences."""

import pytest

from tcplimits import model


@pytest.mark.parametrize("count, word, want", [
    (1, "port", "1 port"), (0, "port", "0 ports"), (2, "port", "2 ports"),
    (1000, "point", "1,000 points"), (1, "client process", "1 client process"),
    (3, "client process", "3 client processes"), (2, "SYN", "2 SYNs")])
def test_plural(count, word, want):
    assert model.plural(count, word) == want
