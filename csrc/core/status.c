#include "status.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

tl_status tl_set_error(tl_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

void tl_clear_error(void) { last_error[0] = '\0'; }

const char *tl_last_error(void) { return last_error; }

const char *tl_status_name(tl_status s) {
    switch (s) {
    case TL_OK: return "ok";
    case TL_ERR_INVALID: return "invalid argument";
    case TL_ERR_IO: return "i/o error";
    case TL_ERR_FORMAT: return "format error";
    case TL_ERR_NOMEM: return "out of memory";
    case TL_ERR_UNSUPPORTED: return "unsupported";
    case TL_ERR_NOT_FOUND: return "not found";
    case TL_ERR_CANCELLED: return "cancelled";
    case TL_ERR_DEVICE: return "device error";
    }
    return "unknown status";
}
