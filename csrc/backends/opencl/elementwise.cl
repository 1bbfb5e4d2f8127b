/* The forward's small ops, a work-item per element (per pair for RoPE) unless said otherwise;
 * the math is the CPU backend's (backends/cpu/cpu.c), in float32. */

#define NORM_WG 256

/* a work-group per row: out = x / sqrt(mean(x^2) + eps) * w, the sum reduced in local memory */
kernel __attribute__((reqd_work_group_size(NORM_WG, 1, 1))) void rmsnorm(ARG(out), ARG(x), ARG(w), int dim, float eps) {
    local float red[NORM_WG];
    const int lid = get_local_id(0);
    global const float *xr = AT(float, x) + (size_t)get_group_id(0) * dim, *wt = AT(float, w);
    global float *o = AT(float, out) + (size_t)get_group_id(0) * dim;
    float ss = 0.0f;
    for (int i = lid; i < dim; i += NORM_WG) ss += xr[i] * xr[i];
    red[lid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = NORM_WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float scale = 1.0f / sqrt(red[0] / (float)dim + eps);
    for (int i = lid; i < dim; i += NORM_WG) o[i] = xr[i] * scale * wt[i];
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

/* a = act(a) * b: SiLU, or GELU with the tanh approximation (sqrt(2/pi) = 0.7978845608) */
kernel void glu(int gelu, ARG(a), ARG(b), long n) {
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float z = AT(float, a)[i];
    const float g = gelu ? 0.5f * z * (1.0f + tanh(0.79788456080286535588f * z * (1.0f + 0.044715f * z * z)))
                         : z / (1.0f + exp(-z));
    AT(float, a)[i] = g * AT(float, b)[i];
}

kernel void softcap(ARG(x), long n, float c) {
    const size_t i = get_global_id(0);
    if (i < n) AT(float, x)[i] = c * tanh(AT(float, x)[i] / c);
}

kernel void gather(ARG(out), ARG(x), ARG(rows), int n, long dim) {
    const size_t i = get_global_id(0);
    if (i < (size_t)n * dim) AT(float, out)[i] = AT(float, x)[(size_t)AT(int, rows)[i / dim] * dim + i % dim];
}
