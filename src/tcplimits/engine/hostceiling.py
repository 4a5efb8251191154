"""`tcplimits ceiling` (issue 22): the host's ceiling per network mode, read here and now (the
arithmetic is tcplimits.model.ceiling's), as a table or as JSON; `tcplimits probe` shows the
same figures under "ceiling"."""

from __future__ import annotations

from typing import Any, Mapping

from tcplimits.config.params import NETWORKS
from tcplimits.model import ceiling as model, hostlimits


def ceilings(facts: Mapping[str, Any], nofile_cap: int) -> dict[str, model.Ceiling]:
    """Each network mode's ceiling on a host with these facts (footprint.host_facts)."""
    return {network: model.ceiling(network, facts, nofile_cap)
            for network in sorted(NETWORKS, key=lambda n: n != "loopback")}


def as_json(found: Mapping[str, model.Ceiling]) -> dict[str, Any]:
    return {network: c.to_dict() for network, c in found.items()}


def _limit(bound: model.Bound) -> str:
    value = "?" if bound.value is None else (f"{bound.value / 2**30:.1f} GiB"
                                            if bound.name == "MemAvailable"
                                            else f"{bound.value:,}")
    name = bound.name.removeprefix("net.netfilter.")
    return f"{name} {value}" + (f" ({bound.errno})" if bound.errno else "")


def table(found: Mapping[str, model.Ceiling], nofile_cap: int) -> str:
    """The ceilings as a readable table, then the command that raises each binding limit
    and the flags that run the ceiling."""
    rows = [("mode", "most connections", "binding limit", "next limit", "margin", "layout")]
    for network, c in found.items():
        lay = c.layout
        rows.append((network, f"{c.connections:,}", _limit(c.binding),
                     _limit(c.next) if c.next else "-",
                     f"+{c.margin:,}" if c.margin is not None else "-",
                     f"{lay['clients']} x {lay['procs']} client processes, "
                     f"{lay['server_workers']} server workers"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i == 1 else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.append(f"(both ends on this host; every process at the engine's nofile cap of "
                 f"{nofile_cap:,}; kept free for the rest of the host: "
                 f"{hostlimits.MEMORY_HEADROOM:.0%} of MemAvailable, "
                 f"{model.FILE_MAX_HEADROOM:.0%} of fs.file-max)")
    lines.append("to raise the binding limit (tcplimits never changes a host setting):")
    lines += [f"  {network}: {c.binding.raise_with}" for network, c in found.items()]
    lines.append("to hold it: tcplimits run --connections ceiling with the layout above, e.g.")
    for network, c in found.items():
        lay = c.layout
        lines.append(f"  tcplimits run --network {network} --connections ceiling --clients "
                     f"{lay['clients']} --procs {lay['procs']} --nofile {lay['nofile']} "
                     f"--port-range {model.PORT_RANGE} --out results/runs/ceiling-{network}")
    return "\n".join(lines)


def summary_line(record: Mapping[str, Any]) -> str | None:
    """`tcplimits run`'s line for a run asked for a total or the host's ceiling (run.json's
    "ceiling" block), or None."""
    res = record.get("ceiling")
    if not res:
        return None
    pred = res.get("predicted") or {}
    binding, nxt = pred.get("binding") or {}, pred.get("next")
    text = (f"connections: {res['asked']} resolved here to {res['connections']:,}"
            + (f", each client process stopping at its share, {res['per_process']:,}"
               if res.get("held_by") == "share" else ", ended by the limit itself"))
    if binding:
        text += f"; the ceiling's binding limit: {binding['name']}"
    if nxt:
        text += f", the next: {nxt['name']} at {nxt['connections']:,} ({pred['margin']:+,})"
    return text
