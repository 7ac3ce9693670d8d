"""The dataset registry and its files: where a release-format ``.npz`` is found, downloaded and validated.

The benchmark files follow the original MADE release (Germain et al., 2015): an ``.npz`` holding
``inputsize``, ``{train,valid,test}_data`` (float32 0/1, shape (N, D)) and ``{train,valid,test}_length``.
A file is looked up in ``data_dir`` (else ``$MADE_DATA_DIR``) and then the cache (``$MADE_CACHE_DIR``,
default ``~/.cache/made_exp``), downloaded into the cache when absent, and validated before use.

Example:
    >>> dataset_info("dna").input_dim
    180
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from made_exp.errors import UserError

__all__ = ["DATASETS", "SPLITS", "DataError", "DatasetInfo", "cache_dir", "dataset_info", "load_npz_splits",
           "resolve_dataset"]

SPLITS = ("train", "valid", "test")
_NPZ_KEYS = ("inputsize", *(f"{split}_data" for split in SPLITS), *(f"{split}_length" for split in SPLITS))
_DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; a dead mirror fails fast instead of hanging a job
_REPO_URL = "https://github.com/mgermain/MADE/raw/master/datasets/{}.npz"
_RELEASE_URL = "https://github.com/mgermain/MADE/releases/download/ICML2015/{}.npz"


class DataError(UserError):
    """A dataset file is missing, unreadable or not in the MADE release format."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a MADE ``.npz`` must hold: ``input_dim`` columns and the row count of each split.

    ``sha256`` is checked on download only where the upstream bytes are known; every file is
    also validated by content.
    """

    name: str
    input_dim: int
    num_train: int
    num_valid: int
    num_test: int
    url: str
    sha256: str | None = None

    def num_rows(self, split: str) -> int:
        """Rows expected in ``split`` (one of ``SPLITS``)."""
        return {"train": self.num_train, "valid": self.num_valid, "test": self.num_test}[split]


# SHA-256 of the upstream bytes, known only for the files byte-identical to the MADE repository.
_UPSTREAM_SHA256 = {
    "dna": "df2d2e7ce1469edfead15e41024e108d64f1b4633cfecfc40ef7107cc22c895c",
    "mushrooms": "4130f1defa3033911fe746a3ab1bb22b0c812bb29e68391a0fbc2d65bab6ae74",
    "nips": "dbf3b659a49670957c0851971bd51ff952a657f010581d12f6c1e2dca8907b20",
}
# The binarized MNIST asset is a re-save of the Salakhutdinov & Murray (2008) binarization whose bytes
# vary with compression, so like adult, connect4 and ocr_letters it is accepted on content alone.
DATASETS: dict[str, DatasetInfo] = {
    name: DatasetInfo(name, input_dim, *sizes, url_template.format(name), _UPSTREAM_SHA256.get(name))
    for name, input_dim, sizes, url_template in (
        ("binarized_mnist", 784, (50000, 10000, 10000), _RELEASE_URL),
        ("adult", 123, (5000, 1414, 26147), _REPO_URL),
        ("connect4", 126, (16000, 4000, 47557), _REPO_URL),
        ("dna", 180, (1400, 600, 1186), _REPO_URL),
        ("mushrooms", 112, (2000, 500, 5624), _REPO_URL),
        ("nips", 500, (400, 100, 1240), _REPO_URL),
        ("ocr_letters", 128, (32152, 10000, 10000), _REPO_URL),
        ("rcv1", 150, (40000, 10000, 150000), _RELEASE_URL),
        ("web", 300, (14000, 3188, 32561), _REPO_URL),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """Registry entry for ``name``; ValueError naming the allowed datasets otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def cache_dir() -> Path:
    """Where downloads go: ``$MADE_CACHE_DIR``, else ``~/.cache/made_exp``."""
    return Path(os.environ.get("MADE_CACHE_DIR") or Path.home() / ".cache" / "made_exp").expanduser()


def resolve_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True, url: str | None = None
) -> Path:
    """Path to ``<name>.npz`` in ``data_dir`` (else ``$MADE_DATA_DIR``) or the cache, downloading it there if absent."""
    info = dataset_info(name)
    filename = f"{name}.npz"
    primary = data_dir if data_dir is not None else os.environ.get("MADE_DATA_DIR")
    search = ([Path(primary).expanduser()] if primary else []) + [cache_dir()]
    for directory in search:
        if (directory / filename).is_file():
            return directory / filename
    url = url or info.url
    if not download:
        raise DataError(
            f"{filename} not found in {', '.join(map(str, search))}; "
            f"put it at $MADE_DATA_DIR/{filename} (download it from {url})"
        )
    target = search[-1] / filename
    _download(url, target, info)
    return target


def _download(url: str, target: Path, info: DatasetInfo) -> None:
    """Fetch ``url`` to ``target`` atomically: nothing appears at ``target`` unless it validates."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so os.replace is a rename and never leaves a half-written file.
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, target)
        if info.sha256 is not None and digest != info.sha256:
            raise DataError(f"{url}: SHA-256 {digest} does not match the expected {info.sha256}")
        _check_splits(_read_npz(temp, source=url), info, source=url)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _fetch(url: str, out: BinaryIO, target: Path) -> str:
    """Stream ``url`` into ``out``; returns the SHA-256 hex digest of the bytes written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
        raise DataError(
            f"{url}: download failed ({err}); put the file at $MADE_DATA_DIR/{target.name} or {target}"
        ) from err
    return digest.hexdigest()


def _read_npz(path: Path, source: str) -> dict[str, np.ndarray]:
    """All release-format arrays of the ``.npz`` at ``path``; ``source`` names it in errors."""
    try:
        with warnings.catch_warnings():
            # The UCI files were written by Python 2; numpy warns that it re-parsed their headers.
            warnings.filterwarnings("ignore", message=".*Python 2.*", category=UserWarning)
            npz = np.load(path, allow_pickle=False, encoding="latin1")
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataError(f"{source}: holds a single array, not an .npz archive")
            with npz:
                missing = [key for key in _NPZ_KEYS if key not in npz.files]
                if missing:
                    raise DataError(f"{source}: missing keys {missing}")
                return {key: npz[key] for key in _NPZ_KEYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{source}: unreadable .npz, corrupt or truncated ({err})") from err


def _scalar(arrays: dict[str, np.ndarray], key: str, source: str) -> int:
    value = arrays[key]
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise DataError(f"{source}: {key} should be one integer, got {value.dtype} of shape {value.shape}")
    number = value.item()
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"{source}: {key} should be one integer, got {number}")
    return int(number)


def _check_splits(arrays: dict[str, np.ndarray], info: DatasetInfo, source: str) -> dict[str, Tensor]:
    """Validate release-format arrays against ``info``; returns float32 (N, D) tensors per split."""
    inputsize = _scalar(arrays, "inputsize", source)
    if inputsize != info.input_dim:
        raise DataError(f"{source}: inputsize is {inputsize}, expected {info.input_dim} for {info.name}")
    splits = {}
    for split in SPLITS:
        data, where = arrays[f"{split}_data"], f"{source}: {split}_data"
        expected = (info.num_rows(split), info.input_dim)
        if data.size == 0:
            raise DataError(f"{where} is empty")
        if data.shape != expected:
            raise DataError(f"{where} has shape {data.shape}, expected {expected}")
        length = _scalar(arrays, f"{split}_length", source)
        if length != expected[0]:
            raise DataError(f"{source}: {split}_length is {length}, expected {expected[0]}")
        if data.dtype.kind not in "biuf":
            raise DataError(f"{where} has non-numeric dtype {data.dtype}")
        if not np.isfinite(data).all():
            raise DataError(f"{where} contains NaN or inf")
        if not ((data == 0) | (data == 1)).all():
            raise DataError(f"{where} has values other than 0 and 1")
        splits[split] = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return splits


def load_npz_splits(path: str | Path, info: DatasetInfo) -> dict[str, Tensor]:
    """Validated splits of a release-format ``.npz``: ``{"train", "valid", "test"}`` -> (N, D) float32 in {0, 1}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return _check_splits(_read_npz(path, source=str(path)), info, source=str(path))
