"""The README's main job on the embedded default, and the CLI paths a user takes after it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from workers.embedded import embedded_redis_url

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _birthmark(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env, cwd=env["_CWD"], capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_demo_on_the_embedded_default_then_score_a_folder(tmp_path):
    """No BIRTHMARK_REDIS_URL: the demo starts its own redis-server and workers, and stops them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIRTHMARK_")}
    env.update({"BIRTHMARK_HOME": str(tmp_path / "home"), "BIRTHMARK_DEVICE": "cpu",
                "PYTHONPATH": str(REPO), "_CWD": str(tmp_path)})  # fmt: skip
    demo = _birthmark(["demo", "--images", "60", "--uploads", "12", "--epochs", "1"], env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "demo finished" in out and "promoted" in out
    assert "rows" in out and "12" in out  # the summary table counts every upload

    # Services are up and reused: redis answers, workers run; status says so.
    status = _birthmark(["services", "status"], env)
    assert status.returncode == 0 and "running" in status.stdout
    assert (tmp_path / "home" / "redis" / "server.json").exists()

    # A user scores a local folder (with metadata) and writes CSV rows: one per input.
    photos = tmp_path / "photos"
    photos.mkdir()
    from tests.workers.helpers import good_jpeg

    for i in range(3):
        (photos / f"p{i}.jpg").write_bytes(good_jpeg(i))
    (photos / "broken.jpg").write_bytes(b"\x00\x01")
    meta = tmp_path / "meta.csv"
    meta.write_text("file,age,sex,site\np0.jpg,55,female,back\np1.jpg,abc,x,moon\n")
    rows_csv = tmp_path / "rows.csv"
    score = _birthmark(["score", str(photos), "--metadata", str(meta), "--out", str(rows_csv)], env)
    assert score.returncode == 0, score.stdout[-2000:] + score.stderr[-2000:]
    with open(rows_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["key"] for r in rows) == sorted(str(p) for p in photos.iterdir())
    assert [r["status"] for r in rows].count("ok") == 3
    broken = next(r for r in rows if r["key"].endswith("broken.jpg"))
    assert broken["status"] == "error" and broken["error_kind"] == "not_an_image"

    listed = _birthmark(["jobs", "list", "--json"], env)
    kinds = {j["kind"] for j in json.loads(listed.stdout)}
    assert {"score", "train", "curate"} <= kinds

    down = _birthmark(["services", "down"], env)
    assert down.returncode == 0 and "redis" in down.stdout
    after = _birthmark(["services", "status"], env)
    assert "running" not in after.stdout and "redis: stopped" in after.stdout
    assert embedded_redis_url(tmp_path / "home") is None  # status did not start it again
