"""Issue 2's figure: end-to-end img/s through Redis + S3 (moto) + one worker, next to the bare
in-process predictor (the worker's own ``score_batch``, bytes from memory) on the same images.

    python -m benchmarks.scoring [--n 200] [--repeats 3]
"""

from __future__ import annotations

import argparse

from benchmarks import e2e
from benchmarks._images import jpeg_set


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scoring")
    parser.add_argument("--n", type=int, default=200, help="generated 1024x768 JPEGs")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed runs")
    args = parser.parse_args(argv)
    blobs = jpeg_set(1024, 768, args.n)
    with e2e.scoring_stack() as stack:
        result = e2e.compare(stack, blobs, repeats=args.repeats)
    print(f"bare in-process: {result['bare']:.1f} img/s")
    print(f"end-to-end (Redis + S3 + 1 worker): {result['queued']:.1f} img/s")
    print(f"ratio: {result['ratio']:.2f} (goal >= 0.90)")
    return result


if __name__ == "__main__":
    main()
