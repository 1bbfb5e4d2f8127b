/* The OpenCL backend: weights (in GGUF's block layouts), activations and KV caches in buffers
 * of the device; kernels from the .cl files beside this one, built at run time (program.c).
 * Ops enqueue kernels on the context's in-order queue; the first failure is kept and reported
 * by the next download or sync.
 *
 * The backend interface deals in addresses (the forward offsets them: x + n * dim), which
 * OpenCL 1.2 buffers do not have. So each allocation is given a range of made-up addresses,
 * never dereferenced, and an op's pointer is turned back into (buffer, byte offset) by looking
 * it up; kernels take such pairs (ARG/AT in quant.cl). */
#include "program.h"

#include "backends/backend.h"
#include "core/dtype.h"
#include "core/status.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- devices, process-wide */

typedef struct block {
    uintptr_t base;
    size_t bytes;
    cl_mem mem;
} block;

/* One per OpenCL device found, shared by every model on it (like a CUDA primary context):
 * built once, kept until the process ends. */
typedef struct cl_dev {
    cl_platform_id platform;
    cl_device_id id;
    bool gpu;
    char name[128];
    cl_ulong total, max_alloc;
    cl_uint units; /* compute units */
    pthread_mutex_t lock; /* everything below */
    cl_context ctx;       /* NULL until first used */
    cl_command_queue queue; /* weight uploads, fills */
    cl_program program;     /* NULL until the first stream */
    size_t allocated;
    block *blocks; /* by base address */
    size_t n_blocks, cap_blocks;
} cl_dev;

static cl_dev *devs;
static int n_devs;
static pthread_once_t found = PTHREAD_ONCE_INIT;

/* Made-up addresses, unique across devices: far from 0, a gap after each allocation so that an
 * end pointer never falls into the next one. */
static _Atomic uintptr_t next_address = (uintptr_t)1 << 40;
#define ADDRESS_GAP 4096

static void add_device(cl_platform_id p, cl_device_id id, cl_device_type type) {
    cl_dev *d = &devs[n_devs++];
    memset(d, 0, sizeof *d);
    d->platform = p;
    d->id = id;
    d->gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    pthread_mutex_init(&d->lock, NULL);
    char dev_name[128] = "", plat[64] = "";
    clGetDeviceInfo(id, CL_DEVICE_NAME, sizeof dev_name - 1, dev_name, NULL);
    clGetPlatformInfo(p, CL_PLATFORM_NAME, sizeof plat - 1, plat, NULL);
    clGetDeviceInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof d->total, &d->total, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof d->max_alloc, &d->max_alloc, NULL);
    clGetDeviceInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof d->units, &d->units, NULL);
    /* a GPU by its name; other devices (PoCL's CPU device) say whose they are */
    if (d->gpu) snprintf(d->name, sizeof d->name, "%s", dev_name);
    else snprintf(d->name, sizeof d->name, "%.40s: %.85s", strcmp(plat, "Portable Computing Language") ? plat : "PoCL", dev_name);
}

/* Every device of every platform: GPUs first, then the others, each in platform order (the
 * N of "opencl:N"). No ICD loader, no platform, no device: none. */
static void find_devices(void) {
    cl_uint np = 0;
    if (clGetPlatformIDs(0, NULL, &np) != CL_SUCCESS || np == 0) return;
    cl_platform_id *ps = calloc(np, sizeof *ps);
    if (!ps || clGetPlatformIDs(np, ps, NULL) != CL_SUCCESS) {
        free(ps);
        return;
    }
    cl_uint total = 0;
    for (cl_uint i = 0; i < np; i++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(ps[i], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) == CL_SUCCESS) total += nd;
    }
    devs = total ? calloc(total, sizeof *devs) : NULL;
    for (int gpus = 1; devs && gpus >= 0; gpus--)
        for (cl_uint i = 0; i < np; i++) {
            cl_uint nd = 0;
            if (clGetDeviceIDs(ps[i], CL_DEVICE_TYPE_ALL, 0, NULL, &nd) != CL_SUCCESS || nd == 0) continue;
            cl_device_id ids[64];
            if (nd > 64) nd = 64;
            if (clGetDeviceIDs(ps[i], CL_DEVICE_TYPE_ALL, nd, ids, NULL) != CL_SUCCESS) continue;
            for (cl_uint k = 0; k < nd && n_devs < (int)total; k++) {
                cl_device_type type = 0;
                clGetDeviceInfo(ids[k], CL_DEVICE_TYPE, sizeof type, &type, NULL);
                if (((type & CL_DEVICE_TYPE_GPU) != 0) == (gpus == 1)) add_device(ps[i], ids[k], type);
            }
        }
    free(ps);
}

static tl_status cl_fail(cl_int e, const char *what) {
    char b[48];
    return tl_set_error(TL_ERR_DEVICE, "opencl: %s: %s", what, tl_opencl_error(e, b));
}

/* The context and upload queue, created on first use; with d->lock held. */
static tl_status ready(cl_dev *d) {
    if (d->ctx) return TL_OK;
    cl_int e;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)d->platform, 0};
    d->ctx = clCreateContext(props, 1, &d->id, NULL, NULL, &e);
    if (e != CL_SUCCESS) {
        d->ctx = NULL;
        return cl_fail(e, "creating a context");
    }
    d->queue = clCreateCommandQueue(d->ctx, d->id, 0, &e);
    if (e != CL_SUCCESS) {
        clReleaseContext(d->ctx);
        d->ctx = NULL;
        return cl_fail(e, "creating a queue");
    }
    return TL_OK;
}

/* The block holding address p (an end pointer counts), or NULL; with d->lock held. */
static block *find_block(cl_dev *d, uintptr_t p) {
    size_t lo = 0, hi = d->n_blocks;
    while (lo < hi) { /* the last block whose base is <= p */
        size_t mid = (lo + hi) / 2;
        if (d->blocks[mid].base <= p) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return NULL;
    block *b = &d->blocks[lo - 1];
    return p <= b->base + b->bytes ? b : NULL;
}

/* ---------------------------------------------------------------- tl_device */

typedef struct ocl_device {
    tl_device base;
    cl_dev *dev;
} ocl_device;

static cl_dev *dev_of(tl_device *d) { return ((ocl_device *)d)->dev; }

static void device_free(tl_device *d) { free(d); }

static bool oom_code(cl_int e) { return e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_RESOURCES; }

/* A buffer, zeroed: the fill makes drivers that allocate lazily (NVIDIA's) fail here, not in
 * a later kernel, when memory is short. */
static tl_status dev_alloc(tl_device *td, size_t bytes, void **out) {
    cl_dev *d = dev_of(td);
    *out = NULL;
    if (!bytes) bytes = 1;
    if (bytes > d->max_alloc)
        return tl_set_error(TL_ERR_NOMEM,
                            "opencl: out of device memory: %.1f MiB asked for in one buffer, more than %s allows (%.1f MiB)",
                            bytes / 1048576.0, d->name, d->max_alloc / 1048576.0);
    pthread_mutex_lock(&d->lock);
    tl_status s = ready(d);
    if (!s && d->n_blocks == d->cap_blocks) {
        size_t cap = d->cap_blocks ? 2 * d->cap_blocks : 256;
        block *b = realloc(d->blocks, cap * sizeof *b);
        if (b) d->blocks = b, d->cap_blocks = cap;
        else s = tl_set_error(TL_ERR_NOMEM, "opencl: out of host memory");
    }
    cl_int e = CL_SUCCESS;
    cl_mem mem = NULL;
    if (!s) mem = clCreateBuffer(d->ctx, CL_MEM_READ_WRITE, bytes, NULL, &e);
    if (!s && e == CL_SUCCESS) {
        const cl_uchar zero = 0;
        e = clEnqueueFillBuffer(d->queue, mem, &zero, 1, 0, bytes, 0, NULL, NULL);
        if (e == CL_SUCCESS) e = clFinish(d->queue);
    }
    if (!s && e != CL_SUCCESS) {
        if (mem) clReleaseMemObject(mem);
        const bool oom = oom_code(e) || e == CL_INVALID_BUFFER_SIZE;
        s = tl_set_error(oom ? TL_ERR_NOMEM : TL_ERR_DEVICE, "opencl: %s: %.1f MiB asked for, %.1f MiB of %.1f MiB in use on %s (%s)",
                         oom ? "out of device memory" : "allocating", bytes / 1048576.0, d->allocated / 1048576.0,
                         d->total / 1048576.0, d->name, tl_opencl_error(e, (char[48]){0}));
    }
    if (!s) {
        block *b = &d->blocks[d->n_blocks++];
        b->base = atomic_fetch_add(&next_address, (bytes + 2 * ADDRESS_GAP - 1) / ADDRESS_GAP * ADDRESS_GAP);
        b->bytes = bytes;
        b->mem = mem;
        d->allocated += bytes;
        *out = (void *)b->base;
    }
    pthread_mutex_unlock(&d->lock);
    return s;
}

static void dev_free(tl_device *td, void *p) {
    if (!p) return;
    cl_dev *d = dev_of(td);
    pthread_mutex_lock(&d->lock);
    block *b = find_block(d, (uintptr_t)p);
    if (b && b->base == (uintptr_t)p) {
        clReleaseMemObject(b->mem);
        d->allocated -= b->bytes;
        memmove(b, b + 1, (size_t)(d->blocks + d->n_blocks - (b + 1)) * sizeof *b);
        d->n_blocks--;
    }
    pthread_mutex_unlock(&d->lock);
}

/* OpenCL does not say how much memory is free: the device's size less what this process holds */
static tl_status memory(tl_device *td, size_t *free_bytes, size_t *total_bytes) {
    cl_dev *d = dev_of(td);
    pthread_mutex_lock(&d->lock);
    *total_bytes = (size_t)d->total;
    *free_bytes = d->allocated < d->total ? (size_t)d->total - d->allocated : 0;
    pthread_mutex_unlock(&d->lock);
    return TL_OK;
}

/* (buffer, offset) of a device address; false if it is none of ours */
static bool locate(cl_dev *d, const void *p, cl_mem *mem, cl_ulong *off) {
    pthread_mutex_lock(&d->lock);
    block *b = find_block(d, (uintptr_t)p);
    if (b) *mem = b->mem, *off = (uintptr_t)p - b->base;
    pthread_mutex_unlock(&d->lock);
    return b != NULL;
}

/* The dtypes with kernels of their own (matmul.cl's MATMUL_KERNELS); others become F16 */
static const struct {
    tl_dtype t;
    const char *name;
} native[] = {{TL_F32, "f32"},   {TL_F16, "f16"},   {TL_BF16, "bf16"}, {TL_Q8_0, "q8_0"}, {TL_Q4_0, "q4_0"}, {TL_Q4_1, "q4_1"},
              {TL_Q5_0, "q5_0"}, {TL_Q5_1, "q5_1"}, {TL_Q4_K, "q4_k"}, {TL_Q5_K, "q5_k"}, {TL_Q6_K, "q6_k"}};
#define N_NATIVE (int)(sizeof native / sizeof native[0])

static int native_index(tl_dtype t) {
    for (int i = 0; i < N_NATIVE; i++)
        if (native[i].t == t) return i;
    return -1;
}

/* A blocking write into a buffer of ours (weights: the host copy may go right after) */
static tl_status write_weight(cl_dev *d, void *dst, const void *src, size_t bytes) {
    cl_mem mem;
    cl_ulong off;
    if (!locate(d, dst, &mem, &off)) return tl_set_error(TL_ERR_INVALID, "opencl: not a buffer of %s", d->name);
    cl_int e = clEnqueueWriteBuffer(d->queue, mem, CL_TRUE, (size_t)off, bytes, src, 0, NULL, NULL);
    if (e == CL_SUCCESS) return TL_OK;
    if (oom_code(e)) return tl_set_error(TL_ERR_NOMEM, "opencl: out of device memory uploading a weight to %s", d->name);
    return cl_fail(e, "uploading a weight");
}

static tl_status weight_upload(tl_device *td, const tl_tensor *src, tl_tensor *dst) {
    cl_dev *d = dev_of(td);
    *dst = *src;
    dst->owner = NULL;
    dst->data = NULL;
    const int64_t k = src->ne[0], rows = tl_tensor_nrows(src);
    const void *host = src->data;
    void *conv = NULL;
    if (native_index(src->dtype) < 0) { /* no kernel reads this dtype: F16 rows, converted once here */
        dst->dtype = TL_F16;
        dst->nbytes = (size_t)k * (size_t)rows * sizeof(uint16_t);
        conv = malloc(dst->nbytes);
        tl_status s = conv ? tl_convert_rows(src->dtype, src->data, TL_F16, conv, rows, k)
                           : tl_set_error(TL_ERR_NOMEM, "opencl: out of host memory converting a weight");
        if (s) {
            free(conv);
            return s;
        }
        host = conv;
    }
    void *p;
    tl_status s = dev_alloc(td, dst->nbytes, &p);
    if (!s) {
        s = write_weight(d, p, host, dst->nbytes);
        if (s) dev_free(td, p);
    }
    free(conv);
    if (!s) dst->data = p;
    return s;
}

static void weight_free(tl_device *td, tl_tensor *t) {
    dev_free(td, (void *)t->data);
    t->data = NULL;
}

/* ---------------------------------------------------------------- streams */

/* kernels, by index: five per native dtype, then one per op */
enum { K_GEMV = 0, K_GEMM = N_NATIVE, K_EMBED = 2 * N_NATIVE, K_GEMV3 = 3 * N_NATIVE, K_GEMV_GLU = 4 * N_NATIVE,
       K_RMSNORM = 5 * N_NATIVE, K_ROPE, K_KV_STORE, K_ADD,
       K_GLU, K_SOFTCAP, K_GATHER, K_ATTN_F16, K_ATTN_F32, K_ATTN_MERGE, K_TOPK_MAX, K_TOPK_CHUNK, K_TOPK_MERGE,
       K_ADD_RMSNORM, K_ROPE_STORE, N_KERNELS };
static const char *const op_kernels[] = {"rmsnorm",       "rope",          "kv_store",        "add",       "glu",
                                         "softcap",       "gather",        "attention_f16",   "attention_f32",
                                         "attention_merge", "top_k_max",   "top_k_chunk",     "top_k_merge",
                                         "add_rmsnorm",   "rope_store"};

typedef struct ocl_stream {
    tl_stream base;
    cl_dev *dev;
    cl_command_queue queue;
    cl_kernel kernels[N_KERNELS]; /* created on first use (a kernel's arguments are per queue user) */
    tl_status err;                /* the first failure since the last sync */
    char msg[512];
    void *part; /* attention: the splits' partial results */
    size_t part_bytes;
    void *topk;       /* top_k: the chunks' stats and keys, the ids, the rows' results */
    size_t topk_bytes;
    uint8_t *topk_host; /* the rows' results, downloaded */
    size_t topk_host_bytes;
} ocl_stream;

/* batches of up to this many tokens go through the GEMV kernels (weights read once) */
#define GEMV_MAX_TOKENS 8

static tl_status stream_new(tl_device *td, int n_threads, tl_stream **out) {
    (void)n_threads;
    *out = NULL;
    cl_dev *d = dev_of(td);
    ocl_stream *s = calloc(1, sizeof *s);
    if (!s) return tl_set_error(TL_ERR_NOMEM, "opencl: out of memory");
    s->base.ops = td->ops;
    s->base.device = td;
    s->dev = d;
    pthread_mutex_lock(&d->lock);
    tl_status st = ready(d);
    if (!st && !d->program) st = tl_opencl_build(d->ctx, d->id, &d->program);
    cl_int e = CL_SUCCESS;
    if (!st) s->queue = clCreateCommandQueue(d->ctx, d->id, 0, &e);
    pthread_mutex_unlock(&d->lock);
    if (!st && e != CL_SUCCESS) st = cl_fail(e, "creating a queue");
    if (st) {
        free(s);
        return st;
    }
    *out = &s->base;
    return TL_OK;
}

static void stream_free(tl_stream *ts) {
    ocl_stream *s = (ocl_stream *)ts;
    if (!s) return;
    clFinish(s->queue);
    for (int i = 0; i < N_KERNELS; i++)
        if (s->kernels[i]) clReleaseKernel(s->kernels[i]);
    clReleaseCommandQueue(s->queue);
    dev_free(s->base.device, s->part);
    dev_free(s->base.device, s->topk);
    free(s->topk_host);
    free(s);
}

/* Keeps the first failure of a stream's queued work, to report at the next sync. */
static void TL_PRINTF(3, 4) keep(ocl_stream *s, tl_status st, const char *fmt, ...) {
    if (s->err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    s->err = st;
}

static void note(ocl_stream *s, cl_int e, const char *what) {
    char b[48];
    keep(s, oom_code(e) ? TL_ERR_NOMEM : TL_ERR_DEVICE, "opencl: %s: %s", what, tl_opencl_error(e, b));
}

static tl_status take_error(ocl_stream *s) {
    if (!s->err) return TL_OK;
    tl_status st = tl_set_error(s->err, "%s", s->msg);
    s->err = TL_OK;
    return st;
}

static tl_status sync(tl_stream *ts) {
    ocl_stream *s = (ocl_stream *)ts;
    cl_int e = clFinish(s->queue);
    if (e != CL_SUCCESS) note(s, e, "running queued work");
    return take_error(s);
}

/* Blocking, so the source may change as soon as it returns. */
static tl_status upload(tl_stream *ts, void *dst, const void *src, size_t bytes) {
    ocl_stream *s = (ocl_stream *)ts;
    cl_mem mem;
    cl_ulong off;
    if (!bytes) return TL_OK;
    if (!locate(s->dev, dst, &mem, &off)) return tl_set_error(TL_ERR_INVALID, "opencl: upload to an address not on the device");
    cl_int e = clEnqueueWriteBuffer(s->queue, mem, CL_TRUE, (size_t)off, bytes, src, 0, NULL, NULL);
    if (e != CL_SUCCESS) note(s, e, "copying to the device");
    return s->err ? sync(ts) : TL_OK;
}

static tl_status download(tl_stream *ts, void *dst, const void *src, size_t bytes) {
    ocl_stream *s = (ocl_stream *)ts;
    cl_mem mem;
    cl_ulong off;
    if (bytes && !s->err) {
        if (!locate(s->dev, src, &mem, &off))
            return tl_set_error(TL_ERR_INVALID, "opencl: download from an address not on the device");
        cl_int e = clEnqueueReadBuffer(s->queue, mem, CL_TRUE, (size_t)off, bytes, dst, 0, NULL, NULL);
        if (e != CL_SUCCESS) note(s, e, "copying from the device");
    }
    return sync(ts);
}

/* No scratch: the GEMM reads weights and activations where they are. */
static tl_status reserve(tl_stream *ts, int64_t n_tokens, int64_t max_k) {
    (void)ts, (void)n_tokens, (void)max_k;
    return TL_OK;
}

/* ---------------------------------------------------------------- launching a kernel */

typedef struct launch {
    ocl_stream *s;
    cl_kernel k;
    cl_uint arg;
    const char *what;
} launch;

/* false when the stream has failed already (nothing more is queued until it is reported) */
static bool begin(launch *l, ocl_stream *s, int kernel, const char *what) {
    l->s = s, l->arg = 0, l->what = what, l->k = NULL;
    if (s->err) return false;
    if (!s->kernels[kernel]) {
        char name[32];
        if (kernel >= K_RMSNORM) snprintf(name, sizeof name, "%s", op_kernels[kernel - K_RMSNORM]);
        else {
            static const char *const kinds[] = {"gemv", "gemm", "embed", "gemv3", "gemv_glu"};
            snprintf(name, sizeof name, "%s_%s", kinds[kernel / N_NATIVE], native[kernel % N_NATIVE].name);
        }
        cl_int e;
        s->kernels[kernel] = clCreateKernel(s->dev->program, name, &e);
        if (e != CL_SUCCESS) {
            char b[48];
            s->kernels[kernel] = NULL;
            keep(s, TL_ERR_DEVICE, "opencl: creating kernel %s: %s", name, tl_opencl_error(e, b));
            return false;
        }
    }
    l->k = s->kernels[kernel];
    return true;
}

static void set_arg(launch *l, size_t size, const void *v) {
    cl_int e = clSetKernelArg(l->k, l->arg++, size, v);
    if (e != CL_SUCCESS) note(l->s, e, l->what);
}

/* a device address: its buffer and byte offset (NULL: a NULL buffer) */
static void arg_ptr(launch *l, const void *p) {
    cl_mem mem = NULL;
    cl_ulong off = 0;
    if (p && !locate(l->s->dev, p, &mem, &off)) keep(l->s, TL_ERR_INVALID, "opencl: %s: an address not on the device", l->what);
    set_arg(l, sizeof mem, &mem);
    set_arg(l, sizeof off, &off);
}
static void arg_i32(launch *l, int32_t v) { set_arg(l, sizeof(cl_int), &v); }
static void arg_i64(launch *l, int64_t v) { set_arg(l, sizeof(cl_long), &v); }
static void arg_u64(launch *l, uint64_t v) { set_arg(l, sizeof(cl_ulong), &v); }
static void arg_f32(launch *l, float v) { set_arg(l, sizeof(cl_float), &v); }

static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

static void run(launch *l, cl_uint dims, const size_t *global, const size_t *local) {
    if (l->s->err) return;
    for (cl_uint i = 0; i < dims; i++)
        if (global[i] == 0) return; /* nothing to do */
    cl_int e = clEnqueueNDRangeKernel(l->s->queue, l->k, dims, NULL, global, local, 0, NULL, NULL);
    if (e != CL_SUCCESS) note(l->s, e, l->what);
}

/* one work-item per element, in groups of 64 */
static void run1(launch *l, int64_t n) {
    const size_t g = round_up((size_t)n, 64), loc = 64;
    run(l, 1, &g, &loc);
}

/* ---------------------------------------------------------------- ops */

static void embed(tl_stream *ts, const tl_tensor *t, const int32_t *tokens, int32_t n, float scale, float *out) {
    launch l;
    const int64_t k = t->ne[0];
    if (!begin(&l, (ocl_stream *)ts, K_EMBED + native_index(t->dtype), "embedding")) return;
    arg_ptr(&l, t->data);
    arg_u64(&l, tl_dtype_row_size(t->dtype, k));
    arg_i32(&l, (int32_t)k);
    arg_ptr(&l, tokens);
    arg_i32(&l, n);
    arg_f32(&l, scale);
    arg_ptr(&l, out);
    run1(&l, (int64_t)n * ((k + 7) / 8));
}

static void rmsnorm(tl_stream *ts, float *out, const float *x, const float *w, int64_t rows, int64_t dim, float eps) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_RMSNORM, "rmsnorm")) return;
    arg_ptr(&l, out);
    arg_ptr(&l, x);
    arg_ptr(&l, w);
    arg_i32(&l, (int32_t)dim);
    arg_f32(&l, eps);
    const size_t g = (size_t)rows * 256, loc = 256;
    run(&l, 1, &g, &loc);
}

static void matmul(tl_stream *ts, const tl_tensor *w, const float *x, int64_t n, float *y, const float *bias) {
    launch l;
    const int64_t k = w->ne[0], m = w->ne[1];
    const bool gemv = n <= GEMV_MAX_TOKENS;
    if (!begin(&l, (ocl_stream *)ts, (gemv ? K_GEMV : K_GEMM) + native_index(w->dtype), gemv ? "gemv" : "gemm")) return;
    arg_ptr(&l, w->data);
    arg_u64(&l, tl_dtype_row_size(w->dtype, k));
    arg_ptr(&l, x);
    arg_i32(&l, (int32_t)k);
    arg_i32(&l, (int32_t)m);
    arg_i32(&l, (int32_t)n);
    arg_ptr(&l, y);
    arg_ptr(&l, bias);
    if (gemv) { /* matmul.cl: GEMV_WG = 64 work-items for GEMV_ROWS = 4 rows */
        const size_t g = round_up((size_t)m, 4) * 16, loc = 64;
        run(&l, 1, &g, &loc);
    } else { /* 16 x 16 work-items a tile of 64 rows x 64 tokens */
        const size_t g[2] = {round_up((size_t)m, 64) / 4, round_up((size_t)n, 64) / 4}, loc[2] = {16, 16};
        run(&l, 2, g, loc);
    }
}

/* q, k and v of up to GEMV_MAX_TOKENS tokens in one launch where the three share dtype and
 * width; the plain matmuls otherwise */
static void matmul_qkv(tl_stream *ts, const tl_tensor *wq, const tl_tensor *wk, const tl_tensor *wv, const float *x,
                       int64_t n, float *q, float *k, float *v, const float *bq, const float *bk, const float *bv) {
    const int64_t width = wq->ne[0];
    if (n > GEMV_MAX_TOKENS || wk->dtype != wq->dtype || wv->dtype != wq->dtype || wk->ne[0] != width || wv->ne[0] != width) {
        matmul(ts, wq, x, n, q, bq);
        matmul(ts, wk, x, n, k, bk);
        matmul(ts, wv, x, n, v, bv);
        return;
    }
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_GEMV3 + native_index(wq->dtype), "q, k, v")) return;
    arg_ptr(&l, wq->data);
    arg_ptr(&l, wk->data);
    arg_ptr(&l, wv->data);
    arg_u64(&l, tl_dtype_row_size(wq->dtype, width));
    arg_ptr(&l, x);
    arg_i32(&l, (int32_t)width);
    arg_i32(&l, (int32_t)wq->ne[1]);
    arg_i32(&l, (int32_t)wk->ne[1]);
    arg_i32(&l, (int32_t)wv->ne[1]);
    arg_i32(&l, (int32_t)n);
    arg_ptr(&l, q);
    arg_ptr(&l, k);
    arg_ptr(&l, v);
    arg_ptr(&l, bq);
    arg_ptr(&l, bk);
    arg_ptr(&l, bv);
    const size_t groups = (size_t)((wq->ne[1] + 3) / 4 + (wk->ne[1] + 3) / 4 + (wv->ne[1] + 3) / 4);
    const size_t g = groups * 64, loc = 64; /* matmul.cl: GEMV_WG work-items for GEMV_ROWS = 4 rows */
    run(&l, 1, &g, &loc);
}

static void glu(tl_stream *ts, tl_activation act, float *a, const float *b, int64_t n);

/* gate and up of up to GEMV_MAX_TOKENS tokens in one pass with the activation (b untouched);
 * the plain ops otherwise */
static void matmul_glu(tl_stream *ts, const tl_tensor *gate, const tl_tensor *up, const float *x, int64_t n, float *a,
                       float *b, tl_activation act) {
    if (n > GEMV_MAX_TOKENS || up->dtype != gate->dtype || up->ne[0] != gate->ne[0] || up->ne[1] != gate->ne[1]) {
        matmul(ts, gate, x, n, a, NULL);
        matmul(ts, up, x, n, b, NULL);
        glu(ts, act, a, b, n * gate->ne[1]);
        return;
    }
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_GEMV_GLU + native_index(gate->dtype), "gate + up")) return;
    arg_ptr(&l, gate->data);
    arg_ptr(&l, up->data);
    arg_u64(&l, tl_dtype_row_size(gate->dtype, gate->ne[0]));
    arg_ptr(&l, x);
    arg_i32(&l, (int32_t)gate->ne[0]);
    arg_i32(&l, (int32_t)gate->ne[1]);
    arg_i32(&l, (int32_t)n);
    arg_ptr(&l, a);
    arg_i32(&l, act == TL_ACT_GELU_TANH);
    const size_t g = round_up((size_t)gate->ne[1], 4) * 16, loc = 64;
    run(&l, 1, &g, &loc);
}

static void rope(tl_stream *ts, float *x, const float *cs, int32_t n, int32_t heads, int32_t hd, int32_t rope_dim, bool neox) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_ROPE, "rope")) return;
    arg_ptr(&l, x);
    arg_ptr(&l, cs);
    arg_i32(&l, n);
    arg_i32(&l, heads);
    arg_i32(&l, hd);
    arg_i32(&l, rope_dim);
    arg_i32(&l, neox);
    run1(&l, (int64_t)n * heads * (rope_dim / 2));
}

static void kv_store(tl_stream *ts, void *k_cache, void *v_cache, tl_dtype dt, const float *k, const float *v,
                     const int32_t *pos, const int32_t *seq, int32_t n, int32_t kv_heads, int32_t hd, int32_t max_seq_len) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_KV_STORE, "kv store")) return;
    arg_ptr(&l, k_cache);
    arg_ptr(&l, v_cache);
    arg_i32(&l, dt == TL_F16);
    arg_ptr(&l, k);
    arg_ptr(&l, v);
    arg_ptr(&l, pos);
    arg_ptr(&l, seq);
    arg_i32(&l, n);
    arg_i32(&l, kv_heads);
    arg_i32(&l, hd);
    arg_i32(&l, max_seq_len);
    run1(&l, (int64_t)n * kv_heads * hd);
}

static void add_rmsnorm(tl_stream *ts, float *x, const float *y, float *out, const float *w, int64_t rows, int64_t dim,
                        float eps) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_ADD_RMSNORM, "add + rmsnorm")) return;
    arg_ptr(&l, x);
    arg_ptr(&l, y);
    arg_ptr(&l, out);
    arg_ptr(&l, w);
    arg_i32(&l, (int32_t)dim);
    arg_f32(&l, eps);
    const size_t g = (size_t)rows * 256, loc = 256;
    run(&l, 1, &g, &loc);
}

static void rope_store(tl_stream *ts, float *q, float *k, const float *v, const float *cs, int32_t n, int32_t n_heads,
                       int32_t kv_heads, int32_t hd, int32_t rope_dim, bool neox, void *k_cache, void *v_cache,
                       tl_dtype kv_dtype, const int32_t *pos, const int32_t *seq, int32_t max_seq_len) {
    if (hd % 2) { /* (the kernel takes dimensions in pairs) */
        rope(ts, q, cs, n, n_heads, hd, rope_dim, neox);
        rope(ts, k, cs, n, kv_heads, hd, rope_dim, neox);
        kv_store(ts, k_cache, v_cache, kv_dtype, k, v, pos, seq, n, kv_heads, hd, max_seq_len);
        return;
    }
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_ROPE_STORE, "rope + kv store")) return;
    arg_ptr(&l, q);
    arg_ptr(&l, k);
    arg_ptr(&l, v);
    arg_ptr(&l, cs);
    arg_i32(&l, n);
    arg_i32(&l, n_heads);
    arg_i32(&l, kv_heads);
    arg_i32(&l, hd);
    arg_i32(&l, rope_dim);
    arg_i32(&l, neox);
    arg_ptr(&l, k_cache);
    arg_ptr(&l, v_cache);
    arg_i32(&l, kv_dtype == TL_F16);
    arg_ptr(&l, pos);
    arg_ptr(&l, seq);
    arg_i32(&l, max_seq_len);
    run1(&l, (int64_t)n * (n_heads + kv_heads) * (hd / 2));
}

#define ATTN_MAX_HD 256 /* attention.cl */
#define ATTN_MIN_CHUNK 128

/* Splits of the keys (flash-decoding) when the (token, head) rows are too few to give every
 * compute unit a few work-groups: chunks of at least ATTN_MIN_CHUNK keys, their partial
 * results in the stream's scratch. */
static int attention_splits(ocl_stream *s, const tl_attn_args *a, int *chunk) {
    int32_t longest = 1;
    for (int32_t i = 0; i < a->n; i++) {
        int32_t len = a->host_pos[i] + 1;
        if (a->window > 0 && len > a->window) len = a->window;
        if (len > longest) longest = len;
    }
    const int64_t rows = (int64_t)a->n * a->n_heads, want = (4 * (int64_t)s->dev->units + rows - 1) / rows;
    int64_t c = (longest + want - 1) / want;
    c = c < ATTN_MIN_CHUNK ? ATTN_MIN_CHUNK : (c + 63) / 64 * 64;
    *chunk = (int)c;
    const int splits = (int)((longest + c - 1) / c);
    const size_t need = (size_t)rows * splits * (a->head_dim + 2) * sizeof(float);
    if (splits > 1 && need > s->part_bytes) {
        dev_free(s->base.device, s->part);
        s->part = NULL;
        s->part_bytes = 0;
        if (dev_alloc(s->base.device, need, &s->part)) {
            keep(s, TL_ERR_NOMEM, "%s (attention scratch)", tl_last_error());
            return 0;
        }
        s->part_bytes = need;
    }
    return splits;
}

static void attention(tl_stream *ts, const tl_attn_args *a) {
    ocl_stream *s = (ocl_stream *)ts;
    launch l;
    if (a->head_dim > ATTN_MAX_HD) {
        keep(s, TL_ERR_UNSUPPORTED, "opencl: attention heads of %d dims (at most %d)", a->head_dim, ATTN_MAX_HD);
        return;
    }
    int chunk;
    const int splits = s->err ? 0 : attention_splits(s, a, &chunk);
    if (!splits || !begin(&l, s, a->kv_dtype == TL_F16 ? K_ATTN_F16 : K_ATTN_F32, "attention")) return;
    arg_ptr(&l, a->q);
    arg_ptr(&l, a->out);
    arg_ptr(&l, splits > 1 ? s->part : NULL);
    arg_ptr(&l, a->k_cache);
    arg_ptr(&l, a->v_cache);
    arg_ptr(&l, a->pos);
    arg_ptr(&l, a->seq);
    arg_i32(&l, a->n_heads);
    arg_i32(&l, a->n_kv_heads);
    arg_i32(&l, a->head_dim);
    arg_i32(&l, a->max_seq_len);
    arg_i32(&l, a->window);
    arg_f32(&l, a->scale);
    arg_f32(&l, a->softcap);
    arg_i32(&l, chunk);
    const size_t g[3] = {(size_t)a->n_heads * 64, (size_t)a->n, (size_t)splits}, loc[3] = {64, 1, 1};
    run(&l, 3, g, loc);
    if (splits == 1 || !begin(&l, s, K_ATTN_MERGE, "attention merge")) return;
    arg_ptr(&l, s->part);
    arg_i32(&l, splits);
    arg_i32(&l, a->head_dim);
    arg_ptr(&l, a->out);
    const size_t rows = (size_t)a->n * a->n_heads * 64, loc1 = 64;
    run(&l, 1, &rows, &loc1);
}

static void add(tl_stream *ts, float *x, const float *y, int64_t n) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_ADD, "add")) return;
    arg_ptr(&l, x);
    arg_ptr(&l, y);
    arg_i64(&l, n);
    run1(&l, n);
}

static void glu(tl_stream *ts, tl_activation act, float *a, const float *b, int64_t n) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_GLU, "glu")) return;
    arg_i32(&l, act == TL_ACT_GELU_TANH);
    arg_ptr(&l, a);
    arg_ptr(&l, b);
    arg_i64(&l, n);
    run1(&l, n);
}

static void softcap(tl_stream *ts, float *x, int64_t n, float c) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_SOFTCAP, "softcap")) return;
    arg_ptr(&l, x);
    arg_i64(&l, n);
    arg_f32(&l, c);
    run1(&l, n);
}

static void gather(tl_stream *ts, float *out, const float *x, const int32_t *rows, int32_t n, int64_t dim) {
    launch l;
    if (!begin(&l, (ocl_stream *)ts, K_GATHER, "gather")) return;
    arg_ptr(&l, out);
    arg_ptr(&l, x);
    arg_ptr(&l, rows);
    arg_i32(&l, n);
    arg_i64(&l, dim);
    run1(&l, (int64_t)n * dim);
}

#define TOPK_CHUNK 8192 /* sample.cl */

/* sample.cl's three kernels; the results of every row in one download, unpacked into a's arrays */
static tl_status top_k(tl_stream *ts, const float *logits, int32_t rows, int32_t n_vocab, const tl_top_k_args *a) {
    ocl_stream *s = (ocl_stream *)ts;
    tl_status st = tl_top_k_check("opencl", rows, n_vocab, a);
    if (st) return st;
    const int32_t chunks = (n_vocab + TOPK_CHUNK - 1) / TOPK_CHUNK, k = a->k, n_ids = a->n_ids;
    const size_t parts = (size_t)rows * chunks * sizeof(tl_top_k_stats), keys = (size_t)rows * chunks * k * 8,
                 ids = round_up((size_t)rows * n_ids * 4, 8), out_bytes = (size_t)rows * tl_top_k_row_bytes(k, n_ids);
    const size_t need = parts + keys + ids + out_bytes;
    if (need > s->topk_bytes && !s->err) {
        dev_free(s->base.device, s->topk);
        s->topk = NULL;
        s->topk_bytes = 0;
        if (dev_alloc(s->base.device, need, &s->topk)) keep(s, TL_ERR_NOMEM, "%s (top_k scratch)", tl_last_error());
        else s->topk_bytes = need;
    }
    if (out_bytes > s->topk_host_bytes && !s->err) {
        free(s->topk_host);
        s->topk_host = malloc(out_bytes);
        s->topk_host_bytes = s->topk_host ? out_bytes : 0;
        if (!s->topk_host) keep(s, TL_ERR_NOMEM, "opencl: out of host memory (top_k)");
    }
    if (s->err) return sync(ts);
    uint8_t *part = s->topk, *key = part + parts, *d_ids = key + keys, *out = d_ids + ids;
    if (n_ids && (st = upload(ts, d_ids, a->ids, (size_t)rows * n_ids * 4))) return st;
    launch l;
    const size_t g[2] = {(size_t)chunks * 256, (size_t)rows}, loc[2] = {256, 1};
    if (begin(&l, s, K_TOPK_MAX, "top_k")) {
        arg_ptr(&l, logits);
        arg_i32(&l, n_vocab);
        arg_ptr(&l, part);
        run(&l, 2, g, loc);
    }
    if (begin(&l, s, K_TOPK_CHUNK, "top_k")) {
        arg_ptr(&l, logits);
        arg_i32(&l, n_vocab);
        arg_i32(&l, k);
        arg_ptr(&l, part);
        arg_ptr(&l, key);
        run(&l, 2, g, loc);
    }
    if (begin(&l, s, K_TOPK_MERGE, "top_k")) {
        arg_ptr(&l, logits);
        arg_i32(&l, n_vocab);
        arg_i32(&l, k);
        arg_ptr(&l, part);
        arg_ptr(&l, key);
        arg_ptr(&l, d_ids);
        arg_i32(&l, n_ids);
        arg_ptr(&l, out);
        const size_t gm[2] = {256, (size_t)rows};
        run(&l, 2, gm, loc);
    }
    if ((st = download(ts, s->topk_host, out, out_bytes))) return st;
    tl_top_k_unpack(s->topk_host, rows, a);
    return TL_OK;
}

static const tl_backend_ops opencl_ops = {
    .name = "opencl",
    .device_free = device_free,
    .host_memory = false,
    .alloc = dev_alloc,
    .free = dev_free,
    .weight_upload = weight_upload,
    .weight_free = weight_free,
    .memory = memory,
    .stream_new = stream_new,
    .stream_free = stream_free,
    .upload = upload,
    .download = download,
    .sync = sync,
    .reserve = reserve,
    .embed = embed,
    .rmsnorm = rmsnorm,
    .matmul = matmul,
    .rope = rope,
    .kv_store = kv_store,
    .attention = attention,
    .add = add,
    .glu = glu,
    .softcap = softcap,
    .gather = gather,
    .top_k = top_k,
    .add_rmsnorm = add_rmsnorm,
    .rope_store = rope_store,
    .matmul_qkv = matmul_qkv,
    .matmul_glu = matmul_glu,
};

int tl_opencl_device_count(void) {
    pthread_once(&found, find_devices);
    return n_devs;
}

bool tl_opencl_device_is_gpu(int index) { return index >= 0 && index < tl_opencl_device_count() && devs[index].gpu; }

tl_status tl_opencl_device_open(int index, tl_device **out) {
    *out = NULL;
    const int n = tl_opencl_device_count();
    if (index < 0 || index >= n) return tl_set_error(TL_ERR_UNSUPPORTED, "opencl: no device %d (%d found)", index, n);
    ocl_device *d = calloc(1, sizeof *d);
    if (!d) return tl_set_error(TL_ERR_NOMEM, "opencl: out of memory");
    d->base.ops = &opencl_ops;
    d->base.index = index;
    d->dev = &devs[index];
    snprintf(d->base.name, sizeof d->base.name, "%s", devs[index].name);
    *out = &d->base;
    return TL_OK;
}
