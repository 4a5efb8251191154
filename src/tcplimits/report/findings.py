"""The face report.qmd (beside this module) calls: ``load`` the dataset, then one function per cell, each
returning the cell's ``Blocks`` (Markdown, HTML and charts in the order the cell shows them).

The work is elsewhere: the dataset and its shared frames in tcplimits.report.data, the
sections in tcplimits.report.sections (one module each, tested under tests/report/sections/).
``sweep_summary`` is the same verdicts for the terminal (`tcplimits report`, the workflow).
"""

from __future__ import annotations

from tcplimits.report.data import Data, load
from tcplimits.report.sections.churn import churn
from tcplimits.report.sections.conclusion import conclusion, sweep_summary
from tcplimits.report.sections.keyfindings import key_findings
from tcplimits.report.sections.reproduce import reproduce
from tcplimits.report.sections.tuning import tuning
from tcplimits.report.sections.fourtuple import book_claim, tuple_members
from tcplimits.report.sections.hold import (comparison_table, latency, model_terms,
                                            observed_vs_predicted, outcomes, port_pool, seed,
                                            server_side)
from tcplimits.report.sections.million import one_million
from tcplimits.report.sections.nat import behind_a_nat
from tcplimits.report.sections.runset import environment, hosts, question, rerun, unfinished
from tcplimits.report.sections.servers import real_servers

__all__ = [
    "Data", "load",
    "key_findings",                                              # under the title
    "question", "environment", "hosts",                          # 1, 2
    "seed", "port_pool", "outcomes",                             # 3, 4, 5
    "model_terms", "observed_vs_predicted", "comparison_table",  # 6
    "latency", "server_side",                                    # 7, 8
    "tuple_members", "book_claim",                               # 9, 10
    "unfinished", "rerun",                                       # 11
    "one_million", "churn", "behind_a_nat", "real_servers",    # 12, 13, 14, 15
    "tuning", "conclusion", "reproduce",                       # 16, 17, 18
    "sweep_summary",
]
