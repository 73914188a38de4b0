"""Atomic file writes: an output appears whole or not at all, and a failed write is one line.

:func:`atomic_path` yields a temporary beside the destination and renames it into place when the
block succeeds; :func:`atomic_paths` does it for the several outputs of one command together.
Temporaries ``.NAME.PID.*.tmp`` left by a killed writer are removed by the next write to NAME.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path

from invdiff.errors import InvdiffError


@contextlib.contextmanager
def atomic_path(path: str | Path, force: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    A write that fails (a full disk, a vanished folder) is one InvdiffError naming ``path``;
    the temporary is removed however the block ends (Ctrl-C included).
    """
    path = Path(path)
    if path.exists() and not force:
        raise InvdiffError(f"{path} exists; pass --force to overwrite it or choose another --out")
    if path.exists() and not path.is_file():
        raise InvdiffError(f"{path} is not a regular file (a folder or a device); choose a file")
    if not path.parent.exists():
        raise InvdiffError(f"folder {path.parent} does not exist; create it or choose another path")
    _remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
        )
    except OSError as err:
        raise InvdiffError(_write_failure(path, err)) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise InvdiffError(_write_failure(path, err)) from None
    except RuntimeError:  # torch.save reports a full disk so
        if not _disk_full(path.parent):
            raise
        raise InvdiffError(_write_failure(path, OSError(errno.ENOSPC, "full"))) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_paths(*paths: str | Path | None) -> Iterator[list[Path | None]]:
    """Yield one temporary per path (None stays None); rename them all into place only when the
    block succeeds, so the outputs of one command appear together or not at all."""
    with contextlib.ExitStack() as stack:
        yield [None if p is None else stack.enter_context(atomic_path(p)) for p in paths]


def _disk_full(folder: Path) -> bool:
    """Return True when less than 1 MiB is free in ``folder`` (False if that is not known)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20


def _write_failure(path: Path, err: OSError) -> str:
    """Return the one-line message of a failed write of ``path``."""
    if err.errno == errno.ENOSPC or _disk_full(path.parent):
        return (
            f"no space left on the device of {path.parent} to write {path.name}; free space "
            "or choose another output folder"
        )
    reason = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return f"could not write {path}: {reason}"


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``.NAME.PID.*.tmp`` files beside ``path`` left by a writer PID that no longer runs
    (a killed run); temporaries of running processes are left alone."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
