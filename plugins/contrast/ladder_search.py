"""The search behind `ladder.fit_ladder`: which ladder of rungs best explains a setup's plateau clusters.

Two families of ladders are tried, each anchored by putting one of the heavier (or fainter) plateau
clusters on rung 1, 2 or 3:

* **thin-film**: rung_n = g ⊙ τ_γ(μ_n(d, s)). μ_n(d, s) is the model contrast of n layers on oxide d (every
  oxide 50–320 nm), each layer's thickness scaled by s (index data bend the ladder as a thicker or thinner
  layer would), τ_γ(c) = (1 + c)^(1/γ) − 1 a camera tone curve (γ = 1, 1.6, 2.2), g a per-channel gain
  (spectral response, index data) with a log-normal prior around a common factor, in hard bounds. The
  gains are refined by a few EM steps. This family knows the colour direction and the bend of the ladder.
* **linear**: rung_n = n·a + n(n−1)/2·b, a free first step a and a small bend b (prior |b| ≲ 0.25 |a|).
  Index data disagree by 20–30 % for TMDs, so near some oxides the model's bend is simply wrong; what
  stays true is that few-layer contrast grows nearly linearly with the layer count. This family costs a
  little more (`LINEAR_COST`), so the model wins where it fits as well.

A ladder is scored (in nats; lower is better) by the clusters it puts on its first `SCORED_RUNGS` rungs:
each rung earns from the clusters on it, by how well they fit, *saturating per rung*, so a ladder is
believed for the distinct layer counts it explains, not for one colour seen many times (thick-flake
fragments, a crowd of specks). Empty rungs below the lowest occupied one cost (a lone cluster is rather 1L
than 3L), so do empty rungs between occupied ones, and clusters lying on the ladder's line between its
rungs (a ladder is quantised; thick flakes beyond its top are no evidence against it); a first rung lost in
the noise makes no ladder. Rungs that cannot be told apart make no ladder (`resolved`): they would earn twice from
one shade of residue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Camera tone curves tried: linear, a mild curve, sRGB-like.
GAMMAS = (1.0, 1.6, 2.2)
#: Scales on each layer's optical thickness tried: index data disagree by 20-30 % for TMDs, which bends the
#: ladder differently from the model's (its 2L, 3L fall where the model puts 3L, 4L); and the prior width
#: of the scale (natural log).
THICKNESS_SCALES = (0.7, 0.85, 1.0, 1.2, 1.4)
SIGMA_LOG_SCALE = 0.1
#: Prior widths (natural log): the common gain, and each channel's deviation from it.
SIGMA_LOG_GAIN = 0.5
SIGMA_LOG_CHANNEL = 0.25
#: Hard bounds on the gains (natural log): the common factor, and each channel's departure from it.
MAX_LOG_GAIN = math.log(3.0)
MAX_LOG_CHANNEL = math.log(2.5)
#: Flake-to-flake scatter of a rung, relative to its contrast; and the absolute floor (vignetting residue,
#: oxide gradients, JPEG).
RELATIVE_SPREAD = 0.05
FLOOR_SPREAD = 0.004
#: Truncation of the loss, in rung spreads: beyond it a cluster is "not on this rung".
TRUNCATE = 3.0
#: A rung's support counts fully up to about this much weight (see `saturated_weight`).
SATURATION = 4.0
#: Cost per empty rung below the lowest occupied one, per unit of (saturated) supporting weight. A ladder may
#: start at 2L (a monolayer of +2 % through a gamma camera and JPEG is hardly a plateau), but a lone cluster
#: is rather 1L than 3L.
GAP_COST = 1.0
#: Cost per empty rung between the lowest and the highest occupied one (a hole in the ladder: 1L and 3L
#: flakes but no bilayer), per unit of (saturated) supporting weight.
HOLE_COST = 2.0
#: Rungs whose support counts when choosing a ladder (thicker plateaus neither help nor hurt it).
SCORED_RUNGS = 4
#: A rung counts as occupied with at least this weight and this share of the best-supported rung's.
MIN_OCCUPIED = 0.3
OCCUPIED_SHARE = 0.15
#: A cluster on the ladder's line between two of its occupied rungs, yet on none, costs this share of what it
#: would have earned on a rung.
INSIDE_COST = 0.5
#: A cluster on the line from the substrate to the first rung, around its middle, costs this share.
BELOW_COST = 1.0
#: The first rung must stand this many floors clear of the substrate.
MIN_FIRST_RUNG = 1.5
#: Consecutive scored rungs must lie this many rung spreads apart: two rungs that cannot be told apart would
#: earn twice from one patch of colour (a shade of residue counted as two layer counts).
RESOLVE = 1.5
#: Search: oxide grid coarse steps (of the table's step), coarse hypotheses refined, EM steps on the gains of
#: a refined hypothesis and of a coarse one (on the pooled plateaus of the 20 foreign setups one step on the
#: coarse grid, refining twice as many, gave the same rungs as four, at about half the cost).
COARSE_STEPS = 3
REFINE = 12
EM_STEPS = 4
COARSE_EM_STEPS = 1
#: A thin-film fit with the nominal oxide within this distance costs nothing; further away this many nats.
NOMINAL_WINDOW_NM = 20.0
OFF_NOMINAL_COST = 1.0
#: The linear family: prior width of the bend relative to the first step, and its extra cost in nats.
BEND_PRIOR = 0.25
LINEAR_COST = 5.0


@dataclass
class Best:
    """The winning hypothesis of a search: rungs (K, C), its cost, and what it says about the setup."""

    rungs: np.ndarray
    cost: float
    family: str
    oxide_nm: float | None = None
    gamma: float | None = None
    gain: np.ndarray | None = None
    confidence: float = 0.0
    thickness_scale: float = 1.0


def rung_spread(rungs: np.ndarray, floor: float = FLOOR_SPREAD) -> np.ndarray:
    """Expected flake-to-flake spread of each rung (..., K), from its contrast."""
    return np.sqrt(floor**2 + (RELATIVE_SPREAD * np.linalg.norm(rungs, axis=-1)) ** 2)


def tone(contrast: np.ndarray, gamma: float) -> np.ndarray:
    """Contrast after a power-law tone curve: (1 + c)^(1/γ) − 1."""
    return np.power(np.maximum(1.0 + contrast, 1e-3), 1.0 / gamma) - 1.0


def saturated_weight(w: np.ndarray) -> np.ndarray:
    """Weight counted towards a rung: linear at first, saturating at ``SATURATION``."""
    return w / (1.0 + w / SATURATION)


def score(x: np.ndarray, w: np.ndarray, rungs: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Cost (H,) in nats of ladders ``rungs`` (H, K, C) for clusters ``x`` (J, C) of weights ``w`` (J,), and
    the rung of each cluster (H, J; −1 where it is on none). Priors are the caller's.

    Squared distances are expanded (|x|² − 2 x·r + |r|², products as matrix products) rather than formed from
    (H, J, K, C) differences: the search scores thousands of hypotheses at once."""
    k = rungs.shape[1]
    sigma = rung_spread(rungs, floor)  # (H, K)
    xx = np.einsum("jc,jc->j", x, x)
    xt = x.T
    d2 = _squared(xx[None, :, None], np.swapaxes(rungs @ xt, 1, 2), np.einsum("hkc,hkc->hk", rungs, rungs)[:, None, :])
    d2 /= sigma[:, None, :] ** 2  # (H, J, K)
    nearest = np.argmin(d2, axis=2)  # (H, J)
    best_d2 = np.take_along_axis(d2, nearest[..., None], axis=2)[..., 0]
    # A cluster within the noise of the substrate is evidence for no rung, however faint the ladder.
    inlier = (best_d2 < TRUNCATE**2) & (xx >= (MIN_FIRST_RUNG * floor) ** 2)[None, :]
    assign = np.where(inlier, nearest, -1)
    scored = min(SCORED_RUNGS, k)
    on_rung = inlier & (nearest < scored)
    quality = np.where(on_rung, w[None, :] * (1.0 - best_d2 / TRUNCATE**2), 0.0)
    per_rung = np.stack([np.sum(np.where(nearest == n, quality, 0.0), axis=1) for n in range(scored)], axis=1)
    fit = -0.5 * TRUNCATE**2 * np.sum(saturated_weight(per_rung), axis=1)
    # A rung is occupied when it holds a fair share of the ladder's support (a stray speck does not count).
    occupied = per_rung >= np.maximum(MIN_OCCUPIED, OCCUPIED_SHARE * per_rung.max(axis=1, keepdims=True))
    anything = occupied.any(axis=1)
    lowest = np.where(anything, np.argmax(occupied, axis=1), scored)
    top = np.where(anything, scored - 1 - np.argmax(occupied[:, ::-1], axis=1), 0)  # (H,)
    # Empty rungs below the lowest occupied one, and holes between occupied ones (1L and 3L flakes but not
    # one bilayer: rather a ladder whose rungs lie closer, or bend otherwise). A rung with a flake or two on it
    # is no hole, however many the other rungs hold.
    rung_index = np.arange(scored)[None, :]
    empty = per_rung < MIN_OCCUPIED
    holes = np.sum(empty & (rung_index > lowest[:, None]) & (rung_index < top[:, None]), axis=1)
    gaps = (lowest * GAP_COST + holes * HOLE_COST) * saturated_weight(per_rung.sum(axis=1))
    # Clusters off every rung yet on the ladder's line between its first and its highest occupied rung: a
    # ladder is quantised, nothing sits between its rungs (what lies beyond its top, thick flakes, is no
    # evidence against it). Segments rung s -> s + 1 (H, S, C); everything below is (H, S, J).
    a = rungs[:, : scored - 1, :]
    ab = rungs[:, 1:scored, :] - a
    x_ab = ab @ xt
    a_ab = np.einsum("hsc,hsc->hs", a, ab)[..., None]
    ab2 = np.einsum("hsc,hsc->hs", ab, ab)[..., None]
    rel_ab = x_ab - a_ab
    t = np.clip(rel_ab / np.maximum(ab2, 1e-12), 0.0, 1.0)
    rel2 = _squared(xx[None, None, :], a @ xt, np.einsum("hsc,hsc->hs", a, a)[..., None])
    line_d2 = np.maximum(rel2 - 2.0 * t * rel_ab + t * t * ab2, 0.0) / rung_spread(a, floor)[..., None] ** 2
    below_top = np.arange(scored - 1)[None, :, None] < top[:, None, None]
    between = np.any((line_d2 < TRUNCATE**2) & below_top, axis=1)  # (H, J)
    stray = between & ~on_rung
    # A cluster on the line from the substrate to the first rung, around its middle: the ladder's true first
    # step is probably half of this one (2L taken for 1L). Specks near the substrate do not count.
    first = rungs[:, 0, :]  # (H, C)
    first2 = np.einsum("hc,hc->h", first, first)[:, None]
    x_first = first @ xt  # (H, J)
    t0 = x_first / np.maximum(first2, 1e-12)
    d0 = np.maximum(xx[None, :] - 2.0 * t0 * x_first + t0 * t0 * first2, 0.0) / rung_spread(first, floor)[:, None] ** 2
    below = (t0 >= 0.4) & (t0 <= 0.62) & (d0 < TRUNCATE**2) & ~on_rung
    sw = saturated_weight(w)[None, :]
    unexplained = 0.5 * TRUNCATE**2 * (INSIDE_COST * np.sum(stray * sw, axis=1)
                                       + BELOW_COST * np.sum(below * sw, axis=1))
    lost = np.linalg.norm(rungs[:, 0, :], axis=1) < MIN_FIRST_RUNG * floor
    lost |= ~resolved(rungs[:, :scored, :], sigma[:, :scored])
    return np.where(lost, np.inf, fit + gaps + unexplained), assign


def _squared(uu: np.ndarray, uv: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """|u − v|² from |u|², u·v and |v|² (broadcast), never below zero."""
    return np.maximum(uu - 2.0 * uv + vv, 0.0)


def resolved(rungs: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Whether each ladder's consecutive rungs (H, K, C) with spreads (H, K) lie ``RESOLVE`` spreads apart."""
    step = np.linalg.norm(np.diff(rungs, axis=1), axis=2)
    return np.all(step >= RESOLVE * np.maximum(sigma[:, 1:], sigma[:, :-1]), axis=1)


def anchors(x: np.ndarray, w: np.ndarray, floor: float, heavy: int = 8, faint: int = 4) -> list[int]:
    """Clusters that may sit on a low rung: the heaviest, and the faintest of some weight."""
    order = [int(j) for j in np.argsort(-w, kind="stable")[:heavy]]
    norms = np.linalg.norm(x, axis=1)
    dim = [int(j) for j in np.argsort(norms, kind="stable") if w[j] >= 0.3 and norms[j] >= MIN_FIRST_RUNG * floor]
    return order + [j for j in dim[:faint] if j not in order]


# -- the thin-film family ------------------------------------------------------------------------------
def search_thin_film(
    x: np.ndarray, w: np.ndarray, oxides: np.ndarray, tables: np.ndarray, scales: tuple[float, ...], floor: float,
    nominal_oxide_nm: float, anchor_list: list[int],
) -> tuple[Best, np.ndarray, np.ndarray]:
    """Best thin-film ladder; also every hypothesis's cost and its rung for the heaviest cluster.

    ``tables`` (S, D, K, C): the model's contrasts over the oxides with each layer's thickness times each of
    ``scales``."""
    gammas = np.array(GAMMAS)
    scales_arr = np.array(scales)
    # Variants: every (thickness scale, tone curve); the model (D, V, K, C) and each variant's prior cost.
    model = np.stack([tone(tables[si], g) for si in range(len(scales_arr)) for g in gammas], axis=1)
    variant_cost = np.repeat(0.5 * (np.log(scales_arr) / SIGMA_LOG_SCALE) ** 2, len(gammas))
    coarse = np.arange(0, len(oxides), COARSE_STEPS)
    h = np.array([(di, vi, a, n) for a in anchor_list for n in range(min(3, tables.shape[2]))
                  for vi in range(model.shape[1]) for di in coarse])
    cost, gain, assign = _physics(h, x, w, model, oxides, floor, nominal_oxide_nm, COARSE_EM_STEPS)
    cost = cost + variant_cost[h[:, 1]]
    best_few = np.argsort(cost, kind="stable")[:REFINE]
    fine = sorted({(di, int(h[b, 1]), int(h[b, 2]), int(h[b, 3])) for b in best_few
                   for di in range(max(0, int(h[b, 0]) - COARSE_STEPS + 1),
                                   min(len(oxides), int(h[b, 0]) + COARSE_STEPS))})
    h2 = np.array(fine)
    cost2, gain2, assign2 = _physics(h2, x, w, model, oxides, floor, nominal_oxide_nm)
    cost2 = cost2 + variant_cost[h2[:, 1]]
    h, cost = np.vstack([h, h2]), np.r_[cost, cost2]
    gain, assign = np.vstack([gain, gain2]), np.vstack([assign, assign2])
    b = int(np.argmin(cost))
    rungs = gain[b][None, :] * model[h[b, 0], h[b, 1]]
    best = Best(rungs, float(cost[b]), "thin-film", float(oxides[h[b, 0]]), float(gammas[h[b, 1] % len(gammas)]),
                gain[b], thickness_scale=float(scales_arr[h[b, 1] // len(gammas)]))
    return best, cost, assign


def _physics(
    h: np.ndarray, x: np.ndarray, w: np.ndarray, model: np.ndarray, oxides: np.ndarray, floor: float,
    nominal_oxide_nm: float, em_steps: int = EM_STEPS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = model[h[:, 0], h[:, 1]]  # (H, K, C)
    gain = _initial_gain(x[h[:, 2]], m[np.arange(len(h)), h[:, 3]])
    for _ in range(em_steps):
        _, assign = score(x, w, gain[:, None, :] * m, floor)
        gain = _update_gain(x, w, m, gain, assign, floor)
    cost, assign = score(x, w, gain[:, None, :] * m, floor)
    log_gain = np.log(gain)
    common = log_gain.mean(axis=1)
    prior = 0.5 * (common / SIGMA_LOG_GAIN) ** 2 + 0.5 * np.sum(
        ((log_gain - common[:, None]) / SIGMA_LOG_CHANNEL) ** 2, axis=1)
    nominal = np.where(np.abs(oxides[h[:, 0]] - nominal_oxide_nm) <= NOMINAL_WINDOW_NM, 0.0, OFF_NOMINAL_COST)
    return cost + prior + nominal, gain, assign


def _bounded(log_gain: np.ndarray) -> np.ndarray:
    """Gains within the plausible box: common factor and each channel's departure from it."""
    mean = log_gain.mean(axis=1, keepdims=True)
    common = np.clip(mean, -MAX_LOG_GAIN, MAX_LOG_GAIN)
    return np.exp(common + np.clip(log_gain - mean, -MAX_LOG_CHANNEL, MAX_LOG_CHANNEL))


def _initial_gain(anchor_x: np.ndarray, anchor_m: np.ndarray) -> np.ndarray:
    """Per-channel gains that put the anchor rung on the anchor cluster, tamed where a channel says little."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = anchor_x / anchor_m
    weight = anchor_m**2
    valid = (ratio > 0) & np.isfinite(ratio)
    log_ratio = np.where(valid, np.log(np.clip(ratio, 1e-3, 1e3)), 0.0)
    common = np.sum(weight * valid * log_ratio, axis=1) / np.maximum(np.sum(weight * valid, axis=1), 1e-12)
    # A channel where the model is near zero (or of the other sign) gets the common gain.
    strong = valid & (np.abs(anchor_m) > 0.25 * np.abs(anchor_m).max(axis=1, keepdims=True))
    return _bounded(np.where(strong, log_ratio, common[:, None]))


def _update_gain(
    x: np.ndarray, w: np.ndarray, m: np.ndarray, gain: np.ndarray, assign: np.ndarray, floor: float
) -> np.ndarray:
    """One weighted least-squares step on the per-channel gains, shrunk towards their common value."""
    mj = m[np.arange(len(m))[:, None], np.maximum(assign, 0)]  # (H, J, C) model contrast of each cluster's rung
    inl = ((assign >= 0) & (assign < SCORED_RUNGS)) * w[None, :]
    wt = inl / rung_spread(gain[:, None, :] * mj, floor) ** 2
    num = np.einsum("hj,hjc->hc", wt, x[None, :, :] * mj)
    den = np.einsum("hj,hjc->hc", wt, mj * mj)
    common = np.exp(np.log(gain).mean(axis=1, keepdims=True))
    pull = 1.0 / (SIGMA_LOG_CHANNEL * common) ** 2  # the channel prior as a quadratic pull
    new = (num + pull * common) / (den + pull)
    return _bounded(np.log(np.where(new > 1e-3, new, gain)))


# -- the linear family ---------------------------------------------------------------------------------
def search_linear(
    x: np.ndarray, w: np.ndarray, rungs: int, floor: float, anchor_list: list[int], first_rungs: np.ndarray
) -> tuple[Best, np.ndarray, np.ndarray]:
    """Best ladder n·a + n(n−1)/2·b; also every hypothesis's cost and cluster assignment.

    ``first_rungs`` (M, C): the thin-film model's 1L contrasts over the oxides and tone curves; the first step
    must be one of them up to gains within the bounds, and pays their prior (the model still says in which
    colour direction a ladder starts)."""
    h = np.array([(a, n) for a in anchor_list for n in range(3)])
    n = np.arange(1, rungs + 1, dtype=float)
    t = n * (n - 1) / 2
    step = x[h[:, 0]] / (h[:, 1:2] + 1.0)  # (H, C) first step
    bend = np.zeros_like(step)
    for _ in range(EM_STEPS):
        lad = n[None, :, None] * step[:, None, :] + t[None, :, None] * bend[:, None, :]
        _, assign = score(x, w, lad, floor)
        step, bend = _update_linear(x, w, assign, n, t, step, bend, floor)
    lad = n[None, :, None] * step[:, None, :] + t[None, :, None] * bend[:, None, :]
    cost, assign = score(x, w, lad, floor)
    ratio = np.linalg.norm(bend, axis=1) / np.maximum(np.linalg.norm(step, axis=1), 1e-9)
    cost = cost + 0.5 * (ratio / BEND_PRIOR) ** 2 + LINEAR_COST + direction_cost(step, first_rungs, floor)
    # This family's premise is contrast growing with the layer count: a bend that turns the ladder back
    # within its scored rungs is none of it.
    norms = np.linalg.norm(lad[:, :SCORED_RUNGS, :], axis=2)
    cost = np.where(np.all(np.diff(norms, axis=1) > 0, axis=1), cost, np.inf)
    b = int(np.argmin(cost))
    return Best(lad[b], float(cost[b]), "linear"), cost, assign


def direction_cost(step: np.ndarray, first_rungs: np.ndarray, floor: float) -> np.ndarray:
    """For each first step (H, C): how well the cheapest model 1L contrast, scaled by gains within the bounds,
    matches it: the gain prior plus the misfit in units of max(floor, 10 % of the step). A channel where
    step and model disagree in sign takes the smallest gain the bounds allow and pays its misfit."""
    m = first_rungs[None, :, :]  # (1, M, C)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = step[:, None, :] / m  # (H, M, C)
    valid = (ratio > 0) & np.isfinite(ratio)
    log_ratio = np.log(np.where(valid, ratio, 1.0))
    weight = valid * m**2
    total = weight.sum(axis=2)
    common = np.clip(np.sum(weight * log_ratio, axis=2) / np.maximum(total, 1e-12), -MAX_LOG_GAIN, MAX_LOG_GAIN)
    dev = np.where(valid, np.clip(log_ratio - common[..., None], -MAX_LOG_CHANNEL, MAX_LOG_CHANNEL),
                   -MAX_LOG_CHANNEL)
    gain = np.exp(common[..., None] + dev)
    scale = np.maximum(floor, 0.1 * np.linalg.norm(step, axis=1))[:, None, None]
    misfit = 0.5 * np.sum(((step[:, None, :] - gain * m) / scale) ** 2, axis=2)
    prior = 0.5 * (common / SIGMA_LOG_GAIN) ** 2 + 0.5 * np.sum((dev / SIGMA_LOG_CHANNEL) ** 2, axis=2)
    return np.min(np.where(total > 0, prior + misfit, np.inf), axis=1)


def _update_linear(
    x: np.ndarray, w: np.ndarray, assign: np.ndarray, n: np.ndarray, t: np.ndarray, step: np.ndarray,
    bend: np.ndarray, floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares for (a, b) per channel, with the bend shrunk towards zero."""
    ok = (assign >= 0) & (assign < SCORED_RUNGS)
    idx = np.maximum(assign, 0)
    nj, tj = n[idx], t[idx]  # (H, J)
    sigma = rung_spread(nj[..., None] * step[:, None, :] + tj[..., None] * bend[:, None, :], floor)
    wt = ok * w[None, :] / sigma**2
    s_nn, s_nt, s_tt = (np.sum(wt * a * b, axis=1) for a, b in ((nj, nj), (nj, tj), (tj, tj)))
    s_nx = np.einsum("hj,hj,jc->hc", wt, nj, x)
    s_tx = np.einsum("hj,hj,jc->hc", wt, tj, x)
    ridge = 1.0 / (BEND_PRIOR * np.maximum(np.linalg.norm(step, axis=1), floor)) ** 2  # (H,)
    a11, a12, a22 = s_nn[:, None], s_nt[:, None], (s_tt + ridge)[:, None]
    det = a11 * a22 - a12**2
    good = (det > 1e-12) & (s_nn[:, None] > 0)
    new_step = np.where(good, (a22 * s_nx - a12 * s_tx) / np.where(good, det, 1.0), step)
    new_bend = np.where(good, (a11 * s_tx - a12 * s_nx) / np.where(good, det, 1.0), bend)
    return new_step, new_bend
