#!/usr/bin/env python3
"""The lab shell: the whole lab (node apps, ESP, mobility, the VCM) under Mininet's CLI, with commands of
its own for teaching and for scripts.

    sudo python3 experiments/shell.py [--mobility] [--vcm in-sg|host] [--addressing private|public]
    sudo python3 experiments/shell.py --mobility --script moves.txt     # commands from a file
    sudo python3 experiments/shell.py --vcm in-sg --fault-injection     # drop-next, vcm-inject answer
    printf 'move mn1 cell\\nstatus mn1\\n' | sudo python3 experiments/shell.py --mobility

Besides Mininet's own commands (help, nodes, net, intfs, sh, py, <node> <command>; a node's name after
the command stands for its address in the plan, as in `mn1 ping6 -c 3 fs`):
  move MN NETWORK     move a mobile node to office, wlan1, wlan2 or cell (waits for its registration)
  status [NODE]       a node app's tables (svpnlab-status), or one line per node app
  paths               per mobile-node pair: via the SG or direct, and since when
  ping6all            IPv6 ping between every two VPN members (office hosts and mobile nodes)
  capture INTERFACE   capture an interface (ar1-lan, sg-wan, swlan1, ...) with tcpdump; again: stop it (pcapng)
  keys                write the Wireshark profile that decrypts the lab's ESP, and say where it is

Input from a terminal is interactive (Ctrl-C stops a running node command; at the prompt it ends the
shell). Piped input or --script runs line by line, each command echoed after the prompt; end of input
or `exit` ends the shell. Ending the shell, Ctrl-C, SIGTERM and SIGHUP tear the whole lab down.
Captures and the Wireshark profile go into results/shell-<time>/ (made on first use).
"""
if __name__ == "__main__":
    import _venv  # noqa: F401  (re-executes inside .venv)

import argparse
import datetime
import os
import signal
import subprocess
import sys
import time
from cmd import Cmd
from select import poll

from mininet.cli import CLI
from mininet.log import LEVELS, lg, setLogLevel
from mininet.util import quietRun

from experiments.cli import OneLineErrorParser, RESULTS, add_link_options, add_output_options, apply_link_options, \
    not_root
from nodeapps.cli import render, table
from nodeapps.linkemu.errors import LinkConfigError
from topologies import runs
from topologies.addressing import PlanError
from topologies.lab import LabError, SvpnLab
from topologies.measurements import ping6_all
from topologies.svpn import ACCESS_SWITCH

PROG = "svpnlab-shell"
NETWORKS = ("office", *ACCESS_SWITCH)
CAPTURE_START_TIMEOUT_S = 5.0
REGISTRATION_TIMEOUT_S = 30.0


class ShellStopped(BaseException):
    """A stop signal ended the shell (BaseException: no command's error handling may swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class UsageError(Exception):
    """Bad input to a shell command: its one-line message is all the user sees."""


def _isatty(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def clock(wall: float | None, now: float | None = None) -> str:
    """``HH:MM:SS.mmm (N s ago)`` in UTC, or ``-``."""
    if wall is None:
        return "-"
    now = time.time() if now is None else now
    stamp = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]
    return f"{stamp} ({max(0.0, now - wall):.1f} s ago)"


class LabShell(CLI):
    """Mininet's CLI on a running SvpnLab, plus the lab's commands. Build it, then ``loop()``."""

    prompt = "svpnlab> "

    def __init__(self, lab, stdin=None, stdout=None, out_dir: str | None = None, ending: str = "tears the lab down"):
        # Not CLI.__init__: it would start reading at once. The same attributes, then Cmd's own setup.
        stdin = sys.stdin if stdin is None else stdin
        stdout = sys.stdout if stdout is None else stdout
        self.lab = lab
        self.mn = lab.net
        self.locals = {"net": lab.net, "lab": lab}
        self.inputFile = None
        self.interactive = _isatty(stdin)
        self.inPoller = poll()
        if self.interactive:
            self.inPoller.register(stdin)
        Cmd.__init__(self, stdin=stdin, stdout=stdout)
        # input() (with line editing) only for a terminal on our own stdin; else readline() on the stream.
        self.use_rawinput = self.interactive and stdin is sys.stdin
        self.out_dir = out_dir or os.path.join(RESULTS, "shell-" + time.strftime("%Y%m%d-%H%M%S"))
        self.ending = ending
        self.captures: dict[str, tuple] = {}   # interface -> (process, path, log path)
        self._node_running = False
        self._stopping = False

    # ---- the loop -------------------------------------------------------------------------------------
    def loop(self) -> int | None:
        """Read and run commands until ``exit`` or end of input. Returns the stop signal that ended the
        shell, or None. Mininet's output is raised to 'info' and sent to our stdout meanwhile."""
        previous_handlers = {sig: signal.getsignal(sig) for sig in runs.STOP_SIGNALS}
        previous_level = next((name for name, value in LEVELS.items() if value == lg.level), "error")
        previous_stream = lg.ch.stream
        lg.ch.setStream(self.stdout)
        setLogLevel("info")
        runs.on_stop_signals(self._on_stop_signal)
        if self.interactive:
            self.initReadline()
            quietRun("stty echo sane intr ^C")
        signum = None
        try:
            self.cmdloop(self.intro_text())
        except ShellStopped as stop:
            signum = stop.signum
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            setLogLevel(previous_level)
            lg.ch.setStream(previous_stream)
            if self.interactive:
                quietRun("stty echo sane intr ^C")   # a node command may have left the terminal raw
        if signum is not None:
            self.say(f"\n*** {signal.Signals(signum).name}: leaving the shell")
        return signum

    def intro_text(self) -> str:
        mobility = "" if self.lab.mobility else " (no mobility: start with --mobility to move nodes)"
        return (f"*** svpnlab shell{mobility}: Mininet's commands and move, status, paths, ping6all, capture, "
                f"keys ('help NAME' says more); 'exit' or end of input {self.ending}")

    def _on_stop_signal(self, signum, _frame):
        if self._stopping:   # a second signal while the first one unwinds: that one is enough
            return
        if signum == signal.SIGINT and self.interactive and self._node_running:
            raise KeyboardInterrupt   # Mininet's waitForNode passes it on to the node's command
        self._stopping = True
        raise ShellStopped(signum)

    def say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def onecmd(self, line):
        try:
            return super().onecmd(line)
        except UsageError as exc:
            self.say(str(exc))
        except (LabError, PlanError, LinkConfigError, OSError, ValueError, KeyError) as exc:
            command = line.split()[0] if line.split() else "command"
            self.say(f"{command}: {exc}")
        except Exception as exc:   # noqa: BLE001  (bad input never ends the shell)
            command = line.split()[0] if line.split() else "command"
            self.say(f"{command}: {exc.__class__.__name__}: {exc}")
        return None

    def precmd(self, line):
        if not self.interactive and line != "EOF":
            self.stdout.write(line + "\n")   # after the prompt, so a transcript reads like a session
        return super().precmd(line)

    def postcmd(self, stop, line):
        self.stdout.flush()
        return stop

    def do_EOF(self, _line):
        "End of input: leave the shell."
        self.say("")
        return True

    def default(self, line):
        """``NODE COMMAND``: run the command in the node's shell; a node name among its words stands for the
        node's address in the plan."""
        first, args, line = self.parseline(line)
        if first is None:
            return
        if first not in self.mn:
            raise UsageError(f"unknown command or node {first!r} (help lists the commands, nodes the nodes)")
        if not args:
            raise UsageError(f"{first}: give a command to run there, e.g. {first} ip -6 addr")
        words = [self.address_of(word) or word for word in args.split(" ")]
        node = self.mn[first]
        node.sendCmd(" ".join(words))
        self.waitForNode(node)

    def address_of(self, name: str) -> str | None:
        plan = self.lab.plan
        if name in plan.office:
            return plan.office[name]
        return next((mn.home_address for mn in plan.mobile_nodes if mn.name == name), None)

    def waitForNode(self, node):
        """Wait for a node's command and print what it writes. From a terminal, keys go to the command
        (Mininet's way); piped or scripted input stays ours: the next lines are shell commands."""
        self._node_running = True
        try:
            if self.interactive:
                return super().waitForNode(node)
            while node.waiting:
                data = node.monitor(timeoutms=200)
                if data:
                    self.stdout.write(data)
                    self.stdout.flush()
            return None
        finally:
            self._node_running = False

    # ---- the lab's commands ---------------------------------------------------------------------------
    def do_move(self, line):
        """move MN NETWORK: move mobile node MN to office, wlan1, wlan2 or cell; returns once it registered."""
        args = line.split()
        if len(args) != 2:
            raise UsageError("usage: move MN NETWORK (e.g. move mn1 cell)")
        mn, network = args
        self._mobile_node(mn, "move")
        if network not in NETWORKS:
            raise UsageError(f"move: unknown network {network!r} (networks: {', '.join(NETWORKS)})")
        if not self.lab.mobility:
            raise UsageError("move: this lab runs without mobility (start the shell with --mobility)")
        origin = self.lab.attachment[mn]
        started = time.time()
        self.lab.move(mn, network)
        self.say(f"{mn}: {origin} -> {network}, registered after {time.time() - started:.2f} s")

    def do_status(self, line):
        """status [NODE]: the node app's addresses, SAs, policy, mobility and VCM tables (svpnlab-status);
        without NODE one line per node app."""
        args = line.split()
        if len(args) > 1:
            raise UsageError("usage: status [NODE]")
        if args:
            node = args[0]
            if node not in self.lab.apps:
                where = "runs no node app" if node in self.mn else "is not a node of this lab"
                raise UsageError(f"status: {node!r} {where} (node apps: {', '.join(self.lab.apps)})")
            self.say(render(self.lab.status(node)))
            return
        rows = []
        for node in self.lab.apps:
            status = self.lab.status(node)
            mobility = status.get("mobility") or {}
            rows.append([node, status.get("role"), self.lab.attachment.get(node, ""), mobility.get("state", ""),
                         mobility.get("care_of_address") or "", len(status.get("ipsec", {}).get("sas", []))])
        self.say(table(["node", "role", "network", "mobility", "care-of", "SAs"], rows))

    def do_paths(self, line):
        """paths: for every two mobile nodes, each one's path to the other (office LAN, via the SG or
        direct) and since when, from the nodes' status and events."""
        if line.split():
            raise UsageError("usage: paths")
        rows = path_rows(self.lab)
        if not rows:
            self.say("paths: fewer than two mobile nodes run a node app")
            return
        self.say(table(["from", "to", "networks", "path", "since", "detail"], rows))

    def do_ping6all(self, line):
        """ping6all: every VPN member (office hosts, mobile nodes at their home addresses) pings every other
        once; prints who reached whom and the loss."""
        if line.split():
            raise UsageError("usage: ping6all")
        members = vpn_members(self.lab)
        self.say(f"*** Ping6: {len(members)} VPN members, {len(members) * (len(members) - 1)} pairs")
        ping6_all(self.mn, [members], write=self.say)

    def do_capture(self, line):
        """capture INTERFACE: capture INTERFACE (e.g. ar1-lan, sg-wan, ir-sg or a bridge such as swlan1) with
        tcpdump; the same command again stops it and leaves a pcapng file. 'capture' alone lists them."""
        args = line.split()
        if not args:
            self.say("\n".join(f"capturing {name} into {raw}" for name, (_p, raw, _l) in self.captures.items())
                     or "no capture running")
            return
        if len(args) != 1:
            raise UsageError("usage: capture INTERFACE (again to stop it)")
        name = args[0]
        if name in self.captures:
            self.stop_capture(name)
            return
        node = self.interface_node(name)
        folder = os.path.join(self.out_dir, "captures")
        os.makedirs(folder, exist_ok=True)
        # tcpdump writes pcap as packets come (--immediate-mode -U: nothing is lost at the stop); the
        # stop turns it into pcapng.
        raw = os.path.splitext(_fresh_path(os.path.join(folder, f"{name}.pcapng")))[0] + ".pcap"
        log_name = f"capture-{os.path.basename(raw)}.log"
        proc = self.lab.popen(node, ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0", "-i", name, "-w", raw],
                              log_name)
        log = os.path.join(self.lab.run_dir, log_name)
        deadline = time.monotonic() + CAPTURE_START_TIMEOUT_S
        while not _log_says(log, "listening on") and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is not None or not _log_says(log, "listening on"):
            self.lab.stop_helper(proc)
            raise UsageError(f"capture: tcpdump on {name} did not start: {_last_line(log)}")
        self.captures[name] = (proc, raw, log)
        self.say(f"capturing {name} (on {node}) into {raw}; 'capture {name}' again stops it")

    def stop_capture(self, name: str) -> None:
        proc, raw, log = self.captures.pop(name)
        self.lab.stop_helper(proc)
        path = os.path.splitext(raw)[0] + ".pcapng"
        result = subprocess.run(["editcap", "-F", "pcapng", raw, path], capture_output=True, text=True)
        if result.returncode == 0:
            os.unlink(raw)
        else:
            path = raw
        self.say(f"capture of {name} stopped: {_captured(log)} packets in {path}")

    def stop_captures(self) -> None:
        """Stop every capture still running (as the shell ends, before the lab goes)."""
        for name in list(self.captures):
            self.stop_capture(name)

    def interface_node(self, name: str) -> str:
        """The node that holds interface ``name`` (a bridge is its own switch node)."""
        for node in self.mn.values():
            if node.name == name and node in self.mn.switches:
                return node.name
            if name in node.intfNames():
                return node.name
        raise UsageError(f"capture: no interface {name!r} in the lab ('intfs' lists them, 'nodes' the bridges)")

    def do_keys(self, line):
        """keys: write the Wireshark profile (ESP SA table, decryption on) for every SA the lab has used so
        far and say where it is; run it again after new SAs (the VCM's) appear."""
        if line.split():
            raise UsageError("usage: keys")
        folder = self.lab.export_wireshark(os.path.join(self.out_dir, "wireshark"))
        count = len(self.lab.esp_sas())
        self.say(f"Wireshark profile with {count} ESP SAs: {folder}\n"
                 f"  key file {os.path.join(folder, 'esp_sa')}\n"
                 f"  open a capture with: WIRESHARK_CONFIG_DIR={folder} wireshark -r CAPTURE (or tshark -r)")

    def _mobile_node(self, name: str, command: str) -> None:
        names = [mn.name for mn in self.lab.plan.mobile_nodes]
        if name not in names:
            raise UsageError(f"{command}: {name!r} is not a mobile node (mobile nodes: {', '.join(names)})")


def _fresh_path(path: str) -> str:
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}-{n}{ext}"
    return path


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def _log_says(path: str, text: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return text in f.read()
    except OSError:
        return False


def _captured(log: str) -> str:
    """Packet count from tcpdump's closing report."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.rstrip().endswith("packets captured"):
                    return line.split()[0]
    except OSError:
        pass
    return "?"


def vpn_members(lab) -> list[tuple[str, str]]:
    """(name, address) of the office hosts and of the mobile nodes at their home addresses."""
    plan = lab.plan
    office = [(name, address) for name, address in plan.office.items() if name != "sg" and name in lab.net]
    return office + [(mn.name, mn.home_address) for mn in plan.mobile_nodes if mn.name in lab.net]


def path_rows(lab) -> list[list]:
    """Rows of the ``paths`` table: for each ordered pair of mobile nodes with node apps, where they are,
    the path the first one's data to the second takes and since when. The VCM's own path rows win; MN–MN
    route optimisation without an SA is direct while optimised; else the SG (or the office LAN)."""
    names = [mn.name for mn in lab.plan.mobile_nodes if mn.name in lab.apps]
    if len(names) < 2:
        return []
    addresses = {mn.name: {mn.home_address, mn.external_home_address} - {None} for mn in lab.plan.mobile_nodes}
    events = lab.events()
    # A node's last move: its last new care-of address or change between inside and outside the office.
    moved = {name: max((e["time"] for e in events if e.get("node") == name
                        and e["event"] in ("location", "care_of_address")), default=None) for name in names}
    rows = []
    for a in names:
        status = lab.status(a)
        vcm = {row.get("peer"): row for row in (status.get("vcm") or {}).get("paths", [])}
        ro = {row.get("peer"): row for row in (status.get("mobility") or {}).get("peers", [])}
        for b in names:
            if b == a:
                continue
            last_move = max((t for t in (moved[a], moved[b]) if t is not None), default=None)
            data = [e for e in events if e.get("node") == a and e.get("dst") in addresses[b]
                    and e["event"] in ("data_first_direct", "data_via_sg")]
            where = f"{lab.attachment.get(a)} / {lab.attachment.get(b)}"
            if lab.attachment.get(a) == "office" and lab.attachment.get(b) == "office":
                rows.append([a, b, where, "office", clock(last_move), "the office LAN, no tunnel"])
            elif b in vcm:
                row = vcm[b]
                detail = f"vcm session {row.get('session')}, generation {row.get('generation')}"
                rows.append([a, b, where, row.get("path"), clock(row.get("since")),
                             detail + (", keys pending" if row.get("pending") else "")])
            elif b in ro and ro[b].get("optimised"):
                since = data[-1]["time"] if data and data[-1]["event"] == "data_first_direct" else last_move
                rows.append([a, b, where, "direct", clock(since), "route optimisation, no SA (clear)"])
            else:
                since = max((t for t in (last_move, data[-1]["time"] if data else None) if t is not None),
                            default=None)
                rows.append([a, b, where, "via-sg", clock(since), "ESP tunnels with the SG"])
    return rows


def pause(lab, banner: str, out_dir: str) -> tuple[float, float, int | None]:
    """Open the shell on a running experiment's lab; 'exit' or end of input resumes. Returns (paused,
    resumed, stop signal or None): the caller leaves the pause out of its figures and stops on a signal."""
    paused = time.time()
    print(f"{banner}: lab shell; 'exit' or end of input resumes the scenario", flush=True)
    lab_shell = LabShell(lab, out_dir=out_dir, ending="resumes the scenario")
    signum = lab_shell.loop()
    for name, (_proc, raw, _log) in lab_shell.captures.items():
        print(f"{banner}: capture of {name} runs on until the lab stops ({raw})", flush=True)
    return paused, time.time(), signum


def parse_args(argv):
    parser = OneLineErrorParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobility", action="store_true",
                        help="Mobile IPv6 in the mobile nodes, home agents and router advertisements (needed by move)")
    parser.add_argument("--vcm", choices=["in-sg", "host"],
                        help="run the VPN connectivity manager in the SG or on its own host (implies --mobility)")
    parser.add_argument("--addressing", choices=["private", "public"], default="private",
                        help="address plan (default private)")
    parser.add_argument("--attachments", help="network of each mobile node, comma-separated (office, wlan1, "
                                              "wlan2, cell; default the plan's)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every link's random loss and jitter (default 1)")
    parser.add_argument("--fault-injection", action="store_true",
                        help="let node apps answer drop-next and vcm-inject (py lab.drop_next(...), for classes)")
    parser.add_argument("--script", metavar="FILE", help="run the commands in FILE, then tear the lab down")
    add_output_options(parser, plots=False)
    add_link_options(parser)
    args = parser.parse_args(argv)
    apply_link_options(parser, args)
    if args.vcm:
        args.mobility = True
    if args.attachments is not None:
        args.attachments = [a.strip() for a in args.attachments.split(",")]
    if args.script is not None:
        try:
            with open(args.script, encoding="utf-8"):
                pass
        except OSError as exc:
            parser.error(f"--script: {exc.strerror}: {args.script}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not_root(PROG):
        return 2
    runs.stop_signals_interrupt()   # SIGTERM and SIGHUP while the lab builds tear it down like Ctrl-C
    try:
        return _run(args)
    except KeyboardInterrupt:   # a signal that arrived during the teardown, after it finished
        return 130


def _run(args) -> int:
    try:
        lab = SvpnLab(addressing=args.addressing, attachments=args.attachments, mobility=args.mobility,
                      vcm=args.vcm, link_params=args.link_params, links="ideal" if args.ideal_links else "default",
                      seed=args.seed, fault_injection=args.fault_injection)
    except (LabError, PlanError, LinkConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    out_dir = os.path.join(args.results, "shell-" + time.strftime("%Y%m%d-%H%M%S"))
    code, stopped = 0, None
    script = open(args.script, encoding="utf-8") if args.script else None
    try:
        print(f"*** building the lab ({args.addressing} addressing, mobility {'on' if args.mobility else 'off'}, "
              f"vcm {args.vcm or 'none'}) ...", flush=True)
        lab.start()
        if args.mobility:
            lab.wait_registered(timeout=REGISTRATION_TIMEOUT_S)
        print(f"*** lab up: run directory {lab.run_dir}", flush=True)
        lab_shell = LabShell(lab, stdin=script, out_dir=out_dir)
        stopped = lab_shell.loop()
        lab_shell.stop_captures()
    except KeyboardInterrupt:
        stopped = signal.SIGINT
    except (LabError, PlanError, LinkConfigError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        code = 1
    finally:
        if script is not None:
            script.close()
        print("*** tearing the lab down ...", flush=True)
        lab.stop()
    if os.path.isdir(out_dir):   # captures taken: their keys, with every SA made until the end
        lab.export_wireshark(os.path.join(out_dir, "wireshark"))
        print(f"*** captures and Wireshark profile in {out_dir}", flush=True)
    print("*** lab stopped", flush=True)
    return 130 if stopped is not None else code


if __name__ == "__main__":
    sys.exit(main())
