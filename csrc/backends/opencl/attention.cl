/* Attention of one token's head over its sequence's cached keys (flash-style: online softmax,
 * no score matrix). A work-group per (head, token, split): its work-items score a block of
 * ATTN_WG keys at a time, one key each; the block raises the running maximum m (rescaling the
 * sum l and the output so far by exp(m_old - m)) and adds exp(s - m) v_t, work-item j owning
 * dims j, j + 64, ... With one split the result is written out; with several (decoding a few
 * tokens over a long context: flash-decoding), each split covers `chunk` keys and leaves its
 * (m, l, unnormalised output) for attention_merge. */

#define ATTN_WG 64
#define ATTN_MAX_HD 256
#define ATTN_DPW (ATTN_MAX_HD / ATTN_WG) /* dims per work-item */

static inline float kv_at(const int f16, global const uchar *p, size_t i) {
    return f16 ? vload_half(i, (global const half *)p) : ((global const float *)p)[i];
}

/* op over red[0..ATTN_WG) into red[0]; every work-item then reads it */
static inline float reduce_max(local float *red, float v) {
    const int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ATTN_WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] = fmax(red[lid], red[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

static inline float reduce_sum(local float *red, float v) {
    const int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ATTN_WG / 2; s > 0; s >>= 1) {
        if (lid < s) red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

static inline void attend(const int f16, global const float *qg, global float *out, global float *part,
                          global const uchar *kc, global const uchar *vc, global const int *pos_, global const int *seq,
                          int n_heads, int n_kv_heads, int hd, int max_seq_len, int window, float scale, float softcap,
                          int chunk, local float *q, local float *p, local float *red) {
    const int h = get_group_id(0), i = get_group_id(1), split = get_group_id(2), lid = get_local_id(0);
    const int pos = pos_[i], kvh = h / (n_heads / n_kv_heads);
    const size_t base = ((size_t)seq[i] * n_kv_heads + kvh) * max_seq_len * hd; /* element of (seq, head, 0) */
    const size_t row = (size_t)i * n_heads + h;
    for (int d = lid; d < hd; d += ATTN_WG) q[d] = qg[row * hd + d] * scale;
    barrier(CLK_LOCAL_MEM_FENCE);
    const int first = window > 0 && pos >= window ? pos - window + 1 : 0; /* causal, windowed */
    const int begin = first + split * chunk, end = min(pos + 1, begin + chunk); /* may be empty */
    float m = -INFINITY, l = 0.0f, acc[ATTN_DPW];
    for (int j = 0; j < ATTN_DPW; j++) acc[j] = 0.0f;
    for (int tb = begin; tb < end; tb += ATTN_WG) {
        const int t = tb + lid;
        float z = -INFINITY;
        if (t < end) {
            const size_t at = base + (size_t)t * hd;
            z = 0.0f;
            for (int d = 0; d < hd; d++) z += q[d] * kv_at(f16, kc, at + d);
            if (softcap > 0.0f) z = softcap * tanh(z / softcap);
        }
        const float mn = fmax(m, reduce_max(red, z)); /* finite: key tb is valid */
        const float r = exp(m - mn), e = t < end ? exp(z - mn) : 0.0f;
        p[lid] = e;
        l = l * r + reduce_sum(red, e); /* its barriers also publish p */
        m = mn;
        const int nk = min(ATTN_WG, end - tb);
        for (int j = 0; j < ATTN_DPW; j++) {
            const int d = lid + ATTN_WG * j;
            if (d >= hd) break;
            float a = acc[j] * r;
            for (int u = 0; u < nk; u++) a += p[u] * kv_at(f16, vc, base + (size_t)(tb + u) * hd + d);
            acc[j] = a;
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* p is rewritten by the next block */
    }
    if (get_num_groups(2) == 1) {
        for (int j = 0; j < ATTN_DPW; j++) {
            const int d = lid + ATTN_WG * j;
            if (d < hd) out[row * hd + d] = acc[j] / l;
        }
        return;
    }
    global float *pp = part + (row * get_num_groups(2) + split) * (hd + 2);
    if (lid == 0) pp[0] = m, pp[1] = l;
    for (int j = 0; j < ATTN_DPW; j++) {
        const int d = lid + ATTN_WG * j;
        if (d < hd) pp[2 + d] = acc[j];
    }
}

/* out = the splits' partial results rescaled to their largest maximum and normalised; a
 * work-group per (token, head) row, splits that saw no key (l = 0) left out */
kernel __attribute__((reqd_work_group_size(ATTN_WG, 1, 1))) void attention_merge(ARG(part), int splits, int hd,
                                                                                  ARG(out)) {
    const size_t row = get_group_id(0);
    global const float *pp = AT(float, part) + row * splits * (hd + 2);
    float M = -INFINITY, L = 0.0f;
    for (int s = 0; s < splits; s++)
        if (pp[s * (hd + 2) + 1] > 0.0f) M = fmax(M, pp[s * (hd + 2)]);
    for (int s = 0; s < splits; s++)
        if (pp[s * (hd + 2) + 1] > 0.0f) L += pp[s * (hd + 2) + 1] * exp(pp[s * (hd + 2)] - M);
    for (int d = get_local_id(0); d < hd; d += ATTN_WG) {
        float o = 0.0f;
        for (int s = 0; s < splits; s++)
            if (pp[s * (hd + 2) + 1] > 0.0f) o += pp[s * (hd + 2) + 2 + d] * exp(pp[s * (hd + 2)] - M);
        AT(float, out)[row * hd + d] = o / L;
    }
}

#define ATTENTION_KERNEL(name, F16)                                                                                      \
    kernel __attribute__((reqd_work_group_size(ATTN_WG, 1, 1))) void name(                                               \
        ARG(q), ARG(out), ARG(part), ARG(kc), ARG(vc), ARG(pos), ARG(seq), int n_heads, int n_kv_heads, int hd,          \
        int max_seq_len, int window, float scale, float softcap, int chunk) {                                            \
        local float q[ATTN_MAX_HD], p[ATTN_WG], red[ATTN_WG];                                                           \
        attend(F16, AT(float, q), AT(float, out), part_b ? AT(float, part) : 0, AT(uchar, kc), AT(uchar, vc),            \
               AT(int, pos), AT(int, seq), n_heads, n_kv_heads, hd, max_seq_len, window, scale, softcap, chunk, q, p,    \
               red);                                                                                                     \
    }

ATTENTION_KERNEL(attention_f16, 1)
ATTENTION_KERNEL(attention_f32, 0)
