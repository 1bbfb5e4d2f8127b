"""Model files: GGUF, safetensors (single, sharded index, Hugging Face folder)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from . import _C
from ._C import TensorView


class TensorMap(Mapping):
    """The tensors of a file by name, in file order; views are made on first access."""

    def __init__(self, handle: _C.WeightsFile):
        self._handle = handle
        self._names = handle.tensor_names()
        self._views: dict[str, TensorView] = {}

    def __getitem__(self, name: str) -> TensorView:
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self._handle.tensor(name)
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<{len(self)} tensors>"


class ModelFile:
    """An opened model file. Metadata and tensor views are read where they lie (mmap):
    opening copies nothing, and views stay valid after the file is closed."""

    def __init__(self, path: str):
        self._handle = _C.WeightsFile(path)
        self.path: str = path
        self.format: str = self._handle.format
        self.version: int = self._handle.version
        self.alignment: int = self._handle.alignment
        self.file_size: int = self._handle.file_size
        self._metadata: dict[str, Any] | None = None
        self._metadata_types: dict[str, str] | None = None
        self._tensors: TensorMap | None = None

    @property
    def metadata(self) -> dict[str, Any]:
        """Key -> value: int, float, bool, str; arrays of numbers as NumPy arrays, of strings as lists."""
        if self._metadata is None:
            self._metadata = self._handle.metadata()
        return self._metadata

    @property
    def metadata_types(self) -> dict[str, str]:
        """Key -> GGUF value type name ("uint32", "array[string]", ...)."""
        if self._metadata_types is None:
            self._metadata_types = self._handle.metadata_types()
        return self._metadata_types

    @property
    def tensors(self) -> TensorMap:
        """Name -> zero-copy TensorView, in file order (views are made on first access)."""
        if self._tensors is None:
            self._tensors = TensorMap(self._handle)
        return self._tensors

    @property
    def architecture(self) -> str | None:
        """general.architecture ("llama", "gemma3", ...), or None when the file does not say."""
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._handle.closed

    def close(self) -> None:
        """Release the file; TensorViews already handed out stay valid (they keep the mapping)."""
        self._handle.close()

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._handle.n_tensors} tensors"
        return f"<torchless.ModelFile {self.format} {self.path!r} ({state})>"


def _resolve_folder(path: str) -> str:
    """The file to open inside a Hugging Face style folder."""
    for name in ("model.safetensors.index.json", "model.safetensors"):
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    found = sorted(f for f in os.listdir(path) if f.endswith((".gguf", ".safetensors")))
    if len(found) == 1:
        return os.path.join(path, found[0])
    if not found:
        raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or .gguf file in the folder")
    raise ValueError(f"{path}: several model files in the folder ({', '.join(found)}); name one")


def load(path_or_name: str | os.PathLike) -> ModelFile:
    """Open a model file: a .gguf or .safetensors path, a safetensors index (*.index.json),
    a Hugging Face folder, or a catalog name (see `torchless.hub`)."""
    path = os.fspath(path_or_name)
    if not os.path.exists(path):
        from . import hub

        path = hub.resolve(path)
    if os.path.isdir(path) and not _is_hf_folder(path):
        path = _resolve_folder(path)  # a folder of model files
    return ModelFile(path)


def _is_hf_folder(path: str) -> bool:
    """config.json beside model.safetensors or its index: opened whole, with GGUF names and keys."""
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, n)) for n in ("model.safetensors", "model.safetensors.index.json"))
