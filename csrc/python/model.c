/* Model: the thin engine object. A loaded model plus one context (KV cache for
 * max_batch_size sequences, thread pool); forward() returns logits as NumPy arrays
 * written once, straight into the returned array's memory. The reference-style
 * Llama/Transformer API (issue 4) is built on top of it. */
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    tl_model *model;
    tl_context *ctx;
    PyThread_type_lock lock; /* one call at a time */
    PyObject *path;
} Model;

PyTypeObject *Model_Type;

static PyObject *Model_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", "max_seq_len", "max_batch_size", "n_threads", "kv_dtype", "share", "tokenizer_path",
                             "device", NULL};
    PyObject *path = NULL, *threads_obj = Py_None, *share = Py_None, *tok_obj = Py_None, *tok_path = NULL;
    int max_seq_len = 0, max_batch_size = 1;
    const char *kv = "f16", *device = "auto";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|iiOsOOs:Model", kwlist, PyUnicode_FSDecoder, &path, &max_seq_len,
                                     &max_batch_size, &threads_obj, &kv, &share, &tok_obj, &device))
        return NULL;
    if (tok_obj != Py_None && !PyUnicode_FSConverter(tok_obj, &tok_path)) goto fail;
    if (share != Py_None && !PyObject_TypeCheck(share, Model_Type)) {
        PyErr_Format(PyExc_TypeError, "share must be a Model (whose weights to use), not %.100s", Py_TYPE(share)->tp_name);
        goto fail;
    }
    tl_context_params p = tl_context_default_params();
    p.max_seq_len = max_seq_len;
    p.max_batch_size = max_batch_size;
    if (threads_obj != Py_None) {
        long t = PyLong_AsLong(threads_obj);
        if (t == -1 && PyErr_Occurred()) goto fail;
        if (t < 1 || t > 1024) {
            PyErr_Format(PyExc_ValueError, "n_threads must be between 1 and 1024 (or None for the physical cores), got %ld", t);
            goto fail;
        }
        p.n_threads = (int32_t)t;
    }
    if (max_seq_len < 0) {
        PyErr_Format(PyExc_ValueError, "max_seq_len must be positive (or 0 for the model's), got %d", max_seq_len);
        goto fail;
    }
    if (max_batch_size < 1) {
        PyErr_Format(PyExc_ValueError, "max_batch_size must be at least 1, got %d", max_batch_size);
        goto fail;
    }
    if (strcmp(kv, "f16") == 0) p.kv_dtype = TL_F16;
    else if (strcmp(kv, "f32") == 0) p.kv_dtype = TL_F32;
    else if (strcmp(kv, "q8_0") == 0) p.kv_dtype = TL_Q8_0;
    else {
        PyErr_Format(PyExc_ValueError, "kv_dtype must be 'f16', 'f32' or 'q8_0', got '%s'", kv);
        goto fail;
    }
    PyObject *bytes = PyUnicode_EncodeFSDefault(path);
    if (!bytes) goto fail;
    tl_model *m = NULL;
    tl_context *c = NULL;
    tl_status s;
    tl_model *shared = share != Py_None ? ((Model *)share)->model : NULL;
    if (shared) tl_model_retain(shared); /* one mapping, weights and tokenizer; a context of our own */
    tl_model_load_params lp = tl_model_default_load_params();
    lp.tokenizer_path = tok_path ? PyBytes_AS_STRING(tok_path) : NULL;
    lp.device = device;
    lp.n_threads = p.n_threads; /* the copies of weights at load on the threads the context will run */
    Py_BEGIN_ALLOW_THREADS
    s = shared ? TL_OK : tl_model_load_ex(PyBytes_AS_STRING(bytes), &lp, &m);
    if (shared) m = shared;
    if (!s) s = tl_context_new(m, &p, &c);
    Py_END_ALLOW_THREADS
    Py_DECREF(bytes);
    Py_CLEAR(tok_path);
    if (s) {
        tl_model_free(m);
        tlpy_raise(s);
        goto fail;
    }
    Model *self = (Model *)tp->tp_alloc(tp, 0);
    if (!self) {
        tl_context_free(c);
        tl_model_free(m);
        goto fail;
    }
    self->model = m;
    self->ctx = c;
    self->path = path;
    self->lock = PyThread_allocate_lock();
    if (!self->lock) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
fail:
    Py_XDECREF(tok_path);
    Py_XDECREF(path);
    return NULL;
}

static void Model_dealloc(Model *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tl_context_free(self->ctx);
    tl_model_free(self->model);
    if (self->lock) PyThread_free_lock(self->lock);
    Py_XDECREF(self->path);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int acquire(Model *self) {
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        PyErr_SetString(PyExc_RuntimeError, "this Model is in use by another thread (a context serves one thread at a time)");
        return -1;
    }
    return 0;
}

/* An int32 1-D array from a sequence of ints; NULL + exception otherwise. */
static PyArrayObject *int_array(PyObject *o, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(o, NPY_INT64, 1, 1, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (!a) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s must be a 1-D sequence of ints", what);
        }
        return NULL;
    }
    if (PyArray_TYPE(a) != NPY_INT64) {
        Py_DECREF(a);
        PyErr_Format(PyExc_TypeError, "%s must be a 1-D sequence of ints", what);
        return NULL;
    }
    const int64_t *v = PyArray_DATA(a);
    for (npy_intp i = 0; i < PyArray_SIZE(a); i++)
        if (v[i] < INT32_MIN || v[i] > INT32_MAX) {
            Py_DECREF(a);
            PyErr_Format(PyExc_ValueError, "%s[%zd] = %lld is out of range", what, (Py_ssize_t)i, (long long)v[i]);
            return NULL;
        }
    return a;
}

/* Runs one batch; returns the (rows, n_vocab) float32 logits array. */
static PyObject *run_batch(Model *self, int32_t n, const int32_t *tok, const int32_t *pos, const int32_t *seq,
                           const int8_t *want, int32_t rows) {
    npy_intp dims[2] = {rows, tl_model_get_config(self->model)->n_vocab};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) return NULL;
    if (acquire(self) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    tl_batch b = {n, tok, pos, seq, want};
    tl_status s;
    tl_context_set_abort_callback(self->ctx, tlpy_check_signals, NULL); /* Ctrl-C between layers */
    Py_BEGIN_ALLOW_THREADS
    s = tl_forward(self->ctx, &b, PyArray_DATA((PyArrayObject *)out));
    Py_END_ALLOW_THREADS
    tl_context_set_abort_callback(self->ctx, NULL, NULL);
    PyThread_release_lock(self->lock);
    if (s) {
        Py_DECREF(out);
        if (PyErr_Occurred()) return NULL; /* KeyboardInterrupt from tlpy_check_signals */
        return tlpy_raise(s);
    }
    return out;
}

/* forward(ids, start_pos=0, seq=0) -> float32 (len(ids), n_vocab): logits of every position */
static PyObject *Model_forward(Model *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"tokens", "start_pos", "seq", NULL};
    PyObject *tokens_obj;
    int start_pos = 0, seq = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|ii:forward", kwlist, &tokens_obj, &start_pos, &seq)) return NULL;
    PyArrayObject *ids = int_array(tokens_obj, "tokens");
    if (!ids) return NULL;
    npy_intp n = PyArray_SIZE(ids);
    PyObject *out = NULL;
    if (n < 1 || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "forward: tokens must not be empty");
        goto done;
    }
    int32_t *buf = PyMem_Malloc((size_t)n * 3 * sizeof(int32_t) + (size_t)n);
    if (!buf) {
        PyErr_NoMemory();
        goto done;
    }
    int32_t *tok = buf, *pos = buf + n, *sq = buf + 2 * n;
    int8_t *want = (int8_t *)(buf + 3 * n);
    const int64_t *v = PyArray_DATA(ids);
    for (npy_intp i = 0; i < n; i++) {
        tok[i] = (int32_t)v[i];
        pos[i] = start_pos + (int32_t)i;
        sq[i] = seq;
        want[i] = 1;
    }
    out = run_batch(self, (int32_t)n, tok, pos, sq, want, (int32_t)n);
    PyMem_Free(buf);
done:
    Py_DECREF(ids);
    return out;
}

/* forward_batch(tokens, positions, seqs, logits=None) -> float32 (rows, n_vocab) */
static PyObject *Model_forward_batch(Model *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"tokens", "positions", "seqs", "logits", NULL};
    PyObject *t_obj, *p_obj, *s_obj, *w_obj = Py_None, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:forward_batch", kwlist, &t_obj, &p_obj, &s_obj, &w_obj))
        return NULL;
    PyArrayObject *t = int_array(t_obj, "tokens"), *p = t ? int_array(p_obj, "positions") : NULL,
                  *s = p ? int_array(s_obj, "seqs") : NULL, *w = NULL;
    if (!s) goto done;
    npy_intp n = PyArray_SIZE(t);
    if (n < 1 || PyArray_SIZE(p) != n || PyArray_SIZE(s) != n) {
        PyErr_SetString(PyExc_ValueError, "forward_batch: tokens, positions and seqs must have the same non-zero length");
        goto done;
    }
    if (w_obj != Py_None) {
        w = (PyArrayObject *)PyArray_FROMANY(w_obj, NPY_BOOL, 1, 1, NPY_ARRAY_IN_ARRAY);
        if (!w) goto done;
        if (PyArray_SIZE(w) != n) {
            PyErr_SetString(PyExc_ValueError, "forward_batch: logits must have one flag per token");
            goto done;
        }
    }
    int32_t *buf = PyMem_Malloc((size_t)n * 3 * sizeof(int32_t) + (size_t)n);
    if (!buf) {
        PyErr_NoMemory();
        goto done;
    }
    int32_t *tok = buf, *pos = buf + n, *sq = buf + 2 * n, rows = 0;
    int8_t *want = (int8_t *)(buf + 3 * n);
    for (npy_intp i = 0; i < n; i++) {
        tok[i] = (int32_t)((int64_t *)PyArray_DATA(t))[i];
        pos[i] = (int32_t)((int64_t *)PyArray_DATA(p))[i];
        sq[i] = (int32_t)((int64_t *)PyArray_DATA(s))[i];
        want[i] = w ? ((npy_bool *)PyArray_DATA(w))[i] != 0 : 1;
        rows += want[i];
    }
    out = run_batch(self, (int32_t)n, tok, pos, sq, want, rows);
    PyMem_Free(buf);
done:
    Py_XDECREF(t);
    Py_XDECREF(p);
    Py_XDECREF(s);
    Py_XDECREF(w);
    return out;
}

static PyObject *Model_reset(Model *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"seq", NULL};
    PyObject *seq_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:reset", kwlist, &seq_obj)) return NULL;
    int seq = -1;
    if (seq_obj != Py_None) {
        seq = (int)PyLong_AsLong(seq_obj);
        if (seq == -1 && PyErr_Occurred()) return NULL;
        if (seq < 0 || seq >= tl_context_max_batch_size(self->ctx)) {
            PyErr_Format(PyExc_ValueError, "seq must be in [0, %d), got %d", tl_context_max_batch_size(self->ctx), seq);
            return NULL;
        }
    }
    if (acquire(self) < 0) return NULL;
    tl_context_clear(self->ctx, seq);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyObject *Model_seq_len(Model *self, PyObject *arg) {
    long seq = PyLong_AsLong(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    if (seq < 0 || seq >= tl_context_max_batch_size(self->ctx)) {
        PyErr_Format(PyExc_ValueError, "seq must be in [0, %d), got %ld", tl_context_max_batch_size(self->ctx), seq);
        return NULL;
    }
    return PyLong_FromLong(tl_context_seq_len(self->ctx, (int32_t)seq));
}

const tl_model *tlpy_model_of(PyObject *model) { return ((Model *)model)->model; }

/* generate_iter(prompt, *, max_new_tokens, temperature, top_k, top_p, min_p, repeat_penalty,
 *               presence_penalty, frequency_penalty, penalty_last_n, seed, stop, ignore_eog,
 *               special, seq) -> Generation */
static PyObject *Model_generate_iter(Model *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                             "presence_penalty", "frequency_penalty", "penalty_last_n", "seed", "stop", "ignore_eog",
                             "special", "seq", NULL};
    tl_sampler_params sp = tl_sampler_default_params();
    tl_generate_params gp = {.max_new_tokens = 128};
    PyObject *prompt_obj, *stop_obj = Py_None, *result = NULL, *stop_seq = NULL;
    unsigned long long seed = 0;
    int ignore_eog = 0, special = 0, seq = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$ififffffiKOppi:generate_iter", kwlist, &prompt_obj,
                                     &gp.max_new_tokens, &sp.temperature, &sp.top_k, &sp.top_p, &sp.min_p,
                                     &sp.repeat_penalty, &sp.presence_penalty, &sp.frequency_penalty, &sp.penalty_last_n,
                                     &seed, &stop_obj, &ignore_eog, &special, &seq))
        return NULL;
    sp.seed = seed;
    gp.ignore_eog = ignore_eog;
    gp.special = special;
    PyArrayObject *ids = int_array(prompt_obj, "prompt");
    if (!ids) return NULL;
    npy_intp n = PyArray_SIZE(ids);
    int32_t *prompt = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    const char **stops = NULL;
    if (!prompt) {
        PyErr_NoMemory();
        goto done;
    }
    for (npy_intp i = 0; i < n; i++) prompt[i] = (int32_t)((int64_t *)PyArray_DATA(ids))[i];
    if (stop_obj != Py_None) {
        stop_seq = PySequence_Fast(stop_obj, "stop must be a sequence of str");
        if (!stop_seq) goto done;
        Py_ssize_t k = PySequence_Fast_GET_SIZE(stop_seq);
        stops = PyMem_Calloc((size_t)(k ? k : 1), sizeof *stops);
        if (!stops) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < k; i++) {
            PyObject *item = PySequence_Fast_GET_ITEM(stop_seq, i);
            if (!PyUnicode_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "stop must be a sequence of str");
                goto done;
            }
            stops[i] = PyUnicode_AsUTF8(item); /* lives as long as stop_seq */
            if (!stops[i]) goto done;
            if (!stops[i][0]) {
                PyErr_SetString(PyExc_ValueError, "stop strings must not be empty");
                goto done;
            }
        }
        gp.stop = stops;
        gp.n_stop = (int32_t)k;
    }
    /* generation_new copies the prompt and the stop strings */
    result = tlpy_generation_new((PyObject *)self, self->ctx, self->lock, prompt, (size_t)n, &sp, &gp, seq);
done:
    PyMem_Free(prompt);
    PyMem_Free(stops);
    Py_XDECREF(stop_seq);
    Py_DECREF(ids);
    return result;
}

/* The weight dtypes whose matmuls quantize activations to 8 bits (the CPU backend's integer
 * kernels at this dispatch level), in the gguf package's spelling ("Q4_0", "Q4_K"): the
 * reference forward mirrors them. */
static PyObject *activation_quant_list(const tl_model *m) {
    PyObject *aq = PyList_New(0);
    const bool cpu = strcmp(tl_model_backend(m), "cpu") == 0;
    for (int t = 0; aq && cpu && t < TL_DTYPE_COUNT; t++) {
        if (!tl_dtype_is_valid(t) || !tl_dtype_quantizes_activations((tl_dtype)t)) continue;
        char name[16];
        snprintf(name, sizeof name, "%s", tl_dtype_name((tl_dtype)t));
        for (char *q = name; *q; q++) *q = (char)toupper((unsigned char)*q);
        PyObject *u = PyUnicode_FromString(name);
        if (!u || PyList_Append(aq, u) < 0) Py_CLEAR(aq);
        Py_XDECREF(u);
    }
    return aq;
}

static PyObject *get_config(Model *self, void *c) {
    (void)c;
    const tl_model_config *k = tl_model_get_config(self->model);
    static const char *scaling[] = {"none", "linear", "llama3"};
    PyObject *d = Py_BuildValue(
        "{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:d,s:d,s:s,s:i,s:s,s:d,s:O,s:O,s:O}", "arch", k->arch, "n_vocab",
        k->n_vocab, "dim", k->dim, "n_layers", k->n_layers, "n_heads", k->n_heads, "n_kv_heads", k->n_kv_heads,
        "head_dim", k->head_dim, "hidden_dim", k->hidden_dim, "context_length", k->max_seq_len, "norm_eps",
        (double)k->norm_eps, "rope_theta", (double)k->rope_theta, "rope_style",
        k->rope_style == TL_ROPE_NEOX ? "neox" : "norm", "rope_dim", k->rope_dim, "rope_scaling",
        scaling[k->rope_scaling], "rope_factor", (double)k->rope_factor, "qkv_bias", k->qkv_bias ? Py_True : Py_False,
        "qk_norm", k->qk_norm ? Py_True : Py_False, "tied_embeddings", k->tied_embeddings ? Py_True : Py_False);
    if (!d) return NULL;
    /* architecture traits (docs/architectures.md) */
    PyObject *traits = Py_BuildValue(
        "{s:s,s:d,s:d,s:d,s:d,s:O,s:O,s:O,s:i,s:i,s:d,s:d}", "activation",
        k->activation == TL_ACT_GELU_TANH ? "gelu_tanh" : "silu", "embed_scale", (double)k->embed_scale, "attn_scale",
        (double)k->attn_scale, "attn_softcap", (double)k->attn_softcap, "final_softcap", (double)k->final_softcap,
        "post_norms", k->post_norms ? Py_True : Py_False, "fused_qkv", k->fused_qkv ? Py_True : Py_False,
        "fused_gate_up", k->fused_gate_up ? Py_True : Py_False, "sliding_window", k->sliding_window,
        "n_windowed_layers", k->n_windowed_layers, "rope_theta_swa", (double)k->rope_theta_swa, "rope_attn_factor",
        (double)k->rope_attn_factor);
    if (!traits || PyDict_Update(d, traits) < 0) {
        Py_XDECREF(traits);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(traits);
    PyObject *aq = activation_quant_list(self->model);
    if (!aq || PyDict_SetItemString(d, "activation_quant", aq) < 0) {
        Py_XDECREF(aq);
        Py_DECREF(d);
        return NULL;
    }
    Py_DECREF(aq);
    return d;
}

static PyObject *get_n_vocab(Model *self, void *c) {
    (void)c;
    return PyLong_FromLong(tl_model_get_config(self->model)->n_vocab);
}
static PyObject *get_max_seq_len(Model *self, void *c) {
    (void)c;
    return PyLong_FromLong(tl_context_max_seq_len(self->ctx));
}
static PyObject *get_max_batch_size(Model *self, void *c) {
    (void)c;
    return PyLong_FromLong(tl_context_max_batch_size(self->ctx));
}
/* identifies the loaded weights: equal for Models that share them */
static PyObject *get_weights_id(Model *self, void *c) {
    (void)c;
    return PyLong_FromVoidPtr(self->model);
}

static PyObject *get_path(Model *self, void *c) {
    (void)c;
    return Py_NewRef(self->path);
}

static PyObject *Model_tensor_names(Model *self, PyObject *unused) {
    (void)unused;
    return tlpy_tensor_names(tl_model_get_weights(self->model));
}

static PyObject *Model_tensor(Model *self, PyObject *name) { return tlpy_tensor(tl_model_get_weights(self->model), name); }

static PyObject *Model_file_metadata(Model *self, PyObject *args) {
    int types = 0;
    if (!PyArg_ParseTuple(args, "|p:file_metadata", &types)) return NULL;
    return tlpy_metadata(tl_model_get_weights(self->model), types);
}

static PyObject *get_device(Model *self, void *closure) {
    (void)closure;
    return PyUnicode_FromFormat("%s:%d", tl_model_backend(self->model), tl_model_device_index(self->model));
}

static PyObject *get_device_name(Model *self, void *closure) {
    (void)closure;
    return PyUnicode_FromString(tl_model_device_name(self->model));
}

static PyGetSetDef Model_getset[] = {
    {"device", (getter)get_device, NULL, "where the weights and caches live: 'cpu:0', 'cuda:0', ...", NULL},
    {"device_name", (getter)get_device_name, NULL, "the device's name ('NVIDIA H100 80GB HBM3', 'CPU (avx512)')", NULL},
    {"config", (getter)get_config, NULL, "hyper-parameters and architecture traits", NULL},
    {"n_vocab", (getter)get_n_vocab, NULL, "rows of the output head", NULL},
    {"max_seq_len", (getter)get_max_seq_len, NULL, "positions each sequence's cache holds", NULL},
    {"max_batch_size", (getter)get_max_batch_size, NULL, "sequences with their own cache", NULL},
    {"path", (getter)get_path, NULL, "the model file", NULL},
    {"weights_id", (getter)get_weights_id, NULL, "identity of the loaded weights (equal when shared)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Model_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Model_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens, start_pos=0, seq=0) -> float32 ndarray (len(tokens), n_vocab)"},
    {"forward_batch", (PyCFunction)(void (*)(void))Model_forward_batch, METH_VARARGS | METH_KEYWORDS,
     "forward_batch(tokens, positions, seqs, logits=None) -> float32 ndarray (rows asked for, n_vocab)"},
    {"reset", (PyCFunction)(void (*)(void))Model_reset, METH_VARARGS | METH_KEYWORDS,
     "reset(seq=None): forget the cached positions of one sequence (None: all)"},
    {"seq_len", (PyCFunction)Model_seq_len, METH_O, "seq_len(seq) -> positions of seq in the cache"},
    {"tensor_names", (PyCFunction)Model_tensor_names, METH_NOARGS, "names of the model file's tensors, in file order"},
    {"tensor", (PyCFunction)Model_tensor, METH_O, "tensor(name) -> zero-copy TensorView of a weight"},
    {"file_metadata", (PyCFunction)Model_file_metadata, METH_VARARGS,
     "file_metadata(types=False) -> the model file's metadata (or its value types) as a dict"},
    {"generate_iter", (PyCFunction)(void (*)(void))Model_generate_iter, METH_VARARGS | METH_KEYWORDS,
     "generate_iter(prompt_ids, *, max_new_tokens=128, temperature=0.8, ...) -> Generation of "
     "(token, logprob, text bytes, finish) steps"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Model_slots[] = {
    {Py_tp_new, Model_new},
    {Py_tp_dealloc, Model_dealloc},
    {Py_tp_getset, Model_getset},
    {Py_tp_methods, Model_methods},
    {Py_tp_doc, "Model(path, max_seq_len=0, max_batch_size=1, n_threads=None, kv_dtype='f16', share=None, "
                "tokenizer_path=None): a model (GGUF, .tl, llama2.c checkpoint) with its KV cache; share=another "
                "Model uses its weights (mapped once) with a new context; tokenizer_path: a tokenizer file used "
                "instead of the model file's own."},
    {0, NULL},
};

static PyType_Spec Model_spec = {
    "torchless._C.Model", sizeof(Model), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, Model_slots,
};

int tlpy_model_init(PyObject *module) {
    Model_Type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Model_spec, NULL);
    if (!Model_Type) return -1;
    return PyModule_AddObjectRef(module, "Model", (PyObject *)Model_Type);
}
