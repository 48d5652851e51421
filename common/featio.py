"""Reading feature files (.npy / .npz) and writing decoded ones atomically."""

import os
import tempfile
import zipfile

import numpy as np

from common.errors import InputError

SINGLE_TENSOR_NAME = ""   # the name a lone .npy tensor gets in the stream


def load_features(path):
    """{name: array} from a .npy (one tensor, name "") or .npz (named tensors)."""
    if not os.path.isfile(path):
        raise InputError(f"input file not found: {path}")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                tensors = {name: archive[name] for name in archive.files}
            if not tensors:
                raise InputError(f"{path}: the .npz archive holds no arrays")
            return tensors
        if path.endswith(".npy"):
            return {SINGLE_TENSOR_NAME: np.load(path, allow_pickle=False)}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    raise InputError(f"{path}: input must be a .npy or .npz file")


def save_features(path, tensors):
    """Write {name: array} to .npy (exactly one tensor) or .npz, atomically."""
    if path.endswith(".npy"):
        if len(tensors) != 1:
            raise InputError(f"{path}: the stream holds {len(tensors)} tensors; write them to a .npz file")
        writer = lambda f: np.save(f, next(iter(tensors.values())))
    elif path.endswith(".npz"):
        names = [name or "arr_0" for name in tensors]
        if len(set(names)) != len(names):
            raise InputError(f"{path}: two tensors would get the same name in the .npz file")
        writer = lambda f: _write_npz(f, dict(zip(names, tensors.values())))
    else:
        raise InputError(f"{path}: output must be a .npy or .npz file")
    write_atomically(path, writer)


def _write_npz(f, arrays):
    """What np.savez writes, but for any tensor name (np.savez's keyword interface cannot
    take one named 'file') and byte-reproducible (fixed member timestamps)."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(array), allow_pickle=False)


def write_atomically(path, write):
    """Call write(file object) on a temporary file, then rename it to path."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"output folder does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fcrs-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
