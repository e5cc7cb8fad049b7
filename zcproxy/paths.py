"""Where zcproxy looks for benchmark data.

One rule, used by every adapter and CLI: an explicit ``data_dir`` argument wins, then the
``ZCPROXY_DATA`` environment variable, then ``./data`` and ``../shared/data`` relative to the
working directory (the layout of a development checkout).  Nothing is ever downloaded.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "ZCPROXY_DATA"


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder that may hold the benchmark data, most specific first."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    found = []
    if os.environ.get(ENV_VAR):
        found.append(Path(os.environ[ENV_VAR]).expanduser())
    found += [Path.cwd() / "data", Path.cwd().parent / "shared" / "data"]
    return found


def find_in_data_dir(relative: str, data_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[Path]]:
    """First existing ``<candidate>/<relative>`` and the list of every path tried."""
    tried = [c / relative for c in data_dir_candidates(data_dir)]
    for path in tried:
        if path.exists():
            return path, tried
    return None, tried
