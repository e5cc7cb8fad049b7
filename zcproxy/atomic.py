"""The one way zcproxy writes a file that a reader may open: whole or not at all.

A file rewritten in place is empty or cut short while it is being written, and stays so if
the process is killed or the disk fills up at that moment: a killed rewrite of a 32,768-row
``scores.csv`` left it empty, or cut at a row boundary that a CSV reader takes for the end.
Every helper here writes to a temporary file in the same folder (same filesystem, so the
rename is atomic), flushes and fsyncs it, renames it over the target and fsyncs the folder.
A reader sees the old file or the new one, never a mix; after a crash at most a stray
``.<name>.tmp-<pid>`` file is left, which no reader looks at and the next write of that file
removes.

Only files that are rewritten as a whole go through here.  Append-only records (the score
journal, the search log, the training log) are appended to instead, and their readers drop
a torn last line.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write", "write_text", "write_bytes", "write_csv", "save_figure",
           "sha256_file", "fsync_dir", "FileInUse", "lock_exclusively", "exclusive_use"]


class FileInUse(OSError):
    """Another process holds the append-only record this one was about to write."""


def lock_exclusively(fh: IO, path: str | os.PathLike, writer: str) -> None:
    """Hold an advisory exclusive lock on the open file ``fh`` until it is closed.

    Two processes appending to one search log (the same command started twice, or a run
    resumed while it is still running) would interleave their events, and the second one's
    repair of a "torn" last line could cut a line the first is writing.  The lock makes the
    second one stop at once, before it reads anything, with :class:`FileInUse` (``writer``
    says who the other process probably is).  The kernel drops the lock when the holder
    exits, so a killed run never leaves its record locked.  Where ``fcntl`` does not exist
    (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FileInUse(f"{path} is being written by another process ({writer} is still "
                        "running); wait for it to end or stop it, then start this one again "
                        "to resume") from None


_HELD: set[str] = set()  # the lock files this process holds


@contextlib.contextmanager
def exclusive_use(path: str | os.PathLike, writer: str) -> Iterator[None]:
    """Within the block, no other process may write ``path``: :class:`FileInUse` otherwise.

    For records that are sometimes replaced whole by a rename (a score journal is created,
    merged and converted that way), so the lock cannot sit on the record itself (a rename
    gives it a new inode and the lock would stay on the old one): it sits on a sidecar
    ``.<name>.lock`` beside it, which is never renamed or removed (removing it would let two
    processes lock two different files).  Re-entrant within a process, so a command can hold
    its journal from ``--fresh`` to its tables while the scoring inside takes it again.
    """
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    key = os.path.realpath(lock)
    if key in _HELD:  # an outer block of this process holds it already
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock, "a")
    try:
        lock_exclusively(fh, path, writer)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        fh.close()


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (not every filesystem lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                 newline: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    If the block raises (a full disk, a bug), the temporary file is removed and ``path`` keeps
    its old content.  The folder is created if needed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete what killed writers of ``path`` left: ``.<name>.tmp-<pid>`` of dead processes."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                stale.unlink()
        except OSError:
            pass  # alive (or not ours to signal): leave it


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_csv(frame, path: str | os.PathLike, **to_csv) -> Path:
    """``frame.to_csv(path, **to_csv)``, atomically.  The CSV is rendered in memory first, so a
    formatting error never touches the file either."""
    buffer = io.StringIO()
    frame.to_csv(buffer, **to_csv)
    return write_text(path, buffer.getvalue())


def save_figure(fig, path: str | os.PathLike, **savefig) -> Path:
    """``fig.savefig(path, **savefig)``, atomically (the format comes from the suffix)."""
    path = Path(path)
    buffer = io.BytesIO()
    savefig.setdefault("format", path.suffix.lstrip(".") or None)
    fig.savefig(buffer, **savefig)
    return write_bytes(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (what a settings record stores to recognise its tables)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
