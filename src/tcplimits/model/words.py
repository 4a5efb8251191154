"""How the model's sentences spell a count: the one plural rule of the project's prose."""

from __future__ import annotations


def plural(count: int, word: str) -> str:
    """``count`` with ``word``, plural unless the count is 1, the count with thousands
    separators: "1 port", "2 ports", "1,000 ports"; a word ending in s takes "es"
    ("2 client processes")."""
    if count == 1:
        return f"{count:,} {word}"
    return f"{count:,} {word}{'es' if word.endswith('s') else 's'}"
