"""GenerationConfig: defaults, presets, builders, validation, and driving Model.generate."""

import dataclasses
import inspect

import pytest

import torchless
from torchless import GenerationConfig

DEFAULTS = dict(max_new_tokens=256, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repetition_penalty=1.0,
                presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64, stop_sequences=(), seed=None,
                logprobs=False, top_logprobs=0, skip_special_tokens=True)


def test_defaults():
    c = GenerationConfig()
    assert dataclasses.asdict(c) == DEFAULTS
    assert [f.name for f in dataclasses.fields(c)] == list(DEFAULTS)


def test_frozen():
    c = GenerationConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.temperature = 0.1


def test_presets():
    g = GenerationConfig.greedy()
    assert (g.temperature, g.top_k, g.top_p, g.min_p, g.repetition_penalty) == (0.0, 0, 1.0, 0.0, 1.0)
    assert GenerationConfig.balanced() == GenerationConfig()
    c = GenerationConfig.creative()
    assert (c.temperature, c.top_p, c.min_p, c.top_k, c.repetition_penalty) == (1.0, 0.98, 0.02, 0, 1.05)
    assert GenerationConfig.greedy(max_new_tokens=5).max_new_tokens == 5
    assert GenerationConfig.creative(top_k=10).top_k == 10
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig.creative(top_p=0.0)


@pytest.mark.parametrize("name, value", [
    ("max_new_tokens", 7), ("temperature", 0.3), ("top_k", 5), ("top_p", 0.5), ("min_p", 0.1),
    ("repetition_penalty", 1.2), ("presence_penalty", 0.5), ("frequency_penalty", -0.5), ("penalty_last_n", -1),
    ("stop_sequences", ("a", "b")), ("seed", 2**64 - 1), ("logprobs", True), ("top_logprobs", 3),
    ("skip_special_tokens", False),
])
def test_builders_are_immutable(name, value):
    c = GenerationConfig()
    builder = getattr(c, f"with_{name}")
    d = builder(value)
    assert getattr(d, name) == value and d is not c
    assert c == GenerationConfig()  # the original is untouched
    assert dataclasses.replace(d, **{name: DEFAULTS[name]}) == c
    assert builder.__name__ == f"with_{name}"
    assert name in builder.__doc__
    assert list(inspect.signature(builder).parameters) == ["value"]


def test_every_field_has_a_builder():
    for f in dataclasses.fields(GenerationConfig):
        assert callable(getattr(GenerationConfig, f"with_{f.name}"))


def test_builders_validate():
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig().with_temperature(-1.0)


def test_with_stop_adds():
    c = GenerationConfig()
    d = c.with_stop("\n\n")
    assert d.stop_sequences == ("\n\n",) and c.stop_sequences == ()
    e = d.with_stop(["User:", "\n\n"], "###")
    assert e.stop_sequences == ("\n\n", "User:", "###")
    assert d.stop_sequences == ("\n\n",)
    assert c.with_stop(iter(["a", "b"])).stop_sequences == ("a", "b")
    assert c.with_stop_sequences("x").stop_sequences == ("x",)  # a str is one sequence
    assert d.with_stop_sequences(()).stop_sequences == ()  # replaces
    with pytest.raises(ValueError, match="stop_sequences"):
        c.with_stop("")
    with pytest.raises(ValueError, match="stop_sequences"):
        c.with_stop(["ok", 3])


def test_stop_sequences_normalized():
    assert GenerationConfig(stop_sequences=["a", "b"]).stop_sequences == ("a", "b")
    assert GenerationConfig(stop_sequences="ab").stop_sequences == ("ab",)
    hash(GenerationConfig(stop_sequences=["a"]))  # hashable: stored as a tuple


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature="hot"), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_k=1.5), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.01), "top_p"),
    (dict(top_p=float("nan")), "top_p"),
    (dict(min_p=-0.01), "min_p"),
    (dict(min_p=1.0), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty"),
    (dict(presence_penalty=float("nan")), "presence_penalty"),
    (dict(frequency_penalty=float("-inf")), "frequency_penalty"),
    (dict(penalty_last_n=-2), "penalty_last_n"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=True), "max_new_tokens"),
    (dict(stop_sequences=("",)), "stop_sequences"),
    (dict(stop_sequences=(b"x",)), "stop_sequences"),
    (dict(stop_sequences=5), "stop_sequences"),
    (dict(seed=-1), "seed"),
    (dict(seed=2**64), "seed"),
    (dict(seed=1.0), "seed"),
    (dict(top_logprobs=-1), "top_logprobs"),
    (dict(logprobs=1), "logprobs"),
    (dict(skip_special_tokens=None), "skip_special_tokens"),
])
def test_validation_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**kwargs)


def test_edge_values_accepted():
    GenerationConfig(temperature=0, top_k=0, top_p=1.0, min_p=0.0, penalty_last_n=-1, max_new_tokens=0, seed=0)


def test_to_kwargs_matches_model_steps():
    kw = GenerationConfig(repetition_penalty=1.1, stop_sequences=["\n"], seed=3).to_kwargs()
    assert kw == dict(max_new_tokens=256, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1,
                      presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64, seed=3, stop=["\n"],
                      special=False)
    assert set(kw) <= set(inspect.signature(torchless.Model.steps).parameters)
    assert GenerationConfig().to_kwargs()["stop"] is None
    assert GenerationConfig(skip_special_tokens=False).to_kwargs()["special"] is True


@pytest.fixture(scope="module")
def stories(fixtures):
    return torchless.Model(fixtures / "stories260K" / "stories260K.derived-f32.gguf", max_seq_len=256)


@pytest.fixture(scope="module")
def expected_stories(fixtures):
    return (fixtures / "stories260K" / "stories260K.expected_stdout.txt").read_text()


def test_greedy_drives_model_generate(stories, expected_stories):
    out = stories.generate([1], **GenerationConfig.greedy().with_max_new_tokens(40).to_kwargs())
    assert len(out) > 20 and expected_stories.startswith(out)
    # a stop sequence from the config ends the text before it
    cut = stories.generate([1], **GenerationConfig.greedy(max_new_tokens=200).with_stop("Lily").to_kwargs())
    assert cut == expected_stories[:expected_stories.index("Lily")]


def test_seeded_sampling_is_reproducible(stories):
    cfg = GenerationConfig.creative(max_new_tokens=30, seed=1234)
    a = stories.generate([1], **cfg.to_kwargs())
    assert a == stories.generate([1], **cfg.to_kwargs()) and a
    b = stories.generate([1], **GenerationConfig(max_new_tokens=30, seed=99, repetition_penalty=1.3,
                                                 presence_penalty=0.2, frequency_penalty=0.1).to_kwargs())
    assert isinstance(b, str) and b
