"""The checkpoint checks in-process: what is refused is never opened, what the Hub cache lays out stays
allowed, remote code is refused only where transformers would need it, Hub auth errors say how to log in
without echoing a token, and the NaN/Inf scan is remembered by digest."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from llmbuild.checkpoint import check_remote_code, open_checkpoint
from llmbuild.errors import InvalidInput
from llmbuild.hashing import StatCache
from tests.conftest import make_tiny

_opened: list[str] = []
_watching: list[bool] = []


def _audit(event, args):
    if _watching and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only while _watching


@pytest.fixture()
def model(tmp_path_factory, tiny_models) -> Path:
    d = tmp_path_factory.mktemp("ckpt") / "model"
    shutil.copytree(tiny_models["LlamaForCausalLM"], d)
    return d


def opened_while(fn) -> list[str]:
    _opened.clear()
    _watching.append(True)
    try:
        fn()
    finally:
        _watching.clear()
    return list(_opened)


def test_a_name_leaving_the_folder_is_refused_and_never_opened(model):
    secret = model.parent / "secret.safetensors"
    shutil.copy(model / "model.safetensors", secret)
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    wmap = {n: "model.safetensors" for n in names}
    wmap[names[0]] = "../secret.safetensors"
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))

    def attempt():
        with pytest.raises(InvalidInput, match=r"weight_map.*'\.\./secret\.safetensors' leads out of the model folder"):
            open_checkpoint(model)

    opened = opened_while(attempt)
    assert not [p for p in opened if "secret" in p], opened


def test_an_absolute_tokenizer_reference_is_refused_and_never_opened(model, tmp_path):
    outside = tmp_path / "tokenizer.json"
    shutil.copy(model / "tokenizer.json", outside)
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc["tokenizer_file"] = str(outside)
    (model / "tokenizer_config.json").write_text(json.dumps(tc))

    def attempt():
        with pytest.raises(InvalidInput, match="tokenizer_file.*leads out of the model folder"):
            open_checkpoint(model)

    assert str(outside) not in opened_while(attempt)


def test_the_legacy_special_tokens_map_file_path_is_ignored_as_transformers_ignores_it(model):
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc["special_tokens_map_file"] = "/home/someone/.cache/special_tokens_map.json"  # as old save_pretrained wrote
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    assert open_checkpoint(model).tensor_names


def test_hub_cache_symlinks_stay_allowed(model, tmp_path):
    """snapshots/<sha>/file -> ../../blobs/<hash>: links that leave the folder, laid out by huggingface_hub."""
    from llmbuild.stages.acquire import acquire_local

    blobs, snap = tmp_path / "repo" / "blobs", tmp_path / "repo" / "snapshots" / ("a" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for p in model.iterdir():
        blob = blobs / p.name.replace(".", "_")
        shutil.copy(p, blob)
        os.symlink(os.path.relpath(blob, snap), snap / p.name)
    rec = acquire_local(str(snap), False, StatCache(None))
    assert "model.safetensors" in rec["files"] and rec["num_parameters"] > 0


def test_auto_map_is_refused_only_when_transformers_would_run_the_checkpoint_code(model):
    cfg = json.loads((model / "config.json").read_text())
    auto = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    # a model_type transformers knows: its own class is used and auto_map is never imported
    check_remote_code(model, {**cfg, "auto_map": auto}, trust_remote_code=False)
    with pytest.raises(InvalidInput, match="auto_map needs the checkpoint's own Python code.*trust_remote_code=true"):
        check_remote_code(model, {**cfg, "model_type": "x-custom", "auto_map": auto}, trust_remote_code=False)
    check_remote_code(model, {**cfg, "model_type": "x-custom", "auto_map": auto}, trust_remote_code=True)
    tc = json.loads((model / "tokenizer_config.json").read_text())
    tc.update(tokenizer_class="XTokenizer", auto_map={"AutoTokenizer": ["tokenization_x.XTokenizer", None]})
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(InvalidInput, match="tokenizer_config.json: auto_map.*tokenization_x.XTokenizer"):
        check_remote_code(model, cfg, trust_remote_code=False)


def test_pickled_weights_are_loaded_without_running_code(model, tmp_path):
    """allow_pickle=true still loads with weights_only=True: a pickle that runs code is refused, unrun."""
    import pickle

    flag = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": Payload()}))
    with pytest.raises(InvalidInput, match="allow_pickle"):
        open_checkpoint(model)
    with pytest.raises(InvalidInput, match="pytorch_model.bin: cannot be read as a PyTorch state dict"):
        open_checkpoint(model, allow_pickle=True)
    # the loader of every torch stage (reference, evaluation, fine-tuning): transformers, weights_only too
    from transformers.modeling_utils import load_state_dict

    with pytest.raises(Exception):  # noqa: B017  (torch's UnpicklingError, wrapped by transformers)
        load_state_dict(str(model / "pytorch_model.bin"))
    assert not flag.exists()


def test_padding_rows_are_a_warning_not_an_error(tmp_path):
    """A tokenizer using few of the embedding's rows is padded as llama.cpp pads it ([PAD<n>])."""
    from llmbuild.stages.acquire import acquire_local

    d = make_tiny(tmp_path / "padded", vocab_size=2048)  # 512 pieces, 2048 rows
    warnings: list[str] = []
    acquire_local(str(d), False, StatCache(None), warnings=warnings)
    assert len(warnings) == 1 and "uses 512 of the embedding's 2048 rows" in warnings[0]


def test_the_nan_scan_is_remembered_by_digest(model, tmp_path, monkeypatch):
    from llmbuild.stages import acquire

    calls = []
    real = acquire.nonfinite
    monkeypatch.setattr(acquire, "nonfinite", lambda ckpt: calls.append(1) or real(ckpt))
    sc = StatCache(tmp_path / "cache" / "statcache.json")
    acquire.acquire_local(str(model), False, sc)
    acquire.acquire_local(str(model), False, sc)
    assert len(calls) == 1 and (tmp_path / "cache" / "finite.json").is_file()


# -- the Hub: gated and private repos, through a stand-in for huggingface_hub (no network) -----------
TOKEN = "hf_SecretTokenThatMustNeverBePrinted42"


def _stand_in(exc):
    def snapshot_download(*args, **kwargs):
        raise exc

    return snapshot_download


def _http_error(cls, status: int):
    import httpx2 as httpx  # huggingface_hub 2.x speaks httpx2

    request = httpx.Request("GET", "https://huggingface.co/api/models/acme/secret/revision/main",
                            headers={"authorization": f"Bearer {TOKEN}"})
    response = httpx.Response(status, request=request)
    return cls(f"{status} Client Error for url {request.url} (token {TOKEN})", response=response)


@pytest.mark.parametrize("kind,status,needle", [("GatedRepoError", 403, "gated"),
                                                ("RepositoryNotFoundError", 401, "private"),
                                                ("HfHubHTTPError", 403, "not accessible")])
def test_gated_or_private_repo_says_how_to_log_in_and_never_prints_the_token(monkeypatch, kind, status, needle):
    import huggingface_hub
    import huggingface_hub.errors as errors

    from llmbuild.stages.acquire import acquire_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _stand_in(_http_error(getattr(errors, kind), status)))
    with pytest.raises(InvalidInput) as e:
        acquire_hub("acme/secret", "main", False, StatCache(None))
    msg = str(e.value)
    assert "model.repo_id" in msg and needle in msg and "hf auth login" in msg and "HF_TOKEN" in msg
    assert TOKEN not in msg and "\n" not in msg


def test_other_hub_errors_have_tokens_scrubbed(monkeypatch):
    import huggingface_hub
    import huggingface_hub.errors as errors

    from llmbuild.stages.acquire import acquire_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", _stand_in(_http_error(errors.HfHubHTTPError, 500)))
    with pytest.raises(InvalidInput) as e:
        acquire_hub("acme/secret", "main", False, StatCache(None))
    assert TOKEN not in str(e.value) and "hf_***" in str(e.value)
