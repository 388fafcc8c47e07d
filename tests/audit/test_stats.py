"""Paired statistics: d_z, t / Wilcoxon p and BH q match scipy; the bootstrap CI is seeded."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from autolabel.audit.stats import bh_qvalues, bootstrap_dz_ci, effect_size, paired_stats


def test_effect_size_pvalues_and_bh_match_scipy() -> None:
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, (40, 6))
    d[:, 5] = 0.0
    st = paired_stats(d)
    np.testing.assert_allclose(st.dz[:5], d[:, :5].mean(0) / d[:, :5].std(0, ddof=1))
    np.testing.assert_allclose(st.p_t[:5], sps.ttest_1samp(d[:, :5], 0.0).pvalue)
    np.testing.assert_allclose(st.p_wilcoxon[:5], sps.wilcoxon(d[:, :5]).pvalue)
    assert st.dz[5] == 0 and st.p_t[5] == 1 and st.p_wilcoxon[5] == 1
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(bh_qvalues(p), sps.false_discovery_control(p))
    # by hand: sorted p 0.002,0.01,0.03,0.04,0.5 -> q 0.01,0.025,0.05,0.05,0.5
    np.testing.assert_allclose(np.sort(bh_qvalues(p)), [0.01, 0.025, 0.05, 0.05, 0.5])
    assert effect_size(np.ones((5, 1)))[0] == 100.0  # constant nonzero difference is clipped


def test_bootstrap_ci_contains_estimate_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    d = rng.normal(0.5, 1.0, (60, 200))
    lo, hi = bootstrap_dz_ci(d, n_boot=500, seed=3)
    dz = effect_size(d)
    assert np.all(lo <= dz) and np.all(dz <= hi) and np.all(hi - lo > 0.2)
    lo2, hi2 = bootstrap_dz_ci(d, n_boot=500, seed=3)
    np.testing.assert_array_equal(lo, lo2)
    assert not np.array_equal(lo, bootstrap_dz_ci(d, n_boot=500, seed=4)[0])
