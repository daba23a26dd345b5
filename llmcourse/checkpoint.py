"""Saving and loading model checkpoints; the course's shipped base model, checksum-verified.

    model = load_base_model(device)   # the tiny GPT after pretraining + SFT (chapter 05)
    student = load_student_model(device)   # chapter 12's smaller student, the same recipe at half the width

The file holds only tensors and plain numbers (``torch.load(..., weights_only=True)``), and
its sha256 must equal `BASE_MODEL_SHA256`: a missing or damaged file gives a clear error
saying how to rebuild it (``python -m llmcourse.base_model``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from llmcourse.model import GPT, GPTConfig

BASE_MODEL_PATH = Path(__file__).parent / "data" / "base_model.pt"
BASE_MODEL_SHA256 = "1fa6c1f693aa81a0aa83b90b4b84acccca235bab680d681494a7e4a8770b8766"
"""sha256 of the shipped ``base_model.pt`` (printed by ``python -m llmcourse.base_model``)."""
STUDENT_MODEL_PATH = Path(__file__).parent / "data" / "student_model.pt"
STUDENT_MODEL_SHA256 = "b4a84dffe1f82f7af98eccab666ec3773e3072ba906e22de7c942e9338acf122"
"""sha256 of the shipped ``student_model.pt`` (printed by ``python -m llmcourse.base_model --student``)."""
GRPO_MODEL_PATH = Path(__file__).parent / "data" / "grpo_model.pt"
GRPO_MODEL_SHA256 = "d9de6dc799dd6b887ca78684081d5e1a2647cfd66bced5a62f66c19c597afd1b"
"""sha256 of the shipped ``grpo_model.pt``, chapter 10's recipe for seed 0 (printed by ``python -m llmcourse.grpo``)."""


class CheckpointError(RuntimeError):
    """The checkpoint is missing, damaged, or not the one the course ships."""


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_checkpoint(model: GPT, path: Path, metrics: dict | None = None) -> None:
    """Save config, weights (float32) and metrics; the weights are the state dict without duplicates."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.cfg.to_dict(), "state_dict": state, "metrics": dict(metrics or {})}, path)


def save_gpt_based(model: torch.nn.Module, prefix: str, path: Path, metrics: dict, train_config: dict) -> None:
    """Save a model built on a course GPT held at ``model.<prefix>`` (a reward model's ``body``, a PRM's ``lm``):
    the GPT's config, every weight but the tied ``<prefix>.lm_head.weight``, metrics and training config."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k != f"{prefix}.lm_head.weight"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": getattr(model, prefix).cfg.to_dict(), "state_dict": state, "metrics": dict(metrics),
                "train_config": train_config}, path)


def tied_state_dict(blob: dict, prefix: str = "") -> dict:
    """A saved state dict with the GPT's tied ``lm_head.weight`` (under ``prefix``) restored from its embedding."""
    dot = f"{prefix}." if prefix else ""
    return {**blob["state_dict"], f"{dot}lm_head.weight": blob["state_dict"][f"{dot}wte.weight"]}


def load_verified(path: Path, sha256: str | None, rebuild: str, what: str = "checkpoint") -> dict:
    """``torch.load`` a shipped file (weights only) after checking that it exists and, when given, its sha256.

    ``rebuild`` is the command that makes the file again, named in the error messages.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing. Rebuild it with `{rebuild}`.")
    if sha256 is not None and file_sha256(path) != sha256:
        raise CheckpointError(f"{path} is damaged or not the course's {what} (sha256 mismatch). "
                              f"Restore it with `git checkout -- llmcourse/data/{path.name}`, "
                              f"or rebuild it with `{rebuild}`.")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: Path, device: str | torch.device = "cpu", sha256: str | None = None,
                    rebuild: str = "python -m llmcourse.base_model") -> GPT:
    """Load a checkpoint saved by `save_checkpoint`; verify its sha256 when given (``rebuild``: the command named
    when it is missing or damaged)."""
    blob = load_verified(path, sha256, rebuild)
    model = GPT(GPTConfig(**blob["config"]))
    model.load_state_dict(tied_state_dict(blob))
    return model.to(device).eval()


def base_model_metrics() -> dict:
    """The evaluation recorded when the base model was trained (`llmcourse.evaluation.evaluate`'s numbers)."""
    return dict(torch.load(BASE_MODEL_PATH, map_location="cpu", weights_only=True)["metrics"])


def load_base_model(device: str | torch.device = "cpu") -> GPT:
    """The course's base model (pretrained + SFT), checksum-verified, in eval mode."""
    return load_checkpoint(BASE_MODEL_PATH, device, sha256=BASE_MODEL_SHA256)


def load_student_model(device: str | torch.device = "cpu") -> GPT:
    """Chapter 12's student (`llmcourse.base_model.STUDENT_RECIPE`: the base model's recipe at half the width, about
    a quarter of its parameters), checksum-verified, in eval mode."""
    return load_checkpoint(STUDENT_MODEL_PATH, device, sha256=STUDENT_MODEL_SHA256,
                           rebuild="python -m llmcourse.base_model --student")


def load_grpo_model(device: str | torch.device = "cpu") -> GPT:
    """Chapter 10's GRPO model (`llmcourse.grpo.RECIPE`, seed 0): chapter 12's teacher, checksum-verified, in eval
    mode."""
    return load_checkpoint(GRPO_MODEL_PATH, device, sha256=GRPO_MODEL_SHA256, rebuild="python -m llmcourse.grpo")


def student_model_metrics() -> dict:
    """The evaluation recorded when the student was trained (`llmcourse.evaluation.evaluate`'s numbers)."""
    return dict(torch.load(STUDENT_MODEL_PATH, map_location="cpu", weights_only=True)["metrics"])
