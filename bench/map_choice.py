"""Which library lays out the 2-D map (issue 20 item 1), measured (not a test).

Candidates: umap-learn, openTSNE, PaCMAP. Each runs in a fresh process (so the import and a
JIT's first-call cost show as they would in a fresh `embedlake run`) on the same input: N
synthetic clustered unit vectors (200 Gaussian clusters, 1024-d, as bench/index_choice.py),
reduced to 50 dimensions by PCA first (the usual preprocessing, and what tasks/maps.py does).
Per library: import seconds, the first fit of 10 points (a JIT compiles here), a second fit of
10 points, then warm fits of each --sizes, each with its kNN-preservation figure: the fraction of
a point's 10 nearest neighbours in 2-D that are among its 10 nearest in the original 1024-d
space (on 2,000 sampled points). Install footprint: the bytes each library and the packages it
alone pulls in add to site-packages (from their RECORD files).

    python bench/map_choice.py [--sizes 5000 20000] [--out bench/measured/map-choice.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

LIBS = {
    "openTSNE": ["openTSNE"],
    "umap-learn": ["umap-learn", "pynndescent", "numba", "llvmlite"],
    "pacmap": ["pacmap", "numba", "llvmlite"],
}
K = 10


def clustered(n: int, dim: int = 1024, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    x = centres[rng.integers(0, 200, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pca50(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    n = min(50, len(x) - 1)
    pca = PCA(n, svd_solver="randomized" if n == 50 else "full", random_state=seed)
    return pca.fit_transform(x).astype(np.float32)


def preservation(high: np.ndarray, low: np.ndarray, n_queries: int = 2000) -> float:
    """Mean fraction of the 10 nearest in 2-D among the 10 nearest in the original space."""
    rng = np.random.default_rng(1)
    q = rng.choice(len(high), min(n_queries, len(high)), replace=False)
    sims = high[q] @ high.T
    sims[np.arange(len(q)), q] = -np.inf
    truth = np.argpartition(-sims, K, axis=1)[:, :K]
    d2 = ((low[q, None, :] - low[None, :, :]) ** 2).sum(-1)
    d2[np.arange(len(q)), q] = np.inf
    found = np.argpartition(d2, K, axis=1)[:, :K]
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))


def fit(lib: str, x: np.ndarray, seed: int = 0) -> np.ndarray:
    n = len(x)
    if lib == "openTSNE":
        from openTSNE import TSNE

        perplexity = min(30.0, max(1.0, (n - 1) / 3.0 - 0.01))
        return np.asarray(
            TSNE(perplexity=perplexity, n_jobs=2, random_state=seed, verbose=False).fit(x)
        )
    if lib == "umap-learn":
        import umap

        return umap.UMAP(n_neighbors=min(15, n - 1), random_state=seed).fit_transform(x)
    if lib == "pacmap":
        import pacmap

        return pacmap.PaCMAP(n_neighbors=min(10, n - 2), random_state=seed).fit_transform(x)
    raise ValueError(lib)


def child(lib: str, sizes: list[int], data: Path) -> dict:
    out: dict = {"library": lib}
    started = time.perf_counter()
    if lib == "openTSNE":
        import openTSNE  # noqa: F401
    elif lib == "umap-learn":
        import umap  # noqa: F401
    else:
        import pacmap  # noqa: F401
    out["import_s"] = round(time.perf_counter() - started, 2)
    tiny = pca50(clustered(10, seed=3))
    for label in ("first_fit_10_s", "second_fit_10_s"):
        t = time.perf_counter()
        fit(lib, tiny)
        out[label] = round(time.perf_counter() - t, 2)
    full = np.load(data)
    high, low_in = full["high"], full["low"]
    for n in sizes:
        t = time.perf_counter()
        y = fit(lib, low_in[:n])
        seconds = time.perf_counter() - t
        out[f"fit_{n}_s"] = round(seconds, 2)
        out[f"knn10_preserved_{n}"] = round(preservation(high[:n], np.asarray(y)), 3)
    return out


def footprint(packages: list[str]) -> int:
    total = 0
    for name in packages:
        dist = metadata.distribution(name)
        for f in dist.files or []:
            p = Path(dist.locate_file(f))
            if p.is_file():
                total += p.stat().st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--libs", nargs="+", default=list(LIBS))
    parser.add_argument("--out", default="bench/measured/map-choice.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sizes, Path(args.data))))
        return 0
    data = Path(f"/tmp/map-choice-{os.getpid()}.npz")
    high = clustered(max(args.sizes))
    np.savez(data, high=high, low=pca50(high))
    load_before = os.getloadavg()
    results = []
    for lib in args.libs:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", lib, "--data", str(data), "--sizes"]
            + [str(s) for s in args.sizes],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["version"] = metadata.version(LIBS[lib][0])
        row["footprint_mb"] = round(footprint(LIBS[lib]) / 2**20, 1)
        row["pulls_in"] = LIBS[lib][1:]
        print(json.dumps(row), flush=True)
        results.append(row)
    data.unlink()
    report = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "input": "N clustered unit vectors (200 clusters, 1024-d, synthetic), PCA to 50-d, "
        "each library's default neighbour search and iterations, seed 0",
        "quality": "fraction of each point's 10 nearest in 2-D among its 10 nearest in 1024-d "
        "(2,000 sampled points)",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
