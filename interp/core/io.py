"""Atomic file writes, run metadata and provenance.

Every file sublens writes goes to a temporary name in the same directory and is renamed into
place, so an interrupted run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

_TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "transformer-lens",
    "nnsight",
    "safetensors",
    "numpy",
    "scikit-learn",
    "peft",
    "gguf",
)

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give them the usual umask mode
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
        from interp.core.rundir import register

        register(path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a damaged or foreign one is a one-line user error (`BadFileError`, also
    a ValueError), not a traceback."""
    from interp.core.errors import BadFileError

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise BadFileError(f"{p} is not UTF-8 text: it is damaged or not sublens's") from None
    except json.JSONDecodeError as err:
        raise BadFileError(
            f"{p} is not valid JSON (line {err.lineno}: {err.msg}): it is damaged or not "
            "sublens's; restore it, or rerun with another --output-path"
        ) from None


def read_json_dict(path: str | os.PathLike) -> dict[str, Any]:
    """`read_json` for files that must hold an object (configs, metadata, results)."""
    from interp.core.errors import BadFileError

    data = read_json(path)
    if not isinstance(data, dict):
        raise BadFileError(f"{path} does not hold a JSON object: it is damaged or not sublens's")
    return data


def iter_jsonl(path: str | os.PathLike, what: str = "file") -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line of a JSONL file (UTF-8, an optional
    BOM). A missing file, non-UTF-8 text (named by line and byte), a bad line or a lone surrogate
    escape is a one-line SublensError that names the line (callers check the objects' shape)."""
    from interp.core.errors import SublensError

    p = Path(path)
    if not p.is_file():
        raise SublensError(f"{what} {str(p)!r} does not exist: check the path")
    try:
        with p.open(encoding="utf-8-sig") as f:  # a byte-order mark is not part of line 1
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise SublensError(
                        f"{p}:{lineno}: not valid JSON ({err.msg}): fix or remove that line"
                    ) from None
                _check_text(obj, f"{p}:{lineno}")
                yield lineno, obj
    except UnicodeDecodeError:
        raise _not_utf8(p) from None


def _not_utf8(path: Path) -> Exception:
    """The error for a file that does not decode as UTF-8, naming the first bad line and byte."""
    from interp.core.errors import SublensError

    offset = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return SublensError(
                    f"{path}:{lineno}: not UTF-8 text (byte {offset + err.start} of the file): "
                    "save it as UTF-8"
                )
            offset += len(raw)
    return SublensError(f"{path} is not UTF-8 text: save it as UTF-8")


def _check_text(obj: Any, where: str) -> None:
    """Refuse lone surrogates (`"\\ud800"` escapes): valid JSON but not text, so tokenizers and
    hashing would fail on them later, far from the line that holds them."""
    from interp.core.errors import SublensError

    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        bad = err.object[err.start : err.end]
        code = ", ".join(f"\\u{ord(c):04x}" for c in bad)
        raise SublensError(
            f"{where}: holds a lone surrogate escape ({code}), which is not text: remove it or "
            "write the character itself"
        ) from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """A stable hash of a resolved config: two runs with the same hash compute the same thing."""
    return sha256_text(json.dumps(config, sort_keys=True, default=_json_default))[:16]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the sublens checkout, if it is one (for provenance in results files)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
