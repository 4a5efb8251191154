"""What a report cell shows (tcplimits.report.blocks) and how the report words a count."""

from __future__ import annotations

from tcplimits.report.blocks import Blocks, bullets, number, plural


def test_blocks_display_in_order(monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    chart = object()
    blocks = Blocks().md("*a*").html("<b>b</b>").chart(chart)
    blocks._ipython_display_()
    assert [type(x).__name__ for x in shown] == ["Markdown", "HTML", "object"]
    assert shown[0].data == "*a*" and shown[2] is chart
    assert blocks.text() == "*a*\n<b>b</b>" and blocks.kinds() == ["markdown", "html", "chart"]


def test_plural():
    assert plural(1, "point") == "1 point" and plural(2, "point") == "2 points"
    assert plural(0, "point") == "0 points" and plural(28_232, "port") == "28,232 ports"
    assert plural(1, "client process") == "1 client process"
    assert plural(3, "client process") == "3 client processes"


def test_number_and_bullets():
    assert number(1998) == "1,998" and number(1998.0) == "1,998"
    assert number(1998.25) == "1,998.2" and number(0.5) == "0.5"
    assert bullets(["a", "b"]) == "- a\n- b" and bullets([]) == ""
