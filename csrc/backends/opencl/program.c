/* Building the OpenCL kernels for a device, and the disk cache of built programs: a first
 * build takes seconds (PoCL compiles through LLVM; NVIDIA's driver to PTX), a cached binary
 * loads in milliseconds. An entry is "TLCLBIN1", the binary's size and FNV-1a hash, then the
 * binary; its file name is the hash of everything the binary depends on. */
#include "program.h"

#include "core/status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUILD_OPTIONS "-cl-std=CL1.2"
#define MAGIC "TLCLBIN1"
#define MAX_BINARY ((size_t)256 << 20) /* a larger "entry" is not ours */

const char *tl_opencl_error(cl_int e, char buf[48]) {
    static const struct {
        cl_int code;
        const char *name;
    } names[] = {
        {CL_DEVICE_NOT_FOUND, "CL_DEVICE_NOT_FOUND"},
        {CL_DEVICE_NOT_AVAILABLE, "CL_DEVICE_NOT_AVAILABLE"},
        {CL_COMPILER_NOT_AVAILABLE, "CL_COMPILER_NOT_AVAILABLE"},
        {CL_MEM_OBJECT_ALLOCATION_FAILURE, "CL_MEM_OBJECT_ALLOCATION_FAILURE"},
        {CL_OUT_OF_RESOURCES, "CL_OUT_OF_RESOURCES"},
        {CL_OUT_OF_HOST_MEMORY, "CL_OUT_OF_HOST_MEMORY"},
        {CL_BUILD_PROGRAM_FAILURE, "CL_BUILD_PROGRAM_FAILURE"},
        {CL_INVALID_VALUE, "CL_INVALID_VALUE"},
        {CL_INVALID_BINARY, "CL_INVALID_BINARY"},
        {CL_INVALID_BUFFER_SIZE, "CL_INVALID_BUFFER_SIZE"},
        {CL_INVALID_KERNEL_NAME, "CL_INVALID_KERNEL_NAME"},
        {CL_INVALID_KERNEL_ARGS, "CL_INVALID_KERNEL_ARGS"},
        {CL_INVALID_ARG_INDEX, "CL_INVALID_ARG_INDEX"},
        {CL_INVALID_ARG_SIZE, "CL_INVALID_ARG_SIZE"},
        {CL_INVALID_MEM_OBJECT, "CL_INVALID_MEM_OBJECT"},
        {CL_INVALID_WORK_GROUP_SIZE, "CL_INVALID_WORK_GROUP_SIZE"},
        {CL_INVALID_WORK_ITEM_SIZE, "CL_INVALID_WORK_ITEM_SIZE"},
        {CL_INVALID_GLOBAL_WORK_SIZE, "CL_INVALID_GLOBAL_WORK_SIZE"},
        {CL_INVALID_COMMAND_QUEUE, "CL_INVALID_COMMAND_QUEUE"},
        {CL_INVALID_PROGRAM_EXECUTABLE, "CL_INVALID_PROGRAM_EXECUTABLE"},
        {CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST, "CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].code == e) {
            snprintf(buf, 48, "%s (%d)", names[i].name, (int)e);
            return buf;
        }
    snprintf(buf, 48, "OpenCL error %d", (int)e);
    return buf;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define FNV_SEED 0xcbf29ce484222325ull

static uint64_t hash_info(uint64_t h, cl_device_id dev, cl_device_info what) {
    char s[512] = "";
    clGetDeviceInfo(dev, what, sizeof s - 1, s, NULL);
    return fnv1a(h, s, strlen(s) + 1);
}

/* what a binary depends on: our source and options, the device, its platform and driver */
static uint64_t cache_key(cl_device_id dev) {
    uint64_t h = fnv1a(FNV_SEED, tl_opencl_source, strlen(tl_opencl_source));
    h = fnv1a(h, BUILD_OPTIONS, sizeof BUILD_OPTIONS);
    h = hash_info(h, dev, CL_DEVICE_NAME);
    h = hash_info(h, dev, CL_DEVICE_VENDOR);
    h = hash_info(h, dev, CL_DEVICE_VERSION);
    h = hash_info(h, dev, CL_DRIVER_VERSION);
    cl_platform_id p;
    char s[512] = "";
    if (clGetDeviceInfo(dev, CL_DEVICE_PLATFORM, sizeof p, &p, NULL) == CL_SUCCESS)
        clGetPlatformInfo(p, CL_PLATFORM_VERSION, sizeof s - 1, s, NULL);
    return fnv1a(h, s, strlen(s) + 1);
}

/* $TORCHLESS_CACHE/opencl, else ~/.cache/torchless/opencl */
static bool cache_dir(char *dir, size_t cap) {
    const char *root = getenv("TORCHLESS_CACHE"), *home = getenv("HOME");
    int n;
    if (root && *root) n = snprintf(dir, cap, "%s/opencl", root);
    else if (home && *home) n = snprintf(dir, cap, "%s/.cache/torchless/opencl", home);
    else return false;
    return n > 0 && (size_t)n < cap;
}

bool tl_opencl_cache_path(cl_device_id dev, char *path, size_t cap) {
    char dir[4000];
    if (!cache_dir(dir, sizeof dir)) return false;
    int n = snprintf(path, cap, "%s/%016llx.bin", dir, (unsigned long long)cache_key(dev));
    return n > 0 && (size_t)n < cap;
}

/* the binary of a cache entry (malloc'd), or NULL when there is none fit to use */
static unsigned char *read_entry(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char magic[8];
    uint64_t n = 0, h = 0;
    unsigned char *bin = NULL;
    if (fread(magic, 1, 8, f) == 8 && memcmp(magic, MAGIC, 8) == 0 && fread(&n, sizeof n, 1, f) == 1 &&
        fread(&h, sizeof h, 1, f) == 1 && n > 0 && n <= MAX_BINARY && (bin = malloc((size_t)n))) {
        if (fread(bin, 1, (size_t)n, f) != n || fgetc(f) != EOF || fnv1a(FNV_SEED, bin, (size_t)n) != h) {
            free(bin);
            bin = NULL;
        }
    }
    fclose(f);
    *size = (size_t)n;
    return bin;
}

/* mkdir -p */
static bool make_dirs(char *dir) {
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        bool ok = mkdir(dir, 0755) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok) return false;
    }
    return mkdir(dir, 0755) == 0 || errno == EEXIST;
}

/* Best effort: a cache that cannot be written only means the next process builds again. The
 * entry appears whole or not at all (written aside, then renamed). */
static void write_entry(const char *path, const unsigned char *bin, size_t n) {
    char dir[4096], tmp[4128];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return;
    *slash = 0;
    if (!make_dirs(dir)) return;
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) return;
    const uint64_t size = n, h = fnv1a(FNV_SEED, bin, n);
    bool ok = fwrite(MAGIC, 1, 8, f) == 8 && fwrite(&size, sizeof size, 1, f) == 1 && fwrite(&h, sizeof h, 1, f) == 1 &&
              fwrite(bin, 1, n, f) == n;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) remove(tmp);
}

static cl_program from_binary(cl_context ctx, cl_device_id dev, const unsigned char *bin, size_t n) {
    cl_int e, status;
    cl_program p = clCreateProgramWithBinary(ctx, 1, &dev, &n, &bin, &status, &e);
    if (e != CL_SUCCESS || status != CL_SUCCESS) {
        if (p) clReleaseProgram(p);
        return NULL;
    }
    if (clBuildProgram(p, 1, &dev, BUILD_OPTIONS, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(p);
        return NULL;
    }
    return p;
}

/* the build log's first lines, for the error message */
static void log_head(cl_program p, cl_device_id dev, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
    char *log = n ? malloc(n + 1) : NULL;
    if (!log) return;
    if (clGetProgramBuildInfo(p, dev, CL_PROGRAM_BUILD_LOG, n, log, NULL) == CL_SUCCESS) {
        log[n] = 0;
        const char *end = log;
        for (int lines = 0; lines < 8 && (end = strchr(end, '\n')); lines++) end++;
        size_t len = end ? (size_t)(end - log) : strlen(log);
        snprintf(out, cap, "%.*s", (int)len, log);
    }
    free(log);
}

static tl_status from_source(cl_context ctx, cl_device_id dev, cl_program *out) {
    cl_int e;
    const char *src = tl_opencl_source;
    char err[48];
    cl_program p = clCreateProgramWithSource(ctx, 1, &src, NULL, &e);
    if (e != CL_SUCCESS) return tl_set_error(TL_ERR_DEVICE, "opencl: creating the program: %s", tl_opencl_error(e, err));
    e = clBuildProgram(p, 1, &dev, BUILD_OPTIONS, NULL, NULL);
    if (e != CL_SUCCESS) {
        char log[700];
        log_head(p, dev, log, sizeof log);
        clReleaseProgram(p);
        return tl_set_error(TL_ERR_DEVICE, "opencl: building the kernels failed: %s; build log:\n%s", tl_opencl_error(e, err),
                            log);
    }
    *out = p;
    return TL_OK;
}

tl_status tl_opencl_build(cl_context ctx, cl_device_id dev, cl_program *out) {
    char path[4096];
    const bool cached = tl_opencl_cache_path(dev, path, sizeof path);
    size_t n = 0;
    unsigned char *bin = cached ? read_entry(path, &n) : NULL;
    *out = bin ? from_binary(ctx, dev, bin, n) : NULL;
    free(bin);
    if (*out) return TL_OK;
    tl_status s = from_source(ctx, dev, out);
    if (s || !cached) return s;
    /* the entry for next time */
    if (clGetProgramInfo(*out, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL) != CL_SUCCESS || n == 0 || n > MAX_BINARY)
        return TL_OK;
    unsigned char *b = malloc(n);
    if (b && clGetProgramInfo(*out, CL_PROGRAM_BINARIES, sizeof b, &b, NULL) == CL_SUCCESS) write_entry(path, b, n);
    free(b);
    return TL_OK;
}
