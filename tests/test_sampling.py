"""The C sampler (csrc/generate/sampling.c) through torchless._C.Sampler.

Pipeline under test (llama.cpp's order): logit bias -> penalties -> greedy if temperature is 0,
else top-k -> top-p -> min-p -> temperature -> softmax -> draw. The truncations see
temperature-1 probabilities, so the nuclei below are computed from softmax(logits), not
softmax(logits / T). Logprobs are log-softmax of the raw logits.

Statistical tests use a significance level of 1e-6; random data comes from the per-run seed.
"""

import math
from statistics import NormalDist

import numpy as np
import pytest

from torchless._C import Sampler

ALPHA = 1e-6  # significance of every statistical test here


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x[np.isfinite(x)].max()
    return x - (m + np.log(np.exp(x - m).sum()))


def softmax(x):
    return np.exp(log_softmax(x))


def chi2_critical(df, alpha=ALPHA):
    """Upper alpha quantile of chi-square(df), Wilson-Hilferty approximation:
    chi2_{df,1-alpha} ~= df * (1 - 2/(9 df) + z sqrt(2/(9 df)))^3, z the normal quantile.
    (Relative error well under 1% for df >= 10 at this alpha; scipy is not a dependency.)"""
    z = NormalDist().inv_cdf(1 - alpha)
    c = 2.0 / (9.0 * df)
    return df * (1 - c + z * math.sqrt(c)) ** 3


def random_logits(rng, n, scale=3.0):
    return (rng.standard_normal(n) * scale).astype(np.float32)


def draw_many(s, logits, n):
    return np.array([s.sample(logits)[0] for _ in range(n)])


def nucleus(probs, p, slack=1e-6):
    """Tokens of the shortest best-first prefix whose mass reaches p (ties by lower id),
    widened by `slack` in mass so float rounding at the boundary cannot fail the test."""
    order = np.lexsort((np.arange(len(probs)), -probs))
    before = np.concatenate([[0.0], np.cumsum(probs[order])[:-1]])
    return set(order[before < p + slack].tolist())


# ---------------------------------------------------------------- greedy and temperature


def test_greedy_picks_argmax_with_ties_to_the_lowest_id(rng):
    for _ in range(50):
        n = int(rng.integers(2, 2000))
        logits = random_logits(rng, n)
        s = Sampler(n, temperature=0.0, seed=int(rng.integers(2**63)))
        assert s.sample(logits)[0] == int(np.argmax(logits))
        ties = rng.choice(n, size=min(n, 3), replace=False)
        logits[ties] = logits.max() + 1
        assert s.sample(logits)[0] == int(ties.min())


def test_temperature_near_zero_equals_greedy(rng):
    for trial in range(30):
        n = 1000
        logits = random_logits(rng, n)
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] < 1e-3:  # a near-tie is not greedy at T = 1e-6 either
            logits[np.argmax(logits)] += 1e-3
        greedy = Sampler(n, temperature=0.0).sample(logits)[0]
        hot = Sampler(n, temperature=1e-6, top_k=0, top_p=1.0, min_p=0.0, seed=trial)
        assert all(hot.sample(logits)[0] == greedy for _ in range(20))


# ---------------------------------------------------------------- truncation


def test_top_k_never_draws_outside_the_k_largest(rng):
    n = 500
    for trial in range(40):
        k = int(rng.choice([1, 2, 5, 40, 300]))
        logits = random_logits(rng, n, scale=0.5)  # flat: the tail would be drawn often
        allowed = set(np.argsort(-logits, kind="stable")[:k].tolist())
        s = Sampler(n, temperature=2.0, top_k=k, top_p=1.0, min_p=0.0, seed=trial + 1000 * k)
        drawn = set(draw_many(s, logits, 200).tolist())
        assert drawn <= allowed, f"k={k}: drew {sorted(drawn - allowed)}"
        if k == 1:
            assert drawn == allowed


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_top_p_never_draws_outside_the_nucleus(rng, temperature):
    n = 2000
    for trial in range(20):
        p = float(rng.choice([0.1, 0.5, 0.9, 0.95]))
        logits = random_logits(rng, n, scale=float(rng.choice([0.3, 1.0, 3.0])))
        allowed = nucleus(softmax(logits), p)  # temperature 1: llama.cpp truncates before temperature
        s = Sampler(n, temperature=temperature, top_k=0, top_p=p, min_p=0.0, seed=trial)
        drawn = set(draw_many(s, logits, 200).tolist())
        assert drawn <= allowed, f"top_p={p}: drew {sorted(drawn - allowed)[:10]} outside a nucleus of {len(allowed)}"


def test_top_p_keeps_the_whole_nucleus_boundary_token_included(rng):
    """Every token of the nucleus (the one that crosses p included) is drawn, nothing else."""
    n, draws, T = 64, 2000, 3.0
    checked = 0
    for trial in range(30):
        p = float(rng.uniform(0.2, 0.9))
        logits = random_logits(rng, n, scale=1.0)
        exact = nucleus(softmax(logits), p, slack=0.0)
        share = softmax(logits[sorted(exact)].astype(np.float64) / T)
        s = Sampler(n, temperature=T, top_k=0, top_p=p, min_p=0.0, seed=trial)
        drawn = set(draw_many(s, logits, draws).tolist())
        assert drawn <= nucleus(softmax(logits), p)
        if share.min() * draws >= 30:  # every survivor expected 30+ times: P(missed) < 1e-13
            assert drawn == exact, f"top_p={p}: missing {sorted(exact - drawn)}"
            checked += 1
    assert checked >= 10


def test_top_k_then_top_p_uses_the_renormalised_top_k(rng):
    n = 1000
    for trial in range(20):
        k, p = 20, 0.6
        logits = random_logits(rng, n, scale=0.5)
        topk = np.argsort(-logits, kind="stable")[:k]
        probs = np.zeros(n)
        probs[topk] = softmax(logits[topk])
        allowed = nucleus(probs, p)
        s = Sampler(n, temperature=1.0, top_k=k, top_p=p, min_p=0.0, seed=trial)
        drawn = set(draw_many(s, logits, 200).tolist())
        assert drawn <= allowed


def test_min_p_never_draws_below_min_p_times_the_best(rng):
    n = 2000
    for trial in range(20):
        min_p = float(rng.choice([0.01, 0.05, 0.3, 0.9]))
        logits = random_logits(rng, n, scale=2.0)
        probs = softmax(logits)
        allowed = set(np.flatnonzero(probs >= min_p * probs.max() * (1 - 1e-6)).tolist())
        s = Sampler(n, temperature=1.5, top_k=0, top_p=1.0, min_p=min_p, seed=trial)
        drawn = set(draw_many(s, logits, 200).tolist())
        assert drawn <= allowed


# ---------------------------------------------------------------- the draw itself


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draw_frequencies_match_softmax_chi_square(rng, seed, temperature):
    n, draws = 40, 20_000
    logits = random_logits(rng, n, scale=1.0)
    expected = softmax(logits.astype(np.float64) / temperature) * draws
    s = Sampler(n, temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
    counts = np.bincount(draw_many(s, logits, draws), minlength=n)
    # merge the rare tokens into one bin so every expected count is >= 5
    rare = expected < 5
    obs = np.append(counts[~rare], counts[rare].sum())
    exp = np.append(expected[~rare], expected[rare].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(exp) - 1
    crit = chi2_critical(df)
    assert stat < crit, f"chi-square {stat:.1f} >= {crit:.1f} (df {df}, alpha {ALPHA})"


def test_truncated_draw_matches_the_tempered_softmax_of_the_survivors(rng, seed):
    """top-k, top-p and min-p cut at temperature 1; the survivors are drawn from softmax(z / T)."""
    n, draws, T = 400, 20_000, 0.7
    k, p, min_p = 30, 0.8, 0.05
    logits = random_logits(rng, n, scale=1.0)
    kept = np.argsort(-logits, kind="stable")[:k]
    probs = np.zeros(n)
    probs[kept] = softmax(logits[kept])
    kept = np.array(sorted(nucleus(probs, p, slack=0.0)))
    kept = kept[logits[kept] >= logits.max() + np.log(np.float32(min_p))]
    expected = np.zeros(n)
    expected[kept] = softmax(logits[kept].astype(np.float64) / T) * draws
    s = Sampler(n, temperature=T, top_k=k, top_p=p, min_p=min_p, seed=seed)
    counts = np.bincount(draw_many(s, logits, draws), minlength=n)
    assert counts[expected == 0].sum() == 0
    obs, exp = counts[kept], expected[kept]
    big = exp >= 5
    obs = np.append(obs[big], obs[~big].sum())
    exp = np.append(exp[big], exp[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    crit = chi2_critical(max(len(exp) - 1, 1))
    assert stat < crit, f"chi-square {stat:.1f} >= {crit:.1f} over {len(kept)} survivors"


def test_same_seed_same_tokens_different_seeds_differ(rng, seed):
    n = 1000
    steps = [random_logits(rng, n, scale=0.5) for _ in range(50)]

    def run(seed_):
        s = Sampler(n, temperature=1.0, repeat_penalty=1.1, seed=seed_)
        out = []
        for lg in steps:
            t = s.sample(lg)[0]
            s.accept(t)
            out.append(t)
        return out

    a, b, c = run(seed), run(seed), run(seed + 1)
    assert a == b
    assert a != c
    assert sum(x == y for x, y in zip(a, c)) < 25


def test_reset_replays_the_stream_and_forgets_history(rng, seed):
    n = 300
    logits = random_logits(rng, n, scale=0.5)
    s = Sampler(n, temperature=1.0, top_k=0, repeat_penalty=1.5, seed=seed)
    first = []
    for _ in range(30):
        t = s.sample(logits)[0]
        s.accept(t)
        first.append(t)
    s.reset()
    again = []
    for _ in range(30):
        t = s.sample(logits)[0]
        s.accept(t)
        again.append(t)
    assert again == first
    s.reset(seed=seed + 7)
    fresh = Sampler(n, temperature=1.0, top_k=0, repeat_penalty=1.5, seed=seed + 7)
    assert s.seed == seed + 7
    assert draw_many(s, logits, 30).tolist() == draw_many(fresh, logits, 30).tolist()


# ---------------------------------------------------------------- penalties and bias


def penalised(logits, history, last_n, repeat, freq, presence):
    """llama.cpp's penalties in float32, step for step: over the last `last_n` accepted tokens
    (-1: all), each distinct token t seen c times: z /= r if z > 0 else z *= r; z -= c*f + p."""
    window = history if last_n == -1 else history[-last_n:] if last_n > 0 else []
    z = logits.copy()
    f32 = np.float32
    for t in set(window):
        c = f32(window.count(t))
        z[t] = z[t] * f32(repeat) if z[t] <= 0 else z[t] / f32(repeat)
        z[t] = z[t] - (c * f32(freq) + f32(presence))
    return z


def test_penalties_follow_llama_cpp_on_the_window_only(rng):
    n = 30
    for trial in range(300):
        logits = random_logits(rng, n, scale=2.0)
        last_n = int(rng.choice([-1, 0, 1, 4, 16]))
        repeat = float(rng.choice([1.0, 1.3, 2.0, 0.7]))
        freq = float(rng.choice([0.0, 0.4, -0.2]))
        presence = float(rng.choice([0.0, 1.0, 0.3]))
        history = rng.integers(0, n, size=int(rng.integers(0, 40))).tolist()
        s = Sampler(n, temperature=0.0, repeat_penalty=repeat, frequency_penalty=freq,
                    presence_penalty=presence, penalty_last_n=last_n)
        for t in history:
            s.accept(t)
        want = penalised(logits, history, last_n, repeat, freq, presence)
        assert s.sample(logits)[0] == int(np.argmax(want)), (
            f"trial {trial}: last_n={last_n} repeat={repeat} freq={freq} presence={presence}")


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    s = Sampler(4, temperature=0.0, repeat_penalty=2.0, penalty_last_n=2)
    logits = np.array([3.0, 2.0, -1.0, -1.5], dtype=np.float32)
    s.accept(0)  # 3 / 2 = 1.5 < 2
    assert s.sample(logits)[0] == 1
    neg = np.array([-1.0, -1.5, -10, -10], dtype=np.float32)
    s.reset()
    s.accept(0)  # -1 * 2 = -2 < -1.5
    assert s.sample(neg)[0] == 1
    s.accept(2)
    s.accept(3)  # token 0 has left the two-token window
    assert s.sample(neg)[0] == 0


def test_logit_bias_minus_inf_bans_a_token(rng):
    n = 50
    logits = random_logits(rng, n, scale=0.5)
    best = int(np.argmax(logits))
    s = Sampler(n, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, logit_bias={best: -math.inf})
    assert best not in set(draw_many(s, logits, 2000).tolist())
    g = Sampler(n, temperature=0.0, logit_bias={best: -math.inf})
    assert g.sample(logits)[0] == int(np.argsort(-logits, kind="stable")[1])
    worst = int(np.argmin(logits))
    up = Sampler(n, temperature=0.0, logit_bias={worst: 100.0})
    assert up.sample(logits)[0] == worst
    everything = Sampler(2, logit_bias={0: -math.inf, 1: -math.inf})
    with pytest.raises(ValueError, match="-inf"):
        everything.sample(np.zeros(2, np.float32))


# ---------------------------------------------------------------- logprobs


def test_logprobs_are_log_softmax_of_the_raw_logits(rng):
    n = 5000
    for trial in range(20):
        logits = random_logits(rng, n, scale=4.0)
        logits[rng.integers(n)] = -np.inf
        ref = log_softmax(logits)
        s = Sampler(n, temperature=0.7, top_k=10, repeat_penalty=1.5, presence_penalty=0.5,
                    logit_bias={int(np.argmax(logits)): -math.inf}, seed=trial)
        s.accept(int(np.argsort(logits)[-2]))
        n_top = int(rng.integers(0, 50))
        token, lp, top = s.sample(logits, n_top=n_top)
        np.testing.assert_allclose(lp, ref[token], rtol=1e-5)
        assert len(top) == n_top
        want = np.argsort(-logits, kind="stable")[:n_top]
        assert [t for t, _ in top] == want.tolist()
        np.testing.assert_allclose([l for _, l in top], ref[want], rtol=1e-5)


def test_n_top_may_cover_the_whole_vocabulary():
    logits = np.array([0.0, -np.inf, 2.0], dtype=np.float32)
    _, _, top = Sampler(3).sample(logits, n_top=3)
    assert [t for t, _ in top] == [2, 0, 1]
    assert top[2][1] == -math.inf


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": 1.0}, "min_p"),
        ({"min_p": -0.5}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"presence_penalty": math.nan}, "presence_penalty"),
        ({"frequency_penalty": math.inf}, "frequency_penalty"),
        ({"penalty_last_n": -2}, "penalty_last_n"),
        ({"seed": -1}, "seed"),
        ({"logit_bias": {100: 1.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"logit_bias": {3: math.nan}}, "logit_bias"),
        ({"logit_bias": {3: math.inf}}, "logit_bias"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Sampler(100, **kwargs)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="n_vocab"):
        Sampler(0)
    with pytest.raises(TypeError):
        Sampler(10, top_k=2.5)
    with pytest.raises(TypeError, match="logit_bias"):
        Sampler(10, logit_bias=[1.0])
    with pytest.raises(TypeError, match="logit_bias"):
        Sampler(10, logit_bias={"a": 1.0})
    with pytest.raises(TypeError):
        Sampler(10, 0.5)  # parameters are keyword-only
    s = Sampler(10)
    with pytest.raises(ValueError, match="shape"):
        s.sample(np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="shape"):
        s.sample(np.zeros((1, 10), np.float32))
    with pytest.raises(TypeError, match="float"):
        s.sample(np.arange(10))
    with pytest.raises(ValueError, match="n_top"):
        s.sample(np.zeros(10, np.float32), n_top=11)
    with pytest.raises(ValueError, match="n_top"):
        s.sample(np.zeros(10, np.float32), n_top=-1)
    with pytest.raises(ValueError, match=r"logits\[4\]"):
        s.sample(np.where(np.arange(10) == 4, np.nan, 0).astype(np.float32))
    with pytest.raises(ValueError, match="logits"):
        s.sample(np.where(np.arange(10) == 4, np.inf, 0).astype(np.float32))
    with pytest.raises(ValueError, match="-inf"):
        s.sample(np.full(10, -np.inf, np.float32))
    with pytest.raises(ValueError, match="token"):
        s.accept(10)
    with pytest.raises(ValueError, match="token"):
        s.accept(-1)
    # the sampler is still usable after every error above
    assert s.sample(np.arange(10, dtype=np.float64))[0] in range(10)


def test_attributes_and_defaults_are_llama_cpp_s():
    s = Sampler(7)
    assert (s.n_vocab, s.top_k, s.penalty_last_n, s.seed, s.logit_bias) == (7, 40, 64, 0, None)
    assert s.temperature == pytest.approx(0.8) and s.top_p == pytest.approx(0.95)
    assert s.min_p == pytest.approx(0.05) and s.repeat_penalty == 1.0
    assert (s.presence_penalty, s.frequency_penalty) == (0.0, 0.0)
    assert "Sampler(n_vocab=7" in repr(s)
    assert Sampler(7, logit_bias={1: -2.0}).logit_bias == {1: -2.0}
