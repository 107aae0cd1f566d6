"""Integration tests: real Mininet networks. They need root, Mininet and mnexec; CI runs them as root."""
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_collection_modifyitems(config, items):
    reason = None
    if os.geteuid() != 0:
        reason = "needs root"
    elif shutil.which("mnexec") is None:
        reason = "needs Mininet (mnexec)"
    if reason:
        for item in items:
            if "integration" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


def our_leftovers() -> dict:
    """Interfaces, processes and run directories that a lab of ours could leave in the root namespace."""
    import glob
    import subprocess
    from topologies.svpn import ACCESS_SWITCH, OFFICE_SWITCH
    prefixes = tuple([OFFICE_SWITCH, "sxhome"] + list(ACCESS_SWITCH.values()))
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    interfaces = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    daemons = subprocess.run(["pgrep", "-f", "nodeapps[.]node |nodeapps.linkemu.emulator"],
                             capture_output=True, text=True).stdout
    return {"interfaces": [i for i in interfaces if i.startswith(prefixes)],
            "daemons": daemons.split(),
            "run_dirs": [d for d in glob.glob("/tmp/svpnlab-*") if os.path.isdir(d)]}


# ---- handler_errors == 0 on every node of every lab a test stopped ----
_stopped_labs: list = []


def _lab_stopped(lab) -> None:
    _stopped_labs.append(lab)


def _check_stopped_labs(start: int) -> None:
    """Fail if a lab stopped since index ``start`` had a node that caught exceptions in its handlers."""
    from topologies.lab import handler_error_report
    reports = []
    for lab in _stopped_labs[start:]:
        report = handler_error_report(lab.handler_errors(), lab.handler_error_events)
        if report:
            reports.append(report)
    del _stopped_labs[start:]
    if reports:
        pytest.fail("node apps caught exceptions in their handlers (a bug, whatever the test checked):\n"
                    + "\n".join(reports), pytrace=False)


@pytest.fixture(autouse=True, scope="module")
def _no_handler_errors_in_module_labs():
    """Labs of module-scoped fixtures stop after the last test's own fixtures: checked here."""
    try:
        from topologies import lab as lab_module
    except ImportError:   # no Mininet: nothing can start a lab
        yield
        return
    if _lab_stopped not in lab_module.STOP_LISTENERS:
        lab_module.STOP_LISTENERS.append(_lab_stopped)
    start = len(_stopped_labs)
    yield
    _check_stopped_labs(start)


@pytest.fixture(autouse=True)
def _no_handler_errors(_no_handler_errors_in_module_labs):
    start = len(_stopped_labs)
    yield
    _check_stopped_labs(start)
