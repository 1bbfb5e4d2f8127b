/* Generation: the iterator behind Model.stream(). Each __next__ runs one step of the
 * C generation loop (tl_generation_next) with the GIL released and yields
 * (token, logprob, text bytes, finish reason); one GIL round trip per token. */
#include "common.h"

#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *model; /* keeps the model and its context alive */
    tl_context *ctx;
    PyThread_type_lock lock; /* the model's */
    tl_sampler *sampler;
    tl_generation *gen;
    bool done;
} Generation;

PyTypeObject *Generation_Type;

static const char *finish_names[] = {NULL, "stop", "length"};

/* Between layers of a long prompt: take the GIL for a moment to let Ctrl-C through
 * (also Model.forward's abort callback). At most every 50 ms of a thread's time: while another
 * Python thread runs, each GIL acquisition waits up to the switch interval (5 ms), which taken
 * at every layer made generation ~50x slower; between tokens the caller's bytecode checks anyway. */
bool tlpy_check_signals(void *user) {
    (void)user;
    static _Thread_local struct timespec last;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - last.tv_sec) * 1000000000LL + (now.tv_nsec - last.tv_nsec) < 50000000LL) return false;
    last = now;
    PyGILState_STATE st = PyGILState_Ensure();
    bool abort = PyErr_CheckSignals() < 0; /* the KeyboardInterrupt stays set for the caller */
    PyGILState_Release(st);
    return abort;
}

static void Generation_dealloc(Generation *g) {
    PyTypeObject *tp = Py_TYPE(g);
    tl_generation_free(g->gen);
    tl_sampler_free(g->sampler);
    Py_XDECREF(g->model);
    tp->tp_free((PyObject *)g);
    Py_DECREF(tp);
}

static PyObject *Generation_next(Generation *g) {
    if (g->done) return NULL;
    if (!PyThread_acquire_lock(g->lock, NOWAIT_LOCK)) {
        PyErr_SetString(PyExc_RuntimeError, "this Model is in use by another thread (a context serves one thread at a time)");
        return NULL;
    }
    tl_generated step;
    tl_status s;
    tl_context_set_abort_callback(g->ctx, tlpy_check_signals, NULL);
    Py_BEGIN_ALLOW_THREADS
    s = tl_generation_next(g->gen, &step);
    Py_END_ALLOW_THREADS
    tl_context_set_abort_callback(g->ctx, NULL, NULL);
    PyThread_release_lock(g->lock);
    if (s) {
        g->done = true;
        if (PyErr_Occurred()) return NULL; /* KeyboardInterrupt from tlpy_check_signals */
        return tlpy_raise(s);
    }
    if (step.finish) g->done = true;
    return Py_BuildValue("(ify#z)", step.token, (double)step.logprob, step.text, (Py_ssize_t)step.text_len,
                         finish_names[step.finish]);
}

typedef struct {
    char *buf;
    size_t n, cap;
    int32_t tokens;
    tl_finish_reason finish;
    bool nomem;
} collected;

static bool collect(const tl_generated *step, void *user) {
    collected *c = user;
    if (step->token >= 0) c->tokens++;
    c->finish = step->finish;
    if (c->n + step->text_len + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->n + step->text_len + 1) cap *= 2;
        char *p = realloc(c->buf, cap);
        if (!p) {
            c->nomem = true;
            return false;
        }
        c->buf = p;
        c->cap = cap;
    }
    memcpy(c->buf + c->n, step->text, step->text_len);
    c->n += step->text_len;
    return true;
}

/* run() -> (text bytes, generated tokens, finish): the rest of the generation in C, the GIL
 * released throughout (Ctrl-C still lands between layers). */
static PyObject *Generation_run(Generation *g, PyObject *unused) {
    (void)unused;
    if (g->done) return Py_BuildValue("(y#iz)", "", (Py_ssize_t)0, 0, NULL);
    if (!PyThread_acquire_lock(g->lock, NOWAIT_LOCK)) {
        PyErr_SetString(PyExc_RuntimeError, "this Model is in use by another thread (a context serves one thread at a time)");
        return NULL;
    }
    collected c = {0};
    tl_status s;
    tl_context_set_abort_callback(g->ctx, tlpy_check_signals, NULL);
    Py_BEGIN_ALLOW_THREADS
    s = tl_generate_stream(g->gen, collect, &c);
    Py_END_ALLOW_THREADS
    tl_context_set_abort_callback(g->ctx, NULL, NULL);
    PyThread_release_lock(g->lock);
    g->done = true;
    PyObject *r = NULL;
    if (c.nomem) PyErr_NoMemory();
    else if (s) {
        if (!PyErr_Occurred()) tlpy_raise(s);
    } else
        r = Py_BuildValue("(y#iz)", c.buf ? c.buf : "", (Py_ssize_t)c.n, c.tokens, finish_names[c.finish]);
    free(c.buf);
    return r;
}

static PyMethodDef Generation_methods[] = {
    {"run", (PyCFunction)Generation_run, METH_NOARGS,
     "run() -> (text bytes, tokens generated, finish reason): the rest of the generation in C, GIL released"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Generation_new(PyTypeObject *tp, PyObject *a, PyObject *k) {
    (void)tp; (void)a; (void)k;
    PyErr_SetString(PyExc_TypeError, "Generation objects come from Model.generate_iter(...)");
    return NULL;
}

static PyType_Slot Generation_slots[] = {
    {Py_tp_new, Generation_new},
    {Py_tp_methods, Generation_methods},
    {Py_tp_dealloc, Generation_dealloc},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, Generation_next},
    {Py_tp_doc, "Iterator of (token, logprob, text bytes, finish) steps; see Model.stream."},
    {0, NULL},
};

static PyType_Spec Generation_spec = {
    "torchless._C.Generation", sizeof(Generation), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, Generation_slots,
};

PyObject *tlpy_generation_new(PyObject *model, tl_context *ctx, PyThread_type_lock lock, const int32_t *prompt,
                              size_t n_prompt, const tl_sampler_params *sp, const tl_generate_params *gp, int32_t seq) {
    tl_sampler *sampler = NULL;
    tl_generation *gen = NULL;
    int32_t n_vocab = tl_model_get_config(tlpy_model_of(model))->n_vocab;
    tl_status s = tl_sampler_new(sp, n_vocab, &sampler);
    if (!s) s = tl_generation_new(ctx, seq, prompt, n_prompt, sampler, gp, &gen);
    if (s) {
        tl_sampler_free(sampler);
        return tlpy_raise(s);
    }
    Generation *g = PyObject_New(Generation, Generation_Type);
    if (!g) {
        tl_generation_free(gen);
        tl_sampler_free(sampler);
        return NULL;
    }
    g->model = Py_NewRef(model);
    g->ctx = ctx;
    g->lock = lock;
    g->sampler = sampler;
    g->gen = gen;
    g->done = false;
    return (PyObject *)g;
}

int tlpy_generation_init(PyObject *module) {
    Generation_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Generation_spec, NULL);
    if (!Generation_Type) return -1;
    return PyModule_AddObjectRef(module, "Generation", (PyObject *)Generation_Type);
}
