from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from shipyard.monitoring._kolmogorov import kstwo_sf


@pytest.mark.parametrize("n", [20, 141, 5_000, 9_091, 50_000, 90_909])
def test_kstwo_sf_matches_scipy(n: int) -> None:
    # every region: tiny t, Durbin (Pelz-Good here), Smirnov (approximated here), far tail;
    # scipy's own evaluation is the slow part, so the grid is small
    d = np.concatenate(
        [
            np.linspace(0.3 / n, 0.05, 10),
            np.geomspace(1.01 / n, 0.05, 12),
            np.sqrt(np.linspace(0.2, 2.2, 8) / n),
            np.sqrt(np.linspace(2.2, 40.0, 8) / n),
            np.array([0.0, 0.5, 0.7, 1.0]),
        ]
    )
    got = kstwo_sf(d, n)
    want = scipy.stats.kstwo.sf(d, n)
    assert np.max(np.abs(got - want)) < 1e-6
