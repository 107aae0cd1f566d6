"""experiments/attacks.py --quick: every attack of the suite passes (private plan, VCM in the SG) within the
CI budget, writes its results, and the lab is gone afterwards."""
import csv
import glob
import os
import subprocess
import sys
import time

from conftest import ROOT, our_leftovers

QUICK_BUDGET_S = 120


def leftovers() -> dict:
    """Our bridges, node apps and the suite's own run directories (unit tests elsewhere may create and
    remove other /tmp/svpnlab-* folders meanwhile)."""
    found = our_leftovers()
    found["run_dirs"] = sorted(glob.glob("/tmp/svpnlab-attacks-*"))
    return found


def test_quick_attack_suite_passes_and_leaves_nothing(tmp_path):
    before = leftovers()
    started = time.monotonic()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "attacks.py"), "--quick",
                             "--results", str(tmp_path)], capture_output=True, text=True, timeout=400)
    wall = time.monotonic() - started
    (folder,) = glob.glob(str(tmp_path / "attacks-*"))
    with open(os.path.join(folder, "attacks.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    failed = [f"{r['attack']}: {r['failures']}" for r in rows if r["result"] != "PASS"]
    assert not failed, "\n".join(failed)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # Every attack of the files ran, and printed its line while the suite ran.
    listed = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "attacks.py"), "--list"],
                            capture_output=True, text=True, timeout=60).stdout.split("\n")
    names = {line.split()[0] for line in listed if line.strip()}
    assert {r["attack"] for r in rows} == names
    assert all(f"PASS  {name}" in result.stdout for name in names)
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        summary = f.read()
    assert "| attack | from | expected | observed | result |" in summary and summary.count("pass 1/1") == len(names)
    assert os.path.getsize(os.path.join(folder, "plots", "grid.png")) > 1000
    assert wall <= QUICK_BUDGET_S, f"--quick took {wall:.0f} s"
    assert leftovers() == before


def test_ctrl_c_tears_the_lab_down_and_keeps_what_was_judged(tmp_path):
    import signal
    before = leftovers()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "attacks.py"), "--quick",
                             "--results", str(tmp_path), "--only", "esp-unknown-spi,junk-from-core,ra-flood"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        for line in proc.stdout:   # interrupt once the first attack has been judged
            if line.strip().startswith(("PASS", "FAIL")) or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    (folder,) = glob.glob(str(tmp_path / "attacks-*"))
    with open(os.path.join(folder, "summary.md"), encoding="utf-8") as f:
        summary = f.read()
    assert "interrupted: incomplete" in summary and "| esp-unknown-spi |" in summary
    assert leftovers() == before
