/* The forward's small ops, a work-item per element (per pair for RoPE) unless said otherwise;
 * the math is the CPU backend's (backends/cpu/cpu.c), in float32. */

#define NORM_WG 256

/* 1 / sqrt(mean + eps) of a row from the work-items' partial sums of squares (a tree in local
 * memory: every work-item gets it) */
static inline float norm_scale(local float *red, float ss, int dim, float eps) {
    const int lid = get_local_id(0);
    red[lid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = NORM_WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return 1.0f / sqrt(red[0] / (float)dim + eps);
}

/* a work-group per row: out = x / sqrt(mean(x^2) + eps) * w */
kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1))) void rmsnorm(ARG(out), ARG(x), ARG(w), int dim, float eps) {
    local float red[NORM_WG];
    const int lid = get_local_id(0);
    global const float *xr = AT(float, x) + (size_t)get_group_id(0) * dim, *wt = AT(float, w);
    global float *o = AT(float, out) + (size_t)get_group_id(0) * dim;
    float ss = 0.0f;
    for (int i = lid; i < dim; i += NORM_WG) ss += xr[i] * xr[i];
    const float scale = norm_scale(red, ss, dim, eps);
    for (int i = lid; i < dim; i += NORM_WG) o[i] = xr[i] * scale * wt[i];
}

/* x += y, then out = rmsnorm(x) * w: rmsnorm's work-group per row and order of sums (its
 * result bit for bit). out may be y: every y[i] is read, by the work-item that later writes
 * out[i], before the barrier. */
kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1))) void add_rmsnorm(ARG(x), ARG(y), ARG(out), ARG(w), int dim,
                                                                             float eps) {
    local float red[NORM_WG];
    const int lid = get_local_id(0);
    global float *xr = AT(float, x) + (size_t)get_group_id(0) * dim;
    global const float *yr = AT(float, y) + (size_t)get_group_id(0) * dim, *wt = AT(float, w);
    global float *o = AT(float, out) + (size_t)get_group_id(0) * dim;
    float ss = 0.0f;
    for (int i = lid; i < dim; i += NORM_WG) {
        const float v = xr[i] + yr[i];
        xr[i] = v;
        ss += v * v;
    }
    const float scale = norm_scale(red, ss, dim, eps);
    for (int i = lid; i < dim; i += NORM_WG) o[i] = xr[i] * scale * wt[i];
}

/* rope of q's and k's heads, then k's and v's rows into the caches (kv_store's placement and
 * rounding): a work-item per (token, head, pair p < hd / 2), heads n_heads query heads then
 * kv_heads key heads. Pairs past rope_dim / 2 are dimensions left as they are (a key head
 * stores them); a key head's work-item also stores v's dimensions 2p and 2p + 1. */
kernel void rope_store(ARG(q), ARG(k), ARG(v), ARG(cs), int n, int n_heads, int kv_heads, int hd, int rope_dim, int neox,
                       ARG(kc), ARG(vc), int f16, ARG(pos), ARG(seq), int max_seq_len) {
    const int pairs = hd / 2, rot = rope_dim / 2, heads = n_heads + kv_heads;
    const size_t i = get_global_id(0);
    if (i >= (size_t)n * heads * pairs) return;
    const int p = i % pairs, hh = (i / pairs) % heads;
    const size_t t = i / ((size_t)pairs * heads);
    const bool is_q = hh < n_heads;
    const int h = hh - n_heads;
    global float *xv = is_q ? AT(float, q) + (t * n_heads + hh) * hd : AT(float, k) + (t * kv_heads + h) * hd;
    int a, b;
    if (p < rot) {
        global const float *c = AT(float, cs) + t * rope_dim;
        a = neox ? p : 2 * p, b = neox ? p + rot : 2 * p + 1;
        const float x0 = xv[a], x1 = xv[b], co = c[2 * p], si = c[2 * p + 1];
        xv[a] = x0 * co - x1 * si;
        xv[b] = x0 * si + x1 * co;
    } else {
        a = rope_dim + 2 * (p - rot), b = a + 1;
    }
    if (is_q) return;
    const size_t at = (((size_t)AT(int, seq)[t] * kv_heads + h) * max_seq_len + AT(int, pos)[t]) * hd;
    global const float *vr = AT(float, v) + (t * kv_heads + h) * hd;
    if (f16) {
        vstore_half_rte(xv[a], at + a, AT(half, kc));
        vstore_half_rte(xv[b], at + b, AT(half, kc));
        vstore_half_rte(vr[2 * p], at + 2 * p, AT(half, vc));
        vstore_half_rte(vr[2 * p + 1], at + 2 * p + 1, AT(half, vc));
    } else {
        AT(float, kc)[at + a] = xv[a];
        AT(float, kc)[at + b] = xv[b];
        AT(float, vc)[at + 2 * p] = vr[2 * p];
        AT(float, vc)[at + 2 * p + 1] = vr[2 * p + 1];
    }
}

/* pair k of head th (token t = th / heads): neox pairs (k, k + rope_dim/2), else (2k, 2k+1) */
kernel void rope(ARG(x), ARG(cs), int n, int heads, int hd, int rope_dim, int neox) {
    const int pairs = rope_dim / 2;
    const size_t i = get_global_id(0);
    if (i >= (size_t)n * heads * pairs) return;
    const int k = i % pairs;
    const size_t th = i / pairs, t = th / heads;
    global float *v = AT(float, x) + th * hd;
    global const float *c = AT(float, cs) + t * rope_dim;
    const int a = neox ? k : 2 * k, b = neox ? k + pairs : 2 * k + 1;
    const float x0 = v[a], x1 = v[b], co = c[2 * k], si = c[2 * k + 1];
    v[a] = x0 * co - x1 * si;
    v[b] = x0 * si + x1 * co;
}

/* element d of kv head h of token t into the caches at (seq[t], h, pos[t]); F16 rounds to nearest even */
kernel void kv_store(ARG(kc), ARG(vc), int f16, ARG(k), ARG(v), ARG(pos), ARG(seq), int n, int kv_heads, int hd,
                     int max_seq_len) {
    const size_t i = get_global_id(0);
    if (i >= (size_t)n * kv_heads * hd) return;
    const int d = i % hd, h = (i / hd) % kv_heads, t = i / ((size_t)hd * kv_heads);
    const size_t at = (((size_t)AT(int, seq)[t] * kv_heads + h) * max_seq_len + AT(int, pos)[t]) * hd + d;
    if (f16) {
        vstore_half_rte(AT(float, k)[i], at, AT(half, kc));
        vstore_half_rte(AT(float, v)[i], at, AT(half, vc));
    } else {
        AT(float, kc)[at] = AT(float, k)[i];
        AT(float, vc)[at] = AT(float, v)[i];
    }
}

kernel void add(ARG(x), ARG(y), long n) {
    const size_t i = get_global_id(0);
    if (i < n) AT(float, x)[i] += AT(float, y)[i];
}

/* a = act(a) * b (matmul.cl's act) */
kernel void glu(int gelu, ARG(a), ARG(b), long n) {
    const size_t i = get_global_id(0);
    if (i >= n) return;
    AT(float, a)[i] = act(gelu, AT(float, a)[i]) * AT(float, b)[i];
}

kernel void softcap(ARG(x), long n, float c) {
    const size_t i = get_global_id(0);
    if (i < n) AT(float, x)[i] = c * tanh(AT(float, x)[i] / c);
}

kernel void gather(ARG(out), ARG(x), ARG(rows), int n, long dim) {
    const size_t i = get_global_id(0);
    if (i < (size_t)n * dim) AT(float, out)[i] = AT(float, x)[(size_t)AT(int, rows)[i / dim] * dim + i % dim];
}
