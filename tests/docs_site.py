"""The documentation site built as ``make docs`` builds it, into a folder of the test's choosing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
BUILD_TIMEOUT_S = 900


def build_site(site_dir: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` into ``site_dir`` (the tutorials' blocks run), its output in ``stdout``."""
    env = {key: value for key, value in os.environ.items() if key not in ("MADE_LOG_DIR", "MADE_RUN_DIR")}
    bin_dir = VENV_BIN if VENV_BIN.is_dir() else Path(sys.prefix) / "bin"
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", NO_MKDOCS_2_WARNING="1", WANDB_MODE="offline")
    env.setdefault("OMP_NUM_THREADS", "1")  # one torch thread a command: two can run 25x slower on a busy machine
    command = [str(bin_dir / "mkdocs"), "build", "--strict", "--site-dir", str(site_dir)]
    return subprocess.run(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT_S
    )


__all__ = ["build_site"]
