"""Stamps: what lets a second ``edgeship quickstart`` reuse the first run's work, and only trusted work.

Every unit of work (train one model, convert one artifact, bench it...) writes its outputs
atomically and then, last, a stamp ``OUT/.quickstart/<step>.<unit>.json`` holding:

- ``key``: a hash of the unit's recipe (its parameters, the edgeship version) and of the
  fingerprints of the units it reads from (so rebuilding a unit rebuilds what depends on it);
- ``outputs``: the sha256 of every output file (or only its existence, for files a later step
  updates, such as manifests that verify and bench annotate);
- ``result``: what the unit measured (JSON), so the report is rebuilt without recomputing.

A unit is reused only when its stamp exists, the key matches and every output still has the
recorded content. An interrupted run leaves outputs without a stamp (or a stale stamp whose
hashes no longer match), so the re-run redoes that unit instead of trusting a partial result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError
from ..fileio import atomic_write_json, sha256_file, to_jsonable

log = logging.getLogger(__name__)

STAMP_DIR = ".quickstart"
STAMP_VERSION = 1


@dataclass
class Unit:
    """One piece of a step: ``run(ctx)`` writes ``outputs`` (paths relative to the output folder) and returns a result.

    ``hashed`` outputs are checked by content on reuse; ``present`` outputs only by existence
    (they are files a later step rewrites, e.g. manifests). ``deps`` are unit ids (``step.name``)
    whose fingerprints enter this unit's key; ``inputs`` are files (relative paths) whose current
    content enters it too (e.g. a manifest that verify and bench have annotated).
    """

    step: str
    name: str
    recipe: dict[str, Any]
    run: Callable[[Any], dict[str, Any]]
    hashed: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.step}.{self.name}"


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def output_hash(path: Path) -> str | None:
    """Content hash of a file, or of a folder (relative names + file hashes); None when missing."""
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode() + b"\0" + bytes.fromhex(sha256_file(f)))
        return h.hexdigest()
    return None


class StampStore:
    """Reads and writes the stamps of one output folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.dir = self.out / STAMP_DIR

    def path(self, unit: Unit) -> Path:
        return self.dir / f"{unit.id}.json"

    def key(self, unit: Unit, fingerprints: dict[str, str]) -> str:
        missing = [d for d in unit.deps if d not in fingerprints]
        if missing:
            raise InputError(f"quickstart unit {unit.id} depends on {missing}, which did not run before it")
        from .. import __version__

        return digest({"v": STAMP_VERSION, "edgeship": __version__, "unit": unit.id, "recipe": unit.recipe,
                       "deps": {d: fingerprints[d] for d in sorted(unit.deps)},
                       "inputs": {f: output_hash(self.out / f) for f in sorted(unit.inputs)}})

    def load_valid(self, unit: Unit, key: str) -> dict[str, Any] | None:
        """The stamp when the unit can be reused as it is, else None (with the reason logged)."""
        p = self.path(unit)
        if not p.is_file():
            return None
        try:
            stamp = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            log.info("%s: unreadable stamp (%s); redoing", unit.id, e)
            return None
        if stamp.get("key") != key:
            log.info("%s: inputs changed; redoing", unit.id)
            return None
        for rel, want in (stamp.get("outputs") or {}).items():
            have = output_hash(self.out / rel) if want is not None else (True if (self.out / rel).exists() else None)
            if have is None or (want is not None and have != want):
                log.info("%s: output %s is missing or changed; redoing", unit.id, rel)
                return None
        return stamp

    def write(self, unit: Unit, key: str, result: dict[str, Any], seconds: float) -> dict[str, Any]:
        outputs: dict[str, str | None] = {}
        for rel in unit.hashed:
            h = output_hash(self.out / rel)
            if h is None:
                raise InputError(f"quickstart unit {unit.id} did not write its output {self.out / rel}")
            outputs[rel] = h
        for rel in unit.present:
            if not (self.out / rel).exists():
                raise InputError(f"quickstart unit {unit.id} did not write its output {self.out / rel}")
            outputs[rel] = None
        stamp = {"key": key, "unit": unit.id, "build": uuid.uuid4().hex, "outputs": outputs,
                 "result": to_jsonable(result), "seconds": round(seconds, 3)}
        atomic_write_json(self.path(unit), stamp)
        return stamp

    def clear(self) -> None:
        """Forget every stamp (``--force``): outputs are then rebuilt and overwritten."""
        if self.dir.is_dir():
            for p in self.dir.glob("*.json"):
                os.unlink(p)


def fingerprint(stamp: dict[str, Any]) -> str:
    """What downstream keys depend on: this unit's key, its outputs' hashes and which build made them.

    The build id makes every rebuild cascade to the units that read it (a re-converted artifact
    is verified and benchmarked again, even when its bytes came out identical: its manifest was
    rewritten without their results).
    """
    return digest({"key": stamp["key"], "build": stamp.get("build"), "outputs": stamp.get("outputs", {})})
