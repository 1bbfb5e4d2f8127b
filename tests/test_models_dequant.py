"""Every tensor of both packaged models dequantizes exactly as the `gguf` package
(llama.cpp's NumPy reference) dequantizes it."""

import gguf
import numpy as np
import pytest

import torchless


def compare_all_tensors(path):
    reader = gguf.GGUFReader(path)
    seen = {}
    with torchless.load(path) as f:
        for t in reader.tensors:
            view = f.tensors[t.name]
            ours = view.dequantize()
            theirs = gguf.quants.dequantize(t.data, t.tensor_type).reshape(view.shape)
            assert ours.shape == theirs.shape, t.name
            assert ours.dtype == np.float32
            # bit for bit: the same float32 operations in the same order
            if not np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32)):
                diff = np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-30)
                pytest.fail(f"{t.name} ({view.dtype}): not bit-exact, normwise error {diff:.3g}")
            seen[view.dtype] = seen.get(view.dtype, 0) + 1
    return seen


@pytest.mark.model
def test_every_smollm2_tensor_dequantizes_like_gguf(smollm2_path):
    seen = compare_all_tensors(smollm2_path)
    assert {"q4_1", "f32"} <= set(seen), seen


@pytest.mark.model
def test_every_gemma3_tensor_dequantizes_like_gguf(gemma3_path):
    seen = compare_all_tensors(gemma3_path)
    assert {"q4_k", "q6_k", "f32"} <= set(seen), seen
