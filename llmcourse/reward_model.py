"""A reward model: the base model's body plus a scalar head, trained on preference pairs (chapter 07).

The model reads a prompt and a response and returns one number, the *score*. It is the base GPT
without its language-model head; a linear head maps the hidden state of every position to a
number, and the score is the number at the **last real token** of each row (the end-of-text
token of a finished response). That is the only position whose causal attention has seen the
whole prompt and response. Rows are right-padded, so the last real token is at a different
column in each row::

    ids          <|user|> 2+3 <|assistant|> <answer> 5 </answer> <|endoftext|> <|pad|> <|pad|>
    mask             1     1        1          1     1     1           1          0       0
    values          v0    v1       v2         v3    v4    v5          v6         v7      v8
    score                                                             v6 = values[mask.sum() - 1]

It is trained with the Bradley–Terry loss on pairs (chosen y_w, rejected y_l) for a prompt x:

    P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)),     loss = −log σ(r_w − r_l)   (mean over pairs)

as InstructGPT (Ouyang et al. 2022) and TRL's ``RewardTrainer`` do, and judged by its pairwise
accuracy: the share of held-out pairs whose chosen response scores strictly higher.

The course ships the trained model (``llmcourse/data/reward_model.pt``, sha256-checked, with its
measured accuracy); ``python -m llmcourse.reward_model`` rebuilds it (one thread, deterministic, about
3 minutes). Measured (``python -m llmcourse bench --skip-notebooks --only reward_model``): held-out pairwise
accuracy 0.903 for the shipped model, 0.884–0.903 over 3 training seeds, against 0.791 for a scorer that
looks only at the format (1 if the response reasons). It learns the format, not correctness: between a right
and a wrong bare answer it is right about half the time, and wrong reasoned answers outscore right bare ones.

Chapter 09 scores its rollouts with it::

    rm = load_reward_model(device)
    scores = score_responses(rm, responses)      # (B,) one number per sampled response
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmcourse import taskworld as tw
from llmcourse.checkpoint import file_sha256, load_base_model, load_verified, save_gpt_based, tied_state_dict
from llmcourse.model import GPT, GPTConfig, position_ids
from llmcourse.preferences import PreferencePairs, sample_pairs
from llmcourse.run_log import RunLog
from llmcourse.runtime import torch_threads
from llmcourse.sampling import Responses
from llmcourse.tokenizer import special_id

REWARD_MODEL_PATH = Path(__file__).parent / "data" / "reward_model.pt"
PAD_ID = special_id(tw.PAD)
REWARD_MODEL_SHA256 = "404565ccbc64bd05ba6d03ca51479bd2ae0f04d5c3439058cb5bc0f9c1b1eeb1"
"""sha256 of the shipped ``reward_model.pt`` (printed by ``python -m llmcourse.reward_model``)."""


# --------------------------------------------------------------------------- the pieces


def last_token_values(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The value at the last real token of each right-padded row: values, mask (B, T) -> (B,).

    ``mask`` is True on the real tokens (prompt and response), False on the padding after them,
    so row b's last real token is at column ``mask[b].sum() - 1``.

    >>> values = torch.tensor([[1., 2., 3., 4.], [5., 6., 7., 8.]])
    >>> mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    >>> last_token_values(values, mask)
    tensor([2., 8.])
    """
    last = mask.long().sum(dim=1) - 1                                   # (B,) column of the last real token
    return values.gather(1, last.unsqueeze(1)).squeeze(1)               # (B,)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of −log σ(r_chosen − r_rejected − margin) over the pairs: chosen, rejected (N,) -> scalar.

    ``F.logsigmoid`` keeps it finite when the difference is large and negative (log(sigmoid(x))
    underflows to log 0 = −inf in float32 below x ≈ −104). ``margin`` (Llama 2's) asks for a gap.

    >>> round(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item(), 4)   # log 2
    0.6931
    >>> bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 200.0]))
    tensor(100.0635)
    """
    return -F.logsigmoid(chosen - rejected - margin).mean()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """Share of pairs whose chosen response scores strictly higher (a tie counts as wrong).

    >>> pairwise_accuracy(torch.tensor([2.0, 1.0, 0.5, 3.0]), torch.tensor([1.0, 1.0, 0.7, -1.0]))
    0.5
    """
    return (chosen > rejected).float().mean().item()


def real_token_mask(responses: Responses) -> torch.Tensor:
    """(B, T) bool: True on the prompt and response tokens of each row, False on the padding."""
    lengths = responses.prompt_lens + responses.response_lens                        # (B,)
    columns = torch.arange(responses.ids.size(1), device=responses.ids.device)       # (T,)
    return columns.unsqueeze(0) < lengths.unsqueeze(1)                               # (B, T)


# --------------------------------------------------------------------------- the model


class RewardModel(nn.Module):
    """The GPT's body (embeddings, blocks, final norm) and a linear head to one number per position."""

    def __init__(self, body: GPT):
        super().__init__()
        self.body = body                                                # its lm_head is not used
        self.head = nn.Linear(body.cfg.n_embd, 1)
        nn.init.zeros_(self.head.weight)                                # every score starts at 0
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_base(cls, base: GPT) -> "RewardModel":
        """A reward model whose body is a copy of ``base`` (the base model itself is not changed)."""
        return cls(copy.deepcopy(base))

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, C): the body's last hidden states, after the final norm."""
        body = self.body
        x = body.wte(ids) + body.wpe(position_ids(0, ids.size(1), ids.device))   # (B, T, C)
        for block in body.blocks:
            x = block(x)
        return body.ln_f(x)                                             # (B, T, C)

    def values(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T): the head's number at every position."""
        return self.head(self.hidden_states(ids)).squeeze(-1)           # (B, T)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids (B, T), mask (B, T) True on real tokens (right-padded) -> (B,) scores at the last real token."""
        return last_token_values(self.values(ids), mask)

    def score(self, responses: Responses) -> torch.Tensor:
        """(B,) scores of a batch of sampled (or packed) responses."""
        return self(responses.ids, real_token_mask(responses))


@torch.no_grad()
def score_responses(rm: RewardModel, responses: Responses, batch_size: int = 256) -> torch.Tensor:
    """(B,) scores of a batch of responses, computed ``batch_size`` rows at a time, without gradients."""
    mask = real_token_mask(responses)                                   # (B, T)
    scores = [rm(responses.ids[i:i + batch_size], mask[i:i + batch_size]) for i in range(0, len(responses), batch_size)]
    return torch.cat(scores) if scores else torch.zeros(0, device=responses.ids.device)


def pair_scores(rm: RewardModel, pairs: PreferencePairs, device: torch.device | str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and of the rejected responses of ``pairs``: two (N,) tensors."""
    return rm.score(pairs.chosen_responses(device)), rm.score(pairs.rejected_responses(device))


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, pairs: PreferencePairs, batch_size: int = 256) -> dict[str, float]:
    """Pairwise accuracy and mean Bradley–Terry loss of ``rm`` on ``pairs`` (in eval mode)."""
    was_training = rm.training
    rm.eval()
    device = next(rm.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        c, r = pair_scores(rm, pairs.subset(range(start, min(start + batch_size, len(pairs)))), device)
        chosen.append(c)
        rejected.append(r)
    rm.train(was_training)
    c, r = torch.cat(chosen), torch.cat(rejected)
    return {"accuracy": pairwise_accuracy(c, r), "loss": bradley_terry_loss(c, r).item()}


# --------------------------------------------------------------------------- training


@dataclass
class RewardConfig:
    """How the reward model is trained."""

    n_problems: int = 4000
    """Training problems; each is answered twice by the base model, and the non-tied ones make the pairs."""
    problem_seed: int = 700
    """Seed of the training problems (`taskworld.sample_problems`, never a held-out problem)."""
    steps: int = 500
    """Optimizer steps."""
    batch_size: int = 32
    """Pairs per step (their 2 × batch_size responses go through the model in one batch)."""
    lr: float = 3e-4
    """AdamW learning rate, after a linear warmup; constant."""
    warmup_steps: int = 10
    """Steps of linear warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 0
    """Seed of the pair sampling and of the batches."""

    def to_dict(self) -> dict:
        return asdict(self)


def train_reward_model(rm: RewardModel, pairs: PreferencePairs, cfg: RewardConfig,
                       loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = bradley_terry_loss,
                       read_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = last_token_values,
                       progress: bool = True) -> dict[str, list[float]]:
    """Train ``rm`` in place on ``pairs`` for ``cfg.steps`` steps; returns the loss and accuracy per step.

    Each step draws ``cfg.batch_size`` pairs (a fresh permutation each epoch), scores the chosen and
    rejected responses in one forward pass (``read_fn(rm.values(ids), mask)``, the score at the last
    real token), and takes an AdamW step on ``loss_fn(chosen, rejected)``.
    """
    device = next(rm.parameters()).device
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    order: list[int] = []
    rm.train()
    log = RunLog(keys=("loss", "accuracy"))
    for step in tqdm(range(cfg.steps), desc="reward model", disable=not progress, mininterval=1.0):
        # Stage 1: a batch of pairs
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(pairs), generator=g).tolist()
        batch, order = pairs.subset(order[:cfg.batch_size]), order[cfg.batch_size:]
        # Stage 2: score chosen and rejected responses in one forward pass
        c, r = batch.chosen_responses(), batch.rejected_responses()
        T = max(c.ids.size(1), r.ids.size(1))
        ids = torch.cat([_pad_to(c.ids, T, PAD_ID), _pad_to(r.ids, T, PAD_ID)]).to(device)      # (2N, T)
        mask = torch.cat([_pad_to(real_token_mask(c), T, False), _pad_to(real_token_mask(r), T, False)]).to(device)
        chosen, rejected = read_fn(rm.values(ids), mask).chunk(2)                                     # (N,), (N,)
        # Stage 3: Bradley-Terry loss and an AdamW step
        loss = loss_fn(chosen, rejected)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.add(loss=loss.item(), accuracy=pairwise_accuracy(chosen.detach(), rejected.detach()))
    rm.eval()
    return log.finish()


def _pad_to(x: torch.Tensor, T: int, value) -> torch.Tensor:
    """Right-pad (B, T0) to (B, T) with ``value``."""
    fill = torch.full((x.size(0), T - x.size(1)), value, dtype=x.dtype, device=x.device)
    return torch.cat([x, fill], dim=1)


# --------------------------------------------------------------------------- held-out pairs, the shipped model

HELD_OUT_REPEATS = 4
"""Each held-out problem is answered in this many pairs of samples."""
HELD_OUT_SEED = 1
"""Seed of the held-out pairs' sampling."""


def held_out_pairs(base: GPT, seed: int = HELD_OUT_SEED) -> PreferencePairs:
    """Pairs on the 256 held-out problems (`taskworld.eval_problems`, never trained on), each answered
    `HELD_OUT_REPEATS` times in pairs by ``base`` and labelled by the rules (about 470 pairs)."""
    return sample_pairs(base, list(tw.eval_problems()) * HELD_OUT_REPEATS, seed=seed)


def training_pairs(base: GPT, cfg: RewardConfig) -> PreferencePairs:
    """The training pairs of ``cfg``: ``cfg.n_problems`` training problems answered twice by ``base``."""
    return sample_pairs(base, tw.sample_problems(cfg.n_problems, seed=cfg.problem_seed), seed=cfg.seed)


def build_reward_model(base: GPT, cfg: RewardConfig, progress: bool = True) -> tuple[RewardModel, dict]:
    """Sample training pairs from ``base``, train a reward model on them, and measure it on held-out pairs.

    Returns the model and its metrics: held-out pairwise accuracy and loss, number of pairs, seconds.
    """
    start = time.perf_counter()
    pairs = training_pairs(base, cfg)
    rm = RewardModel.from_base(base)
    history = train_reward_model(rm, pairs, cfg, progress=progress)
    held_out = evaluate_pairs(rm, held_out_pairs(base))
    metrics = {"held_out_accuracy": held_out["accuracy"], "held_out_loss": held_out["loss"],
               "train_pairs": len(pairs), "train_seconds": history["seconds"][0],
               "final_train_loss": sum(history["loss"][-20:]) / len(history["loss"][-20:]),
               "total_seconds": time.perf_counter() - start}
    return rm, metrics


def save_reward_model(rm: RewardModel, path: Path, metrics: dict, cfg: RewardConfig) -> None:
    """Save the body's config and weights (without the tied lm_head), the head, metrics and training config."""
    save_gpt_based(rm, "body", path, metrics, cfg.to_dict())


def load_reward_model(device: str | torch.device = "cpu", path: Path = REWARD_MODEL_PATH,
                      sha256: str | None = REWARD_MODEL_SHA256) -> RewardModel:
    """The course's trained reward model, checksum-verified, in eval mode."""
    blob = load_verified(path, sha256, "python -m llmcourse.reward_model", what="reward model")
    rm = RewardModel(GPT(GPTConfig(**blob["config"])))
    rm.load_state_dict(tied_state_dict(blob, "body"))
    return rm.to(device).eval()


def reward_model_metrics(path: Path = REWARD_MODEL_PATH) -> dict:
    """The metrics recorded when the shipped reward model was trained (held-out accuracy, seconds, …)."""
    return dict(torch.load(path, map_location="cpu", weights_only=True)["metrics"])


def main() -> None:
    """Rebuild ``llmcourse/data/reward_model.pt`` from the shipped base model (one thread, deterministic)."""
    cfg = RewardConfig()
    with torch_threads(1):
        rm, metrics = build_reward_model(load_base_model(), cfg)
    save_reward_model(rm, REWARD_MODEL_PATH, metrics, cfg)
    print(f"held-out pairwise accuracy {metrics['held_out_accuracy']:.3f} on {metrics['train_pairs']} training pairs, "
          f"{metrics['train_seconds']:.0f} s of training")
    print(f"wrote {REWARD_MODEL_PATH}, sha256 {file_sha256(REWARD_MODEL_PATH)}")


if __name__ == "__main__":
    main()
