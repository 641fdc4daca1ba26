"""What a ``bank train`` run is: its recipe (recorded in the manifest), its progress, and its schedules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .._errors import UserError

OBJECTIVES = ("logits", "hidden")
HIDDEN_LOSSES = ("global", "per-dim", "both")  # how the hidden-state MSE is scaled (train._losses.hidden_mse)

#: Fields that change how a run is carried out but not what it computes; a resumed run may change them.
_RUNTIME_FIELDS = ("threads", "checkpoint_every", "eval_every", "eval_size", "chunk_tokens")


@dataclass
class TrainConfig:
    """Recipe of a ``bank train`` run (recorded in the manifest).

    ``objective`` is ``"logits"`` (the paper's: sampled students, task CE + logit KL + hidden + attention terms)
    or ``"hidden"`` (each module maps the teacher's hidden state at the start of its span to the one at its end,
    from teacher states computed once per batch; no LM head in the loop: for large-vocabulary models).
    """

    steps: int = 2000
    batch_tokens: int = 2048
    max_len: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    p_start: float = 0.3
    ramp: float = 0.7
    student_max_span: int = 0  # sampled students use modules of at most this many layers (0: every module)
    objective: str = "logits"
    w_task: float = 1.0
    w_logits: float = 1.0
    w_hidden: float = 1.0
    w_attn: float = 1.0
    hidden_loss: str = "global"  # one of HIDDEN_LOSSES
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    eval_size: int = 200
    checkpoint_every: int = 200
    chunk_tokens: int = 0  # tokens per LM-head chunk; 0 sizes them by the vocabulary (128 MB of logits)
    device: str = "cpu"
    autocast: str = "none"
    source_field: str = "source"
    target_field: str = "target"
    text_field: str = "text"
    threads: int = 0

    def validate(self) -> TrainConfig:
        if self.objective not in OBJECTIVES:
            raise UserError(f"unknown --objective {self.objective!r}: use {' or '.join(OBJECTIVES)}")
        check_hidden_loss(self.hidden_loss)
        if self.student_max_span and self.objective != "logits":
            raise UserError("--student-max-span shapes the sampled students of --objective logits; the hidden "
                            "objective samples none")
        if self.steps < 1 or self.batch_tokens < 1 or self.chunk_tokens < 0 or self.student_max_span < 0:
            raise UserError("--steps and --batch-tokens must be positive, --chunk-tokens and --student-max-span "
                            ">= 0")
        dev = self.device.split(":")[0]
        if dev not in ("cpu", "cuda", "mps"):
            raise UserError(f"unknown --device {self.device!r}: use cpu, cuda[:n] or mps")
        import torch

        if dev == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                            "False); train on --device cpu")
        if dev == "mps" and not torch.backends.mps.is_available():
            raise UserError("--device mps: MPS is not available on this machine; train on --device cpu")
        check_autocast(self.autocast, self.device)
        return self

    def differences(self, other: dict) -> list[str]:
        """Fields (other than runtime ones) whose values differ from a recorded config."""
        mine = asdict(self)
        return sorted(k for k in mine if k not in _RUNTIME_FIELDS and other.get(k, mine[k]) != mine[k])


def check_autocast(autocast: str, device: str) -> None:
    if autocast not in ("none", "bf16", "fp16"):
        raise UserError(f"unknown --autocast {autocast!r}: use none, bf16 or fp16")
    if autocast == "fp16" and device.split(":")[0] == "cpu":
        raise UserError("--autocast fp16 needs a GPU; on the CPU use bf16 or none")


def check_hidden_loss(how: str) -> None:
    if how not in HIDDEN_LOSSES:
        raise UserError(f"unknown --hidden-loss {how!r}: use {', '.join(HIDDEN_LOSSES)}")


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed_s: float = 0.0
    history: list = field(default_factory=list)  # periodic records: step, losses, per-module distillation loss
    module_loss: dict = field(default_factory=dict)  # running per-module loss since the last record


def replace_probability(step: int, cfg: TrainConfig) -> float:
    """The paper's curriculum: p rises linearly from ``p_start`` to 1 over the first ``ramp`` of training."""
    ramp_steps = max(1, int(cfg.ramp * cfg.steps))
    return min(1.0, cfg.p_start + (1.0 - cfg.p_start) * step / ramp_steps)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
