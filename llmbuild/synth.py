"""Create a model from an architecture config and a seed: the `init` model source.

This is how the demo and the tests run with no network: a randomly initialized model of a supported
architecture, saved as a normal Hugging Face checkpoint (config.json + model.safetensors), with a
SentencePiece tokenizer that is either shipped or trained here from a shipped text. The same
(architecture, config, seed, tokenizer text) always gives the same files on CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from llmbuild.archs import arch_class
from llmbuild.errors import InvalidInput

# llama-style special tokens; ids fixed so configs can name them
SPECIAL = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
BOS_ID, EOS_ID = 1, 2


def train_tokenizer(text_file: Path, vocab_size: int, out_dir: Path) -> None:
    """Train a byte-fallback SentencePiece BPE tokenizer (the Llama 2 kind) and save it in HF layout.

    SentencePiece is what llama.cpp's "llama" vocab expects, so the same file serves transformers,
    onnxruntime users and GGUF.
    """
    import sentencepiece as spm

    if not text_file.is_file():
        raise InvalidInput(f"model.tokenizer.train_text: {text_file} not found")
    if text_file.stat().st_size == 0:
        raise InvalidInput(f"model.tokenizer.train_text: {text_file} is empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            input=str(text_file),
            model_prefix=str(out_dir / "tokenizer"),
            vocab_size=vocab_size,
            model_type="bpe",
            byte_fallback=True,
            character_coverage=1.0,
            unk_id=0,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            num_threads=1,  # one thread: the merge order, hence the vocab, is deterministic
            minloglevel=2,
            add_dummy_prefix=True,
            remove_extra_whitespaces=False,
            split_digits=True,
        )
    except RuntimeError as e:
        raise InvalidInput(f"model.tokenizer: cannot train on {text_file}: {str(e).splitlines()[-1]}") from None
    (out_dir / "tokenizer.vocab").unlink(missing_ok=True)
    _strip_paths(out_dir / "tokenizer.model")
    write_tokenizer_config(out_dir)


def _strip_paths(model_file: Path) -> None:
    """SentencePiece records the training paths in the model; drop them so the file is a function of
    the text and the settings only (same inputs, same bytes, same cache keys downstream)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.model_prefix = ""
    model_file.write_bytes(proto.SerializeToString())


def write_tokenizer_config(out_dir: Path) -> None:
    """tokenizer.json and tokenizer_config.json for a tokenizer.model, tokenizing as SentencePiece does.

    SentencePiece puts its "▁" before every text it encodes, and llama.cpp does so for each text
    between special tokens. transformers 5's LlamaTokenizer does not (legacy=False: no "▁" after a
    special token, none added before a leading space), so a chat prompt "<s>User: ..." would reach
    llama.cpp as other ids than the model was trained on ("▁U" vs "U"), and no GGUF key can say
    otherwise. So the tokenizer.json transformers derives from the model (vocab, merges, byte fallback)
    gets the normalizer the original Llama 2 tokenizer.json has, Prepend("▁") + Replace(" ", "▁"), and
    is declared a plain PreTrainedTokenizerFast, which transformers loads as written.
    """
    from tokenizers import decoders, normalizers, processors
    from transformers import AutoTokenizer

    config = out_dir / "tokenizer_config.json"
    config.write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", **SPECIAL}))  # read tokenizer.model
    backend = AutoTokenizer.from_pretrained(str(out_dir)).backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    bos = SPECIAL["bos_token"]
    backend.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, BOS_ID)])
    backend.save(str(out_dir / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "add_eos_token": False,
           "clean_up_tokenization_spaces": False, "model_max_length": 4096, **SPECIAL}
    config.write_text(json.dumps(cfg, indent=2) + "\n")


def create_model(
    out_dir: Path,
    architecture: str,
    config: dict,
    seed: int,
    tokenizer_dir: Path | None = None,
    train_text: Path | None = None,
    vocab_size: int = 512,
    dtype: str = "float32",
    norm_jitter: float = 0.0,
) -> Path:
    """Write a randomly initialized checkpoint with its tokenizer into out_dir. `norm_jitter`: the std of
    noise added to every norm weight (transformers initializes them all alike, so a norm read from the
    wrong tensor would not show)."""
    import torch
    import transformers

    arch_class(architecture, where="model.architecture")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir:
        tokenizer_dir = Path(tokenizer_dir)
        if not (tokenizer_dir / "tokenizer.model").exists() and not (tokenizer_dir / "tokenizer.json").exists():
            raise InvalidInput(f"model.tokenizer.path: {tokenizer_dir} has no tokenizer.model or tokenizer.json")
        for f in tokenizer_dir.iterdir():
            if f.is_file() and f.name.startswith(("tokenizer", "special_tokens", "added_tokens", "chat_template")):
                shutil.copy2(f, out_dir / f.name)
    elif train_text:
        train_tokenizer(Path(train_text), vocab_size, out_dir)
    else:
        raise InvalidInput("model.tokenizer: give either path or train_text for an init model")

    from transformers import AutoTokenizer

    cls = getattr(transformers, architecture)
    cfg_cls = cls.config_class
    # the tokenizer as transformers will load it beside this config: for some model types it picks its
    # own class whatever tokenizer_config.json says (Qwen2Tokenizer for qwen2, which adds <|endoftext|>),
    # and the embedding needs a row for every token that tokenizer has
    tok = AutoTokenizer.from_pretrained(str(out_dir), config=cfg_cls())
    kwargs = dict(config)
    kwargs.setdefault("vocab_size", len(tok))
    if kwargs["vocab_size"] < len(tok):
        raise InvalidInput(
            f"model.config.vocab_size: {kwargs['vocab_size']} is smaller than the tokenizer's {len(tok)} tokens"
        )
    kwargs.setdefault("bos_token_id", tok.bos_token_id)
    kwargs.setdefault("eos_token_id", tok.eos_token_id)
    try:
        hf_config = cfg_cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"model.config: {e}") from None
    hf_config.architectures = [architecture]
    torch.manual_seed(seed)
    model = cls(hf_config).to(getattr(torch, dtype)).eval()
    if norm_jitter:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.add_(torch.randn_like(p) * norm_jitter)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir
