"""Figures are written, oriented correctly, and the CLI works end to end."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from zcproxy import plot as zp

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    acc = rng.uniform(60, 95, size=n)
    df = pd.DataFrame({
        "index": np.arange(n),
        "arch": [f"arch{i}" for i in range(n)],
        "accuracy": acc,
        "params": acc / 20 + rng.normal(size=n),
        "synflow": acc + rng.normal(0, 5, size=n),
        "snip": np.round(acc / 10 + rng.normal(size=n)),  # ties
        "lossy": -acc + rng.normal(0, 5, size=n),         # lower is better
        "seconds_synflow": rng.uniform(0, 1, size=n),
        "seconds_snip": rng.uniform(0, 1, size=n),
        "errors": "",  # written by the scoring runner; read back from CSV as an all-NaN column
    })
    df.loc[::20, "synflow"] = np.nan
    return df


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000, (path, len(data))


def _tau_by_counting(x: np.ndarray, y: np.ndarray) -> float:
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    prod = (sx * sy)[iu]
    n0 = len(prod)
    return (np.sum(prod > 0) - np.sum(prod < 0)) / np.sqrt(
        (n0 - np.sum(sx[iu] == 0)) * (n0 - np.sum(sy[iu] == 0)))


def test_import_and_plotting_leave_global_matplotlib_state_alone():
    code = (
        "import sys, matplotlib as mpl\n"
        # dict.items: reading rcParams['backend'] normally would itself import pyplot
        "snap = lambda: dict(dict.items(mpl.rcParams))\n"
        "rc = snap()\n"
        "import zcproxy.plot as zp\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported at import time'\n"
        "assert snap() == rc, 'rcParams changed at import'\n"
        "import pandas as pd, tempfile, os\n"
        "df = pd.DataFrame({'accuracy': [1., 2, 3, 4], 'p': [4., 3, 2, 1]})\n"
        "zp.rank_plot(df, 'p')\n"
        "zp.correlation_heatmap(df.corr(), os.path.join(tempfile.mkdtemp(), 'h.png'))\n"
        "assert snap() == rc, 'rcParams changed by plotting'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_rank_plot_orientation_and_annotation():
    df = _scores()
    ax = zp.rank_plot(df, "synflow", kind="scatter")
    xy = ax.collections[0].get_offsets()
    keep = df["synflow"].notna()
    best = df.loc[keep, "synflow"].idxmax()
    assert xy[np.argmin(xy[:, 0])][1] == pytest.approx(df.loc[best, "accuracy"])
    assert xy[:, 0].min() == 1 and xy[:, 0].max() == keep.sum()
    text = " ".join(t.get_text() for t in ax.texts)
    tau = _tau_by_counting(df.loc[keep, "synflow"].to_numpy(), df.loc[keep, "accuracy"].to_numpy())
    assert f"τ = {tau:.3f}" in text and "ρ = " in text
    assert f"({(~keep).sum()} dropped)" in text
    assert "highest" in ax.get_xlabel()

    # lower is better: rank 1 is the lowest score, and tau comes out positive
    ax = zp.rank_plot(df, "lossy", higher_is_better=False, kind="scatter")
    xy = ax.collections[0].get_offsets()
    assert xy[np.argmin(xy[:, 0])][1] == pytest.approx(df.loc[df["lossy"].idxmin(), "accuracy"])
    assert "lowest" in ax.get_xlabel() and "τ = 0." in " ".join(t.get_text() for t in ax.texts)


def test_rank_plot_hexbin_for_large_tables_and_errors(tmp_path):
    big = _scores(n=zp.HEXBIN_THRESHOLD + 1000)  # 1 in 20 synflow scores is NaN
    ax = zp.rank_plot(big, "synflow")  # auto -> hexbin
    assert any(isinstance(c, PolyCollection) for c in ax.collections)
    small = zp.rank_plot(_scores(), "synflow")  # auto -> scatter
    assert not any(isinstance(c, PolyCollection) for c in small.collections)
    ax.figure.savefig(tmp_path / "hex.png")
    _assert_png(tmp_path / "hex.png")
    with pytest.raises(KeyError, match="nonexistent"):
        zp.rank_plot(big, "nonexistent")
    with pytest.raises(ValueError, match="kind"):
        zp.rank_plot(big, "synflow", kind="violin")


def test_rank_grid_and_heatmap_write_pngs(tmp_path):
    frames = {"nb201": _scores(seed=1), "nb101": _scores(seed=2).drop(columns="snip")}
    out = zp.rank_grid(frames, ["synflow", "snip", "lossy"], tmp_path / "sub" / "grid.png",
                       higher_is_better={"lossy": False})
    _assert_png(out)
    matrix = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    _assert_png(zp.correlation_heatmap(matrix, tmp_path / "heat.png", title="t"))
    with pytest.raises(ValueError, match="square"):
        zp.correlation_heatmap(matrix.iloc[:1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="benchmark"):
        zp.rank_grid({}, ["synflow"], tmp_path / "empty.png")


def test_proxy_columns_ignore_metadata_and_timings(tmp_path):
    _scores().to_csv(tmp_path / "s.csv", index=False)
    from_csv = pd.read_csv(tmp_path / "s.csv")
    assert from_csv["errors"].isna().all()  # the trap: a numeric all-NaN column
    assert zp.proxy_columns(from_csv) == ["synflow", "snip", "lossy"]
    assert zp.proxy_columns(from_csv, exclude=["snip"]) == ["synflow", "lossy"]


def test_default_orientation_follows_the_registry():
    from zcproxy.registry import register_proxy, unregister_proxy

    register_proxy("zz_lower_test", higher_is_better=False)(lambda ctx: 0.0)
    try:
        got = zp.default_orientation(["zz_lower_test", "synflow", "not_a_registered_proxy"])
    finally:
        unregister_proxy("zz_lower_test")
    assert got == {"zz_lower_test": False, "synflow": True, "not_a_registered_proxy": True}


def test_write_figures_as_called_by_correlate(tmp_path):
    paths = zp.write_figures(_scores(), ["synflow", "snip", "lossy"], tmp_path / "figures",
                             title="nats-sss", higher_is_better={"lossy": False})
    assert {p.name for p in paths} == {"rank_synflow.png", "rank_snip.png", "rank_lossy.png",
                                       "pairwise_spearman.png", "rank_grid.png"}
    for p in paths:
        _assert_png(p)
    with pytest.raises(KeyError, match="absent"):
        zp.write_figures(_scores(), ["synflow", "absent"], tmp_path / "x")


def test_cli_help_exits_zero():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "zcproxy.plot", "--help"], env=env,
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--scores" in proc.stdout and "--lower-is-better" in proc.stdout


def test_cli_writes_figures(tmp_path, capsys):
    scores = tmp_path / "nb201-cifar10" / "scores.csv"
    scores.parent.mkdir()
    _scores().to_csv(scores, index=False)
    out = tmp_path / "figures"
    assert zp.main(["--scores", str(scores), "--out", str(out), "--lower-is-better", "lossy"]) == 0
    expected = {"rank_synflow.png", "rank_snip.png", "rank_lossy.png", "rank_grid.png",
                "pairwise_spearman.png"}
    assert {p.name for p in out.iterdir()} == expected  # no params / seconds_* plots
    for name in expected:
        _assert_png(out / name)
    assert str(out / "rank_grid.png") in capsys.readouterr().out


def test_cli_several_files_and_bad_arguments(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _scores(seed=3).to_csv(a, index=False)
    _scores(seed=4).drop(columns="snip").to_csv(b, index=False)
    out = tmp_path / "figs"
    assert zp.main(["--scores", str(a), str(b), "--labels", "A", "B", "--out", str(out),
                    "--proxies", "synflow", "snip", "--method", "kendall"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"A_rank_synflow.png", "A_rank_snip.png", "B_rank_synflow.png",
            "A_pairwise_kendall.png", "B_pairwise_kendall.png", "rank_grid.png"} == names
    for argv, message in [
        (["--scores", str(tmp_path / "nope.csv"), "--out", str(out)], "nope.csv"),
        (["--scores", str(a), "--out", str(out), "--lower-is-better", "synflw"], "synflw"),
        (["--scores", str(a), "--out", str(out), "--target", "top1"], "top1"),
        (["--scores", str(a), str(b), "--out", str(out)], "distinct"),  # same folder name
        (["--scores", str(a), "--out", str(out), "--lower-is-better", "snip",
          "--higher-is-better", "snip"], "both"),
    ]:
        with pytest.raises(SystemExit) as exc:
            zp.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_refuses_a_correlate_table_of_an_older_definition_or_cut_short(tmp_path, capsys):
    """A correlate scores.csv (run.json beside it) is read through analysis.read_scores: a
    column run.json records under an older definition (the Entropic Score is version 2 now)
    or a table that is not the one run.json describes is one line on stderr, no figure."""
    import json
    from zcproxy.atomic import sha256_file
    folder = tmp_path / "run"
    folder.mkdir()
    frame = _scores()
    frame["entropic"] = frame["synflow"]
    frame.to_csv(folder / "scores.csv", index=False)
    record = {"bench": "nats-tss", "proxy_versions": {"entropic": "1", "synflow": "1"},
              "outputs": {"scores.csv": {"rows": len(frame),
                                         "sha256": sha256_file(folder / "scores.csv")}}}
    (folder / "run.json").write_text(json.dumps(record))
    out = tmp_path / "figs"
    argv = ["--scores", str(folder / "scores.csv"), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        zp.main(argv)
    assert exc.value.code == 2
    assert "entropic (definition version 1 there, 2 now)" in capsys.readouterr().err
    assert zp.main(argv + ["--proxies", "synflow"]) == 0  # the current column alone is fine
    frame.head(100).to_csv(folder / "scores.csv", index=False)  # cut short at a row boundary
    with pytest.raises(SystemExit):
        zp.main(argv + ["--proxies", "synflow"])
    assert "is not the table" in capsys.readouterr().err
