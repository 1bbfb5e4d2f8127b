/* The OpenCL backend's kernels, built for one device: compiled from the source the library
 * carries (tl_opencl_source, generated from the .cl files at build time), or loaded from the
 * disk cache of earlier builds. */
#ifndef TL_OPENCL_PROGRAM_H
#define TL_OPENCL_PROGRAM_H

#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>

#include "torchless.h"

extern const char tl_opencl_source[];

/* The message of an OpenCL status code: "CL_OUT_OF_RESOURCES (-5)". */
const char *tl_opencl_error(cl_int e, char buf[48]);

/* The kernels for dev in ctx. The cache holds one binary per (source, build options, device,
 * driver version), under $TORCHLESS_CACHE/opencl or ~/.cache/torchless/opencl; an entry that is
 * unreadable, corrupt or refused by the driver is rebuilt from source and rewritten. A
 * compilation failure is an error quoting the build log's first lines. */
tl_status tl_opencl_build(cl_context ctx, cl_device_id dev, cl_program *out);

/* The cache file for dev (for tests): false if there is no cache directory. */
bool tl_opencl_cache_path(cl_device_id dev, char *path, size_t cap);

#endif
