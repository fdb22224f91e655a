"""The HF Trainer every `balabol train --arch` uses: warmup + cosine LR, eval and a checkpoint
every N steps (and at the last one), the best one kept, batches packed, grouped or random,
and a count of the token positions the steps computed over (padding included).

    balabol train --data data/me --batching grouped --eval-every 20

transformers is imported when a trainer is made, not with this module.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from training import dataset
from training.callbacks import final_step_callback, progress_callback
from training.plan import Plan, Schedule


def make_trainer(
    *,
    work_dir: Path,
    lr: float,
    seed: int,
    gradient_checkpointing: bool,
    plan: Plan,
    batching: str,
    sched: Schedule,
    model,
    tokenizer,
    train_set,
    val_set,
    progress: bool,
):
    """The HF Trainer every `balabol train --arch` uses: warmup + cosine LR, eval and a
    checkpoint every sched.eval_every steps (and at the last one), the best one kept."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    has_val = bool(val_set)
    args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=plan.micro_batch,
        per_device_eval_batch_size=plan.micro_batch,
        gradient_accumulation_steps=plan.accumulation,
        max_steps=sched.steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=sched.warmup,
        logging_steps=max(1, min(sched.eval_every, 10)),
        logging_first_step=True,
        eval_strategy="steps" if has_val else "no",
        eval_steps=sched.eval_every,
        save_strategy="steps",
        save_steps=sched.eval_every,
        save_total_limit=2,  # the last one (to resume) and the best one (to keep)
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        use_cpu=plan.device == "cpu",
        fp16=plan.precision == "fp16",
        bf16=plan.precision == "bf16",
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        # similar lengths in a batch: less compute spent on padding (benchmarks/test_training.py)
        group_by_length=batching == "grouped",
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,  # eval needs the loss only, not (B, T, V) logits kept
        report_to="none",
        seed=seed,
        dataloader_pin_memory=plan.device == "cuda",
        disable_tqdm=not progress,
    )

    class CountingTrainer(Trainer):
        """Counts the token positions the training steps compute over, padding included,
        and the real tokens among them (a packed row has no padding, so no mask)."""

        processed_tokens = 0
        real_tokens = 0

        def training_step(self, model, inputs, *args, **kwargs):
            ids = inputs["input_ids"]
            self.processed_tokens += ids.numel()
            mask = inputs.get("attention_mask")
            self.real_tokens += ids.numel() if mask is None else int(mask.sum())
            return super().training_step(model, inputs, *args, **kwargs)

    pad = tokenizer.pad_token_id
    packed = batching == "packed"
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=dataset.ChatDataset(train_set),
        eval_dataset=dataset.ChatDataset(val_set) if has_val else None,
        data_collator=(dataset.collate_packed if packed else partial(dataset.collate, pad_id=pad)),
        compute_loss_func=dataset.packed_loss if packed else None,
        callbacks=[final_step_callback()],
    )
    if progress:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(progress_callback())
    else:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict
    return trainer
