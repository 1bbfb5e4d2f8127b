"""The public API is documented, and python/torchless/_C.pyi matches the extension.

1. Every name in torchless.__all__ and every public method/property of the public
   classes has a non-empty docstring (KNOWN_UNDOCUMENTED lists the ones still missing;
   a new undocumented name fails the test, and so does a stale allowlist entry).
2. The stub and torchless._C agree: every function, class and class member in the stub
   exists at runtime, and every public runtime name of the module and of its types is
   in the stub.
"""

import ast
import inspect
import sys
import types
from pathlib import Path

import pytest

import torchless
from torchless import _C

PUBLIC_CLASSES = ["ModelFile", "TensorView", "StringArray", "Tokenizer", "Sampler", "Model", "Transformer", "Llama",
                  "ModelArgs", "GenerationConfig"]

# Known gaps at the time this test was written; document them and delete the entry.
# Do not add to this list: a new public name needs a docstring.
KNOWN_UNDOCUMENTED: set[str] = set()

# names in __all__ that are plain values, not documentable objects
NOT_DOCUMENTABLE = {"__version__"}


def _doc(obj) -> str:
    return (getattr(obj, "__doc__", None) or "").strip()


def _public_members(cls):
    """(name, descriptor) of the public methods and properties of cls and its bases
    (without object's): what the class itself adds to the API."""
    seen = {}
    for base in cls.__mro__:
        if base is object:
            continue
        for name, attr in vars(base).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(attr, (staticmethod, classmethod)):
                attr = attr.__func__
            if isinstance(attr, (types.FunctionType, property, types.MethodDescriptorType,
                                 types.GetSetDescriptorType, types.MemberDescriptorType,
                                 types.BuiltinFunctionType, types.WrapperDescriptorType,
                                 types.ClassMethodDescriptorType)):
                seen[name] = attr
    return seen


def _undocumented():
    missing = set()
    for name in torchless.__all__:
        if name in NOT_DOCUMENTABLE:
            continue
        if not _doc(getattr(torchless, name)):
            missing.add(name)
    for cname in PUBLIC_CLASSES:
        cls = getattr(torchless, cname)
        if not _doc(cls):
            missing.add(cname)
        for name, attr in _public_members(cls).items():
            if not _doc(attr):
                missing.add(f"{cname}.{name}")
    return missing


def test_public_classes_are_exported():
    for cname in PUBLIC_CLASSES:
        assert isinstance(getattr(torchless, cname), type), cname


def test_every_public_name_has_a_docstring():
    missing = _undocumented()
    new = sorted(missing - KNOWN_UNDOCUMENTED)
    assert not new, f"public names without a docstring: {new}"


def test_known_undocumented_list_is_current():
    fixed = sorted(KNOWN_UNDOCUMENTED - _undocumented())
    assert not fixed, f"these now have docstrings; remove them from KNOWN_UNDOCUMENTED: {fixed}"


# ---- the stub ----

STUB = Path(torchless.__file__).with_name("_C.pyi")
# the stub declares these for type checkers; the interpreter has them only from 3.12
NEWER_PYTHON = {"__buffer__"} if sys.version_info < (3, 12) else set()


def _stub():
    """{name: None for a function, or the set of member names for a class}, public names only."""
    tree = ast.parse(STUB.read_text(), str(STUB))
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            out[node.name] = None
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            members = set()
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
                elif isinstance(item, ast.Assign):
                    members.update(t.id for t in item.targets if isinstance(t, ast.Name))
            out[node.name] = members
    return out


def test_stub_is_installed_with_the_package():
    assert STUB.is_file(), STUB
    assert STUB.with_name("py.typed").is_file()


def test_stub_names_exist_at_runtime():
    for name, members in _stub().items():
        assert hasattr(_C, name), f"_C.pyi declares {name}, torchless._C has no such name"
        obj = getattr(_C, name)
        if members is None:
            assert callable(obj) and not isinstance(obj, type), f"_C.pyi declares {name} a function"
            continue
        assert isinstance(obj, type), f"_C.pyi declares {name} a class"
        for m in sorted(members - NEWER_PYTHON):
            assert hasattr(obj, m), f"_C.pyi declares {name}.{m}, the runtime type has no such attribute"


def test_runtime_names_are_in_the_stub():
    stub = _stub()
    public = sorted(n for n in dir(_C) if not n.startswith("_"))
    missing = [n for n in public if n not in stub]
    assert not missing, f"torchless._C names missing from _C.pyi: {missing}"
    for name in public:
        obj = getattr(_C, name)
        if not isinstance(obj, type):
            assert stub[name] is None, f"{name} is a function at runtime"
            continue
        assert stub[name] is not None, f"{name} is a class at runtime"
        runtime = {m for m in vars(obj) if not m.startswith("_")}
        absent = sorted(runtime - stub[name])
        assert not absent, f"torchless._C.{name} members missing from _C.pyi: {absent}"


def test_stub_signatures_match_where_the_runtime_has_one():
    """Builtins with a __text_signature__ (the '--' docstring form) must name the same parameters."""
    tree = ast.parse(STUB.read_text())
    funcs = [(n, getattr(_C, n.name)) for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")):
        rt = getattr(_C, cls.name)
        funcs += [(f, vars(rt)[f.name]) for f in cls.body
                  if isinstance(f, ast.FunctionDef) and not f.name.startswith("_") and f.name in vars(rt)]
    for node, obj in funcs:
        try:
            sig = inspect.signature(obj)
        except (ValueError, TypeError):
            continue
        a = node.args
        stub_params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
        runtime_params = [p for p in sig.parameters if p not in ("self", "cls", "$self", "$module")]
        assert stub_params == runtime_params, f"{node.name}: stub {stub_params}, runtime {runtime_params}"


@pytest.mark.parametrize("name", ["dequantize", "quantize", "gguf_write"])
def test_stub_keyword_names_are_accepted(name):
    """The C kwlists: calling with the stub's keyword names gets past argument parsing."""
    node = next(n for n in ast.parse(STUB.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == name)
    kwargs = {p.arg: object() for p in node.args.args}
    with pytest.raises(Exception) as e:
        getattr(_C, name)(**kwargs)
    assert "keyword argument" not in str(e.value), str(e.value)


def _stub_method(cls_name, meth):
    cls = next(n for n in ast.parse(STUB.read_text()).body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    return next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == meth)


def test_stub_sampler_defaults_are_the_runtime_defaults():
    """Sampler's keyword-only names and defaults in the stub are the C ones: building a
    Sampler from the stub's defaults equals building one with none, property by property."""
    a = _stub_method("Sampler", "__new__").args
    kwargs = {p.arg: ast.literal_eval(d) for p, d in zip(a.kwonlyargs, a.kw_defaults)}
    assert a.kwonlyargs and len(kwargs) == len(a.kwonlyargs)
    explicit, default = _C.Sampler(32, **kwargs), _C.Sampler(32)
    for name, value in kwargs.items():
        assert getattr(explicit, name) == getattr(default, name), name
        if isinstance(value, float):
            assert getattr(default, name) == pytest.approx(value), name
        else:
            assert getattr(default, name) == value, name
