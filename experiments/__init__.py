"""Experiment machinery shared by the scripts in this folder (and importable by tests).

* :mod:`experiments.scenario`: scenario files (TOML): named phases, moves between networks, traffic.
* :mod:`experiments.records`: the results folder: config.json, events.jsonl, tidy CSV tables, summary.
* :mod:`experiments.plotting`: every figure, drawn from a results folder alone (``experiments/plot.py``).

Scripts (``baseline.py``, ``plot.py``, ...) import ``_venv`` first so that they run inside the project's
virtualenv when started with the system Python.
"""
