"""A single-node SLURM cluster on this machine (munged, slurmctld, slurmd in one state dir), for the
SLURM tests (``tests/test_slurm.py``) and for a person trying the README's cluster commands.

    python tests/slurm_cluster.py up [STATE_DIR]     # prints the variables to export
    python tests/slurm_cluster.py down [STATE_DIR]

Needs root and Debian's ``slurm-wlm`` and ``munge`` packages. There is no accounting database
(slurmdbd): ``STATE_DIR/bin/sacct`` stands in for the one query submitit makes (``sacct -o
JobID,State,NodeList --parsable2 -j ID``), answered from ``scontrol show job`` (which keeps a
finished job for ``MinJobAge`` seconds). submitit asks only when a job ended without writing its
result, e.g. after ``scancel``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
MEMORY_MARGIN_MB = 2048  # left to the OS and to the processes outside SLURM
START_TIMEOUT_S = 60

SLURM_CONF = """\
ClusterName=made
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={state}/munge.socket,cred_expire=10
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=2
# short waits: a cancelled or timed-out job is killed 2 s after SIGTERM; a requeued job may start
# again after cred_expire (AuthInfo above) seconds; finished jobs stay visible to scontrol 5 min
KillWait=2
MinJobAge=300
InactiveLimit=0
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=local Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

SACCT = """\
#!{python}
# sacct stand-in (no slurmdbd here): answers submitit's query from `scontrol show job`.
import sys
sys.path.insert(0, {tests_dir!r})
from slurm_cluster import sacct_main
sacct_main(sys.argv[1:])
"""


@dataclass
class SlurmCluster:
    """A running single-node cluster; ``env`` holds what a client process needs (``SLURM_CONF``, ``PATH``)."""

    state_dir: Path
    env: dict[str, str]

    def run(self, *command: str, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=True, timeout=timeout).stdout


class ClusterUnavailable(RuntimeError):
    """The packages are missing, or the daemons did not come up (the message says which and why)."""


def missing_binaries() -> list[str]:
    return [
        name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None and not Path("/usr/sbin", name).is_file()
    ]


def node_memory_mb() -> int:
    """MemTotal from /proc/meminfo, minus a margin, in MB."""
    total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1))
    return max(total_kb // 1024 - MEMORY_MARGIN_MB, 512)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def client_env(state_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SLURM_CONF": str(state_dir / "slurm.conf"),
        "PATH": f"{state_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _write_config(state_dir: Path) -> None:
    for sub in ("ctld", "spool", "bin"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    key = state_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    (state_dir / "slurm.conf").write_text(
        SLURM_CONF.format(
            host=socket.gethostname(),
            state=state_dir,
            ctld_port=_free_port(),
            slurmd_port=_free_port(),
            cpus=os.cpu_count(),
            memory_mb=node_memory_mb(),
        )
    )
    sacct = state_dir / "bin" / "sacct"
    sacct.write_text(SACCT.format(python=sys.executable, tests_dir=str(Path(__file__).resolve().parent)))
    sacct.chmod(0o755)


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def start(state_dir: Path) -> SlurmCluster:
    """Write the config, start the three daemons and wait for the node to be idle; on failure stop
    what started and raise ``ClusterUnavailable`` with the reason (and the daemons' last log lines)."""
    missing = missing_binaries()
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("the local SLURM cluster needs root (slurmd runs jobs as their user)")
    state_dir = state_dir.resolve()
    _write_config(state_dir)
    env = client_env(state_dir)
    try:
        subprocess.run(
            [
                _sbin("munged"),
                "--force",
                f"--socket={state_dir}/munge.socket",
                f"--key-file={state_dir}/munge.key",
                f"--pid-file={state_dir}/munged.pid",
                f"--log-file={state_dir}/munged.log",
                f"--seed-file={state_dir}/munged.seed",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        subprocess.run([_sbin("slurmctld"), "-c"], env=env, check=True, capture_output=True, text=True, timeout=30)
        subprocess.run([_sbin("slurmd")], env=env, check=True, capture_output=True, text=True, timeout=30)
        cluster = SlurmCluster(state_dir, env)
        _wait_until_idle(cluster)
    except (subprocess.SubprocessError, OSError, ClusterUnavailable) as error:
        stop(state_dir)
        detail = getattr(error, "stderr", None) or ""
        raise ClusterUnavailable(f"SLURM did not come up: {error} {detail.strip()}\n{_log_tails(state_dir)}") from None
    return cluster


def _wait_until_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        try:
            state = cluster.run("sinfo", "--noheader", "--format=%T").strip()
        except subprocess.SubprocessError:
            state = "(sinfo failed)"
        if state == "idle":
            return
        time.sleep(0.5)
    raise ClusterUnavailable(f"node not idle after {START_TIMEOUT_S} s (sinfo: {state!r})")


def _log_tails(state_dir: Path, lines: int = 5) -> str:
    logs = (state_dir / f"{name}.log" for name in DAEMONS)
    return "\n".join(
        f"{log.name}: " + " | ".join(log.read_text().splitlines()[-lines:]) for log in logs if log.is_file()
    )


def stop(state_dir: Path) -> None:
    """Stop the daemons started in ``state_dir`` (by their pid files), slurmd and slurmctld first."""
    for name in ("slurmd", "slurmctld", "munged"):
        pid_file = state_dir / f"{name}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid_file.unlink()
            continue
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def sacct_main(args: list[str]) -> None:
    """``sacct -o JobID,State,NodeList --parsable2 -j ID ...``: one ``JobID|State|NodeList`` line per job
    (``<array id>_<task>`` for a task of an array), from ``scontrol show job --oneliner``."""
    job_ids = [args[i + 1] for i, arg in enumerate(args) if arg == "-j"]
    print("JobID|State|NodeList")
    for job_id in job_ids:
        shown = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True)
        for line in shown.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            task = fields.get("ArrayTaskId")
            name = f"{fields['ArrayJobId']}_{task}" if task and task.isdigit() else fields["JobId"]
            print(f"{name}|{fields['JobState']}|{fields.get('NodeList', '')}")


def main(argv: list[str]) -> None:
    usage = "usage: python tests/slurm_cluster.py up|down [STATE_DIR (default .slurm)]"
    if not argv or argv[0] not in ("up", "down"):
        sys.exit(usage)
    state_dir = Path(argv[1] if len(argv) > 1 else ".slurm").resolve()
    if argv[0] == "down":
        stop(state_dir)
        print(f"local SLURM cluster in {state_dir} stopped")
        return
    try:
        start(state_dir)
    except ClusterUnavailable as error:
        sys.exit(f"slurm_cluster: error: {error}")
    print(
        f"# local SLURM cluster up ({state_dir}); for its clients:\n"
        f"export SLURM_CONF={state_dir}/slurm.conf PATH={state_dir}/bin:$PATH"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
