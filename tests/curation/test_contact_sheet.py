from __future__ import annotations

import base64
import io

import pandas as pd
from PIL import Image

from curation import render_contact_sheet


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, format="JPEG")
    return buf.getvalue()


def test_contact_sheet_embeds_thumbnails_and_escapes_text():
    thumb = _jpeg()
    df = pd.DataFrame(
        {
            "isic_id": ["ISIC_1", "ISIC_2"],
            "phone_score": [0.512, None],
            "verdict": ["needs_review", "accepted"],
            "phone_reasons": ["<script>alert(1)</script>", "exif; phone"],
            "diagnosis": ["Nevus & co", None],
        }
    )
    page = render_contact_sheet(df, {"ISIC_1": thumb}, title="Pull <p1>")

    assert page.startswith("<!doctype html>")
    assert "data:image/jpeg;base64," + base64.b64encode(thumb).decode() in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Pull &lt;p1&gt;" in page and "Nevus &amp; co" in page
    assert "score 0.51" in page and "no thumbnail" in page
    assert 'data-verdict="needs_review"' in page and 'data-verdict="accepted"' in page
    assert '<option value="accepted">' in page and 'id="q"' in page
    assert "http://" not in page and "https://" not in page  # self-contained
