"""Reading MATLAB files with one-line errors that name the file and the key at fault.

The checks every loader shares: a readable file, a key that exists and is numeric, finite
values, and MATLAB's 1-based indices. Imports cli (for the error's exit code) only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio

from cli import CommandError


class DataError(CommandError, ValueError):
    """Bad input data. The message is one line naming the file and key at fault (exit code 2)."""


def load_mat(path: Path, keys: list[str] | None = None) -> dict:
    """scipy.io.loadmat with one-line errors for a missing or unreadable file.

    `keys`: read only these variables (the others are skipped in the file, never decoded).
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return sio.loadmat(str(path), variable_names=keys)
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; "
                        f"re-save it with save(..., '-v7')") from None
    except Exception as exc:  # scipy raises several types for non-MAT input
        raise DataError(f"{path}: not a readable MAT file ({type(exc).__name__}: {exc})") from None


def mat_array(mat: dict, key: str, path: Path, ndim: int | None = None) -> np.ndarray:
    if key not in mat:
        keys = ", ".join(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: missing key '{key}' (found: {keys})")
    arr = mat[key]
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: key '{key}' is not a numeric array")
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{path}: key '{key}' has shape {arr.shape}, expected a {ndim}-D array")
    return arr


def check_finite(arr: np.ndarray, path: Path, key: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"{path}: key '{key}' holds NaN or Inf (first at index {tuple(int(i) for i in bad)})")


def one_based_index(mat: dict, key: str, path: Path, upper: int, upper_what: str) -> np.ndarray:
    """A MATLAB 1-based index vector (locs or labels), returned 0-based."""
    arr = mat_array(mat, key, path)
    if arr.size == 0:
        raise DataError(f"{path}: key '{key}' is empty")
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        raise DataError(f"{path}: key '{key}' holds non-integer values")
    idx = arr.astype(np.int64).reshape(-1)
    if idx.min() < 1:
        raise DataError(f"{path}: key '{key}' holds {idx.min()}: indices must be 1-based (MATLAB style)")
    if idx.max() > upper:
        raise DataError(f"{path}: key '{key}' reaches {idx.max()} but {upper_what} is {upper}")
    return idx - 1
