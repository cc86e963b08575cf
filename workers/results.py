"""Result files of scoring jobs: ``results/<job_id>/part-<batch>.jsonl`` and ``summary.json``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from workers.store import ObjectMissing, Store

__all__ = [
    "part_key",
    "write_part",
    "read_rows",
    "summarize_rows",
    "merge_summaries",
    "read_summary",
    "write_summary",
]


def part_key(job_id: str, batch: int) -> str:
    return f"results/{job_id}/part-{batch:05d}.jsonl"


def write_part(store: Store, job_id: str, batch: int, rows: list[dict[str, Any]]) -> None:
    """Idempotent: a retried batch overwrites its own part with the same rows."""
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    store.put(part_key(job_id, batch), body.encode())


def read_rows(store: Store, job_id: str) -> Iterator[dict[str, Any]]:
    """All rows of a job, in batch order."""
    for obj in store.list(f"results/{job_id}/part-"):
        for line in store.get(obj.key).decode().splitlines():
            if line.strip():
                yield json.loads(line)


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    errors = [r for r in rows if r["status"] == "error"]
    return {
        "total": len(rows),
        "ok": len(ok),
        "errors": len(errors),
        "errors_by_kind": dict(Counter(r["error_kind"] for r in errors)),
        "labels": dict(Counter(r["label"] for r in ok)),
        "quality": dict(Counter(r["quality"] for r in ok)),
        "model_ids": sorted({r["model_id"] for r in ok}),
    }


def merge_summaries(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One summary of all rows from :func:`summarize_rows` of each part of them."""
    merged: dict[str, Any] = {"total": 0, "ok": 0, "errors": 0}
    counters: dict[str, Counter[str]] = {k: Counter() for k in _COUNTED}
    model_ids: set[str] = set()
    for summary in summaries:
        for key in merged:
            merged[key] += summary[key]
        for key, counter in counters.items():
            counter.update(summary[key])
        model_ids.update(summary["model_ids"])
    return {**merged, **{k: dict(c) for k, c in counters.items()}, "model_ids": sorted(model_ids)}


_COUNTED = ("errors_by_kind", "labels", "quality")


def write_summary(store: Store, job_id: str, summary: dict[str, Any]) -> None:
    store.put(f"results/{job_id}/summary.json", json.dumps(summary, indent=2).encode())


def read_summary(store: Store, job_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get(f"results/{job_id}/summary.json"))
    except ObjectMissing:
        return None
