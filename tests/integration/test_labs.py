"""The lab hand-outs (docs/labs/) run as written: each hand-out's lab shell blocks are piped into
experiments/shell.py with the block's options, its shell blocks run afterwards with RUN set to that lab's
results folder, and every expectation written after a block must hold in that block's output.
A block's output is kept next to the results (``block-N.out``) for a look after a failure."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from experiments.handouts import blocks
from topologies import runs

SHELL = os.path.join(ROOT, "experiments", "shell.py")
HANDOUTS = sorted(glob.glob(os.path.join(ROOT, "docs", "labs", "[0-9]*.md")))
# Where the hand-outs tell students to keep files outside the lab's results: a test removes what it made there.
STUDENT_FILES = ["/tmp/svpnlab-labs", os.path.join(ROOT, "results", "lab3")]


@pytest.fixture(autouse=True)
def _remove_student_files_made_here():
    before = {path for path in STUDENT_FILES if os.path.exists(path)}
    yield
    for path in set(STUDENT_FILES) - before:
        shutil.rmtree(path, ignore_errors=True)


def _env(tmp_path, run):
    # TMPDIR: what a hand-out's own temporary files (mktemp) leave behind is seen by the test.
    env = {**os.environ, "SVPNLAB_RUN_ROOT": str(tmp_path / "runs"), "RUN": run, "PYTHON": sys.executable,
           "TMPDIR": str(tmp_path / "tmp")}
    env.pop(runs.RUN_ENV, None)
    return env


def _run_block(block, tmp_path, run):
    results = tmp_path / "results"
    if block.kind == "svpnlab-shell":
        args = [sys.executable, SHELL, *block.options, "--results", str(results)]
        result = subprocess.run(args, cwd=ROOT, env=_env(tmp_path, run), input="\n".join(block.commands) + "\n",
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr + result.stdout
        runs_made = sorted(results.glob("shell-*"), key=os.path.getmtime)
        return result.stdout, str(runs_made[-1]) if runs_made else run
    # The test runs as root: the hand-out's `sudo` is the command itself.
    script = 'sudo() { "$@"; }\n' + block.text
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=ROOT, env=_env(tmp_path, run),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout, run


@pytest.mark.parametrize("handout", HANDOUTS, ids=os.path.basename)
def test_a_handout_runs_as_written_and_shows_what_it_promises(handout, tmp_path):
    with open(handout, encoding="utf-8") as f:
        found = blocks(f.read())
    assert any(b.kind == "svpnlab-shell" for b in found), "a hand-out drives the lab shell"
    run = ""
    (tmp_path / "tmp").mkdir()
    for number, block in enumerate(found, 1):
        output, run = _run_block(block, tmp_path, run)
        (tmp_path / f"block-{number}.out").write_text(output)
        assert "Traceback" not in output
        wrong = [problem for e in block.expectations if (problem := e.check(output)) is not None]
        assert not wrong, f"block {number} ({block.kind}): {'; '.join(wrong)}\n{output}"
    assert os.listdir(tmp_path / "tmp") == [], "the hand-out left temporary files behind"
