"""A self-contained, filterable HTML contact sheet for reviewing images in a browser."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from curation._columns import clean_text

__all__ = ["render_contact_sheet"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1rem; background: #fafafa; }}
#controls {{ position: sticky; top: 0; background: #fafafa; padding: .5rem 0; }}
#grid {{ display: flex; flex-wrap: wrap; gap: .75rem; }}
.card {{ width: 200px; background: #fff; border: 1px solid #ddd; border-radius: 6px;
  padding: .4rem; font-size: 12px; }}
.card img {{ width: 200px; height: 200px; object-fit: contain; background: #222; }}
.card .missing {{ width: 200px; height: 200px; display: flex; align-items: center;
  justify-content: center; background: #eee; color: #777; }}
.accepted {{ border-left: 5px solid #2a9d4b; }}
.rejected {{ border-left: 5px solid #c0392b; }}
.needs_review {{ border-left: 5px solid #e0a100; }}
.id {{ font-weight: 600; }}
.reasons {{ color: #555; }}
</style>
</head>
<body>
<h1>{title}</h1>
<div id="controls">
<input id="q" type="search" placeholder="filter: id, diagnosis, reason" size="40">
<select id="verdict">
<option value="">all verdicts</option>
{verdict_options}
</select>
<span id="shown">{count}</span> of {count} shown
</div>
<div id="grid">
{cards}
</div>
<script>
(function () {{
  var q = document.getElementById("q"), v = document.getElementById("verdict");
  var cards = Array.prototype.slice.call(document.querySelectorAll(".card"));
  function apply() {{
    var text = q.value.toLowerCase(), verdict = v.value, shown = 0;
    cards.forEach(function (card) {{
      var ok = (!verdict || card.dataset.verdict === verdict) &&
               (!text || card.dataset.search.indexOf(text) !== -1);
      card.style.display = ok ? "" : "none";
      if (ok) {{ shown += 1; }}
    }});
    document.getElementById("shown").textContent = shown;
  }}
  q.addEventListener("input", apply);
  v.addEventListener("change", apply);
}})();
</script>
</body>
</html>
"""


def render_contact_sheet(
    df: pd.DataFrame,
    thumbnails: Mapping[str, bytes],
    *,
    title: str = "birthmark contact sheet",
) -> str:
    """One HTML page: a card per row (thumbnail, isic_id, score, verdict, reasons, diagnosis).

    Thumbnails (JPEG or PNG bytes keyed by isic_id) are embedded as data URIs, so the file works
    offline. A text box and a verdict menu filter the cards in the browser.
    """
    if "isic_id" not in df.columns:
        raise ValueError(f"contact sheet needs an 'isic_id' column; found {list(df.columns)}")
    cards = [_card(row, thumbnails.get(str(row["isic_id"]))) for row in df.to_dict("records")]
    verdicts = sorted({_verdict(row) for row in df.to_dict("records")})
    options = "\n".join(
        f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in verdicts
    )
    return _PAGE.format(
        title=html.escape(title),
        verdict_options=options,
        count=len(cards),
        cards="\n".join(cards),
    )


def _verdict(row: Mapping[str, Any]) -> str:
    return clean_text(row.get("verdict")) or clean_text(row.get("phone_verdict")) or "unknown"


def _card(row: Mapping[str, Any], thumbnail: bytes | None) -> str:
    isic_id = str(row["isic_id"])
    verdict = _verdict(row)
    score = row.get("phone_score")
    score_text = "-" if score is None or _isnan(score) else f"{float(score):.2f}"
    reasons = row.get("phone_reasons")
    if isinstance(reasons, (list, tuple)):
        reasons = "; ".join(str(r) for r in reasons)
    reasons_text = clean_text(reasons) or ""
    diagnosis = clean_text(row.get("diagnosis")) or ""
    search = " ".join([isic_id, verdict, diagnosis, reasons_text]).lower()
    if thumbnail:
        mime = "image/png" if thumbnail.startswith(b"\x89PNG") else "image/jpeg"
        data = base64.b64encode(thumbnail).decode("ascii")
        picture = f'<img src="data:{mime};base64,{data}" alt="{html.escape(isic_id)}">'
    else:
        picture = '<div class="missing">no thumbnail</div>'
    return (
        f'<div class="card {html.escape(verdict)}" data-verdict="{html.escape(verdict)}" '
        f'data-search="{html.escape(search)}">{picture}'
        f'<div class="id">{html.escape(isic_id)}</div>'
        f"<div>score {html.escape(score_text)} &middot; {html.escape(verdict)}</div>"
        f"<div>{html.escape(diagnosis)}</div>"
        f'<div class="reasons">{html.escape(reasons_text)}</div></div>'
    )


def _isnan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True
