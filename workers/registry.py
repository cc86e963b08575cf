"""Model registry in the store: ``models/<id>/``, ``models/CHAMPION``, ``models/history.jsonl``."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from workers.store import ObjectMissing, Store, UnknownId

__all__ = [
    "CHAMPION_KEY",
    "model_id_for",
    "publish_model",
    "read_card",
    "read_weights",
    "champion_id",
    "promote",
    "rollback",
    "list_models",
    "history",
]

CHAMPION_KEY = "models/CHAMPION"
HISTORY_KEY = "models/history.jsonl"
# Card fields that change what a model scores, besides its weights (what models.load_checkpoint
# and models.Predictor read). Two cards that agree on these and on the weights score alike.
SCORING_KEYS = (
    "arch",
    "num_classes",
    "metadata_dim",
    "classes",
    "image_size",
    "mean",
    "std",
    "colour_constancy",
    "temperature",
    "logit_bias",
    "test_time_flips",
)


def model_id_for(card: dict[str, Any]) -> str:
    """``m-`` + 12 hex digits of a hash over the weights' sha256 and the card's scoring fields.

    The same weights calibrated differently (or scored with test-time flips) are another model,
    with their own id, so publishing never changes what an existing id scores.
    """
    scoring = {"sha256": card["sha256"], **{k: card.get(k) for k in SCORING_KEYS}}
    digest = hashlib.sha256(json.dumps(scoring, sort_keys=True).encode()).hexdigest()
    return f"m-{digest[:12]}"


def publish_model(
    store: Store, weights: bytes, card: dict[str, Any], *, report_html: str | None = None
) -> str:
    """Write a model's artifacts (weights first, card last) and return its id.

    Models are immutable: when the id is already published (the same weights and scoring fields,
    e.g. a rerun of the same training), the stored artifacts are kept as they are.
    """
    model_id = card.get("model_id") or model_id_for(card)
    if store.exists(f"models/{model_id}/card.json"):
        return model_id
    card = {**card, "model_id": model_id}
    store.put(f"models/{model_id}/model.safetensors", weights)
    if report_html is not None:
        store.put(f"models/{model_id}/report.html", report_html.encode())
    store.put(f"models/{model_id}/card.json", json.dumps(card, indent=2, default=str).encode())
    return model_id


def read_card(store: Store, model_id: str) -> dict[str, Any]:
    try:
        return json.loads(store.get(f"models/{model_id}/card.json"))
    except ObjectMissing:
        raise UnknownId(f"unknown model {model_id!r}; see `birthmark models list`") from None


def read_weights(store: Store, model_id: str) -> bytes:
    return store.get(f"models/{model_id}/model.safetensors")


def champion_id(store: Store) -> str | None:
    return store.read_pointer(CHAMPION_KEY)


def history(store: Store) -> list[dict[str, Any]]:
    try:
        lines = store.get(HISTORY_KEY).decode().splitlines()
    except ObjectMissing:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _append_history(store: Store, event: dict[str, Any]) -> None:
    # Only the train queue (serialised by its lock) and the CLI write here.
    lines = [json.dumps(e) for e in history(store)] + [json.dumps(event)]
    store.put(HISTORY_KEY, ("\n".join(lines) + "\n").encode())


def promote(store: Store, model_id: str, *, reason: str, actor: str = "system") -> None:
    """Make ``model_id`` the champion (history first, then the pointer)."""
    _set_champion(store, model_id, reason=reason, actor=actor)


def _set_champion(store: Store, model_id: str, *, reason: str, actor: str, **extra: Any) -> None:
    read_card(store, model_id)  # must exist
    previous = champion_id(store)
    _append_history(
        store,
        {
            "at": time.time(),
            "event": "promote",
            "model_id": model_id,
            "previous": previous,
            "reason": reason,
            "actor": actor,
            **extra,
        },
    )
    store.write_pointer(CHAMPION_KEY, model_id)


def _champion_chain(events: list[dict[str, Any]]) -> list[str]:
    """The champions a rollback walks back through, oldest first: each promotion pushes its
    model, each rollback pops the model it replaced (so a second rollback goes further back
    rather than restoring the model the first one removed)."""
    chain: list[str] = []
    for event in events:
        if event.get("event") != "promote":
            continue
        # Rollbacks written before the flag existed say so in their reason.
        undo = event.get("rollback") or str(event.get("reason", "")).startswith("rollback from ")
        if undo and len(chain) >= 2 and chain[-2] == event["model_id"]:
            chain.pop()
        elif not chain or chain[-1] != event["model_id"]:
            chain.append(event["model_id"])
    return chain


def rollback(store: Store, *, actor: str = "cli") -> str:
    """Return to the champion before the current one; returns the restored model id.

    Repeated rollbacks keep walking back: A -> B -> C, rollback, rollback gives A (not C again).
    """
    current = champion_id(store)
    chain = _champion_chain(history(store))
    if len(chain) >= 2 and chain[-1] == current:
        previous = chain[-2]
        _set_champion(
            store, previous, reason=f"rollback from {current}", actor=actor, rollback=True
        )
        return previous
    raise ValueError(f"no earlier champion to roll back to (current: {current})")


def list_models(store: Store) -> list[dict[str, Any]]:
    cards = []
    for obj in store.list("models/"):
        if obj.key.endswith("/card.json"):
            cards.append(json.loads(store.get(obj.key)))
    return sorted(cards, key=lambda c: str(c.get("created_at", "")))
