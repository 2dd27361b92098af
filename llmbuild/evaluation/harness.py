"""lm-evaluation-harness tasks in a build: checked at plan time, keyed by content, run through each runtime.

The harness owns the tasks (its registry, or the user's YAML under `eval.harness.include_path`), the
prompts, the few-shot sampling, the metrics and their standard errors; llmbuild supplies the model,
one `llmbuild.evaluation.harness_lm.RuntimeLM` per runtime, and runs `lm_eval.simple_evaluate` with
it. Everything is offline: datasets come from local files or the `datasets` cache
(HF_DATASETS_OFFLINE), never the Hub.

- `check`: at plan time, one line and exit 2 for an unknown task (with the closest names), a task
  whose data is not present offline (naming the task and where it looked), a num_fewshot above what
  the task's few-shot split holds, a sampling task (the runtimes decode greedily), a missing
  include_path or a missing lm-eval;
- `key_parts`: what the results depend on: lm-eval's version, the settings, each task's config and a
  digest of the documents it evaluates and draws shots from, and the include_path files;
- `evaluate`: the record of one runtime (per task: n-shot, documents, version, each metric's value,
  stderr and direction);
- `compare` / `gates`: an artifact's scores beside the source's, and the `max_drop` gates.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from llmbuild.errors import InvalidInput

INSTALL_HINT = "pip install 'llmbuild[harness]'"
MAX_AUTO_LENGTH = 2048  # eval.harness.max_length 0: the model's context up to this (logits memory)
_MANAGERS: dict = {}  # (include_path, with registry) -> TaskManager: indexing the registry takes seconds


def enabled(cfg) -> bool:
    return bool(cfg.tasks)


def version(dist: str = "lm-eval") -> str:
    """The installed version of lm-eval (or of another distribution), "absent" when not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@contextmanager
def quiet_offline():
    """The harness offline and silent for a block: datasets from files or the cache only, no progress
    bars and no info logging (a build prints one line per stage)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # for datasets imported later (it reads this at import)
    import datasets
    import tqdm.std

    datasets.config.HF_HUB_OFFLINE = True  # the one datasets consults at load time (datasets 3-5)
    if hasattr(datasets.config, "HF_DATASETS_OFFLINE"):
        datasets.config.HF_DATASETS_OFFLINE = True
    datasets.disable_progress_bars()
    loggers = [logging.getLogger(n) for n in ("lm_eval", "lm-eval", "datasets", "evaluate")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    init = tqdm.std.tqdm.__init__

    def silent(self, *a, **k):  # the harness opens bars without a way to turn them off
        k["disable"] = True
        init(self, *a, **k)

    tqdm.std.tqdm.__init__ = silent
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = init
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


@contextmanager
def _no_environment_report():
    """simple_evaluate describes the machine (torch's collect_env: about 2 s a call) and runs `git
    describe` in the working folder; the build's manifest records the machine once, so both are left
    out of each of its runs."""
    import lm_eval.evaluator as ev

    saved = ev.add_env_info, ev.get_git_commit_hash
    ev.add_env_info = lambda results: results.update(lm_eval_version=version())
    ev.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        ev.add_env_info, ev.get_git_commit_hash = saved


def _manager(include_path: str | None, registry: bool):
    from lm_eval.tasks import TaskManager

    key = (include_path, registry)
    if key not in _MANAGERS:
        with quiet_offline():
            _MANAGERS[key] = TaskManager(include_path=include_path, include_defaults=registry)
    return _MANAGERS[key]


def task_manager(cfg, key: str = "eval.harness"):
    """The harness's TaskManager for these tasks: the include_path alone when it defines all of them
    (seconds faster than indexing the whole registry), else the registry with include_path on top.
    An unknown name fails here, with the closest known names."""
    if cfg.include_path and all(n in _manager(cfg.include_path, False).all_tasks for n in cfg.tasks):
        return _manager(cfg.include_path, False)
    tm = _manager(cfg.include_path, True)
    for i, name in enumerate(cfg.tasks):
        if name not in tm.all_tasks:
            close = difflib.get_close_matches(name, tm.all_tasks, n=5, cutoff=0.6)
            hint = f"; close names: {', '.join(close)}" if close else "; `lm_eval ls tasks` lists them"
            where = f" in lm-eval {version()}'s registry" + (f" or {cfg.include_path}" if cfg.include_path else "")
            raise InvalidInput(f"{key}.tasks[{i}]: unknown task {name!r}{where}{hint}")
    return tm


def load(cfg, key: str = "eval.harness") -> dict:
    """{task name: Task} for every leaf task the recipe names (groups expand to their tasks), with the
    data loaded offline; a task whose data is not present fails with exit 2."""
    tm = task_manager(cfg, key)
    tasks: dict = {}
    for i, name in enumerate(cfg.tasks):
        with quiet_offline():
            try:
                loaded = tm.load([name])
            except Exception as e:
                raise InvalidInput(f"{key}.tasks[{i}]: task {name!r}: {_data_error(tm, name, e)}") from None
        tasks.update(loaded["tasks"])
    return tasks


def _data_error(tm, name: str, e: Exception) -> str:
    """Where the data of a task that failed to load was looked for, in one line."""
    import datasets

    entry = tm.task_index.get(name)
    cfg = getattr(entry, "cfg", None) or {}
    path, sub = cfg.get("dataset_path"), cfg.get("dataset_name")
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    first = (str(e).splitlines() or [type(e).__name__])[0]
    if files:
        where = f"its data_files {files}"
    elif path:
        where = (f"dataset {path}" + (f" ({sub})" if sub else "") +
                 f" in the datasets cache {datasets.config.HF_DATASETS_CACHE} (HF_DATASETS_OFFLINE=1; download it "
                 f"once where there is network, or point a task YAML under eval.harness.include_path at local files)")
    else:
        where = "its data"
    yaml = getattr(entry, "yaml_path", None)
    return f"its data is not available offline: looked for {where}" + (f" ({yaml})" if yaml else "") + f": {first}"


def _shots(task, cfg) -> int:
    """The few-shot count simple_evaluate will use: the recipe's, unless the task pins 0."""
    own = task.config.num_fewshot
    if cfg.num_fewshot is not None and own != 0:
        return cfg.num_fewshot
    return own or 0


def _fewshot_pool(task) -> tuple[int, str]:
    """(documents available as shots for one evaluated document, the split they come from)."""
    c = task.config
    fs = c.fewshot_config or {}
    samples = fs.get("samples") if isinstance(fs, dict) else getattr(fs, "samples", None)
    if isinstance(samples, list):
        return len(samples), "fewshot_config.samples"
    split = c.fewshot_split or (c.training_split if task.has_training_docs() else
                                c.validation_split if task.has_validation_docs() else c.test_split)
    docs = task.fewshot_docs()
    n = len(docs) if docs is not None else 0
    evaluated = c.test_split if task.has_test_docs() else c.validation_split
    # the harness never shows a document as its own shot
    return n - (1 if split == evaluated else 0), f"split {split!r}"


def check(cfg, key: str = "eval.harness") -> None:
    """Plan-time checks. The tasks' own checks (data present, few-shot pool, greedy decoding) load the
    tasks, unless this set of tasks passed them before on the same inputs (see _planned)."""
    if not cfg.tasks:
        return
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise InvalidInput(f"{key}.tasks: lm-evaluation-harness is not installed ({INSTALL_HINT})")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise InvalidInput(f"{key}.tasks: a task is named twice")
    if cfg.include_path and not Path(cfg.include_path).exists():
        raise InvalidInput(f"{key}.include_path: {cfg.include_path} not found")
    for name, low in (("limit", 0), ("batch_size", 1), ("max_length", 0), ("bootstrap_iters", 0)):
        if getattr(cfg, name) < low:
            raise InvalidInput(f"{key}.{name}: {getattr(cfg, name)} is below {low}")
    if cfg.num_fewshot is not None and cfg.num_fewshot < 0:
        raise InvalidInput(f"{key}.num_fewshot: {cfg.num_fewshot} is negative")
    for metric, v in cfg.max_drop.items():
        if v is None or v < 0:
            raise InvalidInput(f"{key}.max_drop.{metric}: {v} must be a number >= 0")
    _planned(cfg, key)


def _check_tasks(tasks: dict, cfg, key: str) -> None:
    """The checks that need the loaded tasks."""
    for name, task in tasks.items():
        shots = _shots(task, cfg)
        if shots:
            pool, where = _fewshot_pool(task)
            if shots > pool:
                raise InvalidInput(f"{key}.num_fewshot: {shots} shots, but task {name!r} has {max(pool, 0)} "
                                   f"documents to draw them from ({where}, less the evaluated document)")
        gen = task.config.generation_kwargs or {}
        if task.OUTPUT_TYPE == "generate_until" and (gen.get("do_sample") or float(gen.get("temperature") or 0) > 0):
            raise InvalidInput(f"{key}.tasks: task {name!r} samples (do_sample/temperature in its generation_kwargs); "
                               "llmbuild's runtimes decode greedily")


def _digest_docs(docs) -> str:
    import hashlib

    h = hashlib.sha256()
    for d in docs or []:
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def key_parts(cfg, digest) -> dict | None:
    """What the harness results depend on, by content (`digest(path) -> sha256`): lm-eval's version,
    the settings, the include_path files, and each task's config and a digest of its documents."""
    if not cfg.tasks:
        return None
    return _planned(cfg, "eval.harness", digest)


def _settings(cfg) -> dict:
    return {k: getattr(cfg, k) for k in ("tasks", "limit", "num_fewshot", "apply_chat_template",
                                         "fewshot_as_multiturn", "system_instruction", "max_length",
                                         "bootstrap_iters")}


def _include_files(cfg, caches=()) -> dict[str, Path] | None:
    """{name under include_path: path} of every file a task can read there (YAML, its Python helpers,
    local data); not caches of bytecode, nor a datasets cache_dir a task keeps there (derived data:
    `caches`, the folders its load_dataset calls named)."""
    if not cfg.include_path:
        return None
    root = Path(cfg.include_path)
    skip = tuple(os.path.join(c, "") for c in caches)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not any(
            part == "__pycache__" or part.startswith(".") for part in p.relative_to(root).parts)
        and not os.path.abspath(p).startswith(skip))
    return {str(p.relative_to(root) if p != root else p.name): p for p in files}


def _task_parts(tasks: dict) -> dict:
    parts = {name: {"config": _task_config(t), "docs": _digest_docs(t.eval_docs),
                    "fewshot_docs": _digest_docs(t.fewshot_docs())} for name, t in sorted(tasks.items())}
    return json.loads(json.dumps(parts, sort_keys=True, default=str))  # as the memo gives it back


# ---- The plan of a set of tasks, remembered --------------------------------------------------------
# Loading the tasks is most of an unchanged rebuild's time (0.8 s for the demo's two: importing
# lm-eval, datasets and pandas, then reading every document so the keys can digest them). A set of
# tasks that passed the plan checks is remembered in the build cache with its key parts and every
# input the load was seen to read: the include_path files, each local data file `datasets.load_dataset`
# was given (the harness's `dataset_path: json` + `data_files`, or a custom_dataset that calls it), and
# every file Python opened for reading outside the installed libraries (a YAML `include:` elsewhere, a
# helper module beside it). The next plan re-digests those inputs (a stat each, through the build's
# stat cache) and reuses the result only when all are unchanged; a task that reads anything the load
# cannot see (a Hub or registry dataset from the datasets cache, `load_from_disk`, a file read by
# native code such as pyarrow's own reader) is never remembered: its documents are read and digested
# on every plan, as before.
_MEMO: Path | None = None
_MEMO_WRITE = False
_MEMO_DIGEST = None  # the build's stat-cached digest; plain sha256 outside a build
_PLANNED: dict = {}  # memo key -> the remembered plan (as in the memo file), in this process
LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})  # datasets' builders over data_files


def remember_in(folder: Path | None, write: bool = True, digest=None) -> None:
    """Remember planned tasks in folder (a build's cache); write false: read only (a dry run)."""
    global _MEMO, _MEMO_WRITE, _MEMO_DIGEST
    _MEMO, _MEMO_WRITE, _MEMO_DIGEST = (Path(folder) if folder else None), write, digest


def _planned(cfg, key: str, digest=None) -> dict:
    """The key parts of cfg's tasks, after their plan checks: remembered, or loaded, checked and
    remembered. `digest` makes the include_path entries (the plan passes File, keyed later)."""
    from llmbuild.hashing import sha256_file, sha256_json

    sha = _MEMO_DIGEST or sha256_file  # the memo's own digests are always real ones
    memo_key = sha256_json({"memo": _memo_version(), "lm_eval": version(), "datasets": version("datasets"),
                            "cwd": os.getcwd(), "include_path": cfg.include_path, "settings": _settings(cfg)})
    memo = _MEMO / f"{memo_key}.json" if _MEMO else None
    rec = _PLANNED.get(memo_key)
    if not _unchanged(rec, cfg, sha):
        rec = _read_json(memo) if memo is not None else None
    if not _unchanged(rec, cfg, sha):
        with _Reads() as reads:
            tasks = load(cfg, key)
        _check_tasks(tasks, cfg, key)
        caches = sorted(reads.caches)
        files = _include_files(cfg, caches) or {}
        rec = {"include": sorted(files), "caches": caches,
               "inputs": {p: sha(Path(p)) for p in sorted(reads.files | {os.path.abspath(f) for f in files.values()})
                          if Path(p).is_file()},
               "tasks": _task_parts(tasks)}
        if reads.unseen is None:  # everything the load read is watched: remember it
            _PLANNED[memo_key] = rec
            if memo is not None and _MEMO_WRITE:
                _remember(memo, rec)
    files = _include_files(cfg, rec["caches"])
    return {"lm_eval": version(), "settings": _settings(cfg),
            "include_path": files and {n: (digest or sha)(p) for n, p in files.items()}, "tasks": rec["tasks"]}


@functools.cache
def _memo_version() -> str:
    """This module's own source: what it remembers changes only with it (read once per process)."""
    from llmbuild.hashing import sha256_file

    return sha256_file(Path(__file__))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not remembered yet, or unreadable


def _unchanged(rec: dict | None, cfg, digest) -> bool:
    """Whether a remembered plan still holds: the same files under include_path, and every input its
    load read unchanged."""
    if not rec:
        return False
    try:
        if sorted(_include_files(cfg, rec["caches"]) or {}) != rec["include"]:
            return False  # a task file added or removed
        return all(Path(p).is_file() and digest(Path(p)) == h for p, h in rec["inputs"].items())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def _remember(memo: Path, rec: dict) -> None:
    from llmbuild.cache import write_json_atomic

    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(memo, rec)
    except OSError:
        pass  # only costs a load next time


_ACTIVE: list = []  # the _Reads being recorded (the audit hook cannot be removed, only made idle)
_HOOKED = False


class _Reads:
    """What a block of task loading reads: `files` (absolute paths), and `unseen`, the reason when it
    read something that cannot be watched (None: everything it read is in `files`)."""

    def __init__(self):
        self.files: set[str] = set()
        self.caches: set[str] = set()  # datasets cache_dir folders the loads named (derived data)
        self.unseen: str | None = None

    def __enter__(self):
        global _HOOKED
        import sys

        if not _HOOKED:
            sys.addaudithook(_on_audit)
            _HOOKED = True
        self._skip = _library_roots()
        import datasets

        self._saved = datasets.load_dataset, datasets.load_from_disk
        original_load, reads = datasets.load_dataset, self

        def load_dataset(path, *args, **kwargs):
            reads.dataset(path, args, kwargs)
            return original_load(path, *args, **kwargs)

        def load_from_disk(dataset_path, *args, **kwargs):
            reads.unseen = f"load_from_disk({dataset_path!r})"
            return self._saved[1](dataset_path, *args, **kwargs)

        datasets.load_dataset, datasets.load_from_disk = load_dataset, load_from_disk
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        import datasets

        _ACTIVE.remove(self)
        datasets.load_dataset, datasets.load_from_disk = self._saved
        return False

    def opened(self, path: str) -> None:
        if path.endswith(".pyc"):  # a module imported from its bytecode: its source is the input
            p = Path(path)
            if p.parent.name != "__pycache__":
                return
            path = str(p.parent.parent / (p.name.split(".")[0] + ".py"))
        path = os.path.abspath(path)
        if not path.startswith(self._skip):
            self.files.add(path)

    def dataset(self, path, args, kwargs) -> None:
        """A datasets.load_dataset call: its local data files are inputs; anything else is unseen."""
        from datasets.data_files import DataFilesDict, sanitize_patterns

        if kwargs.get("cache_dir"):
            cache = os.path.abspath(os.path.expanduser(str(kwargs["cache_dir"])))
            self.caches.add(cache)
            self._skip += (os.path.join(cache, ""),)
        data_files = kwargs.get("data_files") if len(args) < 3 else args[2]
        data_dir = kwargs.get("data_dir") if len(args) < 2 else args[1]
        if path not in LOCAL_BUILDERS or not data_files:
            self.unseen = f"load_dataset({path!r})"
            return
        try:
            base = Path(data_dir or "").expanduser().resolve().as_posix()  # as datasets resolves them
            resolved = DataFilesDict.from_patterns(sanitize_patterns(data_files), base_path=base)
        except Exception:  # datasets raises its own error for the load itself
            self.unseen = f"load_dataset({path!r}) data_files {data_files!r}"
            return
        for files in resolved.values():
            for f in files:
                if "://" in str(f):
                    self.unseen = f"load_dataset({path!r}) remote file {f}"
                else:
                    self.files.add(os.path.abspath(str(f)))


def _on_audit(event: str, args: tuple) -> None:
    if event != "open" or not _ACTIVE:
        return
    path, mode, flags = args
    if not isinstance(path, (str, bytes, os.PathLike)):
        return  # a file descriptor
    reading = (mode is None and (flags or 0) & os.O_ACCMODE == os.O_RDONLY) or (
        isinstance(mode, str) and "r" in mode and "+" not in mode)
    if reading:
        try:
            _ACTIVE[-1].opened(os.fsdecode(path))
        except Exception as e:  # an audit hook's exception would fail the open itself
            _ACTIVE[-1].unseen = f"open({path!r}): {e}"


def _library_roots() -> tuple[str, ...]:
    """Files read under these are the libraries' own (their versions are in the key) or derived from
    what is recorded (the datasets cache of a local file); llmbuild's own code is keyed by
    _memo_version."""
    import site
    import sys

    import datasets

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
             str(datasets.config.HF_DATASETS_CACHE), str(datasets.config.HF_CACHE_HOME),
             str(Path(__file__).resolve().parents[1])}
    return tuple(os.path.join(os.path.abspath(r), "") for r in roots if r)


def _task_config(task) -> dict:
    """A task's config as plain JSON that is the same in every process: functions by their source (a
    repr would hold a memory address), and without the YAML's path (its content is digested instead)."""
    import inspect

    def plain(obj):
        if callable(obj):
            try:
                return inspect.getsource(obj)
            except (TypeError, OSError):
                return getattr(obj, "__qualname__", type(obj).__name__)
        return str(obj)

    cfg = json.loads(json.dumps(task.dump_config(), sort_keys=True, default=plain))
    (cfg.get("metadata") or {}).pop("config_source", None)
    return cfg


def max_length(cfg, config, tokenizer, context: int | None = None) -> int:
    """Context per request: the recipe's, else the model's (as the harness's hf model takes it) up to
    MAX_AUTO_LENGTH; never past `context`, the shortest an artifact declares."""
    from lm_eval.models.utils import resolve_max_length

    n = cfg.max_length or min(resolve_max_length(config, tokenizer), MAX_AUTO_LENGTH)
    return min(n, context) if context else n


def make_lm(runtime, model_dir: Path, cfg, trust_remote_code: bool = False, context: int | None = None):
    """The harness model over one runtime, with the source model's tokenizer (every runtime gets the
    same token ids)."""
    from transformers import AutoConfig, AutoTokenizer

    from llmbuild.evaluation.harness_lm import RuntimeLM

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    return RuntimeLM(runtime, tok, max_length(cfg, config, tok, context), int(config.vocab_size),
                     batch_size=cfg.batch_size)


def evaluate(lm, cfg, log_samples: bool = False) -> dict:
    """Every task the runtime can run, through lm_eval.simple_evaluate; the record of this runtime.
    Generative tasks are skipped, with the reason, for a runtime that cannot generate."""
    import lm_eval

    tasks = load(cfg)
    skipped = {}
    if lm.runtime.generate is None:
        for name, t in list(tasks.items()):
            if t.OUTPUT_TYPE == "generate_until":
                skipped[name] = lm.runtime.no_generation
                del tasks[name]
    rec: dict = {"lm_eval": version(), "runtime": lm.runtime.name, "max_length": lm.max_length, "tasks": {},
                 "skipped": skipped}
    if not tasks:
        return rec
    with quiet_offline(), _no_environment_report():
        res = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks.values()), num_fewshot=cfg.num_fewshot, limit=cfg.limit or None,
            bootstrap_iters=cfg.bootstrap_iters, log_samples=log_samples,
            apply_chat_template=cfg.apply_chat_template, fewshot_as_multiturn=cfg.fewshot_as_multiturn,
            system_instruction=cfg.system_instruction, task_manager=task_manager(cfg))
    rec["tasks"] = results(res)
    if log_samples:
        rec["samples"] = res["samples"]
    return rec


def results(res: dict) -> dict:
    """simple_evaluate's output as {task: {output_type, num_fewshot, n, version, group, metrics}}, each
    metric {value, stderr, higher_is_better}; a filter other than the default names the metric
    `metric,filter` as the harness does."""
    groups = set(res.get("group_subtasks") or {}) - set(res.get("configs") or {})
    out = {}
    for task, r in res["results"].items():
        metrics = {}
        hib = (res.get("higher_is_better") or {}).get(task, {})
        for k, v in r.items():
            if "," not in k or "_stderr," in k or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            metric, filt = k.split(",", 1)
            stderr = r.get(f"{metric}_stderr,{filt}")
            metrics[metric if filt == "none" else k] = {
                "value": float(v), "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                "higher_is_better": hib.get(metric, True)}
        cfg = (res.get("configs") or {}).get(task, {})
        n = (res.get("n-samples") or {}).get(task, {})
        out[task] = {"output_type": cfg.get("output_type"), "num_fewshot": (res.get("n-shot") or {}).get(task),
                     "n": n.get("effective", r.get("sample_len")), "version": (res.get("versions") or {}).get(task),
                     "group": task in groups, "metrics": metrics}
    return out


def compare(rec: dict, source: dict) -> dict:
    """The artifact's record with the source's value and the drop beside each metric (drop: how far
    the artifact is below the source, or above it for a lower-is-better metric)."""
    for task, t in rec.get("tasks", {}).items():
        src = (source.get("tasks") or {}).get(task, {}).get("metrics", {})
        for metric, m in t["metrics"].items():
            s = src.get(metric)
            if s is None:
                continue
            m["source"], m["source_stderr"] = s["value"], s["stderr"]
            m["drop"] = (s["value"] - m["value"]) if m["higher_is_better"] else (m["value"] - s["value"])
    return rec


def gates(rec: dict, max_drop: dict, key: str = "eval.harness.max_drop") -> list[dict]:
    """Each max_drop gate against each task metric it names (`metric` or `metric,filter`)."""
    out = []
    for task, t in (rec.get("tasks") or {}).items():
        for metric, m in t["metrics"].items():
            name = metric if metric in max_drop else metric.split(",")[0]
            limit = max_drop.get(name)
            if limit is None or "drop" not in m:
                continue
            out.append({"gate": "max_drop", "figure": f"harness.{task}.{metric}", "value": m["drop"],
                        "limit": limit, "passed": bool(m["drop"] <= limit), "key": f"{key}.{name}"})
    return out


def documents(task, limit: int = 0) -> list[str]:
    """The evaluated documents of a task as text, for the contamination analysis: the harness's own
    decontamination query where the task defines one (`should_decontaminate`), else the prompt and
    the gold answer."""
    docs = list(task.eval_docs)
    docs = docs[:limit] if limit else docs
    out = []
    for d in docs:
        try:
            if task.config.should_decontaminate:
                out.append(str(task.doc_to_decontamination_query(d)))
                continue
            text, target = task.doc_to_text(d), task.doc_to_target(d)
            if task.OUTPUT_TYPE == "multiple_choice":
                choices = task.doc_to_choice(d)
                text = choices[text] if isinstance(text, int) else text
                target = choices[target] if isinstance(target, int) else target
            if isinstance(target, list):
                target = " ".join(map(str, target))
            out.append(f"{text} {target}")
        except Exception:
            # a task whose templates need more than the document: its string fields stand in for it
            out.append(" ".join(str(v) for v in d.values() if isinstance(v, str)))
    return out
