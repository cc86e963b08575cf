"""Human review decisions: the append-only record, applying it, the queue and the session logic."""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from curation._columns import clean_text

__all__ = [
    "DECISIONS",
    "Decision",
    "ReviewSession",
    "apply_reviews",
    "live_decisions",
    "review_queue",
]

DECISIONS = ("accept", "reject", "undo")
VERDICT_BY_DECISION = {"accept": "accepted", "reject": "rejected"}

_id_lock = threading.Lock()
_last_id_ms = 0


def new_decision_id() -> str:
    """Time-sortable id (ULID-like): 12 hex ms + 16 random hex; increasing within a process."""
    global _last_id_ms
    with _id_lock:
        ms = max(int(time.time() * 1000), _last_id_ms + 1)
        _last_id_ms = ms
    return f"{ms:012x}{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Decision:
    """One review decision; `undo` decisions name the decision they take back in `undoes`."""

    isic_id: str
    decision: str
    reviewer: str
    reason: str = ""
    undoes: str | None = None
    decision_id: str = field(default_factory=new_decision_id)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {self.decision!r}")
        if not clean_text(self.isic_id):
            raise ValueError("decision needs an isic_id")
        if not clean_text(self.reviewer):
            raise ValueError("decision needs a reviewer")
        if self.undoes is not None and self.decision != "undo":
            raise ValueError(f"only undo decisions may set undoes, got {self.decision!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Decision:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"decision JSON must be an object, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown decision field(s) {unknown}; expected {sorted(known)}")
        return cls(**data)


def live_decisions(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """The decision in force per isic_id: the latest accept/reject that no undo has taken back.

    An undo with `undoes` removes that decision; without it, the latest live one for its isic_id.
    """
    stacks: dict[str, list[Decision]] = {}
    for d in sorted(decisions, key=lambda d: (d.decision_id, d.created_at)):
        stack = stacks.setdefault(d.isic_id, [])
        if d.decision != "undo":
            stack.append(d)
        elif d.undoes is not None:
            stack[:] = [x for x in stack if x.decision_id != d.undoes]
        elif stack:
            stack.pop()
    return {isic_id: stack[-1] for isic_id, stack in stacks.items() if stack}


def _automatic_verdicts(df: pd.DataFrame) -> list[Any]:
    for column in ("auto_verdict", "phone_verdict"):
        if column in df.columns:
            return [clean_text(v) or "needs_review" for v in df[column]]
    return ["needs_review"] * len(df)


def apply_reviews(df: pd.DataFrame, decisions: Iterable[Decision]) -> pd.DataFrame:
    """Copy of `df` with `review_decision` (accept|reject|None) and `verdict`.

    `verdict` is the reviewer's (accepted/rejected) where a decision is live, else the automatic
    verdict (`auto_verdict`, else `phone_verdict`, else needs_review).
    """
    live = live_decisions(decisions)
    out = df.copy()
    auto = _automatic_verdicts(out)
    review = [live[i].decision if i in live else None for i in out["isic_id"]]
    out["review_decision"] = pd.Series(review, index=out.index, dtype=object)
    verdicts = [
        VERDICT_BY_DECISION.get(r, a) if r else a for r, a in zip(review, auto, strict=True)
    ]
    out["verdict"] = pd.Series(verdicts, index=out.index, dtype=object)
    return out


def review_queue(
    df: pd.DataFrame,
    decisions: Iterable[Decision] = (),
    *,
    pull: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    diagnosis: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Rows whose automatic verdict is needs_review and that have no live decision.

    Duplicates (is_duplicate) are left out. Most uncertain first (phone_score closest to 0.5;
    rows without a score last), then by isic_id.
    """
    live = live_decisions(decisions)
    auto = pd.Series(_automatic_verdicts(df), index=df.index)
    keep = (auto == "needs_review") & ~df["isic_id"].isin(list(live))
    if "is_duplicate" in df.columns:
        keep &= ~df["is_duplicate"].fillna(False).astype(bool)
    scores = _scores(df)
    if pull is not None:
        keep &= df["pull_id"] == pull if "pull_id" in df.columns else False
    if min_score is not None:
        keep &= scores >= min_score
    if max_score is not None:
        keep &= scores <= max_score
    if diagnosis is not None:
        wanted = diagnosis.strip().lower()
        column = df["diagnosis"] if "diagnosis" in df.columns else pd.Series(None, index=df.index)
        keep &= column.map(lambda v: (clean_text(v) or "").lower() == wanted).astype(bool)
    queue = df.loc[keep].copy()
    uncertainty = (scores.loc[keep] - 0.5).abs().fillna(math.inf)
    queue = (
        queue.assign(_u=uncertainty.to_numpy(), _id=queue["isic_id"].astype(str).to_numpy())
        .sort_values(["_u", "_id"], kind="stable")
        .drop(columns=["_u", "_id"])
    )
    if limit is not None:
        queue = queue.head(limit)
    return queue.reset_index(drop=True)


def _scores(df: pd.DataFrame) -> pd.Series:
    if "phone_score" not in df.columns:
        return pd.Series(math.nan, index=df.index, dtype=float)
    return pd.to_numeric(df["phone_score"], errors="coerce").astype(float)


class ReviewSession:
    """State machine behind the interactive reviewer; it stores nothing itself.

    Each action that decides returns the Decision for the caller to persist at once, so a crash
    loses at most the item on screen. `undo` takes back the last decision made in this session
    and returns to that item.
    """

    KEYS = {"a": "accept", "r": "reject", "s": "skip", "u": "undo", "q": "quit"}

    def __init__(self, queue: pd.DataFrame, *, reviewer: str) -> None:
        if not clean_text(reviewer):
            raise ValueError("ReviewSession needs a reviewer name")
        self.reviewer = reviewer
        self._items: list[dict[str, Any]] = queue.to_dict("records")
        self._position = 0
        self._made: list[tuple[int, Decision]] = []  # (item position, decision) still in force
        self._quit = False

    @property
    def current(self) -> Mapping[str, Any] | None:
        if self.done:
            return None
        return self._items[self._position]

    @property
    def position(self) -> int:
        return self._position

    @property
    def total(self) -> int:
        return len(self._items)

    @property
    def remaining(self) -> int:
        return 0 if self._quit else max(0, len(self._items) - self._position)

    @property
    def done(self) -> bool:
        return self._quit or self._position >= len(self._items)

    @property
    def decisions(self) -> list[Decision]:
        """Decisions made in this session and not undone, oldest first."""
        return [d for _, d in self._made]

    def accept(self, reason: str = "") -> Decision:
        return self._decide("accept", reason)

    def reject(self, reason: str = "") -> Decision:
        return self._decide("reject", reason)

    def skip(self) -> None:
        self._require_item()
        self._position += 1

    def undo(self, reason: str = "") -> Decision | None:
        """Take back the last decision of this session (None when there is none)."""
        if not self._made:
            return None
        position, last = self._made.pop()
        self._position = position
        self._quit = False
        return Decision(
            isic_id=last.isic_id,
            decision="undo",
            reviewer=self.reviewer,
            reason=reason,
            undoes=last.decision_id,
        )

    def quit(self) -> None:
        self._quit = True

    def handle(self, key: str, reason: str = "") -> Decision | None:
        """Apply a keypress (a/r/s/u/q); returns the Decision to persist, if any."""
        action = self.KEYS.get(key.strip().lower()[:1])
        if action is None:
            raise ValueError(f"unknown key {key!r}; expected one of {', '.join(self.KEYS)}")
        if action == "accept":
            return self.accept(reason)
        if action == "reject":
            return self.reject(reason)
        if action == "undo":
            return self.undo(reason)
        if action == "skip":
            self.skip()
        else:
            self.quit()
        return None

    def _decide(self, decision: str, reason: str) -> Decision:
        item = self._require_item()
        made = Decision(
            isic_id=str(item["isic_id"]), decision=decision, reviewer=self.reviewer, reason=reason
        )
        self._made.append((self._position, made))
        self._position += 1
        return made

    def _require_item(self) -> Mapping[str, Any]:
        item = self.current
        if item is None:
            raise ValueError("the review session has no current item (finished or quit)")
        return item
