"""The host's apt sources: where the Debian archive is, for building a Debian base image
where no container registry can be reached. Reads one-line `.list` files and deb822
`.sources` files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")


class NoDebianArchive(LookupError):
    """The apt sources name no Debian archive to debootstrap from."""


_PLAIN_SUITE = re.compile(r"[a-z][a-z0-9]*")
_MIRROR_SCHEMES = ("http://", "https://", "file:/")


def mirror_from_apt_sources(paths: Iterable[Path | str] | None = None,
                            codename: str | None = None) -> tuple[str, str]:
    """(mirror URI, suite) of the main Debian archive in the apt sources.

    Reads one-line `.list` files and deb822 `.sources` files (default: the host's). The
    main archive is a `deb` entry whose suite is a plain codename such as `bookworm`, not
    `bookworm-security` or `bookworm-updates`. Preferred: one with the `main` component
    (Debian's; a standard Docker-on-Debian install lists Docker's own repository, component
    `stable`, with the same suite), then one whose suite is `codename`.
    """
    if paths is None:
        paths = [APT_SOURCES, *sorted(APT_SOURCES_DIR.glob("*.list")),
                 *sorted(APT_SOURCES_DIR.glob("*.sources"))]
    paths = [Path(p) for p in paths]
    candidates: list[tuple[str, str, list[str]]] = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        entries = _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
        for uri, suite, components in entries:
            if _PLAIN_SUITE.fullmatch(suite) and uri.startswith(_MIRROR_SCHEMES):
                candidates.append((uri, suite, components))
    if not candidates:
        shown = ", ".join(str(p) for p in paths) or "no files"
        raise NoDebianArchive(f"no Debian archive entry (a `deb` line with a plain codename "
                              f"suite) in the apt sources ({shown})")
    # sorted() is stable: among equals, the sources' own order decides.
    uri, suite, _ = sorted(candidates, key=lambda c: ("main" not in c[2], c[1] != codename))[0]
    return uri, suite


def _one_line_entries(text: str) -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of each `deb` line: `deb [options] uri suite components...`."""
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        rest = words[1:]
        if rest[0].startswith("["):
            # Options may contain spaces: skip up to the word that closes the bracket.
            while rest and not rest[0].endswith("]"):
                rest = rest[1:]
            rest = rest[1:]
        if len(rest) >= 2:
            entries.append((rest[0], rest[1], rest[2:]))
    return entries


def _deb822_entries(text: str) -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) for each URI and suite of each enabled `deb` stanza."""
    entries = []
    for stanza in _deb822_stanzas(text):
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in stanza.get("types", "").split():
            continue
        for uri in stanza.get("uris", "").split():
            components = stanza.get("components", "").split()
            entries.extend((uri, suite, components)
                           for suite in stanza.get("suites", "").split())
    return entries


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue  # comments may sit inside a stanza without ending it
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                current[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def host_codename() -> str | None:
    """VERSION_CODENAME from /etc/os-release, to prefer the host's own suite."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return None
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", text, re.MULTILINE)
    return (match.group(1) or None) if match else None
