"""Where zcproxy looks for benchmark data.

One rule, used by every adapter and CLI: an explicit ``data_dir`` argument wins, then the
``ZCPROXY_DATA`` environment variable, then ``./data`` and ``../shared/data`` relative to the
working directory and to the checkout that holds the package (so notebooks and scripts in
subfolders of a development checkout find it too).  Nothing is ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ZCPROXY_DATA"


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold the benchmark data, most specific first."""
    # Absolute paths: error messages should name a findable place, and a relative path stored
    # (or symlinked) elsewhere would silently point somewhere else.
    if data_dir is not None:
        return [Path(data_dir).expanduser().absolute()]
    found = []
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser().absolute())
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
