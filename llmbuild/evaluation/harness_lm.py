"""An lm-evaluation-harness model (`lm_eval.api.model.TemplateLM`) over any llmbuild runtime.

One class serves every runtime (onnxruntime, llama.cpp, the trtllm checkpoints' loader, the source in
torch): it needs only a `llmbuild.evaluation.runtimes.Runtime`, i.e. logits for token-id sequences
and greedy generation through the KV cache. It follows the harness's own `hf` model (HFLM,
lm_eval/models/huggingface.py, lm-eval 0.4.13) step by step, so that on the same logits it gives the
same numbers (tests/evaluation/test_harness_adapters.py holds every runtime to HFLM):
- tokens: HFLM.tok_encode's rule (the tokenizer's own special tokens, none when the text already
  starts with BOS); context and continuation split by TemplateLM._encode_pair;
- loglikelihood: the harness's Collator orders requests longest first and lets continuations that
  share all but their last token share one forward pass (HFLM's logits cache); the input is
  (context + continuation)[-(max_length + 1):][:-1]; the continuation's rows are log-softmaxed, its
  tokens' log-probabilities summed, and `is_greedy` says whether each was the argmax;
- loglikelihood_rolling: lm_eval.utils.get_rolling_token_windows / make_disjoint_window with the
  prefix token (BOS, else EOS) and context_len=1, each window scored as above, summed per document;
- generate_until: greedy only (the runtimes decode greedily); the context is left-truncated to
  max_length - max_gen_toks, decoding stops at EOS or once a stop string appears in the text, and the
  text is cut at the first stop string (lm_eval.models.utils.postprocess_generated_text);
- chat templates: apply_chat_template renders with the tokenizer's template exactly as HFLM does;
  tokenizer_name and chat_template (TemplateLM's) make the harness's caches and configs name it.
Logits are computed in batches of `batch_size` sequences where the runtime batches them, and in
groups whose logits stay under a memory budget where it does not.
"""

from __future__ import annotations

from lm_eval.api.model import TemplateLM

from llmbuild.evaluation.runtimes import Runtime

# floats of logits held at once ([tokens, vocab] per sequence): 256 MB, whatever the batch size
LOGITS_BUDGET = 1 << 26


class RuntimeLM(TemplateLM):
    """lm-evaluation-harness's LM interface over one llmbuild runtime."""

    def __init__(self, runtime: Runtime, tokenizer, max_length: int, vocab_size: int, batch_size: int = 8,
                 max_gen_toks: int = 256):
        super().__init__()
        self.runtime = runtime
        self.tokenizer = tokenizer
        self._max_length = max_length
        self.vocab_size = vocab_size
        self.batch_size = batch_size if runtime.batched else 1
        self._max_gen_toks = max_gen_toks  # HFLM's default when a task sets none

    # -- what the harness asks of a model ---------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self) -> dict:
        return {"runtime": self.runtime.name, "max_length": self.max_length}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        from lm_eval.models.utils import has_bos_prefix

        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            kw["add_special_tokens"] = False  # a chat template already wrote BOS
        ids = self.tokenizer.encode(string, **kw)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        import jinja2

        def render(history):
            return self.tokenizer.apply_chat_template(history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt)

        try:
            return render(chat_history)
        except jinja2.exceptions.TemplateError:
            # HFLM's fallback: templates that reject a system turn get the history without it
            return render([m for m in chat_history if m["role"] != "system"])

    # -- scoring ------------------------------------------------------------------------------------
    def loglikelihood(self, requests, disable_tqdm: bool = True):
        return super().loglikelihood(requests, disable_tqdm=True)

    def _logits(self, inputs: list[list[int]]) -> list:
        """The runtime's logits for each input, a memory-bounded group of sequences per call."""
        out, group, size = [], [], 0
        for ids in inputs:
            n = len(ids) * self.vocab_size
            if group and size + n > LOGITS_BUDGET:
                out += self.runtime.logits(group)
                group, size = [], 0
            group.append(ids)
            size += n
        if group:
            out += self.runtime.logits(group)
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = True, override_bs: int | None = None):
        import numpy as np
        import torch
        from lm_eval.models.utils import Collator

        def by_length(req):
            toks = req[1] + req[2]
            return -len(toks), tuple(toks)

        re_ord = Collator(requests, sort_fn=by_length, group_by="contexts", group_fn=lambda req: req[-2] + req[-1][:-1])
        res = []
        for chunk in re_ord.get_batched(n=self.batch_size):
            inputs = [(ctx + cont)[-(self.max_length + 1):][:-1] for _, ctx, cont in chunk]
            for (request, ctx, cont), inp, logits in zip(chunk, inputs, self._logits(inputs)):
                rows = np.asarray(logits[len(inp) - len(cont): len(inp)], dtype=np.float64)
                logp = rows - np.logaddexp.reduce(rows, axis=-1, keepdims=True)
                # the Collator hands back every request that shares this forward pass
                for req, cont_toks, lp in re_ord.get_cache(req_str=request, cxt_toks=ctx, cont_toks=cont,
                                                            logits=torch.from_numpy(logp)[None]):
                    c = np.asarray(cont_toks)
                    lp = lp[0].numpy()[-len(c):]
                    answer = (float(lp[np.arange(len(c)), c].sum()), bool((lp.argmax(-1) == c).all()))
                    res.append(answer)
                    if req is not None:
                        self.cache_hook.add_partial("loglikelihood", req, answer)
        return re_ord.get_original(res)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = True) -> list[float]:
        from lm_eval import utils

        windows, counts = [], []
        for (string,) in [r.args for r in requests]:
            w = [(None, *x) for x in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1))]
            windows += w
            counts.append(len(w))
        lls = self._loglikelihood_tokens(windows)
        out, i = [], 0
        for (string,), n in zip([r.args for r in requests], counts):
            total = sum(ll for ll, _ in lls[i:i + n])
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            i += n
        return out

    # -- generation ---------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = True) -> list[str]:
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        from llmbuild.evaluation.greedy import stop_when

        if self.runtime.generate is None:
            raise RuntimeError(f"{self.runtime.name} cannot generate: {self.runtime.no_generation}")
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        out = []
        for context, gen_kwargs in [r.args for r in requests]:
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if kwargs.get("do_sample"):
                raise ValueError("sampling was asked for; llmbuild's runtimes decode greedily")
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = kwargs.pop("max_gen_toks")
            ids = self.tok_encode(context, left_truncate_len=self.max_length - max_gen)

            def stop(new: list[int], until=until) -> bool:
                text = self.tok_decode(new)
                return any(s and s in text for s in until)

            with stop_when(stop):
                new = self.runtime.generate(ids, max_gen, self.eot_token_id)
            text = postprocess_generated_text(self.tok_decode(new), stop=until, think_end_token=None)
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out
