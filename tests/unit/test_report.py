"""The report's own computations (its queries are tested in test_analysis.py, the page in e2e)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.unit


def test_the_2d_pca_matches_an_exact_svd():
    from embedlake.tasks.report import _pca_2d

    rng = np.random.default_rng(3)
    # 600 points in 300-d with two clear directions and noise: the randomized path is taken
    x = rng.normal(size=(600, 2)) * [9.0, 4.0] @ rng.normal(size=(2, 300))
    x = (x + 0.3 * rng.normal(size=(600, 300))).astype(np.float32)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    exact = centred @ vt[:2].T
    got = _pca_2d(x)
    for axis in range(2):  # equal up to each axis's sign
        assert abs(np.corrcoef(got[:, axis], exact[:, axis])[0, 1]) > 0.9999
    np.testing.assert_allclose(np.abs(got), np.abs(exact), rtol=1e-3, atol=1e-2)
    assert np.array_equal(got, _pca_2d(x))  # seeded: the same picture each run
    small = _pca_2d(x[:20, :30])  # a small matrix: the exact SVD
    assert small.shape == (20, 2)
