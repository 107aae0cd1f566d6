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
    daemons = subprocess.run(["pgrep", "-f", "nodeapps.runtime.daemon|nodeapps.linkemu.emulator"],
                             capture_output=True, text=True).stdout
    return {"interfaces": [i for i in interfaces if i.startswith(prefixes)],
            "daemons": daemons.split(),
            "run_dirs": [d for d in glob.glob("/tmp/svpnlab-*") if os.path.isdir(d)]}
