"""The dataset registry and its files: where a release-format ``.npz`` is found, downloaded and validated.

The benchmark files follow the original MADE release (Germain et al., 2015): an ``.npz`` holding
``inputsize``, ``{train,valid,test}_data`` (float32 0/1, shape (N, D)) and ``{train,valid,test}_length``.
A paper set is looked up in ``data_dir`` (else ``$MADE_DATA_DIR``) only, when one is given; with neither, in
the cache (``$MADE_CACHE_DIR``, default ``~/.cache/made_exp``), downloaded there when absent. A file of one's
own (``load_own_data``) is the release format or one (N, D) array split by fractions. Every file is validated
before use.

Examples:
    >>> dataset_info("dna").input_dim
    180
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import math
import os
import stat
import tempfile
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from made_exp.errors import UserError

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "DatasetInfo",
    "cache_dir",
    "dataset_info",
    "load_npz_splits",
    "load_own_data",
    "resolve_dataset",
    "check_binary",
    "split_rows",
    "DEFAULT_SPLIT",
]

SPLITS = ("train", "valid", "test")
_NPZ_KEYS = ("inputsize", *(f"{split}_data" for split in SPLITS), *(f"{split}_length" for split in SPLITS))
_DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; a dead mirror fails fast instead of hanging a job
_REPO_URL = "https://github.com/mgermain/MADE/raw/master/datasets/{}.npz"
_RELEASE_URL = "https://github.com/mgermain/MADE/releases/download/ICML2015/{}.npz"
DEFAULT_SPLIT = (0.8, 0.1, 0.1)  # train, valid, test fractions of a single array
_SPLIT_SEED = 2015  # independent of the run's seed, so every seed of a configuration sees the same split


class DataError(UserError, ValueError):
    """A dataset is unknown, or its file is missing, unreadable or not in the expected format."""


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
    """Registry entry for ``name``; DataError (a ValueError) naming the allowed datasets otherwise."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}, or give data.path")
    return DATASETS[name]


def cache_dir() -> Path:
    """Where downloads go: ``$MADE_CACHE_DIR``, else ``~/.cache/made_exp``."""
    return Path(os.environ.get("MADE_CACHE_DIR") or Path.home() / ".cache" / "made_exp").expanduser()


def resolve_dataset(
    name: str, data_dir: str | Path | None = None, download: bool = True, url: str | None = None
) -> Path:
    """Path to ``<name>.npz``: in ``data_dir`` (else ``$MADE_DATA_DIR``) when either is given, and nowhere else;
    otherwise in the cache, downloaded there if absent (and ``download``)."""
    info = dataset_info(name)
    filename = f"{name}.npz"
    given = data_dir if data_dir is not None else os.environ.get("MADE_DATA_DIR")
    url = url or info.url
    if given:
        # An explicit directory is the only place looked: a same-named copy in the cache is never used
        # in its stead, so what results.json records is what trained.
        hint = (
            f"put {filename} there (download it from {url}), as $MADE_DATA_DIR/{filename} does; "
            f"with a data directory given, the cache {cache_dir()} is not looked in"
        )
        return _readable_file(_existing_dir(Path(given).expanduser(), hint) / filename, hint)
    path = cache_dir() / filename
    if path.exists() or path.is_symlink():
        return _readable_file(path)
    if not download:
        raise DataError(
            f"{filename} not found in {cache_dir()}; put it at $MADE_DATA_DIR/{filename} (download it from {url})"
        )
    _download(url, path, info)
    return path


def _existing_dir(directory: Path, hint: str) -> Path:
    """``directory`` if it is one; DataError naming it, the problem and ``hint`` otherwise."""
    try:
        is_dir = stat.S_ISDIR(directory.stat().st_mode)
    except OSError as err:
        raise DataError(f"data directory {directory}: {_os_problem(err)}; {hint}") from err
    if not is_dir:
        raise DataError(f"data directory {directory} is not a directory; {hint}")
    return directory


def _readable_file(path: Path, hint: str = "") -> Path:
    """``path`` if it is a file this process can read; DataError naming it and the problem otherwise."""
    if path.is_dir():
        raise DataError(f"{path} is a directory, expected a file")
    try:
        with open(path, "rb"):
            return path
    except OSError as err:
        raise DataError(f"{path}: {_os_problem(err)}" + (f"; {hint}" if hint else "")) from err


def _os_problem(err: OSError) -> str:
    """What an OSError from stat/open means to the user, in a few words."""
    problems = {
        errno.ENOENT: "not found",
        errno.ELOOP: "a symlink loop",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "a parent is not a directory",
    }
    return problems.get(err.errno, err.strerror or str(err))


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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries, an empty zip: what np.savez writes
_NPY_MAGIC = b"\x93NUMPY"


def _file_kind(path: Path, source: str) -> str:
    """``.npz`` or ``.npy`` by the file's first bytes, whatever its name; DataError when it is neither (numpy
    would take it for pickled data)."""
    try:
        with open(path, "rb") as file:
            start = file.read(len(_NPY_MAGIC))
    except PermissionError as err:
        raise DataError(f"{source}: permission denied") from err
    if start.startswith(_ZIP_MAGIC):
        return ".npz"
    if start.startswith(_NPY_MAGIC):
        return ".npy"
    raise DataError(
        f"{source}: not an .npz or .npy file (it starts with neither's signature: numpy's np.savez or np.save "
        "writes them)"
    )


def _load_arrays(path: Path, source: str) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` at ``path``, or ``{"array": ...}`` for an ``.npy``; ``source`` names it in errors."""
    kind = _file_kind(path, source)
    try:
        with warnings.catch_warnings():
            # The UCI files were written by Python 2; numpy warns that it re-parsed their headers.
            warnings.filterwarnings("ignore", message=".*Python 2.*", category=UserWarning)
            loaded = np.load(path, allow_pickle=False, encoding="latin1")
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                return {"array": loaded}
            with loaded:
                return {key: loaded[key] for key in loaded.files}
    except PermissionError as err:
        raise DataError(f"{source}: permission denied") from err
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{source}: unreadable {kind}, corrupt or truncated ({err})") from err


def _read_npz(path: Path, source: str) -> dict[str, np.ndarray]:
    """All release-format arrays of the ``.npz`` at ``path``; ``source`` names it in errors."""
    arrays = _load_arrays(path, source)
    if set(arrays) == {"array"}:
        raise DataError(f"{source}: holds a single array, not an .npz archive")
    missing = [key for key in _NPZ_KEYS if key not in arrays]
    if missing:
        raise DataError(f"{source}: missing keys {missing}")
    return {key: arrays[key] for key in _NPZ_KEYS}


def _scalar(arrays: dict[str, np.ndarray], key: str, source: str) -> int:
    value = arrays[key]
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise DataError(f"{source}: {key} should be one integer, got {value.dtype} of shape {value.shape}")
    number = value.item()
    if not math.isfinite(number) or number != int(number):
        raise DataError(f"{source}: {key} should be one integer, got {number}")
    return int(number)


def _check_splits(arrays: dict[str, np.ndarray], info: DatasetInfo | None, source: str) -> dict[str, Tensor]:
    """Validate release-format arrays against ``info`` (else against their own ``inputsize`` and
    ``*_length``); returns float32 (N, D) tensors per split."""
    inputsize = _scalar(arrays, "inputsize", source)
    if info is not None and inputsize != info.input_dim:
        raise DataError(f"{source}: inputsize is {inputsize}, expected {info.input_dim} for {info.name}")
    splits = {}
    for split in SPLITS:
        data, where = arrays[f"{split}_data"], f"{source}: {split}_data"
        length = _scalar(arrays, f"{split}_length", source)
        expected = (info.num_rows(split), info.input_dim) if info is not None else (length, inputsize)
        if data.size == 0:
            raise DataError(f"{where} is empty")
        if data.shape != expected:
            raise DataError(
                f"{where} has shape {data.shape}, expected {expected}"
                + ("" if info is not None else f" ({split}_length, inputsize)")
            )
        if length != expected[0]:
            raise DataError(f"{source}: {split}_length is {length}, expected {expected[0]}")
        splits[split] = check_binary(data, where)
    return splits


def check_binary(data: np.ndarray | Tensor, where: str) -> Tensor:
    """``data`` as a float32 (N, D) tensor after checking it is 2-D, non-empty, numeric, finite and 0/1;
    DataError starting with ``where`` otherwise."""
    if isinstance(data, Tensor):
        data = data.detach().cpu().numpy()
    data = np.asarray(data)
    if data.ndim != 2 or data.size == 0:
        raise DataError(f"{where} should be a non-empty 2-D (examples, dimensions) array, got shape {data.shape}")
    if data.dtype.kind not in "biuf":
        raise DataError(f"{where} has non-numeric dtype {data.dtype}")
    if not np.isfinite(data).all():
        raise DataError(f"{where} contains NaN or inf")
    if not ((data == 0) | (data == 1)).all():
        raise DataError(f"{where} has values other than 0 and 1")
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))


def split_rows(data: Tensor, fractions: Sequence[float], where: str) -> dict[str, Tensor]:
    """(N, D) rows shuffled with a fixed seed (``_SPLIT_SEED``) and cut into train/valid/test by ``fractions``
    (three, summing to 1; made-train checks them in ``validate_config``), each at least one row."""
    if len(fractions) != len(SPLITS):
        raise DataError(f"{where}: split should be three fractions (train, valid, test), got {list(fractions)}")
    num_train, num_valid = (round(fraction * len(data)) for fraction in fractions[:2])
    counts = [num_train, num_valid, len(data) - num_train - num_valid]
    if min(counts) < 1:
        raise DataError(f"{where}: {len(data)} rows split by {list(fractions)} leave a split empty ({counts})")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    return dict(zip(SPLITS, data[order].split(counts), strict=True))


def load_npz_splits(path: str | Path, info: DatasetInfo) -> dict[str, Tensor]:
    """Validated splits of a release-format ``.npz``: ``{"train", "valid", "test"}`` -> (N, D) float32 in {0, 1}."""
    path = _readable_file(Path(path))
    return _check_splits(_read_npz(path, source=str(path)), info, source=str(path))


def load_own_data(
    path: str | Path, split: Sequence[float] | None = None, info: DatasetInfo | None = None
) -> dict[str, Tensor]:
    """Validated splits of a file of one's own: a release-format ``.npz`` (checked against ``info`` if given,
    else against its own ``inputsize`` and lengths), or one (N, D) array (``.npy``, or an ``.npz`` holding
    one array) split by the fractions ``split`` (default ``DEFAULT_SPLIT``)."""
    path = _readable_file(Path(path).expanduser())
    source = str(path)
    arrays = _load_arrays(path, source)
    if set(_NPZ_KEYS) <= set(arrays):
        if split is not None:
            raise DataError(f"{source} is already split into train/valid/test (release format); drop data.split")
        return _check_splits(arrays, info, source)
    if len(arrays) != 1:
        raise DataError(
            f"{source}: holds arrays {sorted(arrays)}; expected the release-format keys "
            f"{list(_NPZ_KEYS)} or exactly one (N, D) array"
        )
    if info is not None:
        raise DataError(
            f"{source}: holds one array, but {info.name} is a paper set in the release format; "
            "give your data another data.name"
        )
    ((name, data),) = arrays.items()
    where = source if name == "array" else f"{source}: {name}"
    return split_rows(check_binary(data, where), split or DEFAULT_SPLIT, where)
