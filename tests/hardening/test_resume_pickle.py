"""The fine-tuning resume reads its checkpoint (accelerate's save_state: optimizer, scheduler, RNG
states are pickles) with weights_only=True: a checkpoint whose pickle would run code is refused with
exit 2 naming the file, and the code never runs."""

from __future__ import annotations

import os
import pickle

import pytest

from llmbuild.errors import InvalidInput
from tests.finetune.test_finetune import cfg_for, run, ws  # noqa: F401  (ws: the fixture)


def test_a_resume_checkpoint_holding_a_code_pickle_is_refused_unrun(ws, tmp_path):  # noqa: F811
    class Stop(Exception):
        pass

    def stop_at_3(step, total, loss, left):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        run(ws, cfg_for(ws), "tampered", progress=stop_at_3)
    ckpt = ws["root"] / "work" / "tampered" / "checkpoints" / "step-00000002"
    pickles = sorted(p for p in ckpt.iterdir() if p.suffix in (".pkl", ".bin"))
    assert pickles, list(ckpt.iterdir())
    flag = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    victim = next(p for p in pickles if p.name.startswith("random_states"))
    victim.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(InvalidInput, match=rf"{victim.name}.*cannot be loaded safely"):
        run(ws, cfg_for(ws), "tampered")
    assert not flag.exists()
