"""Fault: one job full of bad, hostile and odd-but-valid uploads.

Every input ends as exactly one row: ``ok`` (with the right quality) or ``error`` with a specific
kind; the worker stays alive and the rest of the job completes. Over-size objects are refused on
their declared Content-Length, before any of the body is read.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from tests.faults._support import wait_for, wait_job
from tests.faults.conftest import MAX_UPLOAD_BYTES, bound
from tests.workers.helpers import png_bomb

pytestmark = pytest.mark.integration

P = "uploads/bad/"


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _exif(tag: int, value) -> bytes:
    exif = Image.Exif()
    exif[tag] = value
    return exif.tobytes()


def uploads() -> dict[str, tuple[bytes, str, str | None]]:
    """file name -> (bytes, expected status or error kind, expected quality for ok rows)."""
    from curation.synthetic import jpeg_bytes, make_lesion_image

    photo = make_lesion_image(
        np.random.default_rng(7), malignant=True, style="phone", size=(320, 240)
    )
    good = jpeg_bytes(photo)
    rgba = photo.convert("RGBA")
    rgba.putalpha(160)
    grey16 = np.asarray(photo.convert("L")).astype(np.uint16) * 257
    return {
        "zero.jpg": (b"", "empty", None),
        "truncated.jpg": (good[: len(good) // 2], "unreadable", None),
        "text.jpg": (b"hello, I am text pretending to be a photo\n" * 3, "not_an_image", None),
        "page.jpg": (
            b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>",
            "not_an_image",
            None,
        ),
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "not_an_image", None),
        "scan.pdf": (b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n", "not_an_image", None),
        "bomb.png": (png_bomb(20000, 20000), "decompression_bomb", None),
        "netpbm.ppm": (_save(photo, "PPM"), "unsupported", None),
        "oversize.jpg": (
            b"\xff\xd8\xff\xe0" + os.urandom(MAX_UPLOAD_BYTES + 10),
            "too_large",
            None,
        ),
        "alpha.png": (_save(rgba, "PNG"), "ok", "ok"),
        "palette.gif": (
            _save(photo.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
            "ok",
            "ok",
        ),
        "cmyk.jpg": (_save(photo.convert("CMYK"), "JPEG"), "ok", "ok"),
        "sixteen.tif": (_save(Image.fromarray(grey16), "TIFF"), "ok", "ok"),
        "one-pixel.png": (_save(Image.new("RGB", (1, 1), (120, 80, 60)), "PNG"), "ok", "too_small"),
        "dark.jpg": (_save(Image.new("RGB", (320, 240), (3, 3, 3)), "JPEG"), "ok", "too_dark"),
        "bad-orientation.jpg": (_save(photo, "JPEG", exif=_exif(0x0112, 9)), "ok", "ok"),
        "rotated.jpg": (_save(photo, "JPEG", exif=_exif(0x0112, 6)), "ok", "ok"),
        "huge-exif.jpg": (_save(photo, "JPEG", exif=_exif(0x010E, "x" * 60000)), "ok", "ok"),
        "phone.heic": (_save(photo, "HEIF"), "ok", "ok"),
        "phone.webp": (_save(photo, "WEBP"), "ok", "ok"),
        "old.bmp": (_save(photo, "BMP"), "ok", "ok"),
        "zdjęcie znamię 😀.jpg": (good, "ok", "ok"),
        "my photo (1).jpg": (good, "ok", "ok"),
        "with-metadata.jpg": (good, "ok", "ok"),
        "dup.jpg": (good, "ok", "ok"),
    }


def test_every_bad_upload_ends_as_one_specific_row(scoring_service):
    from workers import results
    from workers.runtime import store
    from workers.submit import submit_scoring

    with bound(scoring_service.env):
        st = store()
        files = uploads()
        for name, (data, _, _) in files.items():
            st.put(P + name, data)
        st.put("models/secret.jpg", files["my photo (1).jpg"][0])  # exists, but not readable
        st.put(P + "gone/deleted.jpg", files["my photo (1).jpg"][0])

        items = [{"key": P + n, "source": n} for n in files]
        items[-2]["metadata"] = {
            "age_approx": "ancient",
            "sex": "robot",
            "anatom_site_general": "moon",
        }
        items += [
            {"key": P + "dup.jpg", "source": "dup again"},
            {"key": "models/secret.jpg", "source": "outside"},
            {"key": "uploads/../models/CHAMPION", "source": "dotdot"},
            {"key": "/etc/passwd", "source": "absolute"},
            {"key": P + "bell\x07.jpg", "source": "control"},
            {"key": P + "x" * 1100, "source": "long"},
            {"key": P + "never-uploaded.jpg", "source": "never"},
        ]
        expected = {n: (status, quality) for n, (_, status, quality) in files.items()}
        expected |= {
            "dup again": ("duplicate_input", None),
            "outside": ("forbidden_key", None),
            "dotdot": ("invalid_key", None),
            "absolute": ("invalid_key", None),
            "control": ("invalid_key", None),
            "long": ("invalid_key", None),
            "never": ("missing", None),
            P + "gone/deleted.jpg": (
                "missing",
                None,
            ),  # listed by the plan, deleted before download
        }
        job_id, _ = submit_scoring(items=items, prefixes=[{"prefix": P + "gone/"}])
        # Delete it as soon as the plan has listed it; its batch is the job's last.
        wait_for(lambda: st.exists(f"results/{job_id}/plan.json"), timeout=60, interval=0.01)
        st.delete(P + "gone/deleted.jpg")

        job = wait_job(job_id, timeout=90)
        assert job["status"] == "done", job
        rows = list(results.read_rows(st, job_id))
        got = {r["key"]: r for r in rows}
        assert len(rows) == len(got) == len(expected), sorted(got)
        outcome = {
            k: (r["status"] if r["status"] == "ok" else r["error_kind"], r.get("quality"))
            for k, r in got.items()
        }
        assert outcome == expected
        assert len(expected) >= 30
        assert {kind for kind, _ in expected.values()} - {"ok"} == {
            "empty", "unreadable", "not_an_image", "decompression_bomb", "unsupported",
            "too_large", "duplicate_input", "forbidden_key", "invalid_key", "missing",
        }  # fmt: skip
        assert "exceeds the limit" in got["oversize.jpg"]["message"]  # refused on Content-Length
        assert len(got["with-metadata.jpg"]["warnings"]) == 3  # bad age, sex, site: still scored
        assert all("warnings" not in r for k, r in got.items() if k != "with-metadata.jpg")
        assert (got["rotated.jpg"]["width"], got["rotated.jpg"]["height"]) == (240, 320)  # upright
        summary = results.read_summary(st, job_id)
        n_err = sum(1 for s, _ in expected.values() if s != "ok")
        assert (summary["total"], summary["errors"]) == (len(expected), n_err)
        assert (job["done"], job["errors"]) == (len(expected), n_err)

        # The worker survived all of it and still scores.
        assert scoring_service.worker.proc.poll() is None
        again, _ = submit_scoring(items=[{"key": P + "old.bmp", "source": "after"}])
        assert wait_job(again, timeout=30)["status"] == "done"
        assert [r["status"] for r in results.read_rows(st, again)] == ["ok"]
