"""Loads the shared test vectors (../shared/vectors beside the checkout) and records which
entries the conformance tests consumed, so that an unchecked entry fails the suite."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
VECTOR_DIR = Path(os.environ.get("BMNODE_VECTORS", ROOT.parent / "shared" / "vectors"))

_cache: dict[str, dict[str, Any]] = {}
#: (file stem, section) -> set of entry indices handed to a test
CONSUMED: dict[tuple[str, str], set[int]] = {}


def load(name: str) -> dict[str, Any]:
    """The parsed JSON of ``<name>.json``; a missing vector directory is a hard failure."""
    if name not in _cache:
        path = VECTOR_DIR / f"{name}.json"
        if not path.is_file():
            pytest.fail(f"test vectors not found at {path} (set BMNODE_VECTORS or put shared/ beside the checkout)")
        with open(path, encoding="utf-8") as f:
            _cache[name] = json.load(f)
    return _cache[name]


def files() -> list[str]:
    return sorted(p.stem for p in VECTOR_DIR.glob("*.json"))


def sections(name: str) -> list[str]:
    """Top-level keys of a vector file whose value is a list of entries (or a dict entry)."""
    data = load(name)
    return [k for k, v in data.items() if isinstance(v, list) or (isinstance(v, dict) and k != "description")]


def entries(name: str, section: str) -> list[Any]:
    """All entries of one section; a dict section counts as one entry."""
    value = load(name)[section]
    return value if isinstance(value, list) else [value]


def params(name: str, section: str) -> list[Any]:
    """pytest parameters for every entry of a section, id'd by index and comment/name."""
    out = []
    for i, e in enumerate(entries(name, section)):
        label = ""
        if isinstance(e, dict):
            label = str(e.get("name") or e.get("comment") or "")[:40]
        out.append(pytest.param((name, section, i, e), id=f"{section}[{i}]{(' ' + label) if label else ''}"))
    return out


def take(p: tuple[str, str, int, Any]) -> Any:
    """Mark a parametrised entry as checked and return it. Call after the assertions pass."""
    name, section, i, e = p
    CONSUMED.setdefault((name, section), set()).add(i)
    return e


def iterate(name: str, section: str) -> Iterator[Any]:
    """Iterate a section inside one test, marking each entry as it is handed out."""
    for i, e in enumerate(entries(name, section)):
        yield e
        CONSUMED.setdefault((name, section), set()).add(i)
