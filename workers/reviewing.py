"""Review decisions in the store (append-only ``reviews/<decision_id>.json``) and the queue."""

from __future__ import annotations

import json

import pandas as pd

import curation
from workers.curating import load_decisions
from workers.store import Store
from workers.training_run import load_manifest

__all__ = ["save_decision", "load_queue", "live_decision_for"]


def save_decision(store: Store, decision: curation.Decision) -> None:
    """Persist one decision at once, so a crash mid-session loses nothing already decided."""
    body = json.dumps(decision.__dict__, ensure_ascii=False, indent=1)
    store.put(f"reviews/{decision.decision_id}.json", body.encode())


def load_queue(
    store: Store,
    *,
    version: str | None = None,
    pull: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    diagnosis: str | None = None,
) -> tuple[str, pd.DataFrame, list[curation.Decision]]:
    """(version, needs_review rows without a live decision, all decisions)."""
    version, manifest = load_manifest(store, version)
    decisions = load_decisions(store)
    queue = curation.review_queue(
        manifest,
        decisions,
        pull=pull,
        min_score=min_score,
        max_score=max_score,
        diagnosis=diagnosis,
    )
    return version, queue, decisions


def known_ids(store: Store, version: str | None = None) -> set[str]:
    _, manifest = load_manifest(store, version)
    return set(manifest["isic_id"].astype(str))


def live_decision_for(
    decisions: list[curation.Decision], reviewer: str
) -> curation.Decision | None:
    """The latest live (not undone) decision by ``reviewer``."""
    from curation.reviews import live_decisions

    live = [d for d in live_decisions(decisions).values() if d.reviewer == reviewer]
    return max(live, key=lambda d: d.decision_id, default=None)
