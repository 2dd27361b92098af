"""The clients that need their own installs, loading an ONNX folder as the onnx target ships it: transformers.js
under node (npm `@huggingface/transformers`) and optimum's ORTModelForCausalLM in a venv of its own
(optimum-onnx 0.1 pins transformers < 4.58, which also proves the tokenizer files load in transformers 4.x).
Slow: each installs its client first (npm, pip from the registry's cache)."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv

import pytest

from llmbuild.checkpoint import open_checkpoint
from llmbuild.finetune.data import DEFAULT_CHAT_TEMPLATE
from llmbuild.targets import onnx as O
from llmbuild.targets.common import ArtifactMeta
from tests.conftest import make_tiny

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Llama with the demo's chat template, exported as onnx fp32 and int4 folders."""
    root = tmp_path_factory.mktemp("slowclients")
    model = make_tiny(root / "m", "LlamaForCausalLM")
    (model / "chat_template.jinja").write_text(DEFAULT_CHAT_TEMPLATE)
    out = {}
    for name, opts in (("fp32", {}), ("int4", {"quant": "int4"})):
        d = root / "artifacts" / name
        d.mkdir(parents=True)
        rec = O.export(open_checkpoint(model), O.Options(**opts), d, ArtifactMeta(name="t"), lambda *a: None)
        out[name] = (d, rec)
    return model, root, out


def _expected(model, d, rec, chat: bool):
    """The prompt ids transformers gives and what onnxruntime generates from them, greedy, 6 tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    text = tok.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                   add_generation_prompt=True) if chat else QUESTION
    ids = tok(text, add_special_tokens=not chat).input_ids
    return list(ids), O.BACKEND.generate(d, rec, list(ids), 6, None)


@pytest.mark.skipif(shutil.which("npm") is None or shutil.which("node") is None, reason="needs node and npm")
def test_transformers_js_loads_the_folder(folders, tmp_path):
    model, root, out = folders
    proj = tmp_path / "js"
    proj.mkdir()
    subprocess.run(["npm", "init", "-y"], cwd=proj, check=True, capture_output=True)
    # --ignore-scripts: onnxruntime-node's CPU binaries come in the tarball; its script fetches GPU ones
    subprocess.run(["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "@huggingface/transformers@4"],
                   cwd=proj, check=True, capture_output=True, timeout=900)
    script = proj / "run.mjs"
    script.write_text("""
import { AutoTokenizer, AutoModelForCausalLM, env } from '@huggingface/transformers';
env.localModelPath = process.argv[2]; env.allowRemoteModels = false;
const [name, dtype, question] = process.argv.slice(3);
const tok = await AutoTokenizer.from_pretrained(name);
const model = await AutoModelForCausalLM.from_pretrained(name, { dtype });
const text = tok.apply_chat_template([{ role: 'user', content: question }], { tokenize: false, add_generation_prompt: true });
const inputs = tok(text, { add_special_tokens: false });
const out = await model.generate({ ...inputs, max_new_tokens: 6, min_new_tokens: 6, do_sample: false });
const prompt = Array.from(inputs.input_ids.data, Number);
console.log(JSON.stringify({ text, prompt, out: Array.from(out.data, Number).slice(prompt.length) }));
""")
    for name, dtype in (("fp32", "fp32"), ("int4", "q4")):
        d, rec = out[name]
        assert rec["layout"]["transformers_js_dtype"] == dtype
        proc = subprocess.run(["node", str(script), str(root / "artifacts") + "/", name, dtype, QUESTION], cwd=proj,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        ids, gen = _expected(model, d, rec, chat=True)
        assert got["prompt"] == ids  # the template came from tokenizer_config.json, tokenized as transformers does
        assert got["out"] == gen


def test_optimum_loads_the_folder_with_transformers_4(folders, tmp_path):
    """optimum's ORTModelForCausalLM, in a venv of its own with transformers 4.57: the folder's tokenizer
    and graph load and generate what onnxruntime generates here."""
    model, root, out = folders
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "optimum-onnx[onnxruntime]==0.1.0"],
                   check=True, capture_output=True, timeout=1800)
    d, rec = out["fp32"]
    script = f"""
import json, sys
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import AutoTokenizer
import transformers
d = sys.argv[1]
tok = AutoTokenizer.from_pretrained(d)
model = ORTModelForCausalLM.from_pretrained(d, subfolder="{rec['layout']['optimum']['subfolder']}",
                                            file_name="{rec['layout']['optimum']['file_name']}", use_cache=True)
ids = tok(sys.argv[2], return_tensors="pt")
gen = model.generate(**ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
print(json.dumps({{"v": transformers.__version__, "prompt": ids.input_ids[0].tolist(),
                  "out": gen[0, ids.input_ids.shape[1]:].tolist(),
                  "template": tok.chat_template is not None}}))
"""
    proc = subprocess.run([str(py), "-c", script, str(d), QUESTION], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["v"].startswith("4.") and got["template"]
    ids, gen = _expected(model, d, rec, chat=False)
    assert got["prompt"] == ids and got["out"] == gen
