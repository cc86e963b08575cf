"""A small ISIC-API-compatible HTTP server on loopback, for pointing the real isic-cli at.

Implements exactly what `isic image download` (isic-cli 12.4) calls, see shared/notes/isic-cli.md:
images/search/ (count page with `limit`, cursor pages with an absolute `next` otherwise),
images/search/size/, collections/<id>/, zip-download/license-file/<license>/ and media files.
Never answers 5xx (isic-cli retries those for ~20 minutes); failures are injected as 404s or as
truncated image bytes.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from models.metadata import SITES

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

LICENCE_TEXTS = {
    "CC-0": "CC0 1.0 Universal (test copy)\n",
    "CC-BY": "Attribution 4.0 International (CC BY 4.0) (test copy)\n",
    "CC-BY-NC": "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0) (test copy)\n",
}
FAILURE_MODES = ("404", "corrupt")

# Fields that isic-metadata puts in the "acquisition" group; everything else is "clinical".
ACQUISITION_FIELDS = frozenset(
    {
        "blurry",
        "color_tint",
        "dermoscopic_type",
        "hairy",
        "image_type",
        "marker_pen",
        "image_manipulation",
        "pixels_x",
        "pixels_y",
    }
)


@dataclass
class IsicRecord:
    """One archive image as the server sees it."""

    isic_id: str
    data: bytes
    ext: str = "jpg"
    acquisition: dict[str, Any] = field(default_factory=dict)
    clinical: dict[str, Any] = field(default_factory=dict)
    copyright_license: str = "CC-BY"
    attribution: str = "Anonymous"
    collections: tuple[int, ...] = ()
    origin: str | None = None  # where the bytes came from (tests only, never served)

    def field_value(self, name: str) -> Any:
        if name == "isic_id":
            return self.isic_id
        if name == "copyright_license":
            return self.copyright_license
        if name == "public":
            return True
        if name in self.clinical:
            return self.clinical[name]
        return self.acquisition.get(name)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class QueryError(ValueError):
    pass


# --- search DSL: the subset tests need (AND-ed field:value terms, negation, *, ranges) ---

_TERM = re.compile(
    r"""(?P<neg>-)?(?P<field>[A-Za-z0-9_]+):
        (?:\[(?P<lo>[^\s\]]+)\s+TO\s+(?P<hi>[^\s\]]+)\]
          |"(?P<quoted>[^"]*)"
          |(?P<bare>[A-Za-z0-9*_\-.]+))""",
    re.VERBOSE,
)


def parse_query(query: str) -> list[tuple[bool, str, Any]]:
    """Parse 'a:b AND c:"d e" -f:*' into (negated, field, matcher) terms; QueryError otherwise."""
    terms = []
    pos = 0
    query = query.strip()
    while pos < len(query):
        match = _TERM.match(query, pos)
        if not match:
            raise QueryError(query)
        if match["lo"] is not None:
            matcher: Any = ("range", match["lo"], match["hi"])
        elif match["quoted"] is not None:
            matcher = ("eq", match["quoted"])
        else:
            matcher = ("eq", match["bare"])
        terms.append((bool(match["neg"]), match["field"], matcher))
        pos = match.end()
        rest = query[pos:]
        sep = re.match(r"\s+AND\s+|\s+", rest)
        if sep:
            pos += sep.end()
            if pos >= len(query):
                raise QueryError(query)
        elif rest:
            raise QueryError(query)
    return terms


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matches(record: IsicRecord, terms: Sequence[tuple[bool, str, Any]]) -> bool:
    for negated, name, matcher in terms:
        value = record.field_value(name)
        if matcher[0] == "range":
            try:
                lo = float("-inf") if matcher[1] == "*" else float(matcher[1])
                hi = float("inf") if matcher[2] == "*" else float(matcher[2])
                hit = value is not None and lo <= float(value) <= hi
            except ValueError:
                hit = False
        else:
            wanted = matcher[1]
            text = None if value is None else _as_text(value)
            if wanted == "*":
                hit = text is not None
            elif text is None:
                hit = False
            elif wanted.endswith("*"):
                hit = text.startswith(wanted[:-1])
            elif wanted.startswith("*"):
                hit = text.endswith(wanted[1:])
            else:
                hit = text == wanted
                if not hit:
                    try:
                        hit = float(text) == float(wanted)
                    except ValueError:
                        pass
        if hit == negated:
            return False
    return True


# --- the server ---


class IsicTestServer:
    """Serve `records` like the ISIC API on http://127.0.0.1:<free port>.

    Use as a context manager. `fail(isic_id, "404"|"corrupt")` breaks one image URL;
    `requests` records every request seen.
    """

    def __init__(self, records: Iterable[IsicRecord], *, page_size: int = 2) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.records = list(records)
        ids = [r.isic_id for r in self.records]
        if len(set(ids)) != len(ids):
            raise ValueError("isic_ids must be unique")
        self.page_size = page_size
        self.failures: dict[str, str] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> IsicTestServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> IsicTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, isic_id: str, mode: str = "404") -> None:
        if mode not in FAILURE_MODES:
            raise ValueError(f"mode must be one of {FAILURE_MODES}, got {mode!r}")
        if isic_id not in {r.isic_id for r in self.records}:
            raise ValueError(f"unknown isic_id {isic_id!r}")
        self.failures[isic_id] = mode

    def paths(self, prefix: str = "") -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if r.path.startswith(prefix)]

    # JSON
    def image_json(self, record: IsicRecord) -> dict[str, Any]:
        url = f"{self.url}/media/images/{record.isic_id}.{record.ext}"
        return {
            "isic_id": record.isic_id,
            "copyright_license": record.copyright_license,
            "attribution": record.attribution,
            "public": True,
            "files": {
                "full": {"url": url, "size": len(record.data)},
                "thumbnail_256": {"url": url, "size": len(record.data)},
            },
            "metadata": {
                "acquisition": dict(record.acquisition),
                "clinical": dict(record.clinical),
            },
        }

    def search(self, query: str, collections: str) -> list[IsicRecord]:
        terms = parse_query(query)
        wanted = {int(c) for c in collections.split(",") if c.strip()}
        return [
            r
            for r in self.records
            if _matches(r, terms) and (not wanted or wanted.intersection(r.collections))
        ]


class _Handler(BaseHTTPRequestHandler):
    server_state: IsicTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean; requests are recorded instead

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        state = self.server_state
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        with state._lock:
            state.requests.append(
                RecordedRequest("GET", parts.path, query, {k: v for k, v in self.headers.items()})
            )
        path = parts.path
        one = {k: v[0] for k, v in query.items()}
        if path == "/api/v2/images/search/":
            self._search(one)
        elif path == "/api/v2/images/search/size/":
            self._size(one)
        elif m := re.fullmatch(r"/api/v2/collections/(\d+)/", path):
            self._collection(int(m[1]))
        elif m := re.fullmatch(r"/api/v2/zip-download/license-file/([^/]+)/", path):
            text = LICENCE_TEXTS.get(m[1])
            if text is None:
                self._json(404, {"detail": "Not found."})
            else:
                self._send(200, text.encode(), "text/plain; charset=utf-8")
        elif m := re.fullmatch(r"/media/images/([^/]+)\.([A-Za-z0-9]+)", path):
            self._media(m[1])
        else:
            self._json(404, {"detail": "Not found."})

    def _search(self, params: dict[str, str]) -> None:
        state = self.server_state
        try:
            hits = state.search(params.get("query", ""), params.get("collections", ""))
        except (QueryError, ValueError):
            self._json(400, {"message": "Could not parse search query."})
            return
        if "limit" in params:
            limit = max(1, min(int(params["limit"]), 100))
        else:
            limit = state.page_size
        offset = _decode_cursor(params["cursor"]) if "cursor" in params else 0
        page = hits[offset : offset + limit]
        next_url = None
        if offset + limit < len(hits):
            next_params = {
                "query": params.get("query", ""),
                "collections": params.get("collections", ""),
                "cursor": _encode_cursor(offset + limit),
            }
            if "limit" in params:
                next_params["limit"] = str(limit)
            next_url = f"{state.url}/api/v2/images/search/?{urlencode(next_params)}"
        self._json(
            200,
            {
                # like the real cursor pagination: count only on the first page
                "count": len(hits) if offset == 0 else None,
                "next": next_url,
                "previous": None,
                "results": [state.image_json(r) for r in page],
            },
        )

    def _size(self, params: dict[str, str]) -> None:
        try:
            hits = self.server_state.search(params.get("query", ""), params.get("collections", ""))
        except (QueryError, ValueError):
            self._json(400, {"message": "Could not parse search query."})
            return
        self._json(200, {"size": sum(len(r.data) for r in hits)})

    def _collection(self, collection_id: int) -> None:
        members = [r for r in self.server_state.records if collection_id in r.collections]
        if not members:
            self._json(404, {"detail": "Not found."})
            return
        self._json(
            200,
            {
                "id": collection_id,
                "name": f"Test collection {collection_id}",
                "description": "",
                "public": True,
                "pinned": False,
                "locked": False,
                "doi": None,
            },
        )

    def _media(self, isic_id: str) -> None:
        state = self.server_state
        record = next((r for r in state.records if r.isic_id == isic_id), None)
        mode = state.failures.get(isic_id)
        if record is None or mode == "404":
            self._json(404, {"detail": "Not found."})
            return
        data = record.data
        if mode == "corrupt":
            # Truncated file with an honest Content-Length: downloads "fine", decodes badly.
            # (A short body would make isic-cli retry for ~30 s.)
            data = data[: max(1, len(data) // 3)]
        ctype = {"png": "image/png"}.get(record.ext.lower(), "image/jpeg")
        self._send(200, data, ctype)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o={offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o="))
    except ValueError:
        return 0


# --- record builders ---

_SITES = SITES  # the archive's anatom_site_general vocabulary, defined once in models
_ATTRIBUTIONS = (
    "Department of Dermatology, Test University Hospital",
    "Test Skin Cancer Study team",
    "Anonymous",
)
# (diagnosis_1, diagnosis_2, diagnosis_3) in the ISIC hierarchical taxonomy.
_DIAGNOSES = (
    ("Benign", "Benign melanocytic proliferations", "Nevus"),
    ("Benign", "Benign epidermal proliferations", "Seborrheic keratosis"),
    ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma Invasive"),
    (
        "Malignant",
        "Malignant adnexal epithelial proliferations - Follicular",
        "Basal cell carcinoma",
    ),
    ("Indeterminate", "Indeterminate epidermal proliferations", "Solar or actinic keratosis"),
)


def make_jpeg(seed: int, *, size: tuple[int, int] = (64, 48), quality: int = 90) -> bytes:
    """A small deterministic lesion-like JPEG: skin-toned background with a dark blob."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    w, h = size
    skin = (rng.randint(170, 235), rng.randint(120, 190), rng.randint(100, 160))
    img = Image.new("RGB", size, skin)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        cx, cy = rng.randint(w // 4, 3 * w // 4), rng.randint(h // 4, 3 * h // 4)
        rx, ry = rng.randint(w // 10, w // 4), rng.randint(h // 10, h // 4)
        tone = (rng.randint(40, 120), rng.randint(20, 80), rng.randint(10, 60))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tone)
    img = img.filter(ImageFilter.GaussianBlur(1))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_records(
    n: int,
    *,
    seed: int = 0,
    size: tuple[int, int] = (64, 48),
    licences: Sequence[str] = ("CC-BY", "CC-0", "CC-BY-NC"),
    collections: Sequence[int] = (),
) -> list[IsicRecord]:
    """`n` generated records with realistic ISIC metadata (pairs of close-up + dermoscopic)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        lesion = i // 2
        lesion_rng = random.Random(seed * 100_003 + lesion)
        dx = lesion_rng.choice(_DIAGNOSES)
        image_type = "clinical: close-up" if i % 2 == 0 else "dermoscopic"
        acquisition: dict[str, Any] = {
            "image_type": image_type,
            "pixels_x": size[0],
            "pixels_y": size[1],
            "image_manipulation": "altered" if i % 2 == 0 else "instrument only",
        }
        if image_type == "dermoscopic":
            acquisition["dermoscopic_type"] = lesion_rng.choice(
                ["contact polarized", "contact non-polarized", "non-contact polarized"]
            )
        clinical: dict[str, Any] = {
            "age_approx": lesion_rng.choice([None, *range(20, 90, 5)]),
            "sex": lesion_rng.choice(["male", "female", None]),
            "anatom_site_general": lesion_rng.choice([*_SITES, None]),
            "diagnosis_1": dx[0],
            "diagnosis_2": dx[1],
            "diagnosis_3": dx[2],
            "lesion_id": f"IL_{1_000_000 + seed * 1000 + lesion:07d}",
            "patient_id": f"IP_{2_000_000 + seed * 1000 + lesion // 2:07d}",
            "melanocytic": dx[1].endswith("melanocytic proliferations") or "(Melanoma)" in dx[1],
        }
        records.append(
            IsicRecord(
                isic_id=f"ISIC_{9_000_000 + seed * 10_000 + i:07d}",
                data=make_jpeg(seed * 100_003 + i, size=size),
                acquisition=acquisition,
                clinical=clinical,
                copyright_license=licences[i % len(licences)],
                attribution=rng.choice(_ATTRIBUTIONS),
                collections=tuple(collections),
            )
        )
    return records


# Local site names in shared/data/manifest.csv -> ISIC anatom_site_general.
_SITE_TO_GENERAL = {
    "face": "head/neck",
    "scalp": "head/neck",
    "neck": "head/neck",
    "ear": "head/neck",
    "nose": "head/neck",
    "lip": "head/neck",
    "back": "posterior torso",
    "chest": "anterior torso",
    "abdomen": "anterior torso",
    "upper extremity": "upper extremity",
    "forearm": "upper extremity",
    "arm": "upper extremity",
    "hand": "upper extremity",
    "lower extremity": "lower extremity",
    "thigh": "lower extremity",
    "foot": "lower extremity",
    "genital": "oral/genital",
}
# Dataset diagnosis codes -> (diagnosis_1, diagnosis_2, diagnosis_3), used only when diagnosis_1
# agrees with the data set's own malignant flag (PAD-UFES-20 ACK is benign, HAM10000 akiec is not).
_CODE_TO_DIAGNOSIS = {
    "mel": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "Melanoma, NOS"),
    "bcc": (
        "Malignant",
        "Malignant adnexal epithelial proliferations - Follicular",
        "Basal cell carcinoma",
    ),
    "scc": ("Malignant", "Malignant epidermal proliferations", "Squamous cell carcinoma, NOS"),
    "akiec": ("Malignant", "Malignant epidermal proliferations", "Squamous cell carcinoma in situ"),
    "nev": ("Benign", "Benign melanocytic proliferations", "Nevus"),
    "nv": ("Benign", "Benign melanocytic proliferations", "Nevus"),
    "sek": ("Benign", "Benign epidermal proliferations", "Seborrheic keratosis"),
    "bkl": ("Benign", "Benign epidermal proliferations", "Pigmented benign keratosis"),
    "df": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma"),
    "vasc": ("Benign", "Benign soft tissue proliferations - Vascular", None),
}


def shared_manifest_rows(root: Path = SHARED_DATA) -> list[dict[str, str]]:
    import csv

    with (root / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def records_from_shared_data(
    limit: int,
    *,
    root: Path = SHARED_DATA,
    kinds: Sequence[str] = ("phone", "dermoscopic"),
    seed: int = 0,
) -> list[IsicRecord]:
    """Up to `limit` records served from ../shared/data's real images (split evenly over kinds).

    phone rows (PAD-UFES-20, CC BY 4.0) become `clinical: close-up`, dermoscopic rows (HAM10000,
    CC BY-NC 4.0) `dermoscopic`. Raises FileNotFoundError when the folder is absent.
    """
    rows = shared_manifest_rows(root)
    rng = random.Random(seed)
    per_kind = {k: [r for r in rows if r["kind"] == k] for k in kinds}
    for kind_rows in per_kind.values():
        rng.shuffle(kind_rows)
    picked: list[dict[str, str]] = []
    while len(picked) < limit and any(per_kind.values()):
        for kind in kinds:
            if per_kind[kind] and len(picked) < limit:
                picked.append(per_kind[kind].pop())
    return [_record_from_row(i, row, root) for i, row in enumerate(picked)]


def _record_from_row(index: int, row: Mapping[str, str], root: Path) -> IsicRecord:
    phone = row["kind"] == "phone"
    malignant = row.get("malignant", "").strip()
    level_1 = {"1": "Malignant", "0": "Benign"}.get(malignant)
    clinical: dict[str, Any] = {}
    dx = _CODE_TO_DIAGNOSIS.get(row.get("diagnosis", "").strip().lower())
    if level_1:
        clinical["diagnosis_1"] = level_1
        if dx and dx[0] == level_1:
            clinical["diagnosis_2"] = dx[1]
            if dx[2]:
                clinical["diagnosis_3"] = dx[2]
    try:
        age = float(row.get("age") or "nan")
        if age == age:
            clinical["age_approx"] = min(85, int(round(age / 5.0) * 5))
    except ValueError:
        pass
    sex = row.get("sex", "").strip().lower()
    if sex in ("male", "female"):
        clinical["sex"] = sex
    site = _SITE_TO_GENERAL.get(row.get("site", "").strip().lower())
    if site:
        clinical["anatom_site_general"] = site
    for key in ("lesion_id", "patient_id"):
        if row.get(key, "").strip():
            clinical[key] = row[key].strip()
    image_id = row["image_id"]
    isic_id = image_id if re.fullmatch(r"ISIC_\d{7}", image_id) else f"ISIC_{8_000_000 + index:07d}"
    acquisition = {"image_type": "clinical: close-up" if phone else "dermoscopic"}
    path = root / row["file"]
    return IsicRecord(
        isic_id=isic_id,
        data=path.read_bytes(),
        ext="jpg",
        acquisition=acquisition,
        clinical=clinical,
        copyright_license="CC-BY" if phone else "CC-BY-NC",
        attribution=(
            "PAD-UFES-20 (Pacheco et al. 2020)"
            if phone
            else "ViDIR Group, Department of Dermatology, Medical University of Vienna"
        ),
        origin=str(path),
    )
