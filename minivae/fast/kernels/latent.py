"""The latent layer: the encoder heads' bias, z = mu + sigma * eps (Section 2.4), the KL of
estimator B (Appendix B) or estimator A's log p(z) - log q(z|x) (eq. 6), their gradients, and the
bound per datapoint. Twins: the functions of :mod:`minivae.estimator`.
"""

from __future__ import annotations

import numpy as np

from ... import estimator as est
from .common import _OPTS, _sum, njit
from .elementary import _exp

__all__ = ["reparameterize_kl", "reparameterize_kl_backward", "elbo_from_terms"]

@njit(**_OPTS)
def reparameterize_kl(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio):
    """Encoder heads' bias, z = mu + sigma * eps, and the KL or log p(z) - log q(z|x).

    Parameters
    ----------
    heads : (M, 2J) the product ``h @ [W_mu | W_lv]``; overwritten with
        ``[mu | log_var]`` (bias added).
    b_mu, b_lv : (J,) biases.
    eps : (L, M, J) the pre-drawn noise.
    estimator_a : bool, which term the estimator needs (the other output is left as it is).
    z : (L*M, J) written: mu + exp(log_var / 2) * eps, sample-major.
    kl : (M,) written for estimator B: KL(q(z|x) || N(0, I)), Appendix B.
    log_ratio : (L*M,) written for estimator A: log p(z_l) - log q(z_l|x) (eq. 6).
    """
    _reparameterize_kl_rows(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio, 0, eps.shape[1])


@njit(**_OPTS)
def _reparameterize_kl_rows(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio, m0, m1):
    """Datapoints [m0, m1) of :func:`reparameterize_kl` (their rows of heads and kl; their rows
    l * M + m of z and log_ratio, for every sample l)."""
    L, M, J = eps.shape
    one, half = heads.dtype.type(1.0), heads.dtype.type(0.5)
    log_2pi = heads.dtype.type(est.LOG_2PI)
    terms = np.empty(J, dtype=heads.dtype)       # per-unit terms, summed afterwards (vectorised loops)
    terms_q = np.empty(J, dtype=heads.dtype)
    for m in range(m0, m1):
        hm = heads[m]
        for j in range(J):
            mu = hm[j] + b_mu[j]
            lv = hm[J + j] + b_lv[j]
            hm[j] = mu
            hm[J + j] = lv
            terms[j] = one + lv - mu * mu - _exp(lv)
        if not estimator_a:
            kl[m] = -0.5 * _sum(terms)
    for l in range(L):
        for m in range(m0, m1):
            r = l * M + m
            hm, el, zr = heads[m], eps[l, m], z[r]
            for j in range(J):
                zr[j] = hm[j] + _exp(half * hm[J + j]) * el[j]
            if estimator_a:
                for j in range(J):
                    mu, lv, zv = hm[j], hm[J + j], zr[j]
                    diff = zv - mu
                    terms[j] = log_2pi + zv * zv
                    terms_q[j] = log_2pi + lv + diff * diff * _exp(-lv)
                log_ratio[r] = -0.5 * _sum(terms) - (-0.5 * _sum(terms_q))


def reparameterize_kl_numpy(heads, b_mu, b_lv, eps, estimator_a, z, kl, log_ratio):
    L, M, J = eps.shape
    heads[:, :J] += b_mu
    heads[:, J:] += b_lv
    mu, lv = heads[:, :J], heads[:, J:]
    z3 = est.reparameterize(mu, lv, eps)                             # (L, M, J)
    z[...] = z3.reshape(-1, J)
    z3 = z.reshape(L, M, J)
    if estimator_a:
        log_ratio[...] = (est.log_standard_normal(z3) - est.log_diag_gaussian(z3, mu, lv)).reshape(-1)
    else:
        kl[...] = est.kl_standard_normal(mu, lv)


@njit(**_OPTS)
def reparameterize_kl_backward(dz, eps, heads, z, dout, w, estimator_a, dheads, db_mu, db_lv):
    """Gradients reaching mu and log_var: through z and through the KL (B) or log p/q (A).

    With estimator B: ``dmu = sum_l dz + dout_kl * mu`` and
    ``dlog_var = sigma / 2 * sum_l dz * eps + dout_kl * (sigma^2 - 1) / 2``, where
    dout_kl = -dout. With estimator A the direct gradients of log p(z) - log q(z|x)
    (weight ``w`` per sample) are added to dz first and to (mu, log_var) directly,
    as :func:`minivae.estimator.estimator_a_backward` does.

    Parameters
    ----------
    dz : (L*M, J) gradient reaching z from the decoder. Read only.
    eps : (L, M, J)
    heads : (M, 2J) ``[mu | log_var]`` from :func:`reparameterize_kl`.
    z : (L*M, J) from :func:`reparameterize_kl`.
    dout : float, d loss / d elbo_i (the same for every i).
    w : float, ``dout / L``.
    estimator_a : bool
    dheads : (M, 2J) written: ``[dmu | dlog_var]``.
    db_mu, db_lv : (J,) written: the heads' bias gradients (column sums).
    """
    L, M, J = eps.shape
    zero, half, one = heads.dtype.type(0.0), heads.dtype.type(0.5), heads.dtype.type(1.0)
    sdz = np.empty(J, dtype=heads.dtype)         # sums over the L samples, per latent unit
    sdze = np.empty(J, dtype=heads.dtype)
    smu = np.empty(J, dtype=heads.dtype)
    slv = np.empty(J, dtype=heads.dtype)
    for j in range(J):
        db_mu[j] = zero
        db_lv[j] = zero
    for m in range(M):
        hm, dm = heads[m], dheads[m]
        for j in range(J):
            sdz[j] = zero
            sdze[j] = zero
            smu[j] = zero
            slv[j] = zero
        for l in range(L):
            r = l * M + m
            dzr, el, zr = dz[r], eps[l, m], z[r]
            if estimator_a:                      # log p(z) - log q(z|x): its own gradient reaches z, mu, log_var
                for j in range(J):
                    mu, lv, zv = hm[j], hm[J + j], zr[j]
                    prec = _exp(-lv)
                    diff = zv - mu
                    dz_total = dzr[j] + w * ((-zv) - (-diff) * prec)
                    sdz[j] += dz_total
                    sdze[j] += dz_total * el[j]
                    smu[j] += w * (diff * prec)
                    slv[j] += w * (half * (diff * diff * prec - one))
            else:
                for j in range(J):
                    sdz[j] += dzr[j]
                    sdze[j] += dzr[j] * el[j]
        for j in range(J):
            mu, lv = hm[j], hm[J + j]
            if estimator_a:
                dmu_direct, dlog_var_direct = -smu[j], -slv[j]
            else:                                # the KL's gradient (estimator B)
                dmu_direct, dlog_var_direct = -dout * mu, -dout * (half * (_exp(lv) - one))
            dmu = sdz[j] + dmu_direct                       # through z and directly: two paths meet
            dlog_var = half * _exp(half * lv) * sdze[j] + dlog_var_direct
            dm[j] = dmu
            dm[J + j] = dlog_var
            db_mu[j] += dm[j]
            db_lv[j] += dm[J + j]


def reparameterize_kl_backward_numpy(dz, eps, heads, z, dout, w, estimator_a, dheads, db_mu, db_lv):
    L, M, J = eps.shape
    mu, lv = heads[:, :J], heads[:, J:]
    dz3 = dz.reshape(L, M, J)
    dvec = np.full(M, dout, dtype=heads.dtype)
    if estimator_a:
        _, dz_direct, dmu_direct, dlog_var_direct = est.estimator_a_backward(dvec, z.reshape(L, M, J), mu, lv)
        dz3 = dz3 + dz_direct
    else:
        _, dmu_direct, dlog_var_direct = est.estimator_b_backward(dvec, L, mu, lv)
    dmu_z, dlog_var_z = est.reparameterize_backward(dz3, lv, eps)
    dheads[:, :J] = dmu_z + dmu_direct
    dheads[:, J:] = dlog_var_z + dlog_var_direct
    db_mu[...] = dheads[:, :J].sum(axis=0)
    db_lv[...] = dheads[:, J:].sum(axis=0)


@njit(**_OPTS)
def elbo_from_terms(ll, kl, log_ratio, estimator_a, elbo):
    """The bound per datapoint from the step's terms: estimator B (eq. 7),
    ``elbo[m] = mean_l ll[l M + m] - kl[m]``; estimator A (eq. 6), ``mean_l (ll + log_ratio)[l M + m]``.

    Parameters
    ----------
    ll : (L*M,) log p(x|z) per sample, sample-major (:func:`bernoulli_head`, :func:`gaussian_head`).
    kl : (M,) for estimator B; log_ratio : (L*M,) for estimator A (:func:`reparameterize_kl`).
    estimator_a : bool
    elbo : (M,) written.
    """
    _elbo_rows(ll, kl, log_ratio, estimator_a, elbo, 0, elbo.shape[0])


@njit(**_OPTS)
def _elbo_rows(ll, kl, log_ratio, estimator_a, elbo, m0, m1):
    """Datapoints [m0, m1) of :func:`elbo_from_terms`: the samples added in order, then divided by L
    in float64 and rounded, as ``np.mean(axis=0)`` does."""
    M = elbo.shape[0]
    L = ll.shape[0] // M
    for m in range(m0, m1):
        s = ll[m] + log_ratio[m] if estimator_a else ll[m]
        for l in range(1, L):
            s += ll[l * M + m] + log_ratio[l * M + m] if estimator_a else ll[l * M + m]
        if L > 1:
            s = elbo.dtype.type(np.float64(s) / L)
        elbo[m] = s if estimator_a else s - kl[m]


def elbo_from_terms_numpy(ll, kl, log_ratio, estimator_a, elbo):
    M = elbo.shape[0]
    terms = (ll + log_ratio if estimator_a else ll).reshape(-1, M)
    elbo[...] = np.mean(terms, axis=0) if estimator_a else -kl + np.mean(terms, axis=0)   # as est.estimator_b


TWINS = {reparameterize_kl: reparameterize_kl_numpy, reparameterize_kl_backward: reparameterize_kl_backward_numpy,
         elbo_from_terms: elbo_from_terms_numpy}
