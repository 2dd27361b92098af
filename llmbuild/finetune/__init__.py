"""Fine-tuning: LoRA (peft) and full fine-tuning from local JSONL datasets, merged into a Hugging Face
checkpoint that every target is built from.

    config.py   the recipe's `finetune` schema and the LoRA target-module table
    data.py     check, load (datasets) and tokenize the data; labels only on what the model must say
    train.py    the loop (accelerate: one CPU, one GPU, or several under accelerate launch / torchrun)
    merge.py    adapter -> merged checkpoint in the base dtype, tokenizer files copied unchanged
    golden.py   greedy exact match on a golden set, before and after
    plot.py     the loss PNG
    stage.py    what the planner and engine call: check, check_model, key_inputs, run
Heavy imports (torch, transformers, peft, datasets) happen inside functions, so planning stays fast.
"""
