/* Opening a device by name, and the list of devices every compiled-in backend finds. */
#include "backend.h"

#include "core/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPUs first: "auto" takes the first device it may of the first backend that has one. */
static const tl_backend_entry backends[] = {
#ifdef TL_HAVE_CUDA
    {"cuda", tl_cuda_device_count, tl_cuda_device_open, NULL},
#endif
#ifdef TL_HAVE_HIP
    {"hip", tl_hip_device_count, tl_hip_device_open, NULL},
#endif
#ifdef TL_HAVE_OPENCL
    {"opencl", tl_opencl_device_count, tl_opencl_device_open, tl_opencl_device_is_gpu},
#endif
    {"cpu", tl_cpu_device_count, tl_cpu_device_open, NULL},
};
#define N_BACKENDS (sizeof backends / sizeof backends[0])

/* every backend the project knows, to tell "not built" from "no such backend" */
static const char *const known[] = {"cuda", "hip", "opencl", "cpu"};

const char *const *tl_backends_built(void) {
    static const char *names[N_BACKENDS + 1];
    for (size_t i = 0; i < N_BACKENDS; i++) names[i] = backends[i].name;
    names[N_BACKENDS] = NULL;
    return names;
}

tl_status tl_device_open(const char *name, tl_device **out) {
    *out = NULL;
    if (!name || !*name || strcmp(name, "auto") == 0) {
        for (size_t i = 0; i < N_BACKENDS; i++)
            for (int k = 0, n = backends[i].count(); k < n; k++)
                if (!backends[i].auto_ok || backends[i].auto_ok(k)) return backends[i].open(k, out);
        return tl_set_error(TL_ERR_INVALID, "device: no device found"); /* unreachable: the CPU */
    }
    /* "backend" or "backend:N" */
    const char *colon = strchr(name, ':');
    size_t len = colon ? (size_t)(colon - name) : strlen(name);
    int index = 0;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || v < 0 || v > 1 << 20)
            return tl_set_error(TL_ERR_INVALID, "device: '%s': the index after ':' must be a number >= 0", name);
        index = (int)v;
    }
    for (size_t i = 0; i < N_BACKENDS; i++) {
        if (strlen(backends[i].name) != len || strncmp(name, backends[i].name, len) != 0) continue;
        int n = backends[i].count();
        if (index >= n) {
            if (n == 0) return tl_set_error(TL_ERR_UNSUPPORTED, "device: '%s': no %s device found", name, backends[i].name);
            return tl_set_error(TL_ERR_INVALID, "device: '%s': there %s %d %s device%s (indices 0..%d)", name,
                                n == 1 ? "is" : "are", n, backends[i].name, n == 1 ? "" : "s", n - 1);
        }
        return backends[i].open(index, out);
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == len && strncmp(name, known[i], len) == 0)
            return tl_set_error(TL_ERR_UNSUPPORTED,
                                "device: '%s': this build has no %.*s backend (rebuild with "
                                "CMAKE_ARGS=\"-DTORCHLESS_%s=ON\")",
                                name, (int)len, name,
                                known[i][0] == 'c' ? "CUDA" : known[i][0] == 'h' ? "HIP" : "OPENCL");
    return tl_set_error(TL_ERR_INVALID, "device: '%s' is not a device (expected auto, cpu, cuda[:N], hip[:N] or opencl[:N])",
                        name);
}

void tl_device_free(tl_device *d) {
    if (d) d->ops->device_free(d);
}

int tl_devices(tl_device_info *out, int cap) {
    int total = 0;
    for (size_t i = 0; i < N_BACKENDS; i++) {
        int n = backends[i].count();
        for (int k = 0; k < n; k++, total++) {
            if (total >= cap) continue;
            tl_device_info *info = &out[total];
            memset(info, 0, sizeof *info);
            snprintf(info->backend, sizeof info->backend, "%s", backends[i].name);
            info->index = k;
            info->auto_ok = !backends[i].auto_ok || backends[i].auto_ok(k);
            tl_device *d;
            if (backends[i].open(k, &d)) {
                snprintf(info->name, sizeof info->name, "(cannot be opened: %s)", tl_last_error());
                continue;
            }
            snprintf(info->name, sizeof info->name, "%s", d->name);
            if (d->ops->memory) d->ops->memory(d, &info->free_bytes, &info->total_bytes);
            tl_device_free(d);
        }
    }
    return total;
}

tl_status tl_top_k_check(const char *backend, int32_t rows, int32_t n_vocab, const tl_top_k_args *a) {
    if (rows < 1 || n_vocab < 1 || a->k < 1 || a->k > n_vocab || a->k > TL_TOP_K_MAX || a->n_ids < 0 ||
        a->n_ids > TL_TOP_K_MAX || (a->n_ids > 0 && (!a->ids || !a->at_ids)) || !a->stats || !a->cand)
        return tl_set_error(TL_ERR_INVALID, "%s: top_k of %d rows of %d logits: k %d (1..%d), %d ids", backend, (int)rows,
                            (int)n_vocab, (int)a->k, TL_TOP_K_MAX, (int)a->n_ids);
    return TL_OK;
}

size_t tl_top_k_row_bytes(int32_t k, int32_t n_ids) {
    return sizeof(tl_top_k_stats) + (size_t)k * sizeof(tl_top_k_cand) + 8 * (size_t)((n_ids + 1) / 2);
}

void tl_top_k_unpack(const void *results, int32_t rows, const tl_top_k_args *a) {
    const size_t row_bytes = tl_top_k_row_bytes(a->k, a->n_ids);
    for (int32_t r = 0; r < rows; r++) {
        const uint8_t *o = (const uint8_t *)results + (size_t)r * row_bytes;
        memcpy(&a->stats[r], o, sizeof(tl_top_k_stats));
        o += sizeof(tl_top_k_stats);
        memcpy(&a->cand[(size_t)r * a->k], o, (size_t)a->k * sizeof(tl_top_k_cand));
        o += (size_t)a->k * sizeof(tl_top_k_cand);
        if (a->n_ids) memcpy(&a->at_ids[(size_t)r * a->n_ids], o, (size_t)a->n_ids * sizeof(float));
    }
}
