"""The ONNX folder as the clients users run load it as shipped: onnxruntime-genai, transformers.js, optimum.

The export writes one graph (`model.onnx`, `model.onnx.data` beside it when the weights live outside);
this module lays the folder out so that each client finds what it looks for, without a second copy:
- transformers.js (`AutoModelForCausalLM.from_pretrained(dir, {dtype})`) and optimum's
  `ORTModelForCausalLM.from_pretrained(dir, subfolder="onnx", file_name=...)` read `onnx/model{suffix}.onnx`,
  the suffix naming the precision as transformers.js' DEFAULT_DTYPE_SUFFIX_MAPPING does (src/utils/dtypes.js:
  fp32 "", fp16 "_fp16", q8 "_quantized", q4 "_q4"), `config.json` and the tokenizer files at the root,
  the chat template in tokenizer_config.json. External weights are `model{suffix}.onnx_data` (the name
  transformers.js fetches), announced in config.json's `transformers.js_config.use_external_data_format`.
- onnxruntime-genai (`og.Model(dir)`) reads `genai_config.json`, written here with the fields its model
  builder writes (onnxruntime_genai/models/builders/base.py `make_genai_config`, 0.18): the decoder's
  file, dims, input/output names (the graph uses the names the builder does), special ids, context
  length and search defaults. `past_present_share_buffer` is false: the graph's present key/values are
  past + new tokens long (ONNX Attention), not a buffer of the whole context (GroupQueryAttention).
- the tokenizer files (tokenizer_files.ship) carry the chat template in tokenizer_config.json, in fields
  transformers 4.x reads as well as 5.x (portable_tokenizer.py).
The graph and everything it computes are unchanged; only names and side files differ.
"""

from __future__ import annotations

import json
from pathlib import Path

SUBFOLDER = "onnx"
# transformers.js' file suffix per precision (src/utils/dtypes.js DEFAULT_DTYPE_SUFFIX_MAPPING): its
# `dtype` option picks the file; our int8 is onnxruntime's dynamic quantization, which is its "q8"
# (what optimum's quantizer also writes), our int4 is MatMulNBits, its "q4"
SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_quantized", "int4": "_q4"}
# the `dtype` a transformers.js user passes for each file
JS_DTYPE = {"fp32": "fp32", "fp16": "fp16", "int8": "q8", "int4": "q4"}
SOURCE_FILE, SOURCE_DATA = "model.onnx", "model.onnx.data"
GENAI_CONFIG = "genai_config.json"
# bumped when the folder's layout changes: it enters the export key (Onnx.key_extra)
REVISION = 2


def model_file(precision: str) -> str:
    return f"{SUBFOLDER}/model{SUFFIX[precision]}.onnx"


def apply(out_dir: Path, record: dict, hf_config: dict, arch, context_length: int | None) -> dict:
    """Move the exported graph into the clients' layout and write their side files; returns the record
    with `file` (the graph, relative to out_dir) and `files` updated."""
    out_dir = Path(out_dir)
    precision = record["precision"]
    rel = model_file(precision)
    dst = out_dir / rel
    dst.parent.mkdir(exist_ok=True)
    (out_dir / SOURCE_FILE).replace(dst)
    files = [f for f in record["files"] if f not in (SOURCE_FILE, SOURCE_DATA)]
    model_files = [rel]
    if (out_dir / SOURCE_DATA).exists():
        data_rel = f"{rel}_data"
        _relocate_external_data(dst, out_dir / SOURCE_DATA, out_dir / data_rel)
        model_files.append(data_rel)
    if len(model_files) > 1:
        # transformers.js reads external data only when config.json says so (models.js getSession)
        config = {**hf_config, "transformers.js_config": {"use_external_data_format": {Path(rel).name: 1}}}
        (out_dir / "config.json").unlink(missing_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = _json(out_dir / "generation_config.json")
    (out_dir / GENAI_CONFIG).write_text(json.dumps(genai_config(arch, hf_config, gen, rel, context_length,
                                                                _tokenizer_eos(out_dir)), indent=4) + "\n")
    extra = [f for f in ("config.json", GENAI_CONFIG) if f not in files]
    return {**record, "file": rel, "files": [*model_files, *files, *extra],
            "layout": {"revision": REVISION, "transformers_js_dtype": JS_DTYPE[precision],
                       "onnxruntime_genai": GENAI_CONFIG, "optimum": {"subfolder": SUBFOLDER,
                                                                      "file_name": Path(rel).name}}}


def genai_config(arch, hf_config: dict, gen: dict, filename: str, context_length: int | None,
                 tokenizer_eos: int | None) -> dict:
    """genai_config.json as onnxruntime-genai's builder writes it for a decoder-only model on CPU."""
    ctx = int(context_length or arch.context or 2048)

    def pick(key, default=None):
        for src in (gen, hf_config):
            if src.get(key) is not None:
                return src[key]
        return default

    eos = pick("eos_token_id")
    eos_ids = list(eos) if isinstance(eos, list) else [eos] if eos is not None else []
    # the builder adds the tokenizer's own eos (a chat model's end-of-turn token) to the stop ids
    if tokenizer_eos is not None and tokenizer_eos not in eos_ids:
        eos_ids.append(tokenizer_eos)
    if not eos_ids:
        raise ValueError("genai_config.json needs an eos_token_id (config.json, generation_config.json or the "
                         "tokenizer)")
    pad = pick("pad_token_id")
    arch_name = (hf_config.get("architectures") or [hf_config.get("model_type", "decoder")])[0]
    kind = arch_name[: arch_name.find("For")] if "For" in arch_name else arch_name
    return {
        "model": {
            "bos_token_id": pick("bos_token_id", 1),
            "context_length": ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": arch.head_dim,
                "hidden_size": arch.hidden,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": arch.heads,
                "num_hidden_layers": arch.layers,
                "num_key_value_heads": arch.kv_heads,
            },
            "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
            "pad_token_id": pad if pad is not None else eos_ids[0],
            "type": kind.lower(),
            "vocab_size": arch.vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": bool(gen.get("do_sample", False)),
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": ctx,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": float(gen.get("repetition_penalty", 1.0)),
            "temperature": float(gen.get("temperature", 1.0)),
            "top_k": int(gen.get("top_k") or 50),
            "top_p": float(gen.get("top_p", 1.0)),
        },
    }


def _relocate_external_data(model_path: Path, data_src: Path, data_dst: Path) -> None:
    """Rename the external weights file and point the graph's tensors at it (the header is rewritten,
    the weights are moved, not read)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    for t in m.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = data_dst.name
    data_src.replace(data_dst)
    model_path.write_bytes(m.SerializeToString())


def _tokenizer_eos(out_dir: Path) -> int | None:
    """The id of the tokenizer's eos_token, read from tokenizer.json (no transformers import here)."""
    cfg, tj = _json(out_dir / "tokenizer_config.json"), _json(out_dir / "tokenizer.json")
    eos = cfg.get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    if not eos:
        return None
    for t in tj.get("added_tokens") or []:
        if t.get("content") == eos:
            return int(t["id"])
    vocab = (tj.get("model") or {}).get("vocab")
    return int(vocab[eos]) if isinstance(vocab, dict) and eos in vocab else None


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def usage(target: str, record: dict) -> list[str]:
    """The card's "get started" lines: each client loading the folder as shipped."""
    d = f"artifacts/{target}"
    rel = record.get("file", "model.onnx")
    lay = record.get("layout") or {}
    lines = [f"`{target}` with onnxruntime-genai (`pip install onnxruntime-genai`; reads `genai_config.json`):", "",
             "```python", "import json, onnxruntime_genai as og",
             f"model = og.Model('{d}'); tok = og.Tokenizer(model)",
             "prompt = tok.apply_chat_template(json.dumps([{'role': 'user', 'content': 'Hello'}]), add_generation_prompt=True)",
             "params = og.GeneratorParams(model); params.set_search_options(max_length=256)",
             "gen = og.Generator(model, params); gen.append_tokens(tok.encode(prompt))",
             "while not gen.is_done(): gen.generate_next_token()",
             "print(tok.decode(gen.get_sequence(0)))", "```", ""]
    if lay:
        lines += [f"with transformers.js (`npm i @huggingface/transformers`; `{rel}` is its `dtype: '{lay['transformers_js_dtype']}'`):",
                  "", "```js", "import { pipeline, env } from '@huggingface/transformers';",
                  "env.localModelPath = 'artifacts/'; env.allowRemoteModels = false;",
                  f"const generate = await pipeline('text-generation', '{target}', {{ dtype: '{lay['transformers_js_dtype']}' }});",
                  "console.log(await generate([{ role: 'user', content: 'Hello' }], { max_new_tokens: 32 }));", "```", "",
                  "with optimum (`pip install optimum-onnx[onnxruntime]`):", "", "```python",
                  "from optimum.onnxruntime import ORTModelForCausalLM",
                  f"model = ORTModelForCausalLM.from_pretrained('{d}', subfolder='{lay['optimum']['subfolder']}', "
                  f"file_name='{lay['optimum']['file_name']}')", "```", ""]
    lines += ["with onnxruntime (inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.N.key/value`; "
              "outputs `logits`, `present.N.key/value`):", "", "```python", "import onnxruntime as ort",
              f"sess = ort.InferenceSession('{d}/{rel}')", "```", ""]
    return lines


def serving(target: str, record: dict) -> dict:
    """SERVE.md's lines, run from the build folder. onnxruntime-genai has no server of its own (its
    examples are chat loops), so its lines are one: a prompt in, the answer streamed out."""
    d = f"artifacts/{target}"
    out = {"onnxruntime-genai": [
        "python - 'What is the capital of France?' <<'EOF'",
        "import json, sys, onnxruntime_genai as og",
        f"model = og.Model('{d}'); tok = og.Tokenizer(model); stream = tok.create_stream()",
        "prompt = tok.apply_chat_template(json.dumps([{'role': 'user', 'content': sys.argv[1]}]), add_generation_prompt=True)",
        "params = og.GeneratorParams(model); params.set_search_options(max_length=512)",
        "gen = og.Generator(model, params); gen.append_tokens(tok.encode(prompt))",
        "while not gen.is_done():",
        "    gen.generate_next_token(); print(stream.decode(gen.get_next_tokens()[0]), end='', flush=True)",
        "print()",
        "EOF"]}
    lay = record.get("layout") or {}
    if lay:
        out["transformers.js"] = [
            "npm i @huggingface/transformers  # once, in the build folder",
            "node --input-type=module - 'What is the capital of France?' <<'EOF'",
            "import { pipeline, env } from '@huggingface/transformers';",
            "env.localModelPath = 'artifacts/'; env.allowRemoteModels = false;",
            f"const generate = await pipeline('text-generation', '{target}', {{ dtype: '{lay['transformers_js_dtype']}' }});",
            "const out = await generate([{ role: 'user', content: process.argv.at(-1) }], { max_new_tokens: 32, do_sample: false });",
            "console.log(out[0].generated_text.at(-1).content);",
            "EOF"]
    return out
