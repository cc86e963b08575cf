"""Curation filter throughput on ONE core; run as a subprocess so the thread limits hold.

python -m benchmarks._one_core N REPEATS   (prints one JSON object)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load, or their pools are already sized

import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

import models  # noqa: E402
from benchmarks._images import jpeg_set  # noqa: E402
from benchmarks._timing import median_rate  # noqa: E402
from curation import PhoneThresholds, phone_likeness  # noqa: E402


def main(n: int, repeats: int) -> dict[str, float]:
    torch.set_num_threads(1)
    blobs = jpeg_set(1024, 768, n)
    working = PhoneThresholds().working_size  # decoded as workers/curating.py does

    def run() -> None:
        for data in blobs:
            phone_likeness(models.decode_image(data, target=working).image)

    return {"curation_filter": median_rate(run, len(blobs), repeats=repeats)}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
