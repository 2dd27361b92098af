"""Read a Hugging Face checkpoint folder: config, weight files, and tensors one at a time.

Every stage that only needs weights goes through `Checkpoint.iter_tensors`, which opens safetensors
with `safe_open` and yields one tensor at a time, so memory does not grow with the model (the
habit of llama.cpp's lazy converter). PyTorch `.bin` files are read only with `allow_pickle` and
then with `weights_only=True`.

The checks here answer a folder handed over by a stranger before anything loads it: headers that
safetensors itself would refuse, names inside the checkpoint's own JSON files that lead out of the
folder (`../`, absolute; never opened), code the checkpoint asks transformers to import, tokenizer
files that do not parse, a tokenizer with more ids than the embedding has rows, and weights holding
NaN or Inf. Each ends in an InvalidInput naming the file (and the key or tensor).
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from llmbuild.archs import for_config
from llmbuild.errors import InvalidInput

# what a Hub download takes beside the weights: every file transformers builds a tokenizer from (GPT-2
# style repos have only vocab.json + merges.txt), the chat template in either file, generation defaults
TOKENIZER_FILES = (
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: {what} is not valid JSON ({e})") from None


def safetensors_header(path: Path) -> dict:
    """Parse and check a safetensors header without reading the data.

    Catches the two failures users hit most (a file that is not safetensors at all, and a download
    cut short) with a message naming the file, before any stage spends time on it.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InvalidInput(f"{path}: not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n <= 1 or n > 100_000_000 or 8 + n > size:
            raise InvalidInput(f"{path}: not a safetensors file (bad header length {n})")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInput(f"{path}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise InvalidInput(f"{path}: not a safetensors file (header is not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, _entry_end(info))
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise InvalidInput(f"{path}: not a safetensors file (bad entry for {name!r}: {e})") from None
    if 8 + n + end > size:
        raise InvalidInput(
            f"{path}: truncated safetensors file: header promises {8 + n + end} bytes, file has {size}"
        )
    _safetensors_accepts(path)
    return header


# bytes per element of each safetensors dtype (the format's own list, safetensors/src/tensor.rs)
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _entry_end(info) -> int:
    """The end offset of one header entry, after checking it is one a safetensors reader can serve."""
    if not isinstance(info, dict):
        raise TypeError("not an object")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ValueError("shape is not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise ValueError("data_offsets is not [begin, end]")
    numel = 1
    for d in shape:
        numel *= d
    begin, end = offsets
    if not 0 <= begin <= end or end - begin != numel * _DTYPE_BYTES[dtype]:
        raise ValueError(f"data_offsets {offsets} do not hold {shape} {dtype}")
    return end


def _safetensors_accepts(path: Path) -> None:
    """safetensors' own header validation (offsets contiguous, no overlap, buffer covered): it reads
    the header only, and whatever it refuses is reported as the file's fault, not a crash later. The
    numpy framework: the same checks, without importing torch (a GGUF conversion needs none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as e:  # SafetensorError, and OSError for an unreadable file
        raise InvalidInput(f"{path}: not a safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


@dataclass
class Checkpoint:
    dir: Path
    config: dict
    arch: object  # llmbuild.archs.base.Arch bound to this config: what every target asks
    weight_files: list[Path]
    # tensor name -> file holding it
    index: dict[str, Path] = field(default_factory=dict)
    pickle: bool = False

    @property
    def tensor_names(self) -> list[str]:
        return list(self.index)

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:  # noqa: F821
        """Yield (name, tensor) one at a time, in file order."""
        if self.pickle:
            import torch

            for f in self.weight_files:
                state = torch.load(f, map_location="cpu", weights_only=True)
                for name in list(state):
                    yield name, state.pop(name)
            return
        # one safe_open per tensor: a handle kept open over the whole file keeps every page it
        # touched mapped, and RSS grows to the file's size (measured: 1.16 GB vs 357 MB on `mid`)
        for name in self.index:
            yield name, self.get_tensor(name)

    def get_tensor(self, name: str):
        if self.pickle:
            import torch

            return torch.load(self.index[name], map_location="cpu", weights_only=True)[name]
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.index[name]), framework="pt") as st:
                return st.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as e:  # a file changed or damaged
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidInput(f"{self.index[name]}: tensor {name} cannot be read ({msg})") from None

    def tensor_shapes(self) -> dict[str, tuple[list[int], str]]:
        """name -> (shape, safetensors dtype), read from headers only."""
        out = {}
        for f in self.weight_files:
            for name, info in safetensors_header(f).items():
                if name != "__metadata__":
                    out[name] = (info["shape"], info["dtype"])
        return out

    def param_count(self) -> int:
        if self.pickle:
            return sum(t.numel() for _, t in self.iter_tensors())
        total = 0
        for shape, _ in self.tensor_shapes().values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


def weight_files(model_dir: Path, allow_pickle: bool, key: str = "model.path") -> tuple[list[Path], bool]:
    """The weight files of a checkpoint folder: safetensors (single or sharded), else .bin if allowed."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        data = read_json(index, "safetensors index")
        wmap = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
            raise InvalidInput(f"{index}: weight_map must map tensor names to shard file names")
        for tensor, shard in wmap.items():
            inside(model_dir, shard, f"{index}: weight_map[{tensor!r}]")
        files = sorted({model_dir / f for f in wmap.values()})
        missing = [f for f in files if not f.exists()]
        if missing:
            raise InvalidInput(f"{missing[0]}: shard listed in {index.name} is missing")
        return files, False
    st = sorted(model_dir.glob("*.safetensors"))
    if st:
        return st, False
    bins = sorted(model_dir.glob("pytorch_model*.bin")) or sorted(model_dir.glob("*.bin"))
    if bins:
        if not allow_pickle:
            raise InvalidInput(
                f"{model_dir}: only PyTorch .bin weights (pickle); set model.allow_pickle=true to load them"
                " with weights_only=True"
            )
        return bins, True
    raise InvalidInput(f"{model_dir}: no weights (*.safetensors or pytorch_model*.bin) in {key}")


def open_checkpoint(model_dir: Path, allow_pickle: bool = False, key: str = "model.path") -> Checkpoint:
    model_dir = Path(model_dir)
    if model_dir.is_file():
        raise InvalidInput(f"{key}: {model_dir} is a file; name the checkpoint folder that holds config.json "
                           "and the weights")
    if not model_dir.is_dir():
        raise InvalidInput(f"{key}: {model_dir} is not a folder")
    config = read_json(model_dir / "config.json", "config.json")
    if not isinstance(config, dict):
        raise InvalidInput(f"{model_dir / 'config.json'}: config.json must be a JSON object")
    check_references(model_dir)
    arch = for_config(config, where=str(model_dir / "config.json"))  # the family's required keys, its rope
    files, pickle = weight_files(model_dir, allow_pickle, key)
    index: dict[str, Path] = {}
    if pickle:
        import torch

        for f in files:
            try:
                state = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises many types for a bad pickle
                raise InvalidInput(f"{f}: cannot be read as a PyTorch state dict ({type(e).__name__})") from None
            index.update({k: f for k in state})
    else:
        for f in files:
            index.update({k: f for k in safetensors_header(f) if k != "__metadata__"})
    return Checkpoint(model_dir, config, arch, files, index, pickle)


# -- names that lead out of the folder ---------------------------------------------------------------
# JSON files of a checkpoint that name other files, read by llmbuild or by transformers' loaders
REFERENCING_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                     "processor_config.json", "preprocessor_config.json")
# keys transformers never opens from these files: save_pretrained once wrote them with the saving
# machine's absolute path, and refusing those would refuse many published checkpoints
_IGNORED_REFERENCES = {"special_tokens_map_file", "name_or_path", "_name_or_path"}
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\ or C:/, absolute on Windows


def inside(model_dir: Path, name: str, where: str) -> Path:
    """model_dir/name, refused when the name leads out of the folder (absolute, or `..` past its top).

    Lexical on purpose: a name from a stranger's file must not reach outside whatever the folder's
    links are. Symlinked files (the Hub cache's snapshots/<sha>/f -> ../../blobs/<hash>) stay
    allowed: they are laid out by huggingface_hub or the user, never named by the checkpoint."""
    if not name:
        raise InvalidInput(f"{where}: names no file (an empty name)")
    norm = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../") or _DRIVE.match(name):
        raise InvalidInput(f"{where}: {name!r} leads out of the model folder; refused (names in a checkpoint's "
                           "files must stay inside it)")
    return model_dir / norm


def check_references(model_dir: Path) -> None:
    """Every file name inside the checkpoint's JSON files (`*_file`, `*_files` keys) stays in the folder."""
    for fname in REFERENCING_FILES:
        p = model_dir / fname
        if not p.is_file():
            continue
        data = read_json(p, fname)
        for key, value in _file_references(data):
            inside(model_dir, value, f"{p}: {key}")


def _file_references(obj, path: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            kp = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and k.endswith(("_file", "_files")) and k not in _IGNORED_REFERENCES:
                for item in (v if isinstance(v, list) else [v]):
                    if isinstance(item, str) and item:
                        yield kp, item
            else:
                yield from _file_references(v, kp)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _file_references(v, f"{path}[{i}]")


# -- code the checkpoint asks to run ------------------------------------------------------------------
def check_remote_code(model_dir: Path, config: dict, trust_remote_code: bool) -> None:
    """Refuse a checkpoint whose auto_map needs its own Python code while trust_remote_code is false.

    transformers uses its own class when it knows the model_type (or tokenizer_class), whatever
    auto_map says; only when it does not would it import the checkpoint's .py files."""
    if trust_remote_code:
        return
    auto = config.get("auto_map")
    if isinstance(auto, dict) and auto:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        model_type = config.get("model_type")
        if model_type not in CONFIG_MAPPING_NAMES:
            raise InvalidInput(_remote_code_message(model_dir / "config.json", auto, f"model_type {model_type!r}"))
    p = model_dir / "tokenizer_config.json"
    if p.is_file():
        tc = read_json(p, "tokenizer_config.json")
        auto = tc.get("auto_map") if isinstance(tc, dict) else None
        if isinstance(auto, (dict, list)) and auto:
            from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

            cls = tc.get("tokenizer_class")
            if not isinstance(cls, str) or tokenizer_class_from_name(cls) is None:
                raise InvalidInput(_remote_code_message(p, auto, f"tokenizer_class {cls!r}"))


def _remote_code_message(path: Path, auto_map, what: str) -> str:
    values = list(auto_map.values()) if isinstance(auto_map, dict) else list(auto_map)
    flat = [x for v in values for x in (v if isinstance(v, list) else [v])]  # AutoTokenizer: [slow, fast]
    names = sorted({x for x in flat if isinstance(x, str)})
    return (f"{path}: auto_map needs the checkpoint's own Python code ({', '.join(names)[:200]}) because "
            f"transformers has no class for {what}, and model.trust_remote_code is false; "
            "model.trust_remote_code=true would import and run that code on this machine with your rights: "
            "read it first")


# -- tokenizer ----------------------------------------------------------------------------------------
def tokenizer_ids(model_dir: Path) -> tuple[Path, int] | None:
    """(tokenizer file, highest token id) after checking the tokenizer files parse; None without one."""
    tj, sp = model_dir / "tokenizer.json", model_dir / "tokenizer.model"
    highest, source = -1, None
    if tj.is_file():
        try:
            text = tj.read_text(encoding="utf-8")
            json.loads(text)
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{tj}: tokenizer.json is not UTF-8 (byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{tj}:{e.lineno}:{e.colno}: tokenizer.json is not valid JSON ({e.msg})") from None
        from tokenizers import Tokenizer

        try:
            vocab = Tokenizer.from_str(text).get_vocab(with_added_tokens=True)
        except Exception as e:  # tokenizers raises a plain Exception for a schema it cannot read
            raise InvalidInput(f"{tj}: not a tokenizer the tokenizers library reads "
                               f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
        highest, source = max(vocab.values(), default=-1), tj
    elif sp.is_file():
        import sentencepiece

        try:
            proc = sentencepiece.SentencePieceProcessor(model_file=str(sp))
        except Exception as e:  # sentencepiece raises RuntimeError or OSError for a bad model
            raise InvalidInput(f"{sp}: not a SentencePiece model ({str(e).splitlines()[0][:200]})") from None
        highest, source = proc.get_piece_size() - 1, sp
    if source is None:
        return None
    tc = model_dir / "tokenizer_config.json"
    if tc.is_file():
        data = read_json(tc, "tokenizer_config.json")
        added = data.get("added_tokens_decoder") if isinstance(data, dict) else None
        if isinstance(added, dict):
            ids = [int(k) for k in added if isinstance(k, str) and k.isdigit()]
            highest = max([highest, *ids])
    return source, highest


def check_vocabulary(ckpt: Checkpoint) -> list[str]:
    """The tokenizer's ids against the embedding's rows: an id past the last row is an error (it would
    index out of the embedding); rows no token uses are padding, as llama.cpp's converter pads with
    [PAD<n>]. Returns warnings."""
    found = tokenizer_ids(ckpt.dir)
    if found is None:
        return []
    tok_file, highest = found
    emb = next((n for n in ckpt.index if n.endswith("embed_tokens.weight")), None)
    if emb is not None and not ckpt.pickle:
        rows, what = ckpt.tensor_shapes()[emb][0][0], f"{emb} has"
    elif isinstance(ckpt.config.get("vocab_size"), int):
        rows, what = ckpt.config["vocab_size"], "config.json's vocab_size is"
    else:
        return []
    if highest >= rows:
        past = f"id {rows}" if highest == rows else f"ids {rows}..{highest}"
        raise InvalidInput(f"{tok_file}: the tokenizer has token ids up to {highest}, but {what} {rows} rows: "
                           f"{past} would index past the embedding")
    unused = rows - (highest + 1)
    if unused > rows // 2:
        return [f"{tok_file}: the tokenizer uses {highest + 1} of the embedding's {rows} rows; the other {unused} "
                "are padding (llama.cpp pads them with [PAD<n>] tokens)"]
    return []


# -- weights ------------------------------------------------------------------------------------------
_CHUNK_ELEMENTS = 1 << 24  # one bool mask of at most 16 MiB at a time


def nonfinite(ckpt: Checkpoint) -> tuple[str, Path, int, int] | None:
    """The first tensor holding NaN or Inf as (name, file, NaN count, Inf count), else None.

    Streams one tensor at a time and checks it in slices, so memory stays at one tensor."""
    import torch

    for name, t in ckpt.iter_tensors():
        if not t.is_floating_point():
            continue
        flat = t.reshape(-1)
        for start in range(0, flat.numel(), _CHUNK_ELEMENTS):
            part = flat[start:start + _CHUNK_ELEMENTS]
            if part.dtype.itemsize == 1:  # float8: no isfinite kernel
                part = part.float()
            if not bool(torch.isfinite(part).all()):
                whole = flat.float() if flat.dtype.itemsize == 1 else flat
                nan = int(torch.isnan(whole).sum())
                return name, ckpt.index[name], nan, int(torch.isinf(whole).sum())
        del t, flat
    return None


# -- chat template ------------------------------------------------------------------------------------
_SAMPLE_CHAT = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}, {"role": "user", "content": "u"}]


def chat_templates(model_dir: Path) -> list[tuple[Path, str]]:
    """The chat templates a checkpoint ships: chat_template.jinja, or tokenizer_config.json's
    `chat_template` (a string, or a list of {name, template} as transformers reads it)."""
    out = []
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        out.append((jinja, jinja.read_text(encoding="utf-8", errors="replace")))
    tc = model_dir / "tokenizer_config.json"
    if tc.is_file():
        data = read_json(tc, "tokenizer_config.json")
        t = data.get("chat_template") if isinstance(data, dict) else None
        if isinstance(t, str):
            out.append((tc, t))
        elif isinstance(t, list):
            out += [(tc, x["template"]) for x in t if isinstance(x, dict) and isinstance(x.get("template"), str)]
    return out


def check_chat_template(model_dir: Path) -> None:
    """Render each shipped chat template once, in transformers' sandbox, on a sample conversation.

    A template that tries to leave the Jinja sandbox (reaching Python objects through attributes,
    as in `''.__class__.__mro__`) or does not parse is refused before any stage renders it; one that
    only rejects the sample (`raise_exception` on roles it does not take) is left to the real renders,
    which are sandboxed too (llmbuild.finetune.data.render_chat)."""
    found = chat_templates(model_dir)
    if not found:
        return
    from jinja2 import nodes
    from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from transformers.utils.chat_template_utils import render_jinja_template

    env = ImmutableSandboxedEnvironment()
    for path, template in found:
        try:
            tree = env.parse(template)
        except TemplateSyntaxError as e:
            raise InvalidInput(f"{path}: the chat template does not parse (line {e.lineno}: {e.message})") from None
        # the sandbox answers `x.__class__` with an empty value rather than an error; a template that
        # asks for a private attribute at all is trying to reach Python objects, and no chat needs that
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            name = node.attr if isinstance(node, nodes.Getattr) else (
                node.arg.value if isinstance(node.arg, nodes.Const) else None)
            if isinstance(name, str) and name.startswith("_"):
                raise InvalidInput(sandbox_message(path, Exception(f"line {node.lineno} reads attribute {name!r}")))
        try:
            render_jinja_template([_SAMPLE_CHAT], chat_template=template, add_generation_prompt=True,
                                  bos_token="<s>", eos_token="</s>")
        except SecurityError as e:
            raise InvalidInput(sandbox_message(path, e)) from None
        except TemplateSyntaxError as e:
            raise InvalidInput(f"{path}: the chat template does not parse (line {e.lineno}: {e.message})") from None
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError):
            continue  # the sample did not suit it; the real conversations are rendered in the sandbox too


def sandbox_message(where, e: Exception) -> str:
    return (f"{where}: the chat template tries to leave the Jinja sandbox ({str(e).splitlines()[0][:160]}); "
            "refused: llmbuild renders chat templates only in jinja2's ImmutableSandboxedEnvironment, as transformers does")
