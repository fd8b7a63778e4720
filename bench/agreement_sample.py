"""What backbone agreement (CKA) costs a run once each group keeps its sample in the lake
(tasks/samples.py; issue 21, item 2; not a test).

Two groups as a run leaves them, written as bench/scale.py writes one (clustered unit vectors,
float16, parts of 65,536 rows sorted by image_id): mobilenet_v1 (1024-d) and xception (2048-d)
over the same N image ids. Then, timed in this process:
- `first`: agreement with no sample in the lake (an older lake, or after a reindex): the sample
  is built from every part, as each run did before;
- `rerun`: `--m` new images of both groups in one new part each, agreement again: the kept
  samples and the new parts are read, no other part.
Reported: seconds and the sample's bytes in the lake, the embedding parts, and the CKA of each.

    python bench/agreement_sample.py --n 300000 --m 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import PART_ROWS, _ids, _vectors  # noqa: E402
from throughput import save_result  # noqa: E402

from embedlake.tasks import graph, lake, samples  # noqa: E402
from embedlake.tasks.neighbors import _write_agreement  # noqa: E402

GROUPS = (("mobilenet_v1", 1024), ("xception", 2048))


def _write(root: lake.Lake, first: int, n: int, run: str) -> None:
    for p0 in range(first, first + n, PART_ROWS):
        rows = min(PART_ROWS, first + n - p0)
        for backbone, dim in GROUPS:
            table = lake.embeddings_table(
                image_ids=_ids(p0, rows),
                backbone=backbone,
                weights_id="synthetic",
                precision="fp32",
                vectors=_vectors(p0, rows, dim),
                norms=np.ones(rows, np.float32),
                run_id=run,
            )
            name = f"{run}-{backbone}-{p0:012d}.parquet"
            root.write_part(table.sort_by("image_id"), "embeddings", name)


def _agreement(root: lake.Lake) -> dict:
    started = time.perf_counter()
    _write_agreement(root, graph.group_keys(root), 50_000)
    seconds = time.perf_counter() - started
    (row,) = root.read_table("agreement").to_pylist()
    folder = root.path / samples.FOLDER
    return {
        "seconds": round(seconds, 2),
        "linear_cka": row["linear_cka"],
        "n_images": row["n_images"],
        "sample_bytes": sum(p.stat().st_size for p in folder.glob("*.parquet")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--m", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result: dict = {
        "n": args.n,
        "m": args.m,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python bench/agreement_sample.py --n {args.n} --m {args.m}",
    }
    with tempfile.TemporaryDirectory(prefix="embedlake-agreement-") as tmp:
        root = lake.Lake.at(lake.ensure_lake(Path(tmp) / "lake"))
        _write(root, 0, args.n, "r0")
        result["embedding_parts"] = len(graph.embedding_part_names(root))
        result["first"] = _agreement(root)
        _write(root, args.n, args.m, "r1")
        result["rerun"] = _agreement(root)
    result["first_over_rerun"] = round(result["first"]["seconds"] / result["rerun"]["seconds"], 1)
    print(json.dumps(result, indent=1))
    save_result(result, args.out or f"bench/results/agreement-sample-{args.n}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
