"""The h5pool command line, run as a real console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from h5pool import CorpusError, PooledH5Dataset
from helpers.corpus import make_corpus
from helpers.damaged import write_damaged_datatype
from helpers.paths import SRC_DIR


def h5pool(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC_DIR)
    return subprocess.run(
        [sys.executable, "-m", "h5pool", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize("command", [[], ["bench"], ["info"], ["index"]])
def test_help(command: list[str]) -> None:
    result = h5pool(*command, "--help")
    assert result.returncode == 0
    assert "usage: h5pool" in result.stdout


def test_console_script_is_installed() -> None:
    script = shutil.which("h5pool")
    if script is None:
        pytest.skip("h5pool is not installed as a console script in this environment")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("h5pool ")


def test_bench_on_a_small_synthetic_corpus(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = h5pool(
        "bench",
        "--files",
        "40",
        "--rows",
        "8",
        "--width",
        "16",
        "--pool",
        "8",
        "--samples",
        "100",
        "--fast-samples",
        "256",
        "--fd-limit",
        "30",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "open-per-sample",
        "open-all",
        "pooled-block",
        "pooled-batched",
        "raw-pread",
        "loader-pooled",
        "loader-threads",
        "loader-workers",
        "pooled-read-batch",
        "h5py-kept-open",
        "loader-memory",
    ):
        assert name in result.stdout
    assert "EMFILE at file" in result.stdout  # open-all under a 30-descriptor limit
    assert "fastest measured here: " in result.stdout
    report = json.loads(out.read_text())
    rows = {row["strategy"]: row for row in report["results"]}
    assert rows["open-all"]["seconds"] is None
    assert rows["pooled-block"]["peak_open"] <= 8
    assert rows["pooled-batched"]["samples"] == 256
    assert rows["open-per-sample"]["speedup_vs_open_per_sample"] == pytest.approx(1.0)
    assert report["fd_limit"] == 30


def test_bench_on_a_compressed_synthetic_corpus(tmp_path: Path) -> None:
    out = tmp_path / "gzip.json"
    result = h5pool(
        "bench",
        "--storage",
        "gzip",
        "--files",
        "6",
        "--rows",
        "16",
        "--width",
        "32",
        "--samples",
        "40",
        "--fast-samples",
        "96",
        "--pool",
        "4",
        "--json",
        str(out),
        "--strategies",
        "open-per-sample",
        "pooled-read-batch",
        "h5py-kept-open",
        "raw-pread",
        "raw-decode",
        "loader-threads",
    )
    assert result.returncode == 0, result.stderr
    assert "gzip 4 + shuffle" in result.stdout
    rows = {row["strategy"]: row for row in json.loads(out.read_text())["results"]}
    assert rows["raw-pread"]["seconds"] is None  # not contiguous: the decode floor instead
    assert rows["raw-decode"]["samples"] == rows["pooled-read-batch"]["samples"] == 96
    assert rows["pooled-read-batch"]["cost_vs_raw_pread"] is not None
    assert "0 HDF5 opens" in rows["pooled-read-batch"]["note"]
    header = next(line for line in result.stdout.splitlines() if line.startswith("strategy"))
    assert "vs raw-decode" in header and "vs raw read" not in header
    assert "vs raw-decode: the cost against a Python loop of pread and decode" in result.stdout


def test_bench_on_user_files_with_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    make_corpus(tmp_path / "mine", files=6, rows=10, width=4)
    plot = tmp_path / "chart.png"
    result = h5pool(
        "bench",
        str(tmp_path / "mine"),
        "--key",
        "data",
        "--samples",
        "30",
        "--fast-samples",
        "60",
        "--strategies",
        "open-per-sample",
        "open-all",
        "pooled-block",
        "--plot",
        str(plot),
    )
    assert result.returncode == 0, result.stderr
    assert "6 files given" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    make_corpus(tmp_path / "mine", files=2, rows=3)
    result = h5pool("bench", str(tmp_path / "mine"), "--key", "pixels")
    assert result.returncode == 3
    assert "'pixels'" in result.stderr and "shard_00000.h5" in result.stderr


def test_bad_paths_exit_codes(tmp_path: Path) -> None:
    missing = h5pool("info", str(tmp_path / "nothing.h5"))
    assert missing.returncode == 3 and "nothing.h5" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = h5pool("index", str(tmp_path / "empty"), "--out", str(tmp_path / "i.npz"))
    assert empty.returncode == 3 and "no HDF5 files" in empty.stderr
    usage = h5pool("bench", "--strategies", "teleport")
    assert usage.returncode == 2


def test_info_reports_datasets_and_bad_files(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    make_corpus(corpus, files=3, rows=5, width=2)
    make_corpus(corpus / "gz", files=1, rows=5, width=2, chunks=(2, 2), compression="gzip")
    (corpus / "broken.h5").write_bytes(b"not hdf5")
    out = tmp_path / "info.json"
    result = h5pool("info", str(corpus), "--key", "data", "--json", str(out))
    assert result.returncode == 3, result.stderr  # a bad file among good ones
    summary = json.loads(out.read_text())
    assert summary["files"] == 5 and summary["good_files"] == 4
    assert summary["samples"] == 20
    assert summary["datasets"]["data"]["read_paths"] == {
        "byte map (contiguous, pread)": 3,
        "byte map (chunks (2, 2), decoded: deflate)": 1,
    }
    assert summary["datasets"]["data"]["files"] == 4
    assert [b["path"] for b in summary["bad_files"]] == [str(corpus / "broken.h5")]
    assert "not an HDF5 file" in result.stdout
    assert "byte map (contiguous, pread) in 3 of 4 files" in result.stdout
    assert "decoded: deflate) in 1 of 4 files" in result.stdout


def test_index_then_dataset_uses_cache(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    paths = make_corpus(corpus, files=10, rows=4, width=2)
    index = tmp_path / "corpus.idx.npz"
    result = h5pool("index", str(corpus), "--out", str(index), "--key", "data", "label")
    assert result.returncode == 0, result.stderr
    assert "10 files, 40 samples" in result.stdout
    ds = PooledH5Dataset(corpus, ["data", "label"], index_cache=index)
    assert ds.pool.stats().misses == 0  # nothing was opened: all came from the cache
    assert int(ds[39]["label"]) == 9003
    # Rewrite one file with more rows: only it is rescanned, and the CLI says so.
    time.sleep(0.01)
    make_corpus(tmp_path / "new", files=1, rows=6, width=2)
    shutil.copy(tmp_path / "new" / "shard_00000.h5", paths[3])
    again = h5pool("index", str(corpus), "--out", str(index), "--key", "data", "label")
    assert again.returncode == 0, again.stderr
    assert "changed since it was indexed" in again.stderr
    assert "scanning 1 new or changed" in again.stderr
    assert "42 samples" in again.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["bench", "--pool", "0"], "argument --pool: 0 is below the least allowed, 1"),
        (["bench", "--files", "0"], "argument --files: 0 is below the least allowed, 1"),
        (["bench", "--rows", "many"], "'many' is not a whole number"),
        (["info", "x.h5", "--storage-options", "{bad"], "--storage-options: not valid JSON"),
        (["info", "x.h5", "--storage-options", "[1]"], "must be a JSON object"),
        (["index", "x.h5", "--out", "/no/such/folder/i.npz"], "the folder /no/such/folder"),
        (["bench", "--json", "/no/such/folder/b.json"], "--json /no/such/folder/b.json"),
        (["bench", "--plot", "/"], "--plot /: is a folder"),
    ],
)
def test_usage_errors_are_one_line_before_any_work(args: list[str], said: str) -> None:
    result = h5pool(*args, timeout=120)
    assert result.returncode == 2
    assert said in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_info_applies_the_datasets_checks_to_several_keys(tmp_path: Path) -> None:
    """A corpus info calls clean builds as a dataset; the rest is named, one line each."""
    good = make_corpus(tmp_path / "c", files=2, rows=3, width=2)
    odd = tmp_path / "c" / "shard_00009.h5"
    with h5py.File(odd, "w") as f:
        f["data"] = np.zeros((4, 2))
        f["label"] = np.zeros(5)
        f["scalar"] = 1.0
    clean = h5pool("info", *good, "--key", "data", "label")
    assert clean.returncode == 0 and "samples along axis 0 of 'data', 'label': 6" in clean.stdout
    assert len(PooledH5Dataset(good, ["data", "label"])) == 6
    mixed = h5pool("info", str(tmp_path / "c"), "--key", "data", "--key", "label")
    assert mixed.returncode == 3
    assert "unequal lengths on axis 0 ('data': 4, 'label': 5)" in mixed.stdout
    scalar = h5pool("info", str(odd), "--key", "scalar")
    assert scalar.returncode == 3 and "'scalar' is a scalar" in scalar.stdout
    unknown = h5pool("info", str(odd), "--key", "pixels")
    assert unknown.returncode == 3
    assert "no dataset 'pixels' in the file; datasets: data, label, scalar" in unknown.stdout
    for result in (clean, mixed, scalar, unknown):
        assert "Traceback" not in result.stderr and "\r" not in result.stderr


def test_index_skip_bad_and_one_line_per_skipped_file(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    make_corpus(corpus, files=3, rows=4, width=2)
    bad = corpus / "shard_00001_bad.h5"
    bad.write_bytes(b"garbage" * 40)
    out = tmp_path / "i.npz"
    named = sorted(str(p) for p in corpus.iterdir())  # named files must be HDF5
    stopped = h5pool("index", *named, "--out", str(out), "--key", "data", "label")
    assert stopped.returncode == 3 and str(bad) in stopped.stderr and not out.exists()
    skipped = h5pool("index", *named, "--out", str(out), "--key", "data", "label", "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    assert "3 files, 12 samples" in skipped.stdout and "left out 1 bad file" in skipped.stdout
    lines = [line for line in skipped.stderr.splitlines() if str(bad) in line]
    assert len(lines) == 1 and lines[0].count(str(bad)) == 1, lines
    assert "h5pool: h5pool:" not in skipped.stderr and "\r" not in skipped.stderr
    one = h5pool("index", make_corpus(tmp_path / "one", files=1, rows=2)[0], "--out", str(out))
    assert "1 file, 2 samples" in one.stdout


def test_check_lists_damaged_files(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    make_corpus(corpus, files=2, rows=4, width=2)
    damaged = corpus / "shard_00005.h5"
    with h5py.File(damaged, "w", libver="latest") as f:
        f.create_dataset(
            "data", data=np.arange(64.0).reshape(16, 4), chunks=(4, 4), fletcher32=True
        )
    raw = bytearray(damaged.read_bytes())
    with h5py.File(damaged) as f:
        offset = f["data"].id.get_chunk_info(1).byte_offset
    raw[offset + 3] ^= 0x10  # one bit of one chunk: only its fletcher32 checksum knows
    damaged.write_bytes(bytes(raw))
    result = h5pool("check", str(corpus))
    assert result.returncode == 3, result.stderr
    assert "checked 3 files" in result.stdout and "1 damaged file" in result.stdout
    lines = [line for line in result.stderr.splitlines() if "shard_00005.h5" in line]
    assert len(lines) == 1 and "checksum" in lines[0] and "Traceback" not in result.stderr
    clean = h5pool("check", str(corpus / "shard_00000.h5"))
    assert clean.returncode == 0 and "none damaged" in clean.stdout


def test_info_follows_links_and_reports_groups(tmp_path: Path) -> None:
    from helpers.robomimic import demo_lengths, write_robomimic_corpus

    linked = tmp_path / "linked.h5"
    make_corpus(tmp_path / "target", files=1, rows=3, width=2)
    with h5py.File(linked, "w") as f:
        f["real"] = np.arange(6.0)
        f["soft"] = h5py.SoftLink("/real")
        f["outside"] = h5py.ExternalLink(str(tmp_path / "target" / "shard_00000.h5"), "/data")
    info = h5pool("info", str(linked), "--key", "soft")
    assert info.returncode == 0, info.stderr
    assert "samples along axis 0 of 'soft': 6" in info.stdout
    assert "  soft: shape (6,)" in info.stdout and "  outside: shape (3, 2)" in info.stdout
    write_robomimic_corpus(tmp_path / "robot", files=2, demos=3)
    groups = h5pool(
        "info",
        str(tmp_path / "robot"),
        "--layout",
        "groups",
        "--group",
        "data",
        "--key",
        "actions",
        "obs/agentview_image",
    )
    assert groups.returncode == 0, groups.stderr
    lengths = demo_lengths(0, 3) + demo_lengths(1, 3)
    assert (
        f"groups under 'data' with 'actions', 'obs/agentview_image': 6 "
        f"(lengths {min(lengths)} to {max(lengths)}" in groups.stdout
    )


def write_bad_files(folder: Path) -> dict[str, Path]:
    """The four bad files of issue 18 among good ones: a missing key, unequal
    lengths, a truncated file, and a text file named ``.h5``."""
    make_corpus(folder, files=3, rows=4, width=2)
    bad = {
        name: folder / f"shard_1000{number}_{name}.h5"
        for number, name in enumerate(["missing-key", "unequal", "truncated", "text"])
    }
    with h5py.File(bad["missing-key"], "w") as f:
        f["data"] = np.zeros((4, 2))
    with h5py.File(bad["unequal"], "w") as f:
        f["data"] = np.zeros((4, 2))
        f["label"] = np.zeros(5)
    whole = (folder / "shard_00000.h5").read_bytes()
    bad["truncated"].write_bytes(whole[: len(whole) // 2])
    bad["text"].write_text("these are notes, not HDF5\n")
    return bad


@pytest.mark.parametrize("which", ["missing-key", "unequal", "truncated", "text"])
def test_info_exits_3_whenever_a_file_is_bad(tmp_path: Path, which: str) -> None:
    bad = write_bad_files(tmp_path / "all")
    folder = tmp_path / "one"
    make_corpus(folder, files=3, rows=4, width=2)
    (folder / bad[which].name).write_bytes(bad[which].read_bytes())
    result = h5pool("info", str(folder), "--key", "data", "label")
    assert result.returncode == 3, result.stdout
    assert "bad files: 1" in result.stdout and bad[which].name in result.stdout
    assert "Traceback" not in result.stderr
    if which == "text":  # a folder listing leaves out what is not HDF5, with a warning
        assert len(PooledH5Dataset(folder, ["data", "label"]).skipped) == 1
        return
    with pytest.raises(CorpusError):
        PooledH5Dataset(folder, ["data", "label"])


def test_info_of_a_damaged_datatype_names_file_and_key(tmp_path: Path) -> None:
    make_corpus(tmp_path, files=2, rows=3, width=2)
    write_damaged_datatype(tmp_path / "shard_00005_damaged.h5")
    for args in ([], ["--key", "data"]):
        result = h5pool("info", str(tmp_path), *args)
        assert result.returncode == 3 and "unexpected" not in result.stderr, result.stderr
        assert "shard_00005_damaged.h5: 'data' has a datatype" in result.stdout


def test_identical_reasons_are_one_line_and_groups_are_suggested(tmp_path: Path) -> None:
    from helpers.robomimic import write_robomimic_corpus

    write_robomimic_corpus(tmp_path / "robot", files=20, demos=2)
    result = h5pool("info", str(tmp_path / "robot"), "--key", "actions")
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert "bad files: 20" in lines
    assert sum("no dataset 'actions'" in line for line in lines) == 1
    assert any(line.startswith("  20 files: no dataset 'actions' in the file") for line in lines)
    assert any("and 17 more" in line for line in lines)
    assert (
        "hint: " in result.stdout and "--layout groups --group data --key actions" in result.stdout
    )
    grouped = h5pool(
        "info", str(tmp_path / "robot"), "--layout", "groups", "--group", "data", "--key", "actions"
    )
    assert grouped.returncode == 0 and "bad files: none" in grouped.stdout


@pytest.mark.parametrize("layout", ["rows", "members", "groups"])
def test_every_command_takes_every_layout(tmp_path: Path, layout: str) -> None:
    """index and info take the layouts the dataset takes, and the cache that
    index writes is the one the dataset then reads without scanning."""
    from helpers.robomimic import write_robomimic_corpus

    folder = tmp_path / "corpus"
    options: dict[str, Any] = {}
    if layout == "groups":
        write_robomimic_corpus(folder, files=3, demos=2)
        args, options = ["--group", "data", "--key", "actions"], {"group": "data"}
        keys: list[str] = ["actions"]
    elif layout == "members":
        make_corpus(folder, files=3, rows=4, width=2)
        args, keys = [], ["data"]
    else:
        make_corpus(folder, files=3, rows=4, width=2)
        args, keys = ["--key", "data"], ["data"]
    cache = tmp_path / "index.npz"
    built = h5pool("index", str(folder), "--out", str(cache), "--layout", layout, *args)
    assert built.returncode == 0, built.stderr
    info = h5pool("info", str(folder), "--layout", layout, *args)
    assert info.returncode == 0, info.stdout + info.stderr
    ds = PooledH5Dataset(folder, keys, layout=layout, index_cache=cache, **options)  # type: ignore[arg-type]
    assert ds.index_stats.files_scanned == 0 and len(ds) > 0
    assert f"{len(ds):,} sample" in built.stdout


def test_the_bench_table_explains_its_columns_and_the_plot_has_a_legend(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from h5pool.cli.bench_command import draw_plot, format_table

    def row(strategy: str, rate: float, note: str = "") -> dict[str, Any]:
        return {
            "strategy": strategy,
            "us_per_sample": 1e6 / rate,
            "samples_per_s": rate,
            "speedup_vs_open_per_sample": 1.0,
            "cost_vs_raw_pread": 1.0,
            "peak_open": 1,
            "note": note,
        }

    report = {
        "corpus": "test",
        "fd_limit": 1024,
        "machine": "test",
        "floor": "raw-pread",
        "results": [
            row("open-per-sample", 1e3),
            row("loader-threads", 5e4, "num_threads=1, waited 97%"),
            row("raw-pread", 1e6),
        ],
    }
    table = format_table(report)
    header = table.splitlines()[4]
    assert "vs raw-pread" in header
    assert "waited N%: the share of the Loader loop spent waiting" in table
    labels = draw_plot(report, str(tmp_path / "plot.png"))
    assert labels == [
        "h5pool",
        "naive recipes",
        "references (raw floors, h5py kept open, in memory)",
    ]
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
