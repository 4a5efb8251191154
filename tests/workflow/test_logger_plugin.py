"""The workflow's Snakemake logger plugin (src/snakemake_logger_plugin_tcplimits): a
--configfile Snakemake cannot read is the project's one line and exit 2 (the corpus in
tests/cli/test_mistakes.py runs each such mistake through `snakemake -n`); every other record,
and so everything else Snakemake prints, is left to Snakemake's own handler."""

from __future__ import annotations

import logging
import re
import sys

import pytest
import yaml

import snakemake_logger_plugin_tcplimits as plugin
from snakemake.common.configfile import load_configfile
from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry
from tests.workflow.harness import ROOT, Workdir


def test_snakemake_finds_the_plugin_and_both_profiles_select_it():
    assert LoggerPluginRegistry().is_installed("tcplimits")
    for profile in ("default", "slurm"):
        options = yaml.safe_load((ROOT / "workflow" / "profiles" / profile / "config.yaml")
                                 .read_text())
        assert options["logger"] == ["tcplimits"], profile


def test_the_file_snakemake_was_reading(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(FileNotFoundError) as err:
        load_configfile(missing)
    assert plugin.config_file_being_read(err.value) == missing
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(Exception, match="keys at top level") as err:
        load_configfile(listed)
    assert plugin.config_file_being_read(err.value) == listed
    assert plugin.config_file_being_read(ValueError("elsewhere")) is None
    assert plugin.config_file_being_read(None) is None


def error_record(exception: BaseException) -> logging.LogRecord:
    """The record Snakemake's print_exception logs for an exception."""
    record = logging.LogRecord("snakemake.logging", logging.ERROR, __file__, 1, "msg", None,
                               None)
    record.exception = type(exception).__name__
    return record


def test_snakemakes_error_for_a_missing_config_file_is_the_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    try:
        load_configfile(missing)
    except FileNotFoundError as err:
        with pytest.raises(SystemExit) as exit:
            plugin.ConfigFileMistakeFilter().filter(error_record(err))
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"{missing}: no such file\n"


def test_every_other_record_passes(tmp_path, capsys):
    keep = plugin.ConfigFileMistakeFilter()
    info = logging.LogRecord("snakemake.logging", logging.INFO, __file__, 1, "Building DAG",
                             None, None)
    assert keep.filter(info)
    assert keep.filter(error_record(ValueError("no exception being handled")))
    try:
        raise ValueError("a workflow error")
    except ValueError as err:
        assert keep.filter(error_record(err))
    # A config file Snakemake could not read that the project's checks find good (here: it
    # appeared since): Snakemake's words stay.
    late = tmp_path / "late.yaml"
    try:
        load_configfile(late)
    except FileNotFoundError as err:
        late.write_text((ROOT / "config" / "tiny.yaml").read_text())
        assert keep.filter(error_record(err))
    assert capsys.readouterr().err == ""


def test_the_filter_is_on_snakemakes_logger_only_while_the_handler_is_open():
    from snakemake.logging import logger

    handler = plugin.LogHandler(common_settings=None, settings=None)
    assert handler._filter in logger.filters
    handler.close()
    assert handler._filter not in logger.filters


def test_snakemakes_other_output_is_unchanged(tmp_path):
    """The plan of a good config, with and without the plugin, is the same text (the date, the
    workflow's id and the command line aside)."""
    wd = Workdir(tmp_path)
    wd.env["PYTHONHASHSEED"] = "0"  # Snakemake lists a job's files in set order

    def plan(*logger: str) -> tuple[str, str]:
        proc = wd.snakemake("-n", "--configfile", "config/tiny.yaml", "--printshellcmds",
                            *logger, profile=False)
        varying = re.compile(r"^(  Date: |  Workflow ID: |  Command: |\[\w{3} \w{3} ).*$", re.M)
        return varying.sub(r"\1", proc.stdout), varying.sub(r"\1", proc.stderr)

    without = plan()
    assert "rule experiment:" in without[0]
    assert plan("--logger", "tcplimits") == without
