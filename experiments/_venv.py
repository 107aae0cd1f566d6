"""Make `sudo python3 experiments/<script>.py` run inside the project's virtualenv.

Imported first by every experiment script: if the interpreter is not the project's `.venv`, re-execute
the same command with the venv's python; if setup was never done, say how to do it and exit.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def ensure_venv() -> None:
    if os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(ROOT, ".venv")):
        if ROOT not in sys.path:
            sys.path.insert(0, ROOT)
        return
    if not os.path.exists(VENV_PYTHON):
        sys.exit(f"{os.path.basename(sys.argv[0])}: the lab is not set up yet; run `sudo make install` "
                 f"in {ROOT} first")
    os.execv(VENV_PYTHON, [VENV_PYTHON, *sys.argv])


ensure_venv()
