"""Where zcproxy looks for benchmark data.

One rule, used by every adapter and CLI: an explicit ``data_dir`` argument wins, then the
``ZCPROXY_DATA`` environment variable, then ``./data`` and ``../shared/data`` relative to the
working directory and to the checkout that holds the package (so notebooks and scripts in
subfolders of a development checkout find it too).  Nothing is ever downloaded.

A ``ZCPROXY_DATA`` that names no folder is an error, never a reason to look elsewhere: the
user said where the data is, and scores read from another folder would silently be scores of
other data.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ZCPROXY_DATA"


class DataDirMissing(FileNotFoundError):
    """The data folder the user named (``ZCPROXY_DATA``) does not exist."""


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold the benchmark data, most specific first."""
    # Absolute paths: error messages should name a findable place, and a relative path stored
    # (or symlinked) elsewhere would silently point somewhere else.
    if data_dir is not None:
        return [Path(data_dir).expanduser().absolute()]
    found = []
    if os.environ.get(ENV_VAR):
        chosen = Path(os.environ[ENV_VAR]).expanduser().absolute()
        if not chosen.is_dir():
            raise DataDirMissing(f"{ENV_VAR}={os.environ[ENV_VAR]} is not a folder ({chosen}); "
                                 f"point it at the benchmark data folder, or unset it")
        return [chosen]
    checkout = Path(__file__).resolve().parents[1]
    for base in (Path.cwd(), checkout):
        for candidate in (base / "data", base.parent / "shared" / "data"):
            if candidate not in found:
                found.append(candidate)
    return found


def find_in_data_dir(relative: str, data_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[Path]]:
    """First existing ``<candidate>/<relative>`` and the list of every path tried."""
    tried = [c / relative for c in data_dir_candidates(data_dir)]
    for path in tried:
        if path.exists():
            return path, tried
    return None, tried


def file_version(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """(size, inode, modification time, change time) of a file, None if it cannot be read: what
    tells a cached read of it from a read of the file as it is now.  The inode and the change
    time tell a replacement apart even when it keeps the size and the modification time
    (``cp -p``, ``rsync -a``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
