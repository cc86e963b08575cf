from __future__ import annotations

import pandas as pd
import pytest

from curation import Decision, ReviewSession, apply_reviews, review_queue
from curation.reviews import live_decisions


def _images() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "isic_id": ["A", "B", "C", "D", "E"],
            "pull_id": ["p1", "p1", "p2", "p2", "p2"],
            "phone_score": [0.45, 0.9, 0.52, 0.3, None],
            "phone_verdict": [
                "needs_review",
                "accepted",
                "needs_review",
                "needs_review",
                "needs_review",
            ],
            "diagnosis": ["Nevus", "Nevus", "Melanoma Invasive", "nevus", None],
        }
    )


def test_decision_json_round_trip_and_validation():
    d = Decision(isic_id="A", decision="accept", reviewer="ana", reason="looks like a phone photo")
    again = Decision.from_json(d.to_json())
    assert again == d
    assert len(d.decision_id) == 28 and d.created_at.endswith("+00:00")
    with pytest.raises(ValueError, match="decision must be one of"):
        Decision(isic_id="A", decision="maybe", reviewer="ana")
    with pytest.raises(ValueError, match="unknown decision field"):
        Decision.from_json('{"isic_id": "A", "decision": "accept", "reviewer": "x", "evil": 1}')
    with pytest.raises(ValueError, match="reviewer"):
        Decision(isic_id="A", decision="accept", reviewer=" ")


def test_decision_ids_sort_in_creation_order():
    ids = [Decision(isic_id="A", decision="accept", reviewer="r").decision_id for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_latest_decision_wins_and_undo_restores_the_previous_one():
    first = Decision(isic_id="A", decision="accept", reviewer="r")
    second = Decision(isic_id="A", decision="reject", reviewer="r")
    assert live_decisions([second, first])["A"] == second  # order of input does not matter
    undo = Decision(isic_id="A", decision="undo", reviewer="r")
    assert live_decisions([first, second, undo])["A"] == first
    undo_first = Decision(isic_id="A", decision="undo", reviewer="r", undoes=first.decision_id)
    assert live_decisions([first, second, undo_first])["A"] == second
    assert "A" not in live_decisions([first, Decision(isic_id="A", decision="undo", reviewer="r")])


def test_apply_reviews_overrides_verdict():
    decisions = [
        Decision(isic_id="A", decision="accept", reviewer="r"),
        Decision(isic_id="B", decision="reject", reviewer="r"),
    ]
    out = apply_reviews(_images(), decisions)
    assert out["verdict"].tolist() == [
        "accepted",
        "rejected",
        "needs_review",
        "needs_review",
        "needs_review",
    ]
    assert out["review_decision"].tolist() == ["accept", "reject", None, None, None]
    # applying again (to an output) gives the same result: the automatic verdict is the base
    assert apply_reviews(out, decisions)["verdict"].tolist() == out["verdict"].tolist()


def test_review_queue_orders_most_uncertain_first_and_filters():
    images = _images()
    assert review_queue(images)["isic_id"].tolist() == ["C", "A", "D", "E"]
    decided = [Decision(isic_id="C", decision="reject", reviewer="r")]
    assert review_queue(images, decided)["isic_id"].tolist() == ["A", "D", "E"]
    assert review_queue(images, pull="p1")["isic_id"].tolist() == ["A"]
    assert review_queue(images, min_score=0.4, max_score=0.5)["isic_id"].tolist() == ["A"]
    assert review_queue(images, diagnosis="NEVUS")["isic_id"].tolist() == ["A", "D"]
    assert review_queue(images, limit=1)["isic_id"].tolist() == ["C"]
    dup = images.assign(is_duplicate=[False, False, True, False, False])
    assert "C" not in review_queue(dup)["isic_id"].tolist()


def test_review_session_actions_and_undo():
    session = ReviewSession(review_queue(_images()), reviewer="ana")
    assert session.remaining == 4 and session.current["isic_id"] == "C"

    d1 = session.handle("a", reason="phone")
    assert (d1.isic_id, d1.decision, d1.reviewer, d1.reason) == ("C", "accept", "ana", "phone")
    assert session.handle("s") is None  # skip A
    d2 = session.reject()
    assert d2.isic_id == "D" and session.remaining == 1

    undo = session.handle("u")
    assert undo.decision == "undo" and undo.undoes == d2.decision_id and undo.isic_id == "D"
    assert session.current["isic_id"] == "D"
    assert live_decisions([d1, d2, undo]) == {"C": d1}
    assert session.undo().undoes == d1.decision_id and session.current["isic_id"] == "C"
    assert session.undo() is None

    session.handle("q")
    assert session.done and session.current is None and session.remaining == 0
    with pytest.raises(ValueError, match="no current item"):
        session.accept()
    with pytest.raises(ValueError, match="unknown key"):
        session.handle("x")


def test_review_session_resumes_from_persisted_decisions():
    images = _images()
    persisted = []
    session = ReviewSession(review_queue(images), reviewer="ana")
    persisted.append(session.accept())
    # crash here: a new session built from the persisted decisions skips what was decided
    resumed = ReviewSession(review_queue(images, persisted), reviewer="ana")
    assert resumed.current["isic_id"] == "A" and resumed.remaining == 3
    while not resumed.done:
        persisted.append(resumed.reject())
    assert review_queue(images, persisted).empty
