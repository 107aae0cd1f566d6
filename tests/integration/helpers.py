"""Pieces shared by the integration tests: polling (a lab changes state asynchronously) and captures."""
import os
import time


def wait_for(predicate, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def start_capture(lab, node, interface, name):
    """tcpdump of IPv6 on ``node``'s ``interface`` into ``<run dir>/<name>``, once it is listening."""
    path = os.path.join(lab.run_dir, name)
    proc = lab.popen(node, ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0", "-i", interface, "-w", path,
                            "ip6"], name + ".log")
    wait_for(lambda: b"listening on" in open(os.path.join(lab.run_dir, name + ".log"), "rb").read(),
             what=f"tcpdump on {interface}")
    return proc, path
