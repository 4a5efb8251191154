"""Text from containers, run.json and the engine, made safe to print on a terminal.

An agent's error message, a container's last output or a hand-edited run.json reaches the
terminal through a run's ``reason``: an escape sequence in it could move the cursor, rewrite
what was printed, set the window title or, on some terminals, answer back as typed input.
"""

from __future__ import annotations

import re

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), any other ESC pair, and every C0 and C1
# control character but tab and newline (C1 0x9b is an 8-bit CSI).
_CONTROL = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
                      r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
                      r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` with escape sequences and control characters (but tab and newline) removed."""
    return _CONTROL.sub("", str(text))
