/* Tokenizer: a vocabulary (GGUF, SentencePiece .model or llama2.c tokenizer.bin) with
 * encode/decode. The engine tokenizer is read-only once loaded, so any number of
 * threads may encode at once; the GIL is released around every call into it. */
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    PyObject_HEAD
    tl_tokenizer *t;
} Tokenizer;

static PyTypeObject *Tokenizer_Type;

static void Tokenizer_dealloc(Tokenizer *self) {
    PyTypeObject *tp = Py_TYPE(self);
    tl_tokenizer_free(self->t);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Tokenizer_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"path", NULL};
    PyObject *path_bytes = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&:Tokenizer", kwlist, PyUnicode_FSConverter, &path_bytes))
        return NULL;
    const char *path = PyBytes_AS_STRING(path_bytes);
    tl_tokenizer *t = NULL;
    tl_status s;
    Py_BEGIN_ALLOW_THREADS
    s = tl_tokenizer_open(path, &t);
    Py_END_ALLOW_THREADS
    /* "not found" is about the file itself only when it is missing; a file without a
     * vocabulary (a GGUF with no tokenizer.ggml.* keys) is a bad argument, not a missing file */
    if (s == TL_ERR_NOT_FOUND && access(path, F_OK) == 0) s = TL_ERR_INVALID;
    Py_DECREF(path_bytes);
    if (s) return tlpy_raise(s);
    Tokenizer *self = (Tokenizer *)tp->tp_alloc(tp, 0);
    if (!self) {
        tl_tokenizer_free(t);
        return NULL;
    }
    self->t = t;
    return (PyObject *)self;
}

/* An id argument: an int inside the vocabulary, else TypeError/ValueError naming it. */
static int id_from_object(const Tokenizer *self, PyObject *o, int32_t *out) {
    if (!PyIndex_Check(o)) {
        PyErr_Format(PyExc_TypeError, "token id must be an int, not %.100s", Py_TYPE(o)->tp_name);
        return -1;
    }
    PyObject *n = PyNumber_Index(o);
    if (!n) return -1;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(n, &overflow);
    Py_DECREF(n);
    if (v == -1 && PyErr_Occurred()) return -1;
    int32_t n_vocab = tl_tokenizer_n_vocab(self->t);
    if (overflow || v < 0 || v >= n_vocab) {
        PyErr_Format(PyExc_ValueError, "token id %R out of range [0, %d)", o, (int)n_vocab);
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

static PyObject *ids_to_list(const int32_t *ids, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(ids[i]);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    return list;
}

/* encode(text, add_bos=None, special=False) -> list[int] */
static PyObject *Tokenizer_encode(Tokenizer *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"text", "add_bos", "special", NULL};
    PyObject *text, *add_bos_obj = Py_None;
    int special = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|Op:encode", kwlist, &text, &add_bos_obj, &special)) return NULL;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "encode: text must be str, not %.100s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    bool add_bos;
    if (add_bos_obj == Py_None) {
        add_bos = tl_tokenizer_add_bos_default(self->t);
    } else {
        int b = PyObject_IsTrue(add_bos_obj);
        if (b < 0) return NULL;
        add_bos = b;
    }
    if (add_bos && tl_tokenizer_bos(self->t) < 0) {
        PyErr_SetString(PyExc_ValueError, "encode: add_bos=True but this vocabulary has no BOS token");
        return NULL;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len); /* owned by `text`, immutable */
    if (!utf8) return NULL;
    /* SentencePiece gives at most one id per byte plus BOS/EOS; start there and retry once if short */
    size_t cap = (size_t)len + 4, n = 0;
    int32_t *ids = NULL;
    tl_status s = TL_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *grown = realloc(ids, cap * sizeof *ids);
        if (!grown) {
            free(ids);
            return PyErr_NoMemory();
        }
        ids = grown;
        Py_BEGIN_ALLOW_THREADS
        s = tl_tokenize(self->t, utf8, (size_t)len, add_bos, special, ids, cap, &n);
        Py_END_ALLOW_THREADS
        if (s || n <= cap) break;
        cap = n;
    }
    PyObject *r = s ? tlpy_raise(s) : ids_to_list(ids, n);
    free(ids);
    return r;
}

/* The ids of a sequence of ints, checked against the vocabulary; *ids is malloc'd. */
static int ids_from_object(const Tokenizer *self, PyObject *obj, int32_t **ids, size_t *n) {
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "ids must be a sequence of ints, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "ids must be a sequence of ints");
    if (!seq) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq);
    *ids = malloc((size_t)(count ? count : 1) * sizeof **ids);
    if (!*ids) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (id_from_object(self, PySequence_Fast_GET_ITEM(seq, i), &(*ids)[i]) < 0) {
            free(*ids);
            *ids = NULL;
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    *n = (size_t)count;
    return 0;
}

/* The bytes of ids, or NULL with an exception. */
static PyObject *detokenize_bytes(Tokenizer *self, PyObject *args, PyObject *kwargs, const char *fname) {
    static char *kwlist[] = {"ids", "special", NULL};
    PyObject *obj;
    int special = 0;
    char fmt[32];
    snprintf(fmt, sizeof fmt, "O|p:%s", fname);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, fmt, kwlist, &obj, &special)) return NULL;
    int32_t *ids;
    size_t n;
    if (ids_from_object(self, obj, &ids, &n) < 0) return NULL;
    size_t cap = n * 8 + 16, used = 0;
    char *buf = NULL;
    tl_status s = TL_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *grown = realloc(buf, cap);
        if (!grown) {
            free(buf);
            free(ids);
            return PyErr_NoMemory();
        }
        buf = grown;
        Py_BEGIN_ALLOW_THREADS
        s = tl_detokenize(self->t, ids, n, special, buf, cap, &used);
        Py_END_ALLOW_THREADS
        if (s || used <= cap) break;
        cap = used;
    }
    PyObject *r = s ? tlpy_raise(s) : PyBytes_FromStringAndSize(buf, (Py_ssize_t)used);
    free(buf);
    free(ids);
    return r;
}

static PyObject *Tokenizer_decode_bytes(Tokenizer *self, PyObject *args, PyObject *kwargs) {
    return detokenize_bytes(self, args, kwargs, "decode_bytes");
}

/* decode(ids, special=False) -> str; bytes that are not UTF-8 become U+FFFD */
static PyObject *Tokenizer_decode(Tokenizer *self, PyObject *args, PyObject *kwargs) {
    PyObject *b = detokenize_bytes(self, args, kwargs, "decode");
    if (!b) return NULL;
    PyObject *r = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), "replace");
    Py_DECREF(b);
    return r;
}

/* token_to_piece(id, special=False) -> bytes (may be part of a UTF-8 character) */
static PyObject *Tokenizer_token_to_piece(Tokenizer *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"id", "special", NULL};
    PyObject *obj;
    int special = 0;
    int32_t id;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|p:token_to_piece", kwlist, &obj, &special)) return NULL;
    if (id_from_object(self, obj, &id) < 0) return NULL;
    char small[256];
    size_t n;
    tl_status s = tl_token_to_piece(self->t, id, special, small, sizeof small, &n);
    if (s) return tlpy_raise(s);
    if (n <= sizeof small) return PyBytes_FromStringAndSize(small, (Py_ssize_t)n);
    PyObject *r = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!r) return NULL;
    s = tl_token_to_piece(self->t, id, special, PyBytes_AS_STRING(r), n, &n);
    if (s) {
        Py_DECREF(r);
        return tlpy_raise(s);
    }
    return r;
}

/* token_text(id) -> str: the token as the vocabulary stores it ('▁Hello', '<0x0A>') */
static PyObject *Tokenizer_token_text(Tokenizer *self, PyObject *arg) {
    int32_t id;
    if (id_from_object(self, arg, &id) < 0) return NULL;
    size_t len;
    const char *text = tl_tokenizer_token_text(self->t, id, &len);
    return tlpy_string_to_python((tl_string){text, len});
}

static PyObject *Tokenizer_token_score(Tokenizer *self, PyObject *arg) {
    int32_t id;
    if (id_from_object(self, arg, &id) < 0) return NULL;
    return PyFloat_FromDouble(tl_tokenizer_token_score(self->t, id));
}

/* token_type(id) -> int, GGUF numbering: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte */
static PyObject *Tokenizer_token_type(Tokenizer *self, PyObject *arg) {
    int32_t id;
    if (id_from_object(self, arg, &id) < 0) return NULL;
    return PyLong_FromLong(tl_tokenizer_token_type(self->t, id));
}

static PyObject *Tokenizer_is_eog(Tokenizer *self, PyObject *arg) {
    int32_t id;
    if (id_from_object(self, arg, &id) < 0) return NULL;
    return PyBool_FromLong(tl_tokenizer_is_eog(self->t, id));
}

static Py_ssize_t Tokenizer_len(Tokenizer *self) { return tl_tokenizer_n_vocab(self->t); }

static PyObject *Tokenizer_get_n_vocab(Tokenizer *self, void *c) {
    (void)c;
    return PyLong_FromLong(tl_tokenizer_n_vocab(self->t));
}
static PyObject *Tokenizer_get_bos_id(Tokenizer *self, void *c) {
    (void)c;
    return PyLong_FromLong(tl_tokenizer_bos(self->t));
}
static PyObject *Tokenizer_get_eos_id(Tokenizer *self, void *c) {
    (void)c;
    return PyLong_FromLong(tl_tokenizer_eos(self->t));
}
static PyObject *Tokenizer_get_add_bos(Tokenizer *self, void *c) {
    (void)c;
    return PyBool_FromLong(tl_tokenizer_add_bos_default(self->t));
}
static PyObject *Tokenizer_get_kind(Tokenizer *self, void *c) {
    (void)c;
    return PyUnicode_FromString(tl_tokenizer_get_kind(self->t) == TL_TOKENIZER_SPM ? "spm" : "bpe");
}
static PyObject *Tokenizer_get_eog_ids(Tokenizer *self, void *c) {
    (void)c;
    PyObject *list = PyList_New(0);
    if (!list) return NULL;
    int32_t n = tl_tokenizer_n_vocab(self->t);
    for (int32_t id = 0; id < n; id++) {
        if (!tl_tokenizer_is_eog(self->t, id)) continue;
        PyObject *v = PyLong_FromLong(id);
        if (!v || PyList_Append(list, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *t = PyList_AsTuple(list);
    Py_DECREF(list);
    return t;
}

static PyObject *Tokenizer_repr(Tokenizer *self) {
    return PyUnicode_FromFormat("<%s %s n_vocab=%d bos_id=%d eos_id=%d>", Py_TYPE(self)->tp_name,
                                tl_tokenizer_get_kind(self->t) == TL_TOKENIZER_SPM ? "spm" : "bpe",
                                (int)tl_tokenizer_n_vocab(self->t), (int)tl_tokenizer_bos(self->t),
                                (int)tl_tokenizer_eos(self->t));
}

static PyMethodDef Tokenizer_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Tokenizer_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(text, add_bos=None, special=False) -> list[int]\n\nadd_bos=None uses the vocabulary's default; "
     "special=True turns special-token strings in text (\"<s>\", \"<|im_end|>\") into their ids."},
    {"decode", (PyCFunction)(void (*)(void))Tokenizer_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(ids, special=False) -> str (invalid UTF-8 becomes U+FFFD)"},
    {"decode_bytes", (PyCFunction)(void (*)(void))Tokenizer_decode_bytes, METH_VARARGS | METH_KEYWORDS,
     "decode_bytes(ids, special=False) -> bytes"},
    {"token_to_piece", (PyCFunction)(void (*)(void))Tokenizer_token_to_piece, METH_VARARGS | METH_KEYWORDS,
     "token_to_piece(id, special=False) -> bytes one token adds to the output (no dummy-prefix stripping)"},
    {"token_text", (PyCFunction)Tokenizer_token_text, METH_O, "token_text(id) -> str as stored in the vocabulary"},
    {"token_score", (PyCFunction)Tokenizer_token_score, METH_O, "token_score(id) -> float"},
    {"token_type", (PyCFunction)Tokenizer_token_type, METH_O,
     "token_type(id) -> int (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)"},
    {"is_eog", (PyCFunction)Tokenizer_is_eog, METH_O, "is_eog(id) -> True when the token ends generation"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tokenizer_getset[] = {
    {"n_vocab", (getter)Tokenizer_get_n_vocab, NULL, "number of tokens", NULL},
    {"bos_id", (getter)Tokenizer_get_bos_id, NULL, "BOS id, -1 when none", NULL},
    {"eos_id", (getter)Tokenizer_get_eos_id, NULL, "EOS id, -1 when none", NULL},
    {"add_bos", (getter)Tokenizer_get_add_bos, NULL, "whether encode adds BOS by default", NULL},
    {"kind", (getter)Tokenizer_get_kind, NULL, "'spm' (SentencePiece BPE) or 'bpe' (byte-level BPE)", NULL},
    {"eog_ids", (getter)Tokenizer_get_eog_ids, NULL, "ids that end generation (EOS, EOT, end-of-turn tokens)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tokenizer_slots[] = {
    {Py_tp_new, Tokenizer_new},
    {Py_tp_dealloc, Tokenizer_dealloc},
    {Py_tp_repr, Tokenizer_repr},
    {Py_tp_methods, Tokenizer_methods},
    {Py_tp_getset, Tokenizer_getset},
    {Py_sq_length, Tokenizer_len},
    {Py_tp_doc, "Tokenizer(path): a vocabulary from a GGUF file, a SentencePiece .model or a llama2.c tokenizer.bin"},
    {0, NULL},
};

static PyType_Spec Tokenizer_spec = {
    .name = "torchless._C.Tokenizer",
    .basicsize = sizeof(Tokenizer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Tokenizer_slots,
};

int tlpy_tokenizer_init(PyObject *module) {
    Tokenizer_Type = (PyTypeObject *)PyType_FromSpec(&Tokenizer_spec);
    if (!Tokenizer_Type) return -1;
    return PyModule_AddObjectRef(module, "Tokenizer", (PyObject *)Tokenizer_Type);
}
