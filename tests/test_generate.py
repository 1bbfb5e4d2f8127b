"""The generation loop in C, through torchless.Model: real models' known outputs, stop
strings, lengths, seeds, and bad input that must leave the model usable."""

import numpy as np
import pytest

import torchless
from torchless.gguf import Value


@pytest.fixture(scope="module")
def stories(fixtures):
    return torchless.Model(fixtures / "stories260K" / "stories260K.derived-f32.gguf", max_seq_len=512)


@pytest.fixture(scope="module")
def expected_stories(fixtures):
    return (fixtures / "stories260K" / "stories260K.expected_stdout.txt").read_text()


def test_stories260k_greedy_200_steps_prints_the_known_text(stories, expected_stories):
    # run.c stories260K.bin -z tok512.bin -t 0.0 -n 200: BOS at position 0, then 200 sampled tokens
    assert stories.generate([1], max_new_tokens=200, temperature=0) == expected_stories


def test_stories260k_greedy_through_forward_matches_generate(stories, expected_stories):
    ids = [1]
    logits = stories.forward(ids, start_pos=0)
    for _ in range(40):
        ids.append(int(np.argmax(logits[-1])))
        logits = stories.forward(ids[-1:], start_pos=len(ids) - 1)
    text = stories.tokenizer.decode(ids[1:])
    assert expected_stories.startswith(text)


def test_stop_strings_end_generation_and_are_removed(stories, expected_stories):
    for stop in ["park", "Lily. She", "ball.", "\n"]:
        out = stories.generate([1], max_new_tokens=200, temperature=0, stop=[stop])
        cut = expected_stories.index(stop)
        assert out == expected_stories[:cut], stop


def test_stream_pieces_concatenate_to_the_whole_text(stories, expected_stories):
    pieces = list(stories.stream([1], max_new_tokens=60, temperature=0))
    assert len(pieces) > 10
    assert expected_stories.startswith("".join(pieces))


def test_max_new_tokens_counts_tokens(stories):
    steps = list(stories.steps([1], max_new_tokens=7, temperature=0))
    assert len(steps) == 7 and steps[-1][3] == "length"
    assert all(s[3] is None for s in steps[:-1])


def test_same_seed_same_text_other_seed_other_text(stories, seed):
    a = stories.generate("Once upon a time", max_new_tokens=40, temperature=1.0, seed=seed)
    b = stories.generate("Once upon a time", max_new_tokens=40, temperature=1.0, seed=seed)
    c = stories.generate("Once upon a time", max_new_tokens=40, temperature=1.0, seed=seed + 1)
    assert a == b
    assert a != c


def test_logprobs_are_those_of_the_raw_logits(stories):
    steps = list(stories.steps([1, 403], max_new_tokens=5, temperature=0.7, seed=3))
    ids = [1, 403] + [s[0] for s in steps]
    stories.reset()
    logits = stories.forward(ids[:-1]).astype(np.float64)
    for i, (token, logprob, _, _) in enumerate(steps):
        row = logits[1 + i]
        expect = row[token] - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert logprob == pytest.approx(expect, abs=1e-4)


def test_context_overflow_is_an_error_and_the_model_stays_usable(stories, expected_stories):
    with pytest.raises(ValueError, match="exceeds the context"):
        list(stories.steps([1] * 500, max_new_tokens=100))
    with pytest.raises(ValueError, match="beyond the context"):
        stories.forward([1] * 513)
    assert stories.generate([1], max_new_tokens=20, temperature=0) == expected_stories[:len(
        stories.generate([1], max_new_tokens=20, temperature=0))]


@pytest.mark.parametrize("bad, match", [
    (dict(prompt=[512]), "out of range"),
    (dict(prompt=[-1]), "out of range"),
    (dict(prompt=[]), "empty"),
    (dict(prompt=[1], temperature=-1.0), "temperature"),
    (dict(prompt=[1], top_p=0.0), "top_p"),
    (dict(prompt=[1], top_p=1.5), "top_p"),
    (dict(prompt=[1], top_k=-1), "top_k"),
    (dict(prompt=[1], max_new_tokens=-1), "max_new_tokens"),
    (dict(prompt=[1], stop=[""]), "empty"),
])
def test_bad_generation_arguments_raise_and_leave_the_model_usable(stories, expected_stories, bad, match):
    prompt = bad.pop("prompt")
    with pytest.raises(ValueError, match=match):
        list(stories.steps(prompt, **bad))
    assert expected_stories.startswith(stories.generate([1], max_new_tokens=10, temperature=0))


def test_forward_rejects_bad_positions_and_ids(stories):
    stories.reset()
    with pytest.raises(ValueError, match="out of range"):
        stories.forward([1, 600])
    with pytest.raises(ValueError, match="does not continue"):
        stories.forward([1], start_pos=5)
    with pytest.raises(TypeError):
        stories.forward("hello")
    assert stories.forward([1, 2]).shape == (2, 512)


def test_unsupported_architecture_is_named(tmp_path):
    path = tmp_path / "bert.gguf"
    torchless.gguf.write(path, {"general.architecture": "bert", "bert.block_count": Value(1, "uint32")},
                         {"token_embd.weight": np.zeros((4, 8), np.float32)})
    with pytest.raises(ValueError, match="architecture 'bert' is not supported yet"):
        torchless.Model(path)


@pytest.mark.model
def test_smollm2_answers_paris_with_its_chat_template(smollm2_path):
    # asked "What is the capital of France?", this Q4_1 file answers "L'Étoile, la ..." with 8-bit
    # activations, here and in llama.cpp alike (tests/test_llama.py): so ask it to name the city
    m = torchless.Model(smollm2_path, max_seq_len=256, n_threads=2)
    prompt = m.apply_chat_template([{"role": "user", "content": "Name the capital of France."}])
    assert prompt.startswith("<|im_start|>")
    answer = m.generate(prompt, max_new_tokens=24, temperature=0)
    assert "Paris" in answer, answer


def test_model_keeps_working_in_a_forked_child(fixtures, expected_stories):
    """multiprocessing forks by default on Linux: the child's thread pool must start afresh."""
    import os

    m = torchless.Model(fixtures / "stories260K" / "stories260K.derived-f32.gguf", max_seq_len=256, n_threads=2)
    parent = m.generate([1], max_new_tokens=30, temperature=0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: generate again, report, exit without running pytest's teardown
        import signal

        signal.alarm(60)  # a pool that waits for workers the child does not have would hang: die instead
        try:
            os.write(w, m.generate([1], max_new_tokens=30, temperature=0).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert child == parent and expected_stories.startswith(parent)
    assert m.generate([1], max_new_tokens=30, temperature=0) == parent  # the parent's pool is intact
