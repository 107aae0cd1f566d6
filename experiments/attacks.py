#!/usr/bin/env python3
"""Attack suite: attacks as data (experiments/attacks/*.toml), run against a fresh lab per configuration.

    sudo python3 experiments/attacks.py                  # both address plans x both VCM placements
    sudo python3 experiments/attacks.py --quick          # private plan, VCM in the SG (the CI form)
    sudo python3 experiments/attacks.py --plans public --vcm host --only esp-replay,rogue-ra-office

Each configuration gets one lab: MN1 on WLAN 1, MN2 on cellular, mobility, the VCM, the correspondent
(and the external home agent in the private plan), and the attacker ``atk`` on WLAN 1, cellular and the
Internet core (topologies/attacker.py). Probes run the whole time (MN1 <-> MN2 at 50 Hz, MN1 -> file server
at 50 Hz) and every public link is captured. Then each attack in turn is sent (experiments/attack_kinds.py)
and judged by what its entry asks (experiments/attack_table.py): counters that rise, status values and
bindings that stay, the probes' reply fraction during the attack, no probe marker in clear on a public link
during it, and on every node ``handler_errors`` unchanged at 0 and the process alive. One line per attack
while it runs; ``results/attacks-<time>/`` gets ``attacks.csv``, ``summary.md`` (the README's table) and a
pass/fail grid (``plots/grid.png``). Exit status 1 if any attack failed, 2 for bad input. Ctrl-C tears
the lab down and keeps what was judged.
"""
import _venv  # noqa: F401  (re-executes inside .venv)

import glob
import os
import shutil
import signal
import sys
import time
from datetime import datetime

from experiments.attack_kinds import KINDS, SCHEMAS, Ctx
from experiments.attack_table import PLANS, VCM_PLACEMENTS, AttackFileError, load
from experiments.cli import OneLineErrorParser, add_link_options, add_output_options, apply_link_options, not_root
from nodeapps.runtime.events import read_json_lines
from topologies import runs

ATTACK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attacks")
MARKER = "SVPNLAB-ATTACK-PROBE"
FLOWS = (("mn1-mn2", "mn1", "mn2", 50, 7777), ("mn1-fs", "mn1", "fs", 50, 7778))
CAPTURES = (("ir", "any", "ir"), ("ar1", "ar1-lan", "ar1-lan"), ("ar3", "ar3-lan", "ar3-lan"))
ATTACKER_PLACES = ["wlan1", "cell", "core"]
PROBE_TIMEOUT_S = 0.5
SETTLE_S = 0.5          # after the last packet: counters and events catch up
WARMUP_S = 2.0          # after both MNs registered: sessions, the VCM's direct pair
REGISTER_TIMEOUT_S = 20.0
CATCH_UP_TIMEOUT_S = 4.0
CSV_FIELDS = ("plan", "vcm", "attack", "from", "kind", "expected", "observed", "result", "sent", "seconds",
              "failures")


class Interrupted(Exception):
    pass


def parse_args(argv):
    parser = OneLineErrorParser(prog="attacks.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="private plan, VCM in the SG (the CI form)")
    parser.add_argument("--plans", default=",".join(PLANS), help="address plans, comma-separated")
    parser.add_argument("--vcm", default=",".join(VCM_PLACEMENTS), help="VCM placements: in-sg,host")
    parser.add_argument("--attacks", nargs="+", help="attack files (default experiments/attacks/*.toml)")
    parser.add_argument("--only", default="", help="attack names to run, comma-separated")
    parser.add_argument("--list", action="store_true", help="check the attack files and list the attacks")
    parser.add_argument("--seed", type=int, default=1, help="seed of the links and of the attacks' randomness")
    add_output_options(parser)
    add_link_options(parser)
    args = parser.parse_args(argv)
    apply_link_options(parser, args)
    for name, allowed in (("plans", PLANS), ("vcm", VCM_PLACEMENTS)):
        values = [v for v in getattr(args, name).split(",") if v]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            parser.error(f"--{name}: {','.join(bad) or 'empty'}: choose from {', '.join(allowed)}")
        setattr(args, name, values)
    if args.quick:
        args.plans, args.vcm = ["private"], ["in-sg"]
    args.files = args.attacks or sorted(glob.glob(os.path.join(ATTACK_DIR, "*.toml")))
    try:
        args.table = load(args.files, SCHEMAS)
    except AttackFileError as exc:
        parser.exit(2, f"attacks.py: {exc}\n")
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in {a.name for a in args.table}]
    if unknown:
        parser.error(f"--only: no attack named {', '.join(unknown)}")
    if only:
        args.table = [a for a in args.table if a.name in only]
    return args


# ---- reading the lab -----------------------------------------------------------------------------------

def snapshot(lab) -> dict:
    """Every node's status (None for a node that does not answer)."""
    out = {}
    for node in lab.node_configs:
        try:
            out[node] = lab.status(node)
        except Exception:   # a dead or hung node: judged by the caller
            out[node] = None
    return out


def value_at(status, path: str):
    """A dotted path into a status, or a bare counter name summed over every ``counters``-like section."""
    if status is None:
        return None
    if "." in path:
        node = status
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node
    total, found = 0, False

    def walk(node, in_counters):
        nonlocal total, found
        if isinstance(node, dict):
            for key, value in node.items():
                if key == path and in_counters and isinstance(value, (int, float)) and not isinstance(value, bool):
                    total += value
                    found = True
                walk(value, in_counters or key.endswith("counters") or key.endswith("stats"))
        elif isinstance(node, list):
            for value in node:
                walk(value, in_counters)
    walk(status, False)
    return total if found else None


def resolve_node(node: str, vcm: str) -> str:
    return ("sg" if vcm == "in-sg" else "vcm") if node == "@vcm" else node


def probe_replies(path: str, t0: float, t1: float) -> tuple[int, int]:
    """(answered, lost) probes of a sender's output sent within [t0, t1]."""
    ok = lost = 0
    for record in read_json_lines(path):
        if t0 <= (record.get("t_sent") or 0) <= t1:
            ok += record.get("status") == "ok"
            lost += record.get("status") == "lost"
    return ok, lost


def exposed_bytes(run_dir: str, t0: float, t1: float) -> dict:
    from topologies.attacker import pcap_frames
    marker = MARKER.encode()
    out = {}
    for _node, _intf, label in CAPTURES:
        count = sum(frame.count(marker) for t, frame in pcap_frames(os.path.join(run_dir, f"{label}.pcap"))
                    if t0 <= t <= t1)
        if count:
            out[label] = count * len(marker)
    return out


def binding_changes(lab, node: str, mn: str, t0: float, t1: float) -> list[str]:
    """Care-of addresses the victim's binding at ``node`` was moved to (or "removed") within [t0, t1]."""
    plan_mn = lab.plan.mobile(mn)
    key = plan_mn.home_address if node == "ha" else (plan_mn.external_home_address or plan_mn.home_address)
    if node == "xha":
        key = plan_mn.external_home_address
    where = lab.attachment[mn]
    care_of = plan_mn.home_address if where == "office" else plan_mn.address_in(lab.plan.access[where])
    changes = []
    for e in lab.events():
        if e.get("node") != node or not t0 <= e["time"] <= t1 or e.get("home_address") != key:
            continue
        if e["event"] in ("binding_added", "binding_updated") and e.get("care_of_address") != care_of:
            changes.append(str(e.get("care_of_address")))
        elif e["event"] == "binding_removed":
            changes.append("removed")
    return changes


# ---- one configuration ---------------------------------------------------------------------------------

def judge(lab, attack, vcm, before, after, t0, t1, run_dir, probe_files) -> tuple[list[str], list[str]]:
    """(observations, failures) of one attack."""
    seen, failures = [], []
    for key, minimum in attack.rise.items():
        node, path = key.split(":", 1)
        node = resolve_node(node, vcm)
        a, b = value_at(before.get(node), path), value_at(after.get(node), path)
        if b is None:
            failures.append(f"{node} {path} absent")
            continue
        delta = b - (a or 0)
        (seen if delta >= minimum else failures).append(f"{node} {path} +{delta:g}")
    for key in attack.unchanged:
        node, path = key.split(":", 1)
        node = resolve_node(node, vcm)
        a, b = value_at(before.get(node), path), value_at(after.get(node), path)
        if a != b:
            failures.append(f"{node} {path} {a} -> {b}")
        else:
            seen.append(f"{node} {path.split('.')[-1]} kept")
    for key in attack.bindings:
        node, mn = key.split(":")
        if node not in lab.node_configs:
            continue
        changes = binding_changes(lab, node, mn, t0, t1)
        if changes:
            failures.append(f"binding of {mn} at {node} moved to {', '.join(changes)}")
        else:
            seen.append(f"binding of {mn} at {node} kept")
    if attack.traffic is not None:
        fractions = []
        for name, path in probe_files:
            ok, lost = probe_replies(path, t0, t1)
            fraction = ok / (ok + lost) if ok + lost else 0.0
            fractions.append(fraction)
            if fraction < attack.traffic:
                failures.append(f"{name} replies {fraction:.2f} ({ok}/{ok + lost}) < {attack.traffic:g}")
        if fractions and min(fractions) >= attack.traffic:
            seen.append(f"replies >= {min(fractions):.2f}")
    exposed = exposed_bytes(run_dir, t0, t1)
    for label, count in exposed.items():
        failures.append(f"{count} marker bytes in clear on {label}")
    for node in lab.node_configs:
        status = after.get(node)
        if status is None:
            failures.append(f"{node} does not answer")
            continue
        # RFC-independent rule of the lab: no input may raise inside a node (issue 11, item 1).
        errors = (value_at(status, "handler_errors") or 0) - (value_at(before.get(node), "handler_errors") or 0)
        if errors:
            failures.append(f"{node} handler_errors +{errors}")
    for name, proc in lab.apps.items():
        if proc.poll() is not None and before.get(name) is not None:
            failures.append(f"{name} stopped (exit code {proc.returncode})")
    return seen, failures


def run_config(plan: str, vcm: str, attacks, args, stop, rows: list[dict]) -> None:
    """Run ``attacks`` on a fresh lab; one row per judged attack is appended to ``rows`` as it is judged."""
    from topologies.lab import SvpnLab
    run_dir = runs.new_run_dir("attacks-")
    lab = SvpnLab(addressing=plan, mobile_nodes=2, attachments=["wlan1", "cell"], mobility=True, vcm=vcm,
                  correspondent=True, attacker=ATTACKER_PLACES, run_dir=run_dir, seed=args.seed,
                  link_params=args.link_params, links="ideal" if args.ideal_links else "default")
    try:
        started = time.monotonic()
        print(f"[{plan}/{vcm}] building the lab ...", flush=True)
        lab.start()
        for node, intf, label in CAPTURES:
            lab.popen(node, ["tcpdump", "--immediate-mode", "-n", "-U", "-s", "0", "-i", intf, "-w",
                             os.path.join(run_dir, f"{label}.pcap"),
                             "ip6"], f"tcpdump-{label}.log")
        probe_files = []
        for name, src, dst, rate, port in FLOWS:
            dst_addr = lab.plan.mobile(dst).home_address if dst.startswith("mn") else lab.plan.office[dst]
            lab.popen(dst, [sys.executable, "-m", "nodeapps.probe", "echo", "--bind", dst_addr, "--port", str(port)],
                      f"echo-{name}.log")
        lab.wait_registered(["mn1", "mn2"], REGISTER_TIMEOUT_S)
        for i, (name, src, dst, rate, port) in enumerate(FLOWS):
            dst_addr = lab.plan.mobile(dst).home_address if dst.startswith("mn") else lab.plan.office[dst]
            out = os.path.join(run_dir, f"probe-{name}.jsonl")
            probe_files.append((name, out))
            lab.popen(src, [sys.executable, "-m", "nodeapps.probe", "send", "--to", dst_addr, "--bind",
                            lab.plan.mobile(src).home_address, "--port", str(port), "--rate", str(rate),
                            "--marker", MARKER, "--timeout", str(PROBE_TIMEOUT_S), "--session", str(1000 + i),
                            "--out", out], f"probe-{name}.log")
        if stop.wait(WARMUP_S):
            raise Interrupted
        print(f"[{plan}/{vcm}] lab up in {time.monotonic() - started:.1f} s; attacks:", flush=True)
        ctx = Ctx(lab, plan, vcm, seed=args.seed)
        for attack in attacks:
            if stop.is_set():
                raise Interrupted
            before = snapshot(lab)
            t0 = time.time()
            failures_before = []
            try:
                sent = KINDS[attack.kind][0](ctx, attack)
            except Exception as exc:   # a builder that fails costs its attack, not the suite
                sent = ""
                failures_before.append(f"not sent: {type(exc).__name__}: {exc}")
            t_sent = time.time()
            if stop.wait(SETTLE_S):
                raise Interrupted
            after = snapshot(lab)
            t1 = time.time()
            # Probes sent until t1 are answered or declared lost PROBE_TIMEOUT_S later.
            if stop.wait(max(0.0, t1 + PROBE_TIMEOUT_S + 0.1 - time.time())):
                raise Interrupted
            seen, failures = judge(lab, attack, vcm, before, after, t0, t1, run_dir, probe_files)
            failures = failures_before + failures
            result = "FAIL" if failures else "PASS"
            observed = "; ".join(failures if failures else seen)
            # Kept before it is printed: a Ctrl-C right after the line must not lose the verdict.
            rows.append({"plan": plan, "vcm": vcm, "attack": attack.name, "from": attack.source, "kind": attack.kind,
                         "expected": attack.expect, "observed": "; ".join(seen), "result": result, "sent": sent,
                         "seconds": round(t_sent - t0, 3), "failures": "; ".join(failures)})
            print(f"  {result}  {attack.name:<28} expected: {attack.expect} | observed: {observed}", flush=True)
            if attack.compromised:
                # Let the real MN's tunnel pass the sequence numbers its thief used, so the next attack is
                # not judged on packets lost to them.
                node = lab.attacker.compromised(attack.compromised)
                deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
                while not node.caught_up() and time.monotonic() < deadline and not stop.is_set():
                    time.sleep(0.1)
    finally:
        try:
            lab.stop()
        finally:
            keep = os.path.join(args.folder, "runs", f"{plan}-{vcm}")
            os.makedirs(keep, exist_ok=True)
            for pattern in ("*.pcap", "*.events.jsonl", "probe-*.jsonl", "*.log"):
                for path in glob.glob(os.path.join(run_dir, pattern)):
                    shutil.copy(path, keep)
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"[{plan}/{vcm}] lab down", flush=True)


# ---- results -------------------------------------------------------------------------------------------

def summary_table(rows: list[dict]) -> str:
    """The README's table: one line per attack with the observation of its first configuration and the
    result in every configuration it ran in."""
    by_attack: dict[str, list[dict]] = {}
    for row in rows:
        by_attack.setdefault(row["attack"], []).append(row)
    lines = ["| attack | from | expected | observed | result |", "|---|---|---|---|---|"]
    for name, group in by_attack.items():
        passed = [r for r in group if r["result"] == "PASS"]
        shown = passed[0] if passed else group[0]
        observed = shown["observed"] if shown["result"] == "PASS" else shown["failures"]
        failed = [f"{r['plan']}/{r['vcm']}" for r in group if r["result"] != "PASS"]
        result = f"pass {len(passed)}/{len(group)}" + (f" (fail: {', '.join(failed)})" if failed else "")
        cell = lambda text: str(text).replace("|", "/").replace("\n", " ")  # noqa: E731
        lines.append(f"| {cell(name)} | {cell(shown['from'])} | {cell(shown['expected'])} | {cell(observed)} | "
                     f"{result} |")
    return "\n".join(lines) + "\n"


def write_results(folder: str, rows: list[dict], args, complete: bool, wall: float) -> None:
    import csv
    with open(os.path.join(folder, "attacks.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    failed = sum(r["result"] != "PASS" for r in rows)
    configs = sorted({(r["plan"], r["vcm"]) for r in rows})
    with open(os.path.join(folder, "summary.md"), "w", encoding="utf-8") as f:
        f.write(f"# Attack suite\n\n`{' '.join(['sudo python3 experiments/attacks.py'] + args.argv)}`: "
                f"{len(rows) - failed} of {len(rows)} attack runs passed in "
                f"{', '.join(f'{p}/{v}' for p, v in configs) or 'no configuration'}; {wall:.0f} s wall"
                f"{'' if complete else ' (interrupted: incomplete)'}.\n\n")
        f.write(summary_table(rows))
    if not args.no_plots and rows:
        draw_grid(folder, rows)


def draw_grid(folder: str, rows: list[dict]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from experiments.plotting import save_figure
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    configs = list(dict.fromkeys(f"{r['plan']}/{r['vcm']}" for r in rows))
    grid = [[0.5] * len(configs) for _ in attacks]   # 0.5: did not apply
    for r in rows:
        cell = 1.0 if r["result"] == "PASS" else 0.0
        grid[attacks.index(r["attack"])][configs.index(f"{r['plan']}/{r['vcm']}")] = cell
    fig, ax = plt.subplots(figsize=(2.0 + 1.3 * len(configs), 1.0 + 0.28 * len(attacks)))
    ax.imshow(grid, cmap=ListedColormap(["#d62728", "#dddddd", "#2ca02c"]), vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(configs)), configs)
    ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, {1.0: "pass", 0.0: "FAIL", 0.5: "-"}[v], ha="center", va="center", fontsize=7)
    ax.set_title("attack suite: pass / fail per configuration")
    fig.tight_layout()
    os.makedirs(os.path.join(folder, "plots"), exist_ok=True)
    paths = save_figure(fig, os.path.join(folder, "plots"), "grid")
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    import threading
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    if args.list:
        for a in args.table:
            print(f"{a.name:<30} {a.source:<16} {a.kind:<22} {a.expect}")
        return 0
    if not_root("attacks.py"):
        return 2
    stop = threading.Event()

    def on_signal(_signum, _frame):
        if stop.is_set():   # a second Ctrl-C while the lab comes down: let the teardown finish
            return
        stop.set()
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    args.folder = os.path.join(args.results, "attacks-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(args.folder, exist_ok=True)
    started = time.monotonic()
    rows, complete = [], False
    try:
        for plan in args.plans:
            for vcm in args.vcm:
                attacks = [a for a in args.table if a.applies(plan, vcm)]
                run_config(plan, vcm, attacks, args, stop, rows)
        complete = True
    except (KeyboardInterrupt, Interrupted):
        print("attacks.py: interrupted; the lab is down, results so far are kept", file=sys.stderr)
    except Exception as exc:   # a lab that would not start: one line, the lab is already down
        print(f"attacks.py: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        wall = time.monotonic() - started
        write_results(args.folder, rows, args, complete, wall)
    failed = [r for r in rows if r["result"] != "PASS"]
    print(f"{len(rows) - len(failed)} of {len(rows)} attacks passed in {wall:.0f} s; results in {args.folder}")
    if not complete:
        return 130 if stop.is_set() else 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
