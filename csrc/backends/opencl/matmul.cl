/* y[n][m] = x[n][k] . W^T (+ bias) for W of m rows in any kernel dtype, and embeddings.
 * Decode (n <= GEMV_NT): a work-group per GEMV_ROWS weight rows reads them once, eight elements
 * per work-item at a time, and dots them with every token's x. Prefill: 64 x 64 output tiles, the
 * weights decoded into local memory 32 columns at a time. Everything accumulates in float32. */

#define GEMV_WG 64
#define GEMV_NT 8   /* tokens at most */
#define GEMV_ROWS 4 /* rows a work-group */
#define TILE 64 /* rows of W and tokens per GEMM tile */
#define TILE_K 32

static inline float dot8(float8 a, float8 b) { return dot(a.lo, b.lo) + dot(a.hi, b.hi); }

static inline bool float_dtype(const int dt) { return dt == DT_F32 || dt == DT_F16 || dt == DT_BF16; }

/* Eight columns e.. of one row of W, or of activations, zeros past the row's end (k) */
static inline float8 tile8(const int dt, global const uchar *row, int e, int k) {
    if (e + 8 <= k) return w8(dt, row, e);
    float v[8];
    for (int j = 0; j < 8; j++) v[j] = float_dtype(dt) && e + j < k ? w1(dt, row, e + j) : 0.0f;
    return vload8(0, v);
}

static inline float8 x8(global const float *xr, int e, int k) {
    if (e + 8 <= k) return vload8(0, xr + e);
    float v[8];
    for (int j = 0; j < 8; j++) v[j] = e + j < k ? xr[e + j] : 0.0f;
    return vload8(0, v);
}

/* SiLU, or GELU with the tanh approximation (sqrt(2/pi) = 0.7978845608); glu() in elementwise.cl too */
static inline float act(int gelu, float z) {
    return gelu ? 0.5f * z * (1.0f + tanh(0.79788456080286535588f * z * (1.0f + 0.044715f * z * z))) : z / (1.0f + exp(-z));
}

/* GEMV_ROWS rows a work-group (rows GEMV_ROWS * grp on): each work-item decodes eight weights of
 * each row at a time and dots them with every token's x; then work-item (row, token) sums the
 * row's partial sums. With u (gate + up: w is the gate, red twice the size), the same rows of u
 * against the same x loads, and y = act(w . x) * (u . x) without bias. */
static inline void gemv(const int dt, global const uchar *w, global const uchar *u, ulong row_bytes, global const float *x,
                        int k, int m, int n, global float *y, global const float *bias, int gelu, local float *red,
                        int grp) {
    const int r0 = grp * GEMV_ROWS, lid = get_local_id(0);
    float acc[GEMV_ROWS][GEMV_NT], accu[GEMV_ROWS][GEMV_NT];
    for (int i = 0; i < GEMV_ROWS; i++)
        for (int t = 0; t < GEMV_NT; t++) acc[i][t] = accu[i][t] = 0.0f;
    for (int e = lid * 8; e < k; e += GEMV_WG * 8) {
        float8 v[GEMV_ROWS], vu[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++) { /* rows past m repeat the last one, unused */
            v[i] = tile8(dt, w + (size_t)min(r0 + i, m - 1) * row_bytes, e, k);
            if (u) vu[i] = tile8(dt, u + (size_t)min(r0 + i, m - 1) * row_bytes, e, k);
        }
        for (int t = 0; t < GEMV_NT; t++) {
            if (t >= n) break;
            const float8 xv = x8(x + (size_t)t * k, e, k);
            for (int i = 0; i < GEMV_ROWS; i++) {
                acc[i][t] += dot8(v[i], xv);
                if (u) accu[i][t] += dot8(vu[i], xv);
            }
        }
    }
    local float *redu = red + GEMV_ROWS * GEMV_NT * GEMV_WG;
    for (int i = 0; i < GEMV_ROWS; i++)
        for (int t = 0; t < GEMV_NT; t++) {
            red[(i * GEMV_NT + t) * GEMV_WG + lid] = acc[i][t];
            if (u) redu[(i * GEMV_NT + t) * GEMV_WG + lid] = accu[i][t];
        }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int i = lid / GEMV_NT, t = lid % GEMV_NT;
    if (lid >= GEMV_ROWS * GEMV_NT || t >= n || r0 + i >= m) return;
    float sum = 0.0f, sumu = 0.0f;
    for (int j = 0; j < GEMV_WG; j++) {
        sum += red[lid * GEMV_WG + j];
        if (u) sumu += redu[lid * GEMV_WG + j];
    }
    y[(size_t)t * m + r0 + i] = u ? act(gelu, sum) * sumu : sum + (bias ? bias[r0 + i] : 0.0f);
}

/* A work-group of 16 x 16 computes a tile of 64 rows x 64 tokens, each work-item 4 x 4 of it
 * (rows lx + 16i, tokens ly + 16j: neighbouring work-items write neighbouring rows). Per step
 * of 32 columns, each work-item decodes 8 weights and loads 8 activations into local memory,
 * stored column-major so that the inner loop reads rows and tokens contiguously. */
static inline void gemm(const int dt, global const uchar *w, ulong row_bytes, global const float *x, int k, int m, int n,
                        global float *y, global const float *bias, local float *ws, local float *xs) {
    const int lx = get_local_id(0), ly = get_local_id(1), id = ly * 16 + lx;
    const int r0 = get_group_id(0) * TILE, t0 = get_group_id(1) * TILE;
    const int lr = id / 4, lc = (id % 4) * 8; /* what this work-item loads: row/token lr, columns lc.. */
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += TILE_K) {
        const float8 wv = r0 + lr < m ? tile8(dt, w + (size_t)(r0 + lr) * row_bytes, k0 + lc, k) : (float8)(0.0f);
        const float8 xv = t0 + lr < n ? x8(x + (size_t)(t0 + lr) * k, k0 + lc, k) : (float8)(0.0f);
        const float wa[8] = {wv.s0, wv.s1, wv.s2, wv.s3, wv.s4, wv.s5, wv.s6, wv.s7};
        const float xa[8] = {xv.s0, xv.s1, xv.s2, xv.s3, xv.s4, xv.s5, xv.s6, xv.s7};
        for (int j = 0; j < 8; j++) {
            ws[(lc + j) * TILE + lr] = wa[j];
            xs[(lc + j) * TILE + lr] = xa[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int c = 0; c < TILE_K; c++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = ws[c * TILE + lx + 16 * i];
            for (int j = 0; j < 4; j++) b[j] = xs[c * TILE + ly + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < 4; i++) {
        const int r = r0 + lx + 16 * i;
        if (r >= m) continue;
        const float bi = bias ? bias[r] : 0.0f;
        for (int j = 0; j < 4; j++) {
            const int t = t0 + ly + 16 * j;
            if (t < n) y[(size_t)t * m + r] = acc[i][j] + bi;
        }
    }
}

/* out[t] = row ids[t] of the table times scale: a work-item per 8 elements */
static inline void embed(const int dt, global const uchar *w, ulong row_bytes, int k, global const int *ids, int n,
                         float scale, global float *out) {
    const int per_row = (k + 7) / 8;
    const int g = get_global_id(0);
    if (g >= n * per_row) return;
    const int t = g / per_row, e = (g % per_row) * 8;
    global const uchar *row = w + (size_t)ids[t] * row_bytes;
    global float *o = out + (size_t)t * k;
    if (e + 8 <= k) {
        vstore8(w8(dt, row, e) * scale, 0, o + e);
    } else if (float_dtype(dt)) {
        for (int j = e; j < k; j++) o[j] = w1(dt, row, j) * scale;
    }
}

/* the kernels of one dtype; bias_b is NULL when there is none */
#define MATMUL_KERNELS(name, DT)                                                                                       \
    kernel __attribute__((reqd_work_group_size(GEMV_WG, 1, 1))) void gemv_##name(                                      \
        ARG(w), ulong row_bytes, ARG(x), int k, int m, int n, ARG(y), ARG(bias)) {                                     \
        local float red[GEMV_ROWS * GEMV_NT * GEMV_WG];                                                                            \
        gemv(DT, AT(uchar, w), 0, row_bytes, AT(float, x), k, m, n, AT(float, y), bias_b ? AT(float, bias) : 0, 0, red, \
             get_group_id(0));                                                                                         \
    }                                                                                                                  \
    /* q, k and v (rows m0, m1, m2) in one launch: the work-groups of each in turn */                                \
    kernel __attribute__((reqd_work_group_size(GEMV_WG, 1, 1))) void gemv3_##name(                                     \
        ARG(w0), ARG(w1), ARG(w2), ulong row_bytes, ARG(x), int k, int m0, int m1, int m2, int n, ARG(y0), ARG(y1),    \
        ARG(y2), ARG(b0), ARG(b1), ARG(b2)) {                                                                          \
        local float red[GEMV_ROWS * GEMV_NT * GEMV_WG];                                                                \
        const int g0 = (m0 + GEMV_ROWS - 1) / GEMV_ROWS, g1 = (m1 + GEMV_ROWS - 1) / GEMV_ROWS;                       \
        const int grp = get_group_id(0);                                                                               \
        if (grp < g0)                                                                                                  \
            gemv(DT, AT(uchar, w0), 0, row_bytes, AT(float, x), k, m0, n, AT(float, y0), b0_b ? AT(float, b0) : 0, 0, red,   \
                 grp);                                                                                                 \
        else if (grp < g0 + g1)                                                                                        \
            gemv(DT, AT(uchar, w1), 0, row_bytes, AT(float, x), k, m1, n, AT(float, y1), b1_b ? AT(float, b1) : 0, 0, red,   \
                 grp - g0);                                                                                            \
        else                                                                                                           \
            gemv(DT, AT(uchar, w2), 0, row_bytes, AT(float, x), k, m2, n, AT(float, y2), b2_b ? AT(float, b2) : 0, 0, red,   \
                 grp - g0 - g1);                                                                                       \
    }                                                                                                                  \
    kernel __attribute__((reqd_work_group_size(GEMV_WG, 1, 1))) void gemv_glu_##name(                                 \
        ARG(g), ARG(u), ulong row_bytes, ARG(x), int k, int m, int n, ARG(a), int gelu) {                              \
        local float red[2 * GEMV_ROWS * GEMV_NT * GEMV_WG];                                                            \
        gemv(DT, AT(uchar, g), AT(uchar, u), row_bytes, AT(float, x), k, m, n, AT(float, a), 0, gelu, red,             \
             get_group_id(0));                                                                                         \
    }                                                                                                                  \
    kernel __attribute__((reqd_work_group_size(16, 16, 1))) void gemm_##name(                                          \
        ARG(w), ulong row_bytes, ARG(x), int k, int m, int n, ARG(y), ARG(bias)) {                                     \
        local float ws[TILE_K * TILE], xs[TILE_K * TILE];                                                              \
        gemm(DT, AT(uchar, w), row_bytes, AT(float, x), k, m, n, AT(float, y), bias_b ? AT(float, bias) : 0, ws, xs); \
    }                                                                                                                  \
    kernel void embed_##name(ARG(w), ulong row_bytes, int k, ARG(ids), int n, float scale, ARG(out)) {                 \
        embed(DT, AT(uchar, w), row_bytes, k, AT(int, ids), n, scale, AT(float, out));                                 \
    }

MATMUL_KERNELS(f32, DT_F32)
MATMUL_KERNELS(f16, DT_F16)
MATMUL_KERNELS(bf16, DT_BF16)
MATMUL_KERNELS(q8_0, DT_Q8_0)
MATMUL_KERNELS(q4_0, DT_Q4_0)
MATMUL_KERNELS(q4_1, DT_Q4_1)
MATMUL_KERNELS(q5_0, DT_Q5_0)
MATMUL_KERNELS(q5_1, DT_Q5_1)
MATMUL_KERNELS(q4_k, DT_Q4_K)
MATMUL_KERNELS(q5_k, DT_Q5_K)
MATMUL_KERNELS(q6_k, DT_Q6_K)
