/* The OpenCL kernel cache: a first build writes an entry, the next build loads it (the file is
 * not rewritten), and an entry that is cut short, altered or not a binary at all is rebuilt
 * from source and rewritten, never a crash; without a writable cache the kernels still build.
 * Skipped (77) without the OpenCL backend or an OpenCL device. */
#define _GNU_SOURCE /* mkdtemp */
#include "check.h"

#ifdef TL_HAVE_OPENCL
#include "backends/opencl/program.h"

#include <sys/stat.h>
#include <unistd.h>

static cl_context ctx;
static cl_device_id dev;
static char path[4096];

/* builds, checks the program has a kernel, and returns the entry's inode (0: no entry) */
static ino_t build(const char *what) {
    cl_program p = NULL;
    tl_status s = tl_opencl_build(ctx, dev, &p);
    CHECK(s == TL_OK, "%s: %s", what, tl_last_error());
    if (s) return 0;
    cl_int e;
    cl_kernel k = clCreateKernel(p, "add", &e);
    CHECK(e == CL_SUCCESS, "%s: kernel 'add': %d", what, (int)e);
    if (k) clReleaseKernel(k);
    clReleaseProgram(p);
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

static void overwrite(const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(bytes, 1, n, f);
    fclose(f);
}

int main(void) {
    cl_platform_id plat;
    cl_uint n = 0;
    if (clGetPlatformIDs(1, &plat, &n) != CL_SUCCESS || n == 0 ||
        clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, &n) != CL_SUCCESS || n == 0) {
        printf("no OpenCL device: skipped\n");
        return CHECK_SKIPPED;
    }
    cl_int e;
    ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &e);
    CHECK(e == CL_SUCCESS);
    char dir[256];
    snprintf(dir, sizeof dir, "%s/tl_test_opencl_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    setenv("TORCHLESS_CACHE", dir, 1);
    CHECK(tl_opencl_cache_path(dev, path, sizeof path));
    CHECK(strncmp(path, dir, strlen(dir)) == 0, "%s", path);

    const ino_t first = build("from source");
    CHECK(first != 0, "no entry written at %s", path);
    struct stat st;
    stat(path, &st);
    const off_t size = st.st_size;
    CHECK(build("from the cache") == first, "a good entry was rewritten");

    /* cut short: rebuilt and rewritten whole */
    FILE *f = fopen(path, "rb");
    char *bytes = malloc((size_t)size);
    CHECK(fread(bytes, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    overwrite(bytes, (size_t)size / 2);
    ino_t again = build("after truncation");
    stat(path, &st);
    CHECK(again != first && st.st_size == size, "a cut entry was not rewritten");
    /* one byte of the binary changed: its checksum no longer matches */
    bytes[size - 1] ^= 0x5a;
    overwrite(bytes, (size_t)size);
    CHECK(build("after a changed byte") != again, "a changed entry was not rewritten");
    /* a well-formed entry whose binary is garbage: the driver refuses it */
    unsigned char junk[64 + 24] = "TLCLBIN1";
    const uint64_t jn = 64;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 64; i++) {
        junk[24 + i] = (unsigned char)(i * 37 + 11);
        h = (h ^ junk[24 + i]) * 0x100000001b3ull;
    }
    memcpy(junk + 8, &jn, 8);
    memcpy(junk + 16, &h, 8);
    overwrite(junk, sizeof junk);
    build("from a foreign binary");
    stat(path, &st);
    CHECK(st.st_size == size, "a foreign entry was not replaced");
    remove(path);

    /* nowhere to write: built all the same */
    setenv("TORCHLESS_CACHE", "/proc/torchless-no-such-dir", 1);
    build("without a cache");

    free(bytes);
    snprintf(path, sizeof path, "%s/opencl", dir);
    rmdir(path);
    rmdir(dir);
    clReleaseContext(ctx);
    return check_summary();
}
#else
int main(void) {
    printf("built without the OpenCL backend: skipped\n");
    return CHECK_SKIPPED;
}
#endif
