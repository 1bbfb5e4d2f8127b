"""GGUF quant block formats (csrc/core/quants.c) against the gguf package's NumPy code.

- Dequantization of random blocks is bit-exact with ``gguf.quants.dequantize`` for every type
  it implements (the C kernels perform the same float32 operations in the same order).
- Quantization is bit-exact with ``gguf.quants.quantize`` for F16, BF16, Q4_0, Q4_1, Q5_0,
  Q5_1, Q8_0, TQ1_0 and TQ2_0.
- The K-quants, Q8_1 and Q8_K have no quantization oracle: our blocks are decoded by gguf's
  dequantizer (so the layout is gguf's) and the round-trip error must stay under a stated
  bound; on single blocks the error is compared with a brute-force grid search of the best
  sub-block scale. Q8_K and Q8_1 are checked against NumPy references written here from
  the block layout and ggml's reference quantizers.

Random data comes from a per-run seed, printed; replay with TORCHLESS_SEED=<seed>.
"""

import os
import time
import zlib

import numpy as np
import pytest

gguf_quants = pytest.importorskip("gguf.quants")
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as GT  # noqa: E402

import torchless  # noqa: E402

GT_OF = {
    "f16": GT.F16, "bf16": GT.BF16,
    "q4_0": GT.Q4_0, "q4_1": GT.Q4_1, "q5_0": GT.Q5_0, "q5_1": GT.Q5_1, "q8_0": GT.Q8_0,
    "q8_1": GT.Q8_1, "q2_k": GT.Q2_K, "q3_k": GT.Q3_K, "q4_k": GT.Q4_K, "q5_k": GT.Q5_K,
    "q6_k": GT.Q6_K, "q8_k": GT.Q8_K, "tq1_0": GT.TQ1_0, "tq2_0": GT.TQ2_0,
}
# types whose dequantizer the gguf package implements
GGUF_DEQUANT = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
                "tq1_0", "tq2_0"]
# types whose quantizer the gguf package implements (plus f16 via astype)
GGUF_QUANT = ["bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "tq1_0", "tq2_0"]
K_QUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]

# byte offsets of the f16 scale fields (d, and dmin / m / s) inside one block (quants.h)
SCALE_FIELDS = {
    "q4_0": (0,), "q4_1": (0, 2), "q5_0": (0,), "q5_1": (0, 2), "q8_0": (0,), "q8_1": (0, 2),
    "q2_k": (80, 82), "q3_k": (108,), "q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208,),
    "tq1_0": (52,), "tq2_0": (64,),
}

# Q8_K: float d, int8 qs[256], int16 bsums[16] (no gguf dequantizer)
Q8_K_BLOCK = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
# Q8_1: f16 d, f16 s = d * sum(qs), int8 qs[32]
Q8_1_BLOCK = np.dtype([("d", "<f2"), ("s", "<f2"), ("qs", "i1", 32)])
assert Q8_K_BLOCK.itemsize == 292 and Q8_1_BLOCK.itemsize == 36


@pytest.fixture(scope="module")
def seed():
    s = int(os.environ.get("TORCHLESS_SEED", time.time_ns() % 2**32))
    print(f"\ntest_quants: seed {s} (replay with TORCHLESS_SEED={s})")
    return s


def make_rng(seed, *salt):
    """A generator per test (salted by a stable hash of its name, not Python's randomized
    hash), so one test's draws do not shift another's and a seed replays exactly."""
    return np.random.default_rng([seed, *[zlib.crc32(str(x).encode()) for x in salt]])


def sizes(name):
    """(elements, bytes) per block. gguf-py 0.19.0 lists Q8_1 as 40 bytes (a float32 d and s);
    ggml's block_q8_1 is two f16 and 32 int8, 36 bytes (ggml-common.h static_assert), which
    is what torchless implements."""
    if name == "q8_1":
        return 32, 36
    block, type_size = GGML_QUANT_SIZES[GT_OF[name]]
    return block, type_size


def assert_bits_equal(ours, ref, what):
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    if ours.dtype.itemsize == 4:
        a, b = ours.view(np.uint32), ref.view(np.uint32)
    else:
        a, b = ours, ref
    bad = np.flatnonzero(a.ravel() != b.ravel())
    assert bad.size == 0, (f"{what}: {bad.size} of {a.size} differ, first at flat index {bad[0]}: "
                           f"ours {ours.ravel()[bad[0]]!r} ref {ref.ravel()[bad[0]]!r}")


def random_finite_f16_bits(rng, n):
    """Uniform over the finite half-precision values' bit patterns (subnormals and both signs
    included, inf/NaN excluded)."""
    bits = rng.integers(0, 2**16, size=n, dtype=np.uint16)
    exp = rng.integers(0, 31, size=n, dtype=np.uint16)
    return (bits & np.uint16(0x83FF)) | (exp << np.uint16(10))


def random_blocks(rng, name, n_blocks):
    """Random raw blocks with every f16 scale field finite; the first blocks are the explicit
    edge cases: all-zero bytes, the smallest and largest subnormal scale, the largest finite
    scale of either sign, negative zero."""
    block, type_size = sizes(name)
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    special = [None, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x8000]
    for off in SCALE_FIELDS[name]:
        field = random_finite_f16_bits(rng, n_blocks)
        for i, v in enumerate(special[1:], start=1):
            field[i] = v
        raw[:, off:off + 2] = field.astype("<u2").view(np.uint8).reshape(n_blocks, 2)
    raw[0] = 0
    return raw


def dequant_ours(raw, name):
    block, type_size = sizes(name)
    rows = raw.shape[0]
    return torchless.dequantize(raw, name, (rows, raw.shape[1] // type_size * block))


def make_data(rng, kind, rows, cols):
    """Rows of one kind: 'normal', 'small' (x 1e-3), 'tiny' (x 1e-6, f16 scales go subnormal),
    'large' (x 1e3), 'outliers' (1 in 100 weights x 50), 'zeros' (some all-zero 32-blocks),
    'ties' (half-integers anchored by a block extreme: exact ties in the rounding)."""
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if kind == "small":
        x *= np.float32(1e-3)
    elif kind == "tiny":
        x *= np.float32(1e-6)
    elif kind == "large":
        x *= np.float32(1e3)
    elif kind == "outliers":
        x[rng.random((rows, cols)) < 0.01] *= np.float32(50)
    elif kind == "zeros":
        blocks = x.reshape(rows, -1, 32)
        blocks[rng.random(blocks.shape[:2]) < 0.25] = 0
    elif kind == "ties":
        x = (rng.integers(-16, 16, size=(rows, cols)) / 2).astype(np.float32)
        blocks = x.reshape(rows, -1, 32)
        blocks[:, :, 0] = rng.choice(np.array([-8, 8, -16, 16, 127, -127], dtype=np.float32),
                                     size=blocks.shape[:2])
    return x


DATA_KINDS = ["normal", "small", "tiny", "large", "outliers", "zeros", "ties"]


# ------------------------------------------------------------------ dequantization

@pytest.mark.parametrize("name", GGUF_DEQUANT)
def test_dequant_of_random_blocks_matches_gguf_bit_for_bit(seed, name):
    rng = make_rng(seed, "dequant", name)
    raw = random_blocks(rng, name, 512)
    block, type_size = sizes(name)
    raw = raw.reshape(64, 8 * type_size)  # 64 rows of 8 blocks
    ref = gguf_quants.dequantize(raw, GT_OF[name])
    ours = dequant_ours(raw, name)
    assert ours.dtype == np.float32
    assert_bits_equal(ours, ref, f"{name} dequantize")
    # the all-zero block is zeros, and finite scales never give NaN
    assert not np.any(ours[0, :block])
    assert not np.isnan(ours).any()


def test_f16_and_bf16_dequant_match_gguf(seed):
    rng = make_rng(seed, "f16")
    bits = rng.integers(0, 2**16, size=(16, 4096), dtype=np.uint16)
    bits[0, :8] = [0x0000, 0x8000, 0x0001, 0x03FF, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00]
    raw = bits.view(np.uint8)
    for name in ("f16", "bf16"):
        ours = torchless.dequantize(raw, name, bits.shape)
        ref = gguf_quants.dequantize(raw, GT_OF[name]).reshape(bits.shape)
        nan = np.isnan(ref)
        # NaN payloads may be quieted differently by NumPy's SIMD conversion; compare positions
        assert np.array_equal(np.isnan(ours), nan), name
        assert_bits_equal(np.where(nan, 0, ours).astype(np.float32),
                          np.where(nan, 0, ref).astype(np.float32), f"{name} dequantize")


def test_q8_k_dequant_matches_numpy_reference(seed):
    rng = make_rng(seed, "q8_k dequant")
    blocks = np.zeros(64, dtype=Q8_K_BLOCK)
    blocks["d"] = (rng.standard_normal(64) * 10.0 ** rng.integers(-30, 30, 64)).astype(np.float32)
    blocks["d"][0] = 0
    blocks["d"][1] = np.float32(1e-45)  # subnormal float32 scale
    blocks["qs"] = rng.integers(-128, 128, size=(64, 256))
    blocks["bsums"] = blocks["qs"].reshape(64, 16, 16).sum(-1)
    raw = blocks.view(np.uint8).reshape(8, -1)
    ours = torchless.dequantize(raw, "q8_k", (8, 8 * 256))
    ref = (blocks["d"][:, None] * blocks["qs"].astype(np.float32)).reshape(8, -1)
    assert_bits_equal(ours, ref, "q8_k dequantize")


def test_q8_1_dequant_matches_numpy_reference(seed):
    rng = make_rng(seed, "q8_1 dequant")
    raw = random_blocks(rng, "q8_1", 256)
    blocks = raw.reshape(-1).view(Q8_1_BLOCK)
    ref = (blocks["qs"].astype(np.float32) * blocks["d"].astype(np.float32)[:, None]).reshape(8, -1)
    ours = torchless.dequantize(raw.reshape(8, -1), "q8_1", (8, 32 * 32))
    assert_bits_equal(ours, ref, "q8_1 dequantize")


# ------------------------------------------------------------------ quantization, exact

@pytest.mark.parametrize("kind", DATA_KINDS)
@pytest.mark.parametrize("name", GGUF_QUANT)
def test_quant_matches_gguf_bit_for_bit(seed, name, kind):
    rng = make_rng(seed, "quant", name, kind)
    x = make_data(rng, kind, 32, 1024)
    ours = torchless.quantize(x, name)
    ref = gguf_quants.quantize(x, GT_OF[name])
    assert ours.dtype == np.uint8
    assert_bits_equal(ours, ref.view(np.uint8).reshape(ours.shape), f"{name} quantize ({kind})")


def test_f16_quant_matches_numpy_astype(seed):
    rng = make_rng(seed, "f16 quant")
    # every float32 exponent, random mantissas: overflow to inf, subnormal halves, ties
    bits = rng.integers(0, 2**32, size=(64, 4096), dtype=np.uint32)
    x = bits.view(np.float32).copy()
    x[~np.isfinite(x)] = 1.0
    x[0, :6] = [65504.0, 65519.99, 65520.0, 2.0**-25, 2.0**-24 * 1.5, -0.0]
    ours = torchless.quantize(x, "f16")
    assert ours.dtype == np.uint8 and ours.shape == (64, 8192)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).view(np.uint8)
    assert_bits_equal(ours, ref, "f16 quantize")


def test_all_zero_rows_round_trip_to_zeros_without_nan(seed):
    names = GGUF_DEQUANT + ["q8_1", "q8_k"]
    for name in names:
        block, _ = sizes(name)
        x = np.zeros((3, 4 * block), dtype=np.float32)
        y = torchless.dequantize(torchless.quantize(x, name), name, x.shape)
        assert not np.isnan(y).any(), name
        assert not np.any(y), name


def test_tiny_inputs_give_finite_output(seed):
    """Inputs far below the f16 scale range (down to float32 subnormals, where 1/d overflows)
    quantize to finite blocks; the dequantized values are no larger than the f16 resolution."""
    rng = make_rng(seed, "tiny")
    for name in GGUF_DEQUANT + ["q8_1", "q8_k"]:
        block, _ = sizes(name)
        for scale in (1e-10, 1e-20, 1e-39):
            x = (rng.standard_normal((2, 4 * block)) * scale).astype(np.float32)
            y = torchless.dequantize(torchless.quantize(x, name), name, x.shape)
            assert np.isfinite(y).all(), (name, scale)
            assert np.abs(y - x).max() <= 2 * np.abs(x).max() + 2.0**-22, (name, scale)


# ------------------------------------------------------------------ K-quants, Q8_K, Q8_1

# Normwise round-trip error ||x - x'|| / ||x||, decoded by gguf, on 64 x 1024 rows.
# Measured over 40 seeds (min-max), normal rows (large and zero-block rows alike):
#   q2_k 0.2945-0.2986  q3_k 0.1497-0.1515  q4_k 0.0710-0.0719  q5_k 0.0359-0.0363
#   q6_k 0.0176-0.0178;  rows x 1e-3: q5_k up to 0.0373, q6_k 0.0203-0.0209 (the f16
#   super-block scale goes subnormal), the others as normal rows;
#   with outliers (1% x 50): q2_k 0.205-0.261, q3_k 0.082-0.090, q4_k 0.074-0.081,
#   q5_k 0.049-0.051, q6_k 0.032-0.033.
# Between seeds the error moves by under 1.5% (65 Ki samples), so the bounds sit ~6% above
# the measured maxima (20% with outliers, which vary more): tight enough that dropping
# ggml's scale search (make_qkx2_quants / make_qx_quants trial scales) fails for q2_k and q4_k.
K_BOUNDS = {"q2_k": 0.318, "q3_k": 0.162, "q4_k": 0.0765, "q5_k": 0.0387, "q6_k": 0.0190}
K_SMALL_BOUNDS = {"q2_k": 0.318, "q3_k": 0.162, "q4_k": 0.0765, "q5_k": 0.0396, "q6_k": 0.0222}
K_OUTLIER_BOUNDS = {"q2_k": 0.32, "q3_k": 0.108, "q4_k": 0.097, "q5_k": 0.062, "q6_k": 0.04}


@pytest.mark.parametrize("kind", ["normal", "small", "large", "outliers", "zeros"])
@pytest.mark.parametrize("name", K_QUANTS)
def test_k_quant_round_trip_error_under_bound(seed, name, kind):
    rng = make_rng(seed, "k round trip", name, kind)
    x = make_data(rng, kind, 64, 1024)
    q = torchless.quantize(x, name)
    assert q.shape == (64, 1024 // 256 * sizes(name)[1])
    y = gguf_quants.dequantize(q, GT_OF[name])  # the layout is gguf's
    assert_bits_equal(torchless.dequantize(q, name, x.shape), y, f"{name} dequantize")
    assert np.isfinite(y).all()
    err = np.linalg.norm(x - y) / np.linalg.norm(x)
    bound = {"outliers": K_OUTLIER_BOUNDS, "small": K_SMALL_BOUNDS}.get(kind, K_BOUNDS)[name]
    assert err <= bound, f"{name} ({kind}): normwise error {err:.4f} > {bound}"
    if kind == "zeros":  # all-zero 32-blocks come back as exact zeros
        zero = ~x.reshape(64, -1, 32).any(-1)
        assert not y.reshape(64, -1, 32)[zero].any()


def _grid_best_symmetric(x, lo, hi, n_grid=801):
    """Least squared error of x ~ s * clip(round(x / s), lo, hi) over a grid of scales s of
    either sign around max|x| / hi, per sub-block row of x (shape (m, n))."""
    amax = np.abs(x).max(-1, keepdims=True)
    t = np.linspace(0.5, 1.6, n_grid)
    s = np.concatenate([t, -t])[None, :, None] * amax[:, :, None] / hi  # (m, G, 1)
    s = np.where(s == 0, 1, s)
    q = np.clip(np.round(x[:, None, :] / s), lo, hi)
    return ((x[:, None, :] - s * q) ** 2).sum(-1).min(-1)


def _grid_best_affine(x, nmax, n_scale=101, n_min=25):
    """Least squared error of x ~ s * clip(round((x + m) / s), 0, nmax) - m with m >= 0 (the
    K-quant form), over a grid of scales around range / nmax and mins around -min(x)."""
    lo = np.minimum(x.min(-1), 0)
    rng_ = (x.max(-1) - lo)[:, None, None, None]
    s = np.linspace(0.7, 1.3, n_scale)[None, :, None, None] * rng_ / nmax
    s = np.where(s == 0, 1, s)
    m = -lo[:, None, None, None] + np.linspace(-1, 1, n_min)[None, None, :, None] * s
    m = np.maximum(m, 0)
    xx = x[:, None, None, :]
    q = np.clip(np.round((xx + m) / s), 0, nmax)
    return ((xx - (s * q - m)) ** 2).sum(-1).reshape(x.shape[0], -1).min(-1)


# name -> (sub-block size, grid search, factor, factor on the outlier block): ours may exceed
# the per-sub-block grid optimum by at most `factor` in RMS over a 256-block. The grid ignores
# that the sub-block scales are themselves quantized (4 bits in Q2_K, 6 in Q3_K/Q4_K/Q5_K,
# 8 in Q6_K) under one f16 scale, and ggml's reference fits a weighted error (|x|- or
# x^2-weighted, absolute error for Q2_K), not the plain squared error the grid minimises.
# Measured maxima over 300 seeds (normal rows / the outlier block): q2_k 1.36 / 2.79 (its
# 4-bit sub-block scales are relative to the outlier's, so the other sub-blocks keep only a
# few levels), q3_k 1.16 / 1.29, q4_k 1.13 / 1.22, q5_k 1.22 / 1.27, q6_k 1.27 / 1.38; the
# factors add 15-25%. A quantizer that mis-fits or mis-packs lands far above (>= 2x).
GRID = {
    "q2_k": (16, lambda x: _grid_best_affine(x, 3), 1.6, 3.4),
    "q3_k": (16, lambda x: _grid_best_symmetric(x, -4, 3), 1.35, 1.55),
    "q4_k": (32, lambda x: _grid_best_affine(x, 15), 1.35, 1.45),
    "q5_k": (32, lambda x: _grid_best_affine(x, 31), 1.45, 1.5),
    "q6_k": (16, lambda x: _grid_best_symmetric(x, -32, 31), 1.5, 1.65),
}


@pytest.mark.parametrize("name", K_QUANTS)
def test_k_quant_error_near_brute_force_best_scale(seed, name):
    sub, best, factor, factor_outliers = GRID[name]
    rng = make_rng(seed, "grid", name)
    x = rng.standard_normal((6, 256)).astype(np.float32)
    x[1] *= np.float32(1e-2)
    x[2, rng.random(256) < 0.02] *= 20  # outliers
    x[3] = np.abs(x[3])  # one-signed block: the min must clamp to zero
    y = gguf_quants.dequantize(torchless.quantize(x, name), GT_OF[name])
    ours = ((x.astype(np.float64) - y) ** 2).sum(-1)
    opt = best(x.astype(np.float64).reshape(-1, sub)).reshape(6, -1).sum(-1)
    ratio = np.sqrt(ours / opt)
    allowed = np.array([factor, factor, factor_outliers, factor, factor, factor])
    assert np.all(ratio <= allowed), f"{name}: RMS error / grid optimum per block {np.round(ratio, 3)} > {allowed}"


def q8_k_reference(x):
    """ggml's quantize_row_q8_K_ref in NumPy: the signed extreme maps to -127, round half to
    even (nearest_int), d = 1 / iscale in float32, bsums = sums of 16 quants."""
    xb = x.reshape(-1, 256)
    idx = np.abs(xb).argmax(-1)
    mx = xb[np.arange(xb.shape[0]), idx]
    out = np.zeros(xb.shape[0], dtype=Q8_K_BLOCK)
    nz = mx != 0
    with np.errstate(divide="ignore"):
        iscale = np.float32(-127) / mx[nz]
    qs = np.minimum(127, np.rint(iscale[:, None] * xb[nz])).astype(np.int8)
    out["qs"][nz] = qs
    out["bsums"][nz] = qs.reshape(-1, 16, 16).astype(np.int32).sum(-1)
    out["d"][nz] = np.float32(1) / iscale
    return out


@pytest.mark.parametrize("kind", ["normal", "small", "large", "outliers", "zeros", "ties"])
def test_q8_k_quant_matches_numpy_reference(seed, kind):
    rng = make_rng(seed, "q8_k", kind)
    x = make_data(rng, kind, 16, 1024)
    ours = torchless.quantize(x, "q8_k")
    assert ours.shape == (16, 4 * 292)
    blocks = ours.reshape(-1).view(Q8_K_BLOCK)
    assert np.array_equal(blocks["bsums"], blocks["qs"].reshape(-1, 16, 16).astype(np.int32).sum(-1))
    assert_bits_equal(ours.reshape(-1), q8_k_reference(x).view(np.uint8), f"q8_k quantize ({kind})")
    y = torchless.dequantize(ours, "q8_k", x.shape)
    err = np.linalg.norm(x - y) / np.linalg.norm(x)
    # measured 0.0069 on normal rows, 0.029 with outliers (the 256-block step follows the outlier)
    bound = {"outliers": 0.045, "ties": 1.0}.get(kind, 0.0085)
    assert err <= bound, f"q8_k ({kind}): error {err:.5f} > {bound}"


@pytest.mark.parametrize("kind", ["normal", "tiny", "large", "outliers", "zeros", "ties"])
def test_q8_1_quant_is_q8_0_plus_block_sum(seed, kind):
    """Q8_1 = gguf's Q8_0 quants and scale, plus s = f16(float32(sum(q)) * d) with the float32 d."""
    rng = make_rng(seed, "q8_1", kind)
    x = make_data(rng, kind, 16, 1024)
    ours = torchless.quantize(x, "q8_1").reshape(-1).view(Q8_1_BLOCK)
    q8_0 = gguf_quants.quantize(x, GT.Q8_0).reshape(-1, 34)
    assert np.array_equal(ours["d"].view(np.uint16), q8_0[:, :2].copy().view("<u2").ravel())
    assert np.array_equal(ours["qs"].view(np.uint8), q8_0[:, 2:])
    d32 = np.abs(x.reshape(-1, 32)).max(-1) / np.float32(127)
    s = (ours["qs"].astype(np.int32).sum(-1).astype(np.float32) * d32).astype(np.float16)
    assert np.array_equal(ours["s"].view(np.uint16), s.view(np.uint16))


def test_dequantize_into_out_array_matches_fresh_array(rng):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    raw = torchless.quantize(x, "q8_0")
    out = np.full(x.shape, np.nan, np.float32)
    r = torchless.dequantize(raw, "q8_0", x.shape, out=out)
    assert r is out
    np.testing.assert_array_equal(out, torchless.dequantize(raw, "q8_0", x.shape))
    with pytest.raises(ValueError, match="out must be"):
        torchless.dequantize(raw, "q8_0", x.shape, out=np.empty(x.shape, np.float64))
    with pytest.raises(ValueError, match="out must be"):
        torchless.dequantize(raw, "q8_0", x.shape, out=np.empty((4, 63), np.float32))
