"""optuna-dashboard reads a study that made_exp's search wrote, as the docs say (started on its SQLite file,
read back through its HTTP API, stopped)."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from made_exp.runs.search import open_study, run_search
from test_search import SPACE, FakeLauncher, sqlite, tpe

DASHBOARD = Path(sys.executable).parent / "optuna-dashboard"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, deadline: float) -> dict:
    """GET ``url`` as JSON, retrying until the server answers or ``deadline`` (time.monotonic) passes."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_dashboard_serves_a_study_made_exp_wrote(tmp_path):
    if not DASHBOARD.exists() and shutil.which("optuna-dashboard") is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dev]')")
    storage = sqlite(tmp_path / "optuna.db")
    run_search(open_study("dna_search", storage, "minimize", tpe, seed=0), SPACE, ["data=dna"], 4, 2, FakeLauncher())
    port = free_port()
    server = subprocess.Popen(
        [str(DASHBOARD), "--host", "127.0.0.1", "--port", str(port), "--quiet", storage],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", time.monotonic() + 30)["study_summaries"]
        assert [study["study_name"] for study in studies] == ["dna_search"]
        study = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", time.monotonic() + 10)
        assert [trial["number"] for trial in study["trials"]] == [0, 1, 2, 3]
        assert all(trial["state"] == "Complete" and "optimizer.lr" in str(trial["params"]) for trial in study["trials"])
    finally:
        server.terminate()
        server.wait(timeout=10)
