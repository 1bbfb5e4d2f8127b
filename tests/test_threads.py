"""Threads, signals, processes (CONVENTIONS.md): the GIL is released during model work, a
context serves one thread at a time (RuntimeError otherwise), separate Models run in parallel
with the same results, Ctrl-C stops generation and prefill between layers, an abandoned
stream leaves the model usable, nothing leaks per call, and a forked child keeps working."""

import _thread
import gc
import os
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest

import torchless
from torchless.llama import Llama


@pytest.fixture(scope="module")
def stories(fixtures):
    return fixtures / "stories260K" / "stories260K.derived-f32.gguf"


def _counter_thread():
    """A Python thread that counts while it holds the GIL; returns (count(), stop())."""
    box = [0]
    running = threading.Event()
    stop = threading.Event()

    def spin():
        running.set()
        while not stop.is_set():
            box[0] += 1

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    running.wait()

    def finish():
        stop.set()
        t.join()

    return (lambda: box[0]), finish


# ---------------------------------------------------------------- 1. the GIL is released


def test_gil_is_released_during_forward_and_prefill(stories):
    """One long C call (a 500-token forward; the prefill inside the first generation step):
    another Python thread keeps counting all through it. Were the GIL held, the counter could
    only move at the call's edges (a switch interval hands it over, at most once per call)."""
    m = torchless.Model(stories, max_seq_len=512, n_threads=1)
    prompt = [1] + list(range(10, 509))
    m.forward(prompt)  # warm up
    count, finish = _counter_thread()
    try:
        during = []
        for _ in range(3):
            before = count()
            m.forward(prompt)
            during.append(count() - before)
        it = m.steps(prompt, max_new_tokens=1, temperature=0, ignore_eog=True)
        before = count()
        next(it)  # the whole prompt runs in this one step
        during.append(count() - before)
        it.close()
    finally:
        finish()
    assert min(during) > 1000, during


def test_gil_is_released_while_generating(stories):
    """A whole generate(): the counter thread advances during the call as it does while the
    main thread sleeps for about as long (at least a tenth of that: one core each)."""
    m = torchless.Model(stories, max_seq_len=512, n_threads=1)
    m.generate([1], max_new_tokens=20, temperature=0)
    count, finish = _counter_thread()
    try:
        before, t0 = count(), time.perf_counter()
        m.generate([1], max_new_tokens=200, temperature=0, ignore_eog=True)
        elapsed, during = time.perf_counter() - t0, count() - before
        before = count()
        time.sleep(elapsed)
        baseline = count() - before
    finally:
        finish()
    assert during > 1000 and during > baseline / 10, (during, baseline)


# ---------------------------------------------------------------- 2. one thread per context


def _busy_probe(m, busy, probe, attempts=10):
    """Runs busy(length) in thread A (length doubling) until probe() in this thread raises
    RuntimeError while A is inside the model; returns the error (fails after attempts). Between
    probes this thread sleeps a moment, so that on a loaded machine it does not hold the model
    whenever A comes for it (A is then the one refused, and the attempt is lost)."""
    length = 1
    for _ in range(attempts):
        started, errors = threading.Event(), []

        def work():
            started.set()
            try:
                busy(length)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        a = threading.Thread(target=work)
        a.start()
        started.wait()
        try:
            while a.is_alive():
                try:
                    probe()
                except RuntimeError as e:
                    return e
                time.sleep(0.001)
        finally:
            a.join()
        # A itself may be the one refused (the probe held the model at that moment): try again
        assert all(isinstance(e, RuntimeError) and "in use by another thread" in str(e) for e in errors), errors
        length *= 1 if errors else 2
    pytest.fail(f"thread A was never caught inside the model in {attempts} attempts")


def test_second_thread_using_a_busy_model_gets_runtime_error(stories):
    """Thread A generates (seq 0); calls from this thread while A is inside the model raise
    RuntimeError instead of interleaving (the probe uses seq 1, so it can't disturb A)."""
    m = torchless.Model(stories, max_seq_len=512, max_batch_size=2, n_threads=1)
    want = m.generate([1], max_new_tokens=400, temperature=0, ignore_eog=True)

    e = _busy_probe(m, lambda k: m.generate([1], max_new_tokens=min(400, 100 * k), temperature=0, ignore_eog=True),
                    lambda: m.forward([1], seq=1))
    assert "in use by another thread" in str(e)
    e = _busy_probe(m, lambda k: m.forward(list(range(1, 1 + min(500, 100 * k)))),
                    lambda: next(m.steps([1], max_new_tokens=1, temperature=0, seq=1)))
    assert "in use by another thread" in str(e)
    e = _busy_probe(m, lambda k: m.generate([1], max_new_tokens=min(400, 100 * k), temperature=0, ignore_eog=True),
                    lambda: m.reset(1))
    assert "in use by another thread" in str(e)
    # the lock is released afterwards and the interleaved attempts changed nothing
    assert m.generate([1], max_new_tokens=400, temperature=0, ignore_eog=True) == want


@pytest.mark.model
def test_second_thread_during_a_long_prefill_gets_runtime_error(smollm2_path):
    """SmolLM2: thread A's prompt of 100+ tokens keeps the model busy for a long while."""
    m = torchless.Model(smollm2_path, max_seq_len=512, max_batch_size=2)
    e = _busy_probe(m, lambda k: m.forward(list(range(1, 1 + min(400, 100 * k)))), lambda: m.forward([1], seq=1),
                    attempts=3)
    assert "in use by another thread" in str(e)


# ---------------------------------------------------------------- 3. two models, two threads


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, top_k=0, top_p=0.95, seed=1234)],
                         ids=["greedy", "seeded"])
def test_two_models_in_two_threads_generate_the_same_as_one_after_the_other(stories, sampling):
    prompts = [[1], [1, 365, 471]]
    models = [torchless.Model(stories, max_seq_len=512, n_threads=1) for _ in prompts]
    kw = dict(max_new_tokens=300, ignore_eog=True, **sampling)
    sequential = [[s[0] for s in m.steps(p, **kw)] for m, p in zip(models, prompts)]
    assert sequential[0] != sequential[1]
    for _ in range(3):
        out, errors = [None, None], []
        barrier = threading.Barrier(2)

        def run(k):
            try:
                barrier.wait()
                out[k] = [s[0] for s in models[k].steps(prompts[k], **kw)]
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert out == sequential


# ---------------------------------------------------------------- 4. KeyboardInterrupt


def _interrupt_when(cond, sent, timeout=60.0):
    """A thread that waits for cond(), records sent.append(snapshot of cond's state) and
    interrupts the main thread (as Ctrl-C would)."""

    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = cond()
            if v is not None:
                sent.append(v)
                _thread.interrupt_main()
                return
            time.sleep(0.0005)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.model
def test_ctrl_c_stops_generation_within_a_token_and_the_model_stays_usable(smollm2_path):
    m = torchless.Model(smollm2_path, max_seq_len=512)
    prompt = m.encode_prompt("Once upon a time")
    tokens, sent = [], []
    t = _interrupt_when(lambda: len(tokens) if len(tokens) >= 3 else None, sent)
    with pytest.raises(KeyboardInterrupt):
        for step in m.steps(prompt, max_new_tokens=400, temperature=0, ignore_eog=True):
            tokens.append(step[0])
    t.join()
    assert sent, "the interrupt was never sent"
    after = len(tokens) - sent[0]
    assert 0 <= after <= 2, f"{after} tokens came after the interrupt ({len(tokens)} in all)"
    assert len(tokens) < 400
    again = m.generate(prompt, max_new_tokens=12, temperature=0)
    fresh = torchless.Model(smollm2_path, max_seq_len=512).generate(prompt, max_new_tokens=12, temperature=0)
    assert again == fresh
    # the interrupted run's tokens are the greedy ones
    assert [s[0] for s in m.steps(prompt, max_new_tokens=len(tokens), temperature=0, ignore_eog=True)] == tokens


def _interrupt_long_call(m, call, retry_while_untouched, attempts=5):
    """Interrupts call() (a long prompt from position 3 or 0) as soon as it is inside the model;
    returns seq_len(0) afterwards: 3 (the positions before the call) or 0 (a generation cleared
    the sequence) — never the call's positions, which a cancelled batch must not commit. With
    retry_while_untouched, 3 means the interrupt came before the call and it is tried again."""
    for _ in range(attempts):
        m.reset()
        m.forward([1, 2, 3])  # seq_len(0) = 3
        go, sent = threading.Event(), []
        t = _interrupt_when(lambda: True if go.is_set() else None, sent)
        with pytest.raises(KeyboardInterrupt):
            go.set()
            call()
            time.sleep(5)  # the call ended before the interrupt came: let it land here (fails below)
        t.join()
        n = m.seq_len(0)
        assert n in (0, 3), f"a cancelled prompt left {n} positions in the cache"
        if not (retry_while_untouched and n == 3):
            return n
    pytest.fail(f"the interrupt never landed inside the call in {attempts} attempts")


@pytest.mark.model
def test_ctrl_c_during_a_long_prefill_lands_between_layers(smollm2_path):
    """The first step of a 400-token prompt (30 layers) is cut short, with nothing committed to
    the cache, and the model generates normally afterwards; same for a plain forward."""
    m = torchless.Model(smollm2_path, max_seq_len=512)
    long_prompt = [1] + [int(x) for x in np.random.default_rng(0).integers(100, 10000, 399)]
    steps = []

    def prefill():
        for s in m.steps(long_prompt, max_new_tokens=5, temperature=0):
            steps.append(s)

    t0 = time.perf_counter()
    assert _interrupt_long_call(m, prefill, True) == 0
    assert steps == []
    interrupted_s = time.perf_counter() - t0

    def forward_call():
        m.forward(long_prompt[:200], start_pos=3)

    t0 = time.perf_counter()
    assert _interrupt_long_call(m, forward_call, False) == 3
    forward_interrupted_s = time.perf_counter() - t0

    short = m.encode_prompt("The cat")
    m.reset()
    got = m.generate(short, max_new_tokens=10, temperature=0)
    t0 = time.perf_counter()
    full = torchless.Model(smollm2_path, max_seq_len=512)
    full.forward(long_prompt[:200])
    full_s = time.perf_counter() - t0
    assert got == full.generate(short, max_new_tokens=10, temperature=0)
    # both interrupted calls ended long before a full 200-token prompt would have
    assert interrupted_s < full_s / 2 and forward_interrupted_s < full_s / 2, (interrupted_s, forward_interrupted_s,
                                                                                full_s)


# ---------------------------------------------------------------- 5. abandoned streams


def test_breaking_out_of_a_stream_leaves_the_model_usable(stories):
    m = torchless.Model(stories, max_seq_len=512)
    want = m.generate([1], max_new_tokens=60, temperature=0)
    for k in range(5):
        for i, _ in enumerate(m.stream([1], max_new_tokens=400, temperature=0, ignore_eog=True)):
            if i == 10 * k:
                break
        assert m.generate([1], max_new_tokens=60, temperature=0) == want
    # an abandoned iterator still alive (held here) does not hold the model either
    held = m.stream([1], max_new_tokens=400, temperature=0, ignore_eog=True)
    next(held)
    assert m.generate([1], max_new_tokens=60, temperature=0) == want
    m.forward([1, 2, 3])
    del held
    gc.collect()
    assert m.generate([1], max_new_tokens=60, temperature=0) == want


# ---------------------------------------------------------------- 6. no leaks


def test_forward_and_stream_calls_leak_nothing(stories):
    """10,000 one-token forwards and 1,000 short streams: tracemalloc's current size grows by
    less than 256 KiB, the gc object count by less than 300, the Model's refcount not at all."""
    m = torchless.Model(stories, max_seq_len=512, n_threads=1)
    ctx = m.max_seq_len

    def forwards(n):
        for i in range(n):
            if i % ctx == 0:
                m.reset()
            m.forward([1 + i % 500], start_pos=i % ctx)

    def streams(n):
        for i in range(n):
            for _ in m.stream([1, 1 + i % 500], max_new_tokens=4, temperature=0.8, seed=i, ignore_eog=True):
                pass

    forwards(600)
    streams(50)
    gc.collect()
    refs = sys.getrefcount(m)
    tracemalloc.start()
    try:
        gc.collect()
        objects = len(gc.get_objects())
        size0, _ = tracemalloc.get_traced_memory()
        forwards(10_000)
        streams(1_000)
        gc.collect()
        size1, _ = tracemalloc.get_traced_memory()
        objects1 = len(gc.get_objects())
    finally:
        tracemalloc.stop()
    assert size1 - size0 < 256 * 1024, f"traced memory grew by {size1 - size0} bytes"
    assert objects1 - objects < 300, f"{objects1 - objects} more gc-tracked objects"
    assert sys.getrefcount(m) == refs


# ---------------------------------------------------------------- 7. fork


def test_llama_keeps_working_in_a_forked_child(stories):
    llm = Llama.build(stories, max_seq_len=256, max_batch_size=2, n_threads=2)
    prompts = [[1], [1, 365, 471]]
    parent, _ = llm.generate(prompts, max_gen_len=40, temperature=0)
    sampled, _ = llm.generate(prompts, max_gen_len=40, temperature=0.8, top_p=0.9)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest teardown; die rather than hang on a pool without workers
        import signal

        signal.alarm(60)
        try:
            a, _ = llm.generate(prompts, max_gen_len=40, temperature=0)
            b, _ = llm.generate(prompts, max_gen_len=40, temperature=0.8, top_p=0.9)
            os.write(w, repr((a, b)).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert child == repr((parent, sampled))
    assert llm.generate(prompts, max_gen_len=40, temperature=0)[0] == parent


def test_models_on_one_file_share_the_mapped_weights_with_their_own_contexts(fixtures):
    path = fixtures / "stories260K" / "stories260K.derived-f32.gguf"
    a = torchless.Llama.build(path, max_seq_len=128, max_batch_size=2)
    b = torchless.Llama.build(path, max_seq_len=64, max_batch_size=1)
    ma, mb = a.model.model, b.model.model
    assert ma.weights_id == mb.weights_id  # one mapping
    assert (ma.max_seq_len, mb.max_seq_len) == (128, 64)  # two contexts
    ta, _ = a.generate([[1]], max_gen_len=30, temperature=0.0)
    del a, ma
    import gc

    gc.collect()
    tb, _ = b.generate([[1]], max_gen_len=30, temperature=0.0)  # the survivor keeps the weights alive
    assert ta == tb


def test_generate_runs_the_whole_loop_in_c_and_equals_stream(fixtures):
    m = torchless.Model(fixtures / "stories260K" / "stories260K.derived-f32.gguf", max_seq_len=256)
    for kw in (dict(temperature=0.0), dict(temperature=0.9, seed=3), dict(temperature=0.0, stop=["park"])):
        assert m.generate([1], max_new_tokens=120, **kw) == "".join(m.stream([1], max_new_tokens=120, **kw))
