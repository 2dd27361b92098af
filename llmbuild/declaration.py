"""A stage as data: what it depends on, the function that runs it, and the one function that keys it.

`make_plan` (llmbuild/plan.py) returns the build's stages as `Stage` declarations; the engine loops over
them and a dry run prints them. A declaration's `inputs` is plain JSON (the recipe subtree the stage
reads) with two kinds of placeholder in it:
- `Ref(stage, field)`: an upstream stage's output: its outputs digest (field "digest") or a value it
  publishes (the model digest, an export's loader, the artifact metadata the license stage decided);
  known once that stage ran or was found in the cache;
- `File(path)`: a local file by content (its sha256, through the stat cache), never by its path.
`stage_key` substitutes both and hashes the sorted JSON of the stage kind, its version, llmbuild's version,
the versions of the tools it declares, and its inputs (DVC keys its run cache by the stage's lock entry
the same way). So every input a stage declares enters its key and nothing else does, and the build and
the dry run cannot disagree: both call this function on the same declaration. A key whose upstream has
not run (a dry run before a Hub download or a fine-tune) raises `Pending` naming that stage.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmbuild import __version__
from llmbuild.hashing import sha256_json
from llmbuild.plain import plain

# what stage_key puts beside a stage's inputs: an input of one of these names would shadow it
RESERVED = ("stage", "version", "llmbuild", "tools")


@dataclass(frozen=True)
class Ref:
    """An upstream stage's output, substituted when that stage has run or was found in the cache."""

    stage: str  # the upstream stage's name ("acquire", "export:cpu-gguf")
    field: str = "digest"  # "digest": its outputs digest; otherwise a value it publishes or recorded
    optional: bool = False  # a None value leaves the entry out of the key (a part older keys did not hold)


@dataclass(frozen=True)
class File:
    """A local file, keyed by content: renaming or moving it changes no key, editing it does."""

    path: str

    def __init__(self, path):
        object.__setattr__(self, "path", str(path))


class Pending(Exception):
    """A key needs the output of a stage that has not run (only a dry run gets this far)."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class NotInDryRun(Exception):
    """A stage's run that a dry run must not do (a download): the message is the status a dry run prints."""


@dataclass
class Output:
    """What a finished (or reused) stage hands the stages after it."""

    digest: str | None  # the cache entry's outputs digest; None for a stage with no cache entry
    record: dict  # what the stage returned (its record.json)
    dir: Path | None = None  # the entry's out/ folder
    values: dict = field(default_factory=dict)  # what it publishes for later keys and runs (model, model_dir, ...)
    key: str | None = None  # the key it ran (or was found) under

    def get(self, name: str):
        if name == "digest":
            return self.digest
        if name in self.values:
            return self.values[name]
        return self.record.get(name)


@dataclass
class Stage:
    """One step of the build, declared by the planner: everything that enters its key is in here."""

    name: str  # what the build prints and the manifest records: "acquire", "export:<target>"
    kind: str  # the cache namespace: "acquire", "export-<backend>"
    version: int  # bump when the stage's outputs change meaning for the same inputs
    inputs: dict  # the recipe subtree it reads, Ref(upstream outputs) and File(local files)
    tools: tuple[str, ...] = ()  # distributions whose versions enter the key
    # run(ctx, out) -> record: writes only into out (a cached stage); out is None for a stage that is
    # checked on every build and has no cache entry (a local checkpoint, the license gate)
    run: Callable[[Any, Path | None], dict] | None = None
    cached: bool = True
    target: str | None = None  # the target a stage belongs to
    skip: str | None = None  # why it will not run (its runtime is missing): known at plan time
    summary: str = ""  # one line for the dry run: what it reads or will produce

    @property
    def role(self) -> str:
        """The stage's kind without its backend: acquire, license, finetune, ..., export, verify, evaluate."""
        return self.kind.split("-")[0]

    def upstream(self) -> list[str]:
        """The stages whose outputs its key needs, in declaration order."""
        return list(dict.fromkeys(r.stage for r in _placeholders(self.inputs) if isinstance(r, Ref)))


@dataclass
class StageContext:
    """What a stage's run function gets besides its output folder (the engine makes one per stage)."""

    key: str  # this stage's key (the fine-tuning stage keeps its resume checkpoints under it)
    outputs: dict[str, Output]  # the stages that finished or were reused, by name
    stat_cache: Any  # hashing.StatCache: file digests remembered by size and mtime
    cache_root: Path  # the stage cache's folder
    build_dir: Path  # the build folder (a temporary one in a dry run)
    dry: bool  # a dry run: a stage with no cache entry runs only what needs no download
    warnings: list[str]  # warnings for the console and the card
    progress: Callable[[str], Any]  # progress(what) -> a context manager yielding cb(done, total, item)
    reads: tuple[str, ...] = ()  # the upstream stages its declaration names: the only outputs it may read

    def output(self, stage: str) -> Output:
        """An upstream stage's output; one the declaration does not name is a bug in the planner (its key
        would not follow what the stage read), so it fails loudly instead of being read."""
        if stage not in self.reads:
            raise RuntimeError(f"a stage reads {stage}'s output without declaring it (declared: "
                               f"{', '.join(self.reads) or 'none'})")
        return self.outputs[stage]

    def value(self, stage: str, name: str):
        return self.output(stage).get(name)


def stage_key(stage: Stage, value_of: Callable[[Ref], Any], digest: Callable[[Path], str]) -> str:
    """The stage's cache key: sha256 of the sorted JSON of its declaration with every placeholder
    substituted (`value_of(ref)` for an upstream output, raising Pending when it is not known yet;
    `digest(path)` for a file's sha256)."""
    clash = [k for k in RESERVED if k in stage.inputs]
    if clash:
        raise ValueError(f"stage {stage.name}: input {clash[0]!r} is a reserved key field")
    return sha256_json({"stage": stage.kind, "version": stage.version, "llmbuild": __version__,
                        "tools": tool_versions(stage.tools), **resolve(stage.inputs, value_of, digest)})


def resolve(obj, value_of: Callable[[Ref], Any], digest: Callable[[Path], str]):
    """obj with Ref and File placeholders replaced by plain JSON values."""
    if isinstance(obj, Ref):
        return plain(value_of(obj))
    if isinstance(obj, File):
        return digest(Path(obj.path))
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            value = resolve(v, value_of, digest)
            if value is None and isinstance(v, Ref) and v.optional:
                continue
            out[k] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [resolve(v, value_of, digest) for v in obj]
    return plain(obj)


def _placeholders(obj):
    if isinstance(obj, (Ref, File)):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _placeholders(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _placeholders(v)


def tool_versions(dists) -> dict[str, str]:
    return {d: _dist_version(d) for d in dists}


@functools.cache
def _dist_version(dist: str) -> str:
    # once per process: every stage key asks, and each lookup scans site-packages (a third of an unchanged
    # rebuild's time before this cache)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
