"""Quarto's numbered sections, figures and cross-references, as the fallback renderer reads them."""

from __future__ import annotations

import nbformat

from tcplimits.report import crossref, render


def _notebook(text: str, number_sections: bool = True):
    return render.qmd_to_notebook(text, project={"format": {"html": {
        "number-sections": number_sections}}})


def _markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_sections_are_numbered_by_level_and_unnumbered_ones_skipped():
    nb = _notebook("## A {#sec-a}\n\n### A.1 {#sec-a1}\n\n## Notes {.unnumbered}\n\n"
                   "## B {#sec-b}\n\n### B.1\n\nsee @sec-a1, @Sec-b and [-@sec-b]\n")
    text = _markdown(nb)
    assert '## <span class="header-section-number">1</span> A<span data-sec="sec-a">' in text
    assert '### <span class="header-section-number">1.1</span> A.1' in text
    assert "## Notes\n" in text
    assert '## <span class="header-section-number">2</span> B' in text
    assert '### <span class="header-section-number">2.1</span> B.1' in text
    assert "see [Section 1.1](#sec-a1), [Section 2](#sec-b) and [2](#sec-b)" in text


def test_without_number_sections_a_reference_names_the_title():
    nb = _notebook("## The end {#sec-end}\n\nsee @sec-end.\n", number_sections=False)
    text = _markdown(nb)
    assert "header-section-number" not in text
    assert "see [Section The end](#sec-end)." in text


def test_references_in_code_and_fences_and_addresses_stay_text():
    nb = _notebook("## A {#sec-a}\n\n`@sec-a` and me@sec-a.org and \\@sec-a\n\n"
                   "```bash\necho @sec-a\n```\n")
    text = _markdown(nb)
    assert "`@sec-a`" in text and "me@sec-a.org" in text and "echo @sec-a" in text
    assert "\\@sec-a" in text  # escaped (data shown in Markdown, render.md_escape)


def test_a_missing_label_reads_as_quarto_shows_it(capsys):
    nb = _notebook("see @sec-nowhere.\n")
    assert "see ?@sec-nowhere." in _markdown(nb)
    assert "sec-nowhere" in capsys.readouterr().err


def test_figures_are_numbered_in_order_and_cells_carry_caption_and_alt():
    nb = _notebook("```{python}\n#| label: fig-one\n#| fig-cap: First\nx = 1\n```\n\n"
                   "```{python}\nno_figure = 1\n```\n\n"
                   "```{python}\n#| label: fig-two\n#| fig-cap: Second\n#| fig-alt: Dots\n"
                   "y = 2\n```\n\nsee @fig-two\n")
    figures = [c.metadata.get("tcplimits", {}).get("figure") for c in nb.cells
               if c.cell_type == "code"]
    assert figures == [{"id": "fig-one", "number": 1, "caption": "First", "alt": ""}, None,
                       {"id": "fig-two", "number": 2, "caption": "Second", "alt": "Dots"}]
    assert "see [Figure 2](#fig-two)" in _markdown(nb)


def test_references_in_markdown_output_are_resolved_after_execution():
    nb = _notebook("## A {#sec-a}\n")
    nb.cells.append(nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/markdown": "as @sec-a says"})]))
    crossref.resolve_outputs(nb)
    assert nb.cells[-1].outputs[0]["data"]["text/markdown"] == "as [Section 1](#sec-a) says"


def test_heading_ids_take_the_label():
    page = ('<h2 id="1-A"><span class="header-section-number">1</span> A'
            '<span data-sec="sec-a"></span><a class="anchor-link" href="#1-A">#</a></h2>')
    assert crossref.heading_ids(page) == (
        '<h2 id="sec-a"><span class="header-section-number">1</span> A'
        '<a class="anchor-link" href="#sec-a">#</a></h2>')
