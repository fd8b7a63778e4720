"""The batched IVF scan (tasks/ivf_scan.py) against faiss's own search of the same lists."""

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from embedlake.tasks import ivf_scan  # noqa: E402


def _index(factory: str, n: int = 3000, dim: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    x = centres[rng.integers(0, 20, n)] + rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
    return index, x


def _ivf(index):
    """The IVF of `index` as its own class (`index` owns it: keep `index` while using it)."""
    return faiss.downcast_index(faiss.extract_index_ivf(index))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k", [10, 400])  # 400: more than some lists hold (slots left empty)
def test_batched_scan_answers_as_faiss_does(threads, k):
    index, x = _index("IVF24,SQ8")
    ivf = _ivf(index)
    queries = x[::5]  # 600 queries, each probing 6 of 24 lists
    probe_s, probed = ivf.quantizer.search(queries, 6)
    ivf.nprobe = 6
    want_s, want_l = ivf.search_preassigned(queries, k, probed, probe_s)
    got_s, got_l = ivf_scan.search_preassigned(ivf, queries, k, probed, probe_s, threads)
    assert got_s.shape == got_l.shape == (len(queries), k)
    filled = want_l >= 0
    assert ((got_l >= 0) == filled).all()  # the same slots filled, the rest -1 / -inf
    assert np.isneginf(got_s[~filled]).all()
    np.testing.assert_allclose(got_s[filled], want_s[filled], rtol=1e-5, atol=1e-5)
    assert (got_l == want_l).mean() > 0.99  # ties may swap
    assert (np.diff(got_s[:, : min(k, 50)], axis=1) <= 0).all()  # best first


def test_batched_only_for_8_bit_residual_codes_and_enough_queries_per_list():
    indexes = {f: _index(f"IVF24,{f}")[0] for f in ("SQ8", "Flat", "SQfp16")}
    sq8, flat, fp16 = (_ivf(indexes[f]) for f in ("SQ8", "Flat", "SQfp16"))
    many, few = 24 * ivf_scan.MIN_QUERIES_PER_LIST, 24 * ivf_scan.MIN_QUERIES_PER_LIST - 1
    assert ivf_scan.batched(sq8, many, 1)
    assert not ivf_scan.batched(sq8, few, 1)  # nearest's single query: faiss's own scan
    assert not ivf_scan.batched(flat, many, 1)
    assert not ivf_scan.batched(fp16, many, 1)


def test_no_queries_answer_nothing():
    index, x = _index("IVF24,SQ8")
    ivf = _ivf(index)
    probe_s, probed = ivf.quantizer.search(x[:0], 6)
    sims, labels = ivf_scan.search_preassigned(ivf, x[:0], 10, probed, probe_s, 2)
    assert sims.shape == labels.shape == (0, 10)


def test_scans_at_once_leave_blas_threads_as_they_were():
    """Each scan holds BLAS to one thread; scans in several threads at once take turns, so the
    process's BLAS thread count is what it was when they are done."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    index, x = _index("IVF24,SQ8")
    ivf = _ivf(index)
    probe_s, probed = ivf.quantizer.search(x, 6)
    before = [(p["filepath"], p["num_threads"]) for p in threadpool_info()]
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: ivf_scan.search_preassigned(ivf, x, 10, probed, probe_s, 2), range(8)
            )
        )
    assert [(p["filepath"], p["num_threads"]) for p in threadpool_info()] == before
    assert all((a[1] == answers[0][1]).all() for a in answers)
