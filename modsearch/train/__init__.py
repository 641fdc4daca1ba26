"""Train a bank's modules by multi-grained module replacing with knowledge distillation.

This is the training phase of *Modular Transformers* (Zhou, Le Bras, Choi, ACL Findings 2023), itself built on
BERT-of-Theseus module replacing. The teacher (the bank's original model) stays frozen; only module parameters
train. Two objectives:

- ``logits`` (the paper's, the default). Each step samples a student: walking each stack, at every position
  where modules start, one of them (granularity chosen uniformly) replaces its span with probability ``p(t)``,
  which rises linearly from ``p_start`` to 1 over the first ``ramp`` of training, so every module trains first
  among original layers and then among other modules. Teacher and student run on the same batch in one context
  (eager attention everywhere, dropout off), and the loss is ``w_task·CE + w_logits·KL(teacher‖student) +
  w_hidden·Σ relMSE + w_attn·Σ attnKL`` over the modules in use. The LM head runs on chunks of tokens.
- ``hidden`` (for large models). One teacher pass per batch (no LM head) gives every layer's input arguments
  and output; each module is called with the arguments of the first layer of its span and learns the
  teacher's state at its end (relative MSE, plus the attention KL if ``w_attn``).

The module folder follows the loop's order: ``_config`` (recipe and schedules), ``_data`` (examples and
batches), ``_student`` (the student and the forward taps), ``_losses`` (one batch's losses), ``_loop``
(checkpoints and the loop).

>>> from modsearch.train import TrainConfig, train_bank                 # doctest: +SKIP
>>> train_bank(bank, "train.jsonl", TrainConfig(steps=2000))             # doctest: +SKIP
"""

from ._config import OBJECTIVES, TrainConfig, TrainState, learning_rate, replace_probability
from ..data import length_batches
from ._data import collate, encode_examples, read_examples, stack_masks
from ._losses import distillation_step, head_losses, hidden_step, teacher_forced
from ._loop import CKPT_DIR, evaluate_modules, module_alone_plan, train_bank
from ..quality._head import head_input, head_logits
from ._student import Student, capture, sample_student, training_context

__all__ = ["CKPT_DIR", "OBJECTIVES", "Student", "TrainConfig", "TrainState", "capture", "collate",
           "distillation_step", "encode_examples", "evaluate_modules", "head_input", "head_logits", "head_losses",
           "hidden_step", "learning_rate", "length_batches", "module_alone_plan", "read_examples",
           "replace_probability", "sample_student", "stack_masks", "teacher_forced", "train_bank",
           "training_context"]
