"""Quarto's numbering and cross-references, for the fallback renderer (render.py).

What the .qmd uses, read the way Quarto reads it:

    ## The question {#sec-question}     a numbered section ("1 The question") with its id;
                                          ``{.unnumbered}`` or ``{-}`` leaves it unnumbered
    #| label: fig-ports                   a code cell whose output is a figure: numbered,
    #| fig-cap: "..."                     captioned ("Figure 2: ...") and, with fig-alt,
    #| fig-alt: "..."                     described for readers who cannot see the chart
    @sec-question, @fig-ports             "Section 1", "Figure 2" as links; @Sec-… capitalised
                                          the same; [-@sec-question] the number alone

Sections are numbered when ``number-sections`` is true (front matter, or format.html in
_quarto.yml). A reference to a label the document lacks is shown as Quarto shows it
(``?@sec-x``) and reported.
"""

from __future__ import annotations

import html
import re
import sys
from dataclasses import dataclass, field

_HEADING = re.compile(r"^(?P<hashes>#{1,6})[ \t]+(?P<text>.*?)"
                      r"(?:[ \t]*\{(?P<attrs>[^}]*)\})?[ \t]*$")
_FENCE = re.compile(r"^(`{3,}|~{3,})")
_REF = re.compile(r"\[-@(?P<bare>(?:sec|fig)-[\w-]*\w)\]"
                  r"|(?<![\w@\[\\])@(?P<kind>[Ss]ec|[Ff]ig)-(?P<name>[\w-]*\w)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
NAMES = {"sec": "Section", "fig": "Figure"}


@dataclass
class Numbers:
    """What the first pass found: each label's number, in document order."""

    sections: dict[str, str] = field(default_factory=dict)  # sec-x -> "4" or "4.1"
    figures: dict[str, int] = field(default_factory=dict)   # fig-x -> 2
    missing: list[str] = field(default_factory=list)

    def label(self, ref: str) -> str | None:
        kind = ref.split("-", 1)[0]
        number = (self.sections if kind == "sec" else self.figures).get(ref)
        return None if number is None else str(number)


def _markdown_lines(source: str):
    """(index, line, inside a fenced block) for each line of a Markdown cell."""
    fence = None
    for i, line in enumerate(source.split("\n")):
        m = _FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            yield i, line, True
        elif fence is not None:
            if line.strip() == fence[0] * len(line.strip()) and len(line.strip()) >= len(fence):
                fence = None
            yield i, line, True
        else:
            yield i, line, False


def _attrs(attrs: str | None) -> tuple[str | None, bool]:
    """``#sec-x .unnumbered`` -> ("sec-x", numbered?)."""
    words = (attrs or "").split()
    ident = next((w[1:] for w in words if w.startswith("#")), None)
    return ident, not ({".unnumbered", "-"} & set(words))


def number_notebook(nb, *, number_sections: bool) -> Numbers:
    """Number the notebook's sections and figures and resolve every cross-reference, in
    place: headings get their number and a marker for their id (``heading_ids`` sets it in
    the exported page), figure cells ``metadata.tcplimits.figure``, references become
    links."""
    numbers = Numbers()
    levels = [int(len(m["hashes"])) for cell in nb.cells if cell.cell_type == "markdown"
              for _, line, fenced in _markdown_lines(cell.source)
              if not fenced and (m := _HEADING.match(line))]
    top = min(levels, default=2)
    counters = [0] * 7
    headings = []  # (cell, line index, level, text, id, number)
    for cell in nb.cells:
        if cell.cell_type == "code":
            options = cell.metadata.get("quarto", {})
            label = str(options.get("label") or "")
            if label.startswith("fig-") or options.get("fig-cap"):
                n = len(numbers.figures) + 1
                numbers.figures[label or f"fig-{n}"] = n
                cell.metadata["tcplimits"] = {"figure": {
                    "id": label or None, "number": n,
                    "caption": str(options.get("fig-cap") or ""),
                    "alt": str(options.get("fig-alt") or "")}}
            continue
        if cell.cell_type != "markdown":
            continue
        for i, line, fenced in _markdown_lines(cell.source):
            m = None if fenced else _HEADING.match(line)
            if not m:
                continue
            level = len(m["hashes"])
            ident, numbered = _attrs(m["attrs"])
            number = None
            if number_sections and numbered and level >= top:
                depth = level - top
                counters[depth] += 1
                counters[depth + 1:] = [0] * (len(counters) - depth - 1)
                number = ".".join(str(c) for c in counters[:depth + 1])
            if ident:
                numbers.sections[ident] = number or m["text"]
            headings.append((cell, i, m["hashes"], m["text"], ident, number))
    for cell, i, hashes, text, ident, number in headings:
        lines = cell.source.split("\n")
        head = f'<span class="header-section-number">{number}</span> ' if number else ""
        mark = f'<span data-sec="{html.escape(ident)}"></span>' if ident else ""
        lines[i] = f"{hashes} {head}{text}{mark}"
        cell.source = "\n".join(lines)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = resolve(cell.source, numbers)
    for ref in numbers.missing:
        print(f"tcplimits report: warning: no label {ref!r} for its cross-reference",
              file=sys.stderr)
    return numbers


def resolve(source: str, numbers: Numbers) -> str:
    """``@sec-x`` / ``@fig-x`` / ``[-@sec-x]`` -> Markdown links, outside code."""
    def link(m: re.Match) -> str:
        if m["bare"]:
            ref, word = m["bare"], ""
        else:
            kind = m["kind"]
            ref = f"{kind.lower()}-{m['name']}"
            word = NAMES[kind.lower()] + " "
        number = numbers.label(ref)
        if number is None:
            numbers.missing.append(ref)
            return f"?@{ref}"
        return f"[{word}{number}](#{ref})"

    out = []
    for _, line, fenced in _markdown_lines(source):
        if fenced:
            out.append(line)
            continue
        parts, last = [], 0
        for span in _CODE_SPAN.finditer(line):
            parts.append(_REF.sub(link, line[last:span.start()]))
            parts.append(span.group(0))
            last = span.end()
        parts.append(_REF.sub(link, line[last:]))
        out.append("".join(parts))
    return "\n".join(out)


def resolve_outputs(nb) -> None:
    """Cross-references in the executed cells' Markdown output (Quarto passes that through
    its Markdown reader too): "(@sec-churn)" in a finding reads "(Section 13)" either way.
    The numbers are those ``number_notebook`` left in the notebook's metadata."""
    meta = nb.metadata.get("tcplimits", {})
    numbers = Numbers(dict(meta.get("sections", {})), dict(meta.get("figures", {})))
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/markdown" in data:
                data["text/markdown"] = resolve(data["text/markdown"], numbers)
    for ref in numbers.missing:
        print(f"tcplimits report: warning: no label {ref!r} for its cross-reference",
              file=sys.stderr)


_MARKED = re.compile(r'<h([1-6]) id="([^"]+)">(.*?)<span data-sec="([^"]+)"></span>(.*?)'
                     r'<a class="anchor-link" href="#\2">', re.S)


def heading_ids(page: str) -> str:
    """The exported page with each marked heading's id (and its anchor link) set to the
    label the .qmd gave it, as Quarto's page has it."""
    return _MARKED.sub(lambda m: (f'<h{m[1]} id="{m[4]}">{m[3]}{m[5]}'
                                  f'<a class="anchor-link" href="#{m[4]}">'), page)
