/* Sampler: the C sampler (csrc/generate/sampling.c) for Python.
 *
 *     s = Sampler(n_vocab, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, seed=0, ...)
 *     token, logprob, top = s.sample(logits, n_top=5)   # logits: 1-D float array of n_vocab
 *     s.accept(token)                                   # feed the penalties
 *
 * The logprobs are log-softmax of the raw logits, whatever the sampling parameters. One
 * sampler is used by one thread at a time: a second concurrent call raises RuntimeError. */
#include "common.h"

#include <stdlib.h>

typedef struct {
    PyObject_HEAD
    tl_sampler *s;
    tl_sampler_params p; /* as created (no logit-bias pointers) */
    int32_t n_vocab;
    uint64_t seed;       /* the current seed (reset() without one goes back to it) */
    PyObject *logit_bias; /* dict id -> float, a copy */
    int busy;             /* a sample() is running with the GIL released */
} Sampler;

static PyTypeObject *Sampler_Type;

/* seed: an int in [0, 2**64) */
static int seed_from_object(PyObject *o, uint64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "seed must be an int, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "seed = %R (must be in [0, 2**64))", o);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static int in_use(Sampler *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Sampler is in use by another thread");
        return 1;
    }
    return 0;
}

static PyObject *Sampler_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"n_vocab", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                         "presence_penalty", "frequency_penalty", "penalty_last_n", "seed", "logit_bias", NULL};
    tl_sampler_params p = tl_sampler_default_params();
    int n_vocab;
    PyObject *seed_o = NULL, *bias_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "i|$fifffffiOO:Sampler", kw, &n_vocab, &p.temperature, &p.top_k,
                                     &p.top_p, &p.min_p, &p.repeat_penalty, &p.presence_penalty,
                                     &p.frequency_penalty, &p.penalty_last_n, &seed_o, &bias_o))
        return NULL;
    if (seed_o && seed_from_object(seed_o, &p.seed) < 0) return NULL;

    int32_t *ids = NULL;
    float *bias = NULL;
    PyObject *bias_copy = NULL;
    Sampler *self = NULL;
    if (bias_o != Py_None) {
        if (!PyDict_Check(bias_o)) {
            PyErr_Format(PyExc_TypeError, "logit_bias must be a dict {token id: bias} or None, not %.100s",
                         Py_TYPE(bias_o)->tp_name);
            return NULL;
        }
        Py_ssize_t n = PyDict_Size(bias_o);
        if (n > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "logit_bias has too many entries");
            return NULL;
        }
        bias_copy = PyDict_New();
        ids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *ids);
        bias = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *bias);
        if (!bias_copy || !ids || !bias) {
            if (bias_copy) PyErr_NoMemory();
            goto error;
        }
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *v;
        while (PyDict_Next(bias_o, &pos, &k, &v)) {
            if (!PyLong_Check(k)) {
                PyErr_Format(PyExc_TypeError, "logit_bias keys must be token ids (int), not %.100s",
                             Py_TYPE(k)->tp_name);
                goto error;
            }
            long id = PyLong_AsLong(k);
            if (id == -1 && PyErr_Occurred()) PyErr_Clear(); /* overflow: out of range below */
            if (id < 0 || id >= n_vocab) {
                PyErr_Format(PyExc_ValueError, "logit_bias token id %R (must be in [0, %d))", k, n_vocab);
                goto error;
            }
            double b = PyFloat_AsDouble(v);
            if (b == -1.0 && PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "logit_bias[%ld] must be a float, not %.100s", id, Py_TYPE(v)->tp_name);
                goto error;
            }
            ids[i] = (int32_t)id;
            bias[i] = (float)b;
            PyObject *bf = PyFloat_FromDouble((double)bias[i]);
            if (!bf || PyDict_SetItem(bias_copy, k, bf) < 0) {
                Py_XDECREF(bf);
                goto error;
            }
            Py_DECREF(bf);
            i++;
        }
        p.n_logit_bias = (int32_t)i;
        p.logit_bias_ids = ids;
        p.logit_bias = bias;
    }

    self = (Sampler *)tp->tp_alloc(tp, 0);
    if (!self) goto error;
    tl_status st = tl_sampler_new(&p, n_vocab, &self->s); /* copies the bias arrays */
    if (st) {
        tlpy_raise(st);
        goto error;
    }
    self->p = p;
    self->p.n_logit_bias = 0;
    self->p.logit_bias_ids = NULL;
    self->p.logit_bias = NULL;
    self->n_vocab = n_vocab;
    self->seed = p.seed;
    self->logit_bias = bias_copy;
    PyMem_Free(ids);
    PyMem_Free(bias);
    return (PyObject *)self;

error:
    Py_XDECREF(self);
    Py_XDECREF(bias_copy);
    PyMem_Free(ids);
    PyMem_Free(bias);
    return NULL;
}

static void Sampler_dealloc(Sampler *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tl_sampler_free(self->s);
    Py_XDECREF(self->logit_bias);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Sampler_sample(Sampler *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"logits", "n_top", NULL};
    PyObject *logits_o;
    int n_top = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|i:sample", kw, &logits_o, &n_top)) return NULL;
    if (in_use(self)) return NULL;
    if (n_top < 0 || n_top > self->n_vocab)
        return PyErr_Format(PyExc_ValueError, "n_top = %d (must be in [0, n_vocab = %d])", n_top, self->n_vocab);

    /* logits: any real floating array (cast to float32), 1-D, n_vocab long */
    PyArrayObject *any = (PyArrayObject *)PyArray_FROM_O(logits_o);
    if (!any) return NULL;
    if (!PyArray_ISFLOAT(any)) {
        PyErr_Format(PyExc_TypeError, "logits must be a float array, not dtype %S", (PyObject *)PyArray_DESCR(any));
        Py_DECREF(any);
        return NULL;
    }
    if (PyArray_NDIM(any) != 1 || PyArray_DIM(any, 0) != self->n_vocab) {
        PyObject *shape = PyObject_GetAttrString((PyObject *)any, "shape");
        if (shape) {
            PyErr_Format(PyExc_ValueError, "logits must have shape (n_vocab,) = (%d,), not %S", self->n_vocab, shape);
            Py_DECREF(shape);
        }
        Py_DECREF(any);
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_OTF((PyObject *)any, NPY_FLOAT32,
                                                           NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(any);
    if (!arr) return NULL;

    tl_token_logprob *top = NULL;
    if (n_top > 0 && !(top = PyMem_Malloc((size_t)n_top * sizeof *top))) {
        Py_DECREF(arr);
        return PyErr_NoMemory();
    }
    int32_t token = -1;
    float logprob = 0;
    const float *logits = PyArray_DATA(arr);
    tl_status st;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    st = tl_sampler_sample(self->s, logits, &token, &logprob, top, n_top);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    Py_DECREF(arr);
    PyObject *list = NULL, *result = NULL;
    if (st) {
        tlpy_raise(st);
        goto done;
    }
    list = PyList_New(n_top);
    if (!list) goto done;
    for (int i = 0; i < n_top; i++) {
        PyObject *pair = Py_BuildValue("(if)", (int)top[i].token, (double)top[i].logprob);
        if (!pair) goto done;
        PyList_SET_ITEM(list, i, pair);
    }
    result = Py_BuildValue("(ifO)", (int)token, (double)logprob, list);
done:
    Py_XDECREF(list);
    PyMem_Free(top);
    return result;
}

static PyObject *Sampler_accept(Sampler *self, PyObject *arg) {
    long token = PyLong_AsLong(arg);
    if (token == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear();
    }
    if (token < 0 || token >= self->n_vocab)
        return PyErr_Format(PyExc_ValueError, "token %R (must be in [0, n_vocab = %d))", arg, self->n_vocab);
    if (in_use(self)) return NULL;
    tl_sampler_accept(self->s, (int32_t)token);
    Py_RETURN_NONE;
}

static PyObject *Sampler_reset(Sampler *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"seed", NULL};
    PyObject *seed_o = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:reset", kw, &seed_o)) return NULL;
    uint64_t seed = self->seed;
    if (seed_o != Py_None && seed_from_object(seed_o, &seed) < 0) return NULL;
    if (in_use(self)) return NULL;
    self->seed = seed;
    tl_sampler_reset(self->s, seed);
    Py_RETURN_NONE;
}

static PyObject *Sampler_repr(Sampler *self) {
    char buf[320];
    PyOS_snprintf(buf, sizeof buf,
                  "Sampler(n_vocab=%d, temperature=%g, top_k=%d, top_p=%g, min_p=%g, repeat_penalty=%g, "
                  "presence_penalty=%g, frequency_penalty=%g, penalty_last_n=%d, seed=%llu",
                  (int)self->n_vocab, (double)self->p.temperature, (int)self->p.top_k, (double)self->p.top_p,
                  (double)self->p.min_p, (double)self->p.repeat_penalty, (double)self->p.presence_penalty,
                  (double)self->p.frequency_penalty, (int)self->p.penalty_last_n, (unsigned long long)self->seed);
    if (self->logit_bias) return PyUnicode_FromFormat("%s, logit_bias=%R)", buf, self->logit_bias);
    return PyUnicode_FromFormat("%s)", buf);
}

#define FLOAT_GETTER(field)                                                   \
    static PyObject *get_##field(Sampler *self, void *c) {                    \
        (void)c;                                                              \
        return PyFloat_FromDouble((double)self->p.field);                     \
    }
FLOAT_GETTER(temperature)
FLOAT_GETTER(top_p)
FLOAT_GETTER(min_p)
FLOAT_GETTER(repeat_penalty)
FLOAT_GETTER(presence_penalty)
FLOAT_GETTER(frequency_penalty)
#undef FLOAT_GETTER

static PyObject *get_top_k(Sampler *self, void *c) { (void)c; return PyLong_FromLong(self->p.top_k); }
static PyObject *get_penalty_last_n(Sampler *self, void *c) { (void)c; return PyLong_FromLong(self->p.penalty_last_n); }
static PyObject *get_n_vocab(Sampler *self, void *c) { (void)c; return PyLong_FromLong(self->n_vocab); }
static PyObject *get_seed(Sampler *self, void *c) { (void)c; return PyLong_FromUnsignedLongLong(self->seed); }
static PyObject *get_logit_bias(Sampler *self, void *c) {
    (void)c;
    if (!self->logit_bias) Py_RETURN_NONE;
    return PyDict_Copy(self->logit_bias);
}

static PyGetSetDef Sampler_getset[] = {
    {"n_vocab", (getter)get_n_vocab, NULL, "vocabulary size (the length of the logits)", NULL},
    {"temperature", (getter)get_temperature, NULL, "softmax temperature; 0 = greedy", NULL},
    {"top_k", (getter)get_top_k, NULL, "keep the k most likely tokens; 0 = off", NULL},
    {"top_p", (getter)get_top_p, NULL, "keep the smallest nucleus of this mass; 1 = off", NULL},
    {"min_p", (getter)get_min_p, NULL, "drop tokens less likely than min_p * the most likely; 0 = off", NULL},
    {"repeat_penalty", (getter)get_repeat_penalty, NULL, "llama.cpp repeat penalty; 1 = off", NULL},
    {"presence_penalty", (getter)get_presence_penalty, NULL, "subtracted once from a seen token; 0 = off", NULL},
    {"frequency_penalty", (getter)get_frequency_penalty, NULL, "subtracted per occurrence; 0 = off", NULL},
    {"penalty_last_n", (getter)get_penalty_last_n, NULL, "penalty window in accepted tokens; -1 = all, 0 = off",
     NULL},
    {"seed", (getter)get_seed, NULL, "the seed of the current random stream", NULL},
    {"logit_bias", (getter)get_logit_bias, NULL, "{token id: bias} added to the logits first, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Sampler_methods[] = {
    {"sample", (PyCFunction)(void (*)(void))Sampler_sample, METH_VARARGS | METH_KEYWORDS,
     "sample(logits, n_top=0) -> (token, logprob, [(token, logprob), ...])\n\n"
     "Draws the next token from a 1-D float array of n_vocab raw logits (not modified).\n"
     "logprob and the n_top list (most likely first) are log-softmax of the raw logits,\n"
     "before bias, penalties and temperature. Does not accept() the token."},
    {"accept", (PyCFunction)Sampler_accept, METH_O,
     "accept(token): record a token (prompt or generated) for the penalties"},
    {"reset", (PyCFunction)(void (*)(void))Sampler_reset, METH_VARARGS | METH_KEYWORDS,
     "reset(seed=None): forget the accepted tokens and restart the random stream\n"
     "(from seed, or from the current seed when None)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Sampler_slots[] = {
    {Py_tp_new, Sampler_new},
    {Py_tp_dealloc, Sampler_dealloc},
    {Py_tp_repr, Sampler_repr},
    {Py_tp_getset, Sampler_getset},
    {Py_tp_methods, Sampler_methods},
    {Py_tp_doc,
     "Sampler(n_vocab, *, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,\n"
     "        presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64, seed=0, logit_bias=None)\n\n"
     "Picks tokens from logits: logit bias, penalties, then greedy (temperature 0) or\n"
     "top-k -> top-p -> min-p -> temperature -> a seeded draw (llama.cpp's order)."},
    {0, NULL},
};

static PyType_Spec Sampler_spec = {
    "torchless.Sampler", sizeof(Sampler), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE, Sampler_slots,
};

int tlpy_sampler_init(PyObject *module) {
    Sampler_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Sampler_spec, NULL);
    if (!Sampler_Type) return -1;
    return PyModule_AddObjectRef(module, "Sampler", (PyObject *)Sampler_Type);
}
