"""torchless: large language models on CPUs and GPUs, with every heavy operation in C.

    import torchless
    f = torchless.load("model.gguf")          # or a catalog name, a .safetensors file, an HF folder
    v = f.tensors["blk.0.attn_q.weight"]      # zero-copy TensorView
    w = v.dequantize()                        # float32 ndarray
"""

import os as _os
import warnings as _warnings

from . import _C, gguf, hub
from collections.abc import Sequence as _Sequence

from ._C import Sampler, StringArray, TensorView
from .args import ModelArgs
from .config import GenerationConfig
from .convert import convert, quantize_model
from .files import ModelFile, load
from .llama import Llama
from .model import Model
from .quant import dequantize, dtype_info, dtypes, quantize
from .tokenizer import Tokenizer
from .transformer import Transformer, create_transformer_from_config

_Sequence.register(StringArray)

if _os.environ.get("TORCHLESS_CPU", "") not in ("", "scalar", "avx2", "avx512", "neon"):
    # a typo must not pass for a test of the level it meant
    _warnings.warn(f"TORCHLESS_CPU={_os.environ['TORCHLESS_CPU']} is not scalar, avx2, avx512 or neon; ignored",
                   stacklevel=2)


def backends() -> list[dict]:
    """The devices this build can run on, GPUs first (the order device="auto" tries) and the
    CPU last: [{"backend": "cuda", "index": 0, "name": "NVIDIA H100 80GB HBM3",
    "free_bytes": ..., "total_bytes": ..., "auto": True}, ..., {"backend": "cpu", ...}]. "auto"
    says whether device="auto" may pick it: not an OpenCL CPU device (PoCL), which is there for
    testing the OpenCL backend. A backend compiled in whose runtime finds no device (no driver,
    no card) lists none."""
    return _C.devices()

__version__ = "0.1.0"

__all__ = ["backends", "gguf", "hub", "GenerationConfig", "Llama", "Model", "ModelArgs", "ModelFile", "Sampler", "StringArray", "TensorView", "Tokenizer", "Transformer", "create_transformer_from_config", "load", "convert", "quantize_model", "quantize", "dequantize", "dtype_info", "dtypes", "__version__"]
