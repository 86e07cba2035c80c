"""The two-sided Kolmogorov-Smirnov survival function, fast where scipy's is slow.

``scipy.stats.kstwo.sf(d, n)`` picks an algorithm by region (Simard & L'Ecuyer 2011). For
large ``n`` and a small ``d`` (no drift: the common case) it runs the Durbin matrix method
(``_kolmogn_DMTW``), a dense k x k matrix power with k ~ n*d: about 80 ms per feature at
n ~ 90,000, which alone would cost 8 s for 100 features. There the Pelz-Good asymptotic
expansion (four terms, error O(n^-2)) agrees with it to ~4e-11 once n >= 5,000
(tests/unit/monitoring/test_kolmogorov.py checks 1e-9 on a grid), and costs ~0.2 ms.
For a larger ``d`` (n d^2 >= 2.2: drift) scipy returns ``2 * scipy.special.smirnov(n, d)``,
an exact sum over O(n) terms: 60-100 ms at n ~ 90,000, 0.8 s at n = 10^6. From n >= 50,000
this uses 2 exp(-(6nd + 1)^2 / (18n)) instead (Maag & Dicaire's approximation to the
one-sided Smirnov tail), whose absolute error is below 6e-7 there (checked on a grid by the
tests); its relative error is up to ~1% far out in the tail, where p < 1e-6.
Everywhere else this calls scipy.

The Pelz-Good code follows scipy/stats/_ksstats.py (BSD-3-Clause, the SciPy developers).

Imports: numpy, scipy (lazily).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PELZ_GOOD_MIN_N = 5_000
SMIRNOV_APPROX_MIN_N = 50_000

_SQRT2PI = math.sqrt(2 * math.pi)
_SQRT3 = math.sqrt(3)
_PI2 = math.pi**2
_PI4 = math.pi**4
_PI6 = math.pi**6
_MIN_LOG = -708


def _uses_durbin(n: float, x: float) -> bool:
    """Whether scipy's ``kstwo.sf`` would run the Durbin matrix method for (n, x)."""
    t = n * x
    nx2 = t * x
    return (
        n > 140 and x < 0.5 and 1.0 < t < n - 1 and nx2 < 2.2 and n <= 100_000 and n * x**1.5 <= 1.4
    )


def _uses_smirnov(n: float, x: float) -> bool:
    """Whether scipy's ``kstwo.sf`` returns ``2 * smirnov(n, x)`` for (n, x), n > 140."""
    t = n * x
    return n > 140 and 1.0 < t < n - 1 and (x >= 0.5 or 2.2 <= t * x < 370.0)


def _pelz_good_cdf(n: float, x: float) -> float:
    z = math.sqrt(n) * x
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    qlog = -_PI2 / 8 / z2
    if qlog < _MIN_LOG:
        return 0.0
    q = math.exp(qlog)
    k1a, k1b = -z2, _PI2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * _PI2 / 4
    k2c = _PI4 * (1 - 2 * z2) / 16
    k3d = _PI6 * (5 - 30 * z2) / 64
    k3c = _PI4 * (-60 * z2 + 212 * z4) / 16
    k3b = _PI2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    terms = np.zeros(4)
    maxk = math.ceil(16 * z / math.pi)
    for k in range(maxk, 0, -1):
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        coeffs = np.array(
            [
                1.0,
                k1a + k1b * m2,
                k2a + k2b * m2 + k2c * m4,
                k3a + k3b * m2 + k3c * m4 + k3d * m6,
            ]
        )
        terms *= np.power(q, 8 * k)
        terms += coeffs
    terms *= q * _SQRT2PI
    terms /= np.array([z, 6 * z4, 72 * z**7, 6480 * z**10])
    q = math.exp(-_PI2 / 2 / z2)
    ks = np.arange(maxk, 0, -1)
    ks2 = ks**2
    qp = q**ks2
    terms[2] += np.sum(ks2 * qp) * _PI2 * _SQRT2PI / (-36 * z3)
    sz = _SQRT3 * z
    kpi = np.pi * ks
    terms[3] += np.sum((sz + kpi) * (sz - kpi) * ks2 * qp) * _PI2 * _SQRT2PI / (216 * z6)
    terms /= np.power(n * 1.0, np.arange(4) / 2.0)
    return float(sum(terms))


def kstwo_sf(d: Any, n: Any) -> Any:
    """``scipy.stats.kstwo.sf(d, n)`` for arrays of statistics and (integral) sizes."""
    import scipy.stats

    d_arr = np.asarray(d, dtype=np.float64)
    n_arr = np.broadcast_to(np.asarray(n, dtype=np.float64), d_arr.shape)
    out = np.empty(d_arr.shape)
    fast = np.zeros(d_arr.shape, dtype=bool)
    for i in np.ndindex(d_arr.shape):
        ni, xi = float(n_arr[i]), float(d_arr[i])
        if ni >= PELZ_GOOD_MIN_N and _uses_durbin(ni, xi):
            fast[i] = True
            out[i] = min(max(1.0 - _pelz_good_cdf(ni, xi), 0.0), 1.0)
        elif ni >= SMIRNOV_APPROX_MIN_N and _uses_smirnov(ni, xi):
            fast[i] = True
            out[i] = min(2.0 * math.exp(-((6 * ni * xi + 1) ** 2) / (18 * ni)), 1.0)
    if not fast.all():
        out[~fast] = scipy.stats.kstwo.sf(d_arr[~fast], n_arr[~fast])
    return out
