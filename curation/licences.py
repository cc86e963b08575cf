"""Licence filter: flag rows whose copyright_license is not allowed."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from curation._columns import clean_text

__all__ = ["flag_licences"]


def flag_licences(df: pd.DataFrame, *, allowed: Sequence[str] = ("CC-0", "CC-BY")) -> pd.DataFrame:
    """Copy of `df` with `licence_ok` (bool) and `licence_note` (reason, None when ok).

    Names match case-insensitively (``cc-by`` given to ``curate import --licence`` is CC-BY);
    nothing else is normalised, so ``CC-BY`` never admits ``CC-BY-NC``.
    """
    if isinstance(allowed, str):
        raise TypeError(f"allowed must be a sequence of licence names, got the string {allowed!r}")
    allowed_set = {a.strip().casefold() for a in allowed}
    listed = ", ".join(allowed) or "(none)"
    column = df["copyright_license"] if "copyright_license" in df.columns else [None] * len(df)
    ok: list[bool] = []
    notes: list[str | None] = []
    for value in column:
        licence = clean_text(value)
        if licence is None:
            ok.append(False)
            notes.append(f"missing licence (allowed: {listed})")
        elif licence.casefold() in allowed_set:
            ok.append(True)
            notes.append(None)
        else:
            ok.append(False)
            notes.append(f"{licence} not in allowed licences {listed}")
    out = df.copy()
    out["licence_ok"] = pd.Series(ok, index=out.index, dtype=bool)
    out["licence_note"] = pd.Series(notes, index=out.index, dtype=object)
    return out
