"""Torch's thread count from the job's CPU share (made_exp.runs.threads), without a scheduler."""

import pytest
import torch

from made_exp.runs.threads import job_threads, set_job_threads


@pytest.mark.parametrize(
    ("environ", "parallel_jobs", "expected"),
    [
        ({}, None, None),  # nothing limits it: torch's default
        ({"SLURM_CPUS_PER_TASK": "4"}, None, 4),  # a SLURM job's CPUs
        ({}, 4, 4),  # 16 cores over 4 joblib jobs
        ({}, 32, 1),  # never below one thread
        ({}, -1, 1),  # joblib's n_jobs=-1: a job per core
        ({"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "4"}, None, 2),  # an explicit setting wins
        ({"MADE_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}, 4, 3),
    ],
)
def test_job_threads_follows_the_jobs_cpu_share(environ, parallel_jobs, expected):
    assert job_threads(environ, cpu_count=16, parallel_jobs=parallel_jobs) == expected


def test_set_job_threads_sets_torchs_intra_op_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("MADE_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    torch.set_num_threads(2)
    try:
        assert set_job_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_submitit_local_jobs_take_their_cpus_per_task():
    assert job_threads({}, cpu_count=16, launcher_cpus=2) == 2
    assert job_threads({"SLURM_CPUS_PER_TASK": "4"}, cpu_count=16, launcher_cpus=2) == 4
    assert job_threads({}, cpu_count=16) is None
