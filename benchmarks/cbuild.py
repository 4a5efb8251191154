"""The benchmarks' C references, compiled on the host: static, so that the same binary also
runs inside the agent image when mounted read-only into a container; and the wait for a
container of theirs (or the server agent beside them) to say it is up."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

C_DIR = Path(__file__).parent


def compile_static(source: str, workdir: Path) -> Path | None:
    """``source`` (relative to benchmarks/, e.g. "c/connect_loop.c") built into ``workdir``,
    both readable by a container's user; None without a C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        return None
    binary = workdir / Path(source).stem
    subprocess.run([cc, "-O2", "-static", "-o", str(binary), str(C_DIR / source)], check=True)
    workdir.chmod(0o755)
    binary.chmod(0o755)
    return binary


def require(binary: Path | None, bench: str) -> Path:
    if binary is None:
        raise SystemExit(f"{bench}: needs a C compiler on the host (apt-get install gcc)")
    return binary


def wait_logged(container, marker: bytes, seconds: float, what: str) -> None:
    """Return once ``container``'s output holds ``marker``; exit naming ``what`` (and the
    output's tail) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while marker not in container.logs():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start: {container.logs()[-500:]!r}")
        time.sleep(0.05)
