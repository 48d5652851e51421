"""Reading feature files (.npy / .npz) and writing outputs atomically.

Outputs (bitstreams, decoded features, traces, CTC files) go through write_atomically: the
data is written to an unnamed temporary file in the output's folder (Linux O_TMPFILE), linked
under a temporary name only when complete and renamed into place, so a killed process leaves
nothing visible; where O_TMPFILE is missing, a named temporary file carries the writer's pid
and the next write into that folder removes those whose process is gone. The file gets the
permissions the umask gives a new file. check_output_path refuses an output that would
clobber the input, a symbolic link or anything but a regular file.
"""

import os
import re
import secrets
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
            for name, value in tensors.items():
                if not isinstance(value, np.ndarray):
                    raise InputError(f"{path}: member '{name}' is not a .npy array")
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


TEMPORARY_PREFIX = ".fcrs-"
_TEMPORARY_NAME = re.compile(r"\.fcrs-(\d+)-[0-9a-f]+\.tmp$")


def check_output_path(path, inputs=()):
    """Refuse an output path that names an input file, a symbolic link, or an existing
    non-regular file (a folder, a device), and one in a folder that is missing or not writable."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.islink(path):
        raise InputError(f"output {path} is a symbolic link; refusing to replace it")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise InputError(f"output {path} exists and is not a regular file")
    for source in inputs:
        if source and os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
            raise InputError(f"output {path} is the input file {source}")
    if not os.path.isdir(directory):
        raise InputError(f"output folder does not exist: {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"output folder is not writable: {directory}")


def write_atomically(path, write):
    """Call write(file object) on a temporary file in path's folder, then put it in place."""
    check_output_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(directory)
    mode = 0o666 & ~_umask()
    temporary = os.path.join(directory, f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(6)}.tmp")
    try:
        fd, unnamed = _temporary_file(directory, temporary, mode)
    except OSError as exc:       # e.g. a folder of /proc or /sys, a read-only mount
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if unnamed:
                _link_unnamed(f.fileno(), temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as exc:
        _unlink_quietly(temporary)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _unlink_quietly(temporary)
        raise


def _temporary_file(directory, temporary, mode):
    """(fd, unnamed): an unnamed O_TMPFILE file in `directory`, else the file `temporary`."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY, mode), True
    except (AttributeError, OSError):        # no O_TMPFILE (not Linux, or the file system lacks it)
        return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), False


def write_text(path, text):
    """A UTF-8 text file, written atomically."""
    data = text.encode("utf-8")
    write_atomically(str(path), lambda f: f.write(data))


def _link_unnamed(fd, name):
    """Give the O_TMPFILE file `fd` the name `name` (linkat with AT_SYMLINK_FOLLOW through /proc)."""
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"self/fd/{fd}", name, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def _umask():
    with open("/proc/self/status") as status:     # Linux: read without changing it
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_stale_temporaries(directory):
    """Remove our named temporary files in `directory` whose writing process is gone."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMPORARY_PREFIX)]
    except OSError:
        return
    for name in names:
        match = _TEMPORARY_NAME.match(name)
        if match and not _process_alive(int(match.group(1))):
            _unlink_quietly(os.path.join(directory, name))


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
