"""The HF Trainer callbacks every `balabol train` run adds: evaluate and checkpoint the last
step too (so it can be the one kept), and a tqdm bar with an ETA that starts at the resumed
step and prints one readable line per evaluation.

    balabol train --data data/me --max-steps 30 --eval-every 10   # "step 10: val loss ..."

transformers and tqdm are imported when a callback is made, not with this module.
"""

from __future__ import annotations

import math

from training.report import ppl


def final_step_callback():
    from transformers import TrainerCallback

    class FinalStep(TrainerCallback):
        """Evaluate and checkpoint the last step too, so it can be the one kept."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = args.eval_strategy != "no"
                control.should_save = True
            return control

    return FinalStep()


def progress_callback():
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class Progress(ProgressCallback):
        """tqdm with ETA, started at the resumed step; one readable line per eval."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.training_bar = tqdm(
                total=state.max_steps, initial=state.global_step, unit="step", dynamic_ncols=True
            )
            self.current_step = state.global_step
            self.best = math.inf

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and self.training_bar is not None:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)
            if not logs or "eval_loss" not in logs:
                return
            loss = logs["eval_loss"]
            mark = " (best so far)" if loss < self.best else ""
            self.best = min(self.best, loss)
            tqdm.write(
                f"step {state.global_step}: val loss {loss:.4f}, perplexity {ppl(loss):.2f}{mark}"
            )

    return Progress()
