"""The review CLI: non-interactive verbs, and the interactive reviewer in a real terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import curation
from curation.synthetic import jpeg_bytes, make_lesion_image


def _publish_borderline(store, n: int = 4) -> list[str]:
    """A curated version whose images all need review; returns ids in queue order."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        key = f"raw/isic/p1/ISIC_{i:07d}.jpg"
        store.put(key, jpeg_bytes(make_lesion_image(rng, malignant=False, style="phone")))
        rows.append(
            {
                "isic_id": f"ISIC_{i:07d}",
                "key": key,
                "pull_id": "p1",
                "copyright_license": "CC-BY",
                "malignant": float(i % 2),
                "diagnosis": "Nevus" if i % 2 == 0 else "Melanoma",
                "phone_score": 0.5 + 0.05 * (i + 1),
                "phone_verdict": "needs_review",
                "phone_reasons": "even illumination; no aperture",
                "readable": True,
                "phash": f"{(i * 0x1111111111111111) & 0xFFFFFFFFFFFFFFFF:016x}",
            }
        )
    manifest = curation.build_manifest(pd.DataFrame(rows))
    version = curation.manifest_version(manifest)
    store.put(f"curated/{version}/manifest.parquet", curation.manifest_to_parquet(manifest))
    store.put(
        f"curated/{version}/summary.json",
        json.dumps({"version": version, "created_at": 0}).encode(),
    )
    store.write_pointer("curated/LATEST", version)
    return [f"ISIC_{i:07d}" for i in range(n)]


def _decisions(store) -> list[dict]:
    found = [json.loads(store.get(o.key)) for o in store.list("reviews/")]
    return sorted(found, key=lambda d: d["decision_id"])


def test_review_verbs(env):
    from workers.cli import app
    from workers.runtime import store

    st = store()
    ids = _publish_borderline(st)
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["review", "list", "--json"]).stdout)
    assert [r["isic_id"] for r in listed] == ids
    only_mel = json.loads(
        runner.invoke(app, ["review", "list", "--diagnosis", "melanoma", "--json"]).stdout
    )
    assert {r["isic_id"] for r in only_mel} == {ids[1], ids[3]}
    res = runner.invoke(
        app, ["review", "reject", ids[0], ids[1], "--reason", "dermoscope", "--reviewer", "bo"]
    )
    assert res.exit_code == 0, res.output
    listed = json.loads(runner.invoke(app, ["review", "list", "--json"]).stdout)
    assert [r["isic_id"] for r in listed] == ids[2:]
    assert runner.invoke(app, ["review", "undo", "--reviewer", "bo"]).exit_code == 0
    listed = json.loads(runner.invoke(app, ["review", "list", "--json"]).stdout)
    assert ids[1] in [r["isic_id"] for r in listed]
    bad = runner.invoke(app, ["review", "accept", "ISIC_NOPE"])
    assert bad.exit_code == 2 and "ISIC_NOPE" in bad.output
    kinds = [(d["isic_id"], d["decision"], d["reviewer"]) for d in _decisions(st)]
    assert kinds == [(ids[0], "reject", "bo"), (ids[1], "reject", "bo"), (ids[1], "undo", "bo")]


def test_interactive_review_with_piped_keys(env):
    """Without a terminal the reviewer reads one key per line: accept, reject, undo, then quit."""
    from workers.cli import app
    from workers.runtime import store

    st = store()
    ids = _publish_borderline(st)
    res = CliRunner().invoke(app, ["review", "--reviewer", "cy"], input="a\nr\nu\nq\n")
    assert res.exit_code == 0, res.output
    assert "left" in res.output
    got = [(d["isic_id"], d["decision"]) for d in _decisions(st)]
    assert got == [(ids[0], "accept"), (ids[1], "reject"), (ids[1], "undo")]


@pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)
def test_interactive_review_in_a_real_terminal(env, tmp_path):
    """Keypresses in a tmux pane: the reviewer shows a preview and saves each decision at once."""
    from workers.runtime import store

    st = store()
    ids = _publish_borderline(st)
    session = f"bm-review-{os.getpid()}"
    env_args = " ".join(f"{k}='{v}'" for k, v in env.items())
    cmd = f"{env_args} {sys.executable} -m workers.cli review --reviewer dee; sleep 30"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", cmd], check=True
    )
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout

        def wait_for(text: str, timeout: float = 60.0) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                shown = screen()
                if text in shown:
                    return shown
                time.sleep(0.2)
            raise AssertionError(f"{text!r} never appeared:\n{screen()}")

        shown = wait_for("4 of 4 left")
        assert ids[0] in shown and "▀" in shown  # the half-block preview
        subprocess.run(["tmux", "send-keys", "-t", session, "a"], check=True)
        wait_for("3 of 4 left")
        subprocess.run(["tmux", "send-keys", "-t", session, "r"], check=True)
        wait_for("2 of 4 left")
        subprocess.run(["tmux", "send-keys", "-t", session, "u"], check=True)
        wait_for("3 of 4 left")
        # Decisions are already in the store before the session ends (crash-safe).
        assert [(d["isic_id"], d["decision"]) for d in _decisions(st)] == [
            (ids[0], "accept"),
            (ids[1], "reject"),
            (ids[1], "undo"),
        ]
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        wait_for("session over")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_terminal_keys_ignore_escape_sequences_and_keep_type_ahead():
    """An up-arrow (ESC [ A) is not an accept, an F2 (ESC O Q) not a quit, and keys typed
    while the next image is drawn are kept for it, in order (they used to be flushed, so the
    next surviving key fell on the wrong image)."""
    from workers.cli.review import _Keys

    master, slave = os.openpty()
    try:
        with _Keys(slave) as keys:
            os.write(master, b"\x1b[A\x1bOQ\x1b[5~ar")
            got = [keys.read() for _ in range(5)]
            assert got == ["", "", "", "a", "r"]
            os.write(master, b"S")
            assert keys.read() == "s"
    finally:
        os.close(master)
        os.close(slave)


def test_interactive_review_prints_its_keys_and_what_is_left_after_quit(env):
    from workers.cli import app
    from workers.runtime import store

    _publish_borderline(store())
    res = CliRunner().invoke(app, ["review", "--reviewer", "cy"], input="a\nq\n")
    assert res.exit_code == 0, res.output
    assert "[a]ccept" in res.output and "[q]uit" in res.output
    assert "1 accepted" in res.output and "3 left" in res.output
