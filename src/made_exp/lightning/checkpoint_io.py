"""Lightning's checkpoint writing, made atomic whatever ``$TMPDIR`` is.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction: a temporary file in ``$TMPDIR``, then a
move. Where ``$TMPDIR`` is another filesystem than the run dir (node-local /tmp, run dirs on NFS or Lustre), the
move falls back to truncating the checkpoint and copying into it, and a job killed during the copy loses its
``last.ckpt``. ``AtomicCheckpointIO`` writes beside the checkpoint instead (``made_exp.runs.atomic``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.plugins import TorchCheckpointIO

from made_exp.runs.atomic import write_torch_atomic

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that saves each checkpoint with ``write_torch_atomic``: a temporary file in the
    checkpoint's own directory, fsynced, renamed onto it; a failed write (disk full) keeps the previous file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_torch_atomic(Path(path), checkpoint)
