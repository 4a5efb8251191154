"""--out before a run: --force clears a run directory, and only a run directory."""

import os

import pytest

from tcplimits import results
from tcplimits.engine import outdir


def _prepare(out, force=True):
    outdir.prepare(out, force=force, need_bytes=1)


def _run_dir(out):
    (out / results.LOGS_DIR).mkdir(parents=True)
    results.write_json({"run_id": "earlier", "status": "ok"}, out / results.RUN_JSON)
    (out / results.CLIENTS_FILE).write_bytes(b"PAR1")
    (out / results.LOGS_DIR / "client2.log").write_text("of the earlier run\n")
    (out / f".{results.RUN_JSON}.k2j_x9.tmp").write_text("{")


def test_force_clears_a_run_directory(tmp_path):
    out = tmp_path / "run"
    _run_dir(out)
    with pytest.raises(outdir.OutDirError, match="already holds run earlier"):
        _prepare(out, force=False)
    _prepare(out)
    assert os.listdir(out) == []


@pytest.mark.parametrize("plant", [
    "logs/precious/thesis.tex",   # logs/ holding a directory
    "logs/thesis.tex",            # logs/ holding what no container wrote
    ".thesis.tmp/thesis.tex",     # a dot-directory ending in .tmp
    ".run.json.abc.tmp/thesis.tex",  # ... named exactly like a temp file of ours
    "run.json/thesis.tex",        # a directory with a run file's name
])
def test_force_refuses_a_look_alike_and_removes_nothing(tmp_path, plant):
    out = tmp_path / "home"
    path = out / plant
    path.parent.mkdir(parents=True)
    path.write_text("precious\n")
    with pytest.raises(outdir.OutDirError, match="not empty and not a run directory"):
        _prepare(out)
    assert path.read_text() == "precious\n"


def test_force_never_follows_a_planted_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "server.log").write_text("precious\n")
    (elsewhere / "run.json").write_text("precious\n")
    for name, target in ((results.LOGS_DIR, elsewhere), (results.RUN_JSON,
                                                         elsewhere / "run.json")):
        out = tmp_path / f"out-{name}"
        out.mkdir()
        (out / name).symlink_to(target)
        with pytest.raises(outdir.OutDirError, match="not a run directory"):
            _prepare(out)
    assert sorted(os.listdir(elsewhere)) == ["run.json", "server.log"]


def test_clear_after_a_failed_write_leaves_strangers_alone(tmp_path):
    out = tmp_path / "run"
    _run_dir(out)
    (out / results.LOGS_DIR / "notes").mkdir()  # not ours: logs/ stays, with it
    (out / "thesis.tex").write_text("precious\n")
    outdir.clear(out)
    assert sorted(os.listdir(out)) == [results.LOGS_DIR, "thesis.tex"]
    assert os.listdir(out / results.LOGS_DIR) == ["notes"]
