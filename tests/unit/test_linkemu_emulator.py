"""The emulator's command line: bad input is a one-line error and an exit status, never a traceback."""
import json

from nodeapps.linkemu import emulator
from nodeapps.linkemu.profiles import make_config


def run(capsys, argv):
    code = emulator.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_unparsable_config(capsys):
    code, err = run(capsys, ["--side-a", "a", "--side-b", "b", "--config", "{not json"])
    assert code == 2 and err.startswith("linkemu: error: bad --config") and "\n" not in err


def test_impossible_config(capsys):
    bad = {"forward": {"delay_ms": -4}}
    code, err = run(capsys, ["--side-a", "a", "--side-b", "b", "--config", json.dumps(bad)])
    assert code == 2 and "delay -4 ms is outside" in err and "\n" not in err


def test_missing_interface(capsys):
    config = json.dumps(make_config(delay=1).to_dict())
    code, err = run(capsys, ["--side-a", "le-nonexistent0", "--side-b", "le-nonexistent1", "--config", config])
    assert code == 1 and err.startswith("linkemu: error: cannot start on le-nonexistent0") and "\n" not in err
