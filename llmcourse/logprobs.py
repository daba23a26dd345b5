"""Per-token log-probabilities of a batch of sequences, and means over masked tokens.

`token_logprobs` runs the model once over ``ids`` (B, T). Position t scores the *next*
token, so there are T − 1 log-probs, and column t belongs to token t + 1. A mask over the
tokens (B, T), such as `Responses.response_mask`, is aligned with them by dropping its first
column (`target_mask`)::

    ids             <|user|>  2+3  <|assistant|>  <answer>  5  <|endoftext|>  <|pad|>
    response_mask       0      0        0            1      1       1            0
    token_logprobs          t=0     t=1          t=2      t=3     t=4          t=5
      predicts             2+3  <|assistant|>  <answer>    5   <|endoftext|>  <|pad|>
    target_mask              0        0            1        1       1            0

So ``target_mask(mask)[:, t] = mask[:, t + 1]``: log π(token t + 1 | tokens ≤ t) counts when
token t + 1 is a response token. The first token of a sequence is never scored (nothing
predicts it), which is why the prompt must be at least one token long.

`masked_sum` and `masked_mean` sum or average only the kept entries; `sequence_logprobs`
is the log-probability of a whole response, log π(y | x) = Σ_t log π(y_t | x, y_<t), and
`response_logprobs` that of every row of a `Responses` batch. Every loop of the course (SFT aside)
scores tokens through `logprobs_from_logits`: DPO, PPO and GRPO alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmcourse.model import GPT
from llmcourse.sampling import Responses


def logprobs_from_logits(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, T-1, V) logits of ``model(ids[:, :-1])`` and (B, T) ids -> (B, T-1) float32 log π of each next token.

    The log-softmax is taken in float32. For a loop that needs the logits too (PPO's entropy).

    >>> logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))                 # (1, 2, 2)
    >>> logprobs_from_logits(logits, torch.tensor([[0, 1, 0]])).exp()
    tensor([[0.5000, 0.9000]])
    """
    logp = F.log_softmax(logits.float(), dim=-1)                        # (B, T-1, V)
    return logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)        # (B, T-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """(…, V) logits -> (…) entropy −Σ p log p of each position's next-token distribution (PPO and GRPO log it).

    >>> entropy_from_logits(torch.zeros(2, 4))                                    # uniform over 4: log 4
    tensor([1.3863, 1.3863])
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def token_logprobs(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """(B, T) token ids -> (B, T-1) float32: ``[:, t] = log π(ids[:, t+1] | ids[:, :t+1])``.

    One forward pass. Gradients flow to the model unless called under ``torch.no_grad()``
    (as for the reference model or old log-probs).
    """
    return logprobs_from_logits(model(ids[:, :-1]), ids)               # position t predicts t+1


def target_mask(token_mask: torch.Tensor) -> torch.Tensor:
    """A mask over the tokens (B, T) -> the mask over `token_logprobs`' columns (B, T-1).

    Column t scores token t + 1, so it is kept when token t + 1 is:

    >>> target_mask(torch.tensor([[False, False, True, True, False]]))
    tensor([[False,  True,  True, False]])
    """
    return token_mask[:, 1:]                                            # (B, T-1)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is True: over everything (scalar), or along ``dim``.

    Masked entries are replaced by 0 (not multiplied by it), so a NaN or inf there cannot leak in.

    >>> x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    >>> mask = torch.tensor([[True, True, False], [False, True, True]])
    >>> masked_sum(x, mask), masked_sum(x, mask, dim=1)
    (tensor(14.), tensor([ 3., 11.]))
    """
    kept = torch.where(mask, x, torch.zeros_like(x))                    # same shape as x
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is True.

    ``dim=None``: one mean over all kept entries of the batch (every kept token weighs the same,
    whichever row it is in). ``dim=1``: one mean per row (each row weighs the same, however
    long). A row with no kept entry has mean 0, so that it adds nothing to a loss.

    >>> x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    >>> mask = torch.tensor([[True, True, False], [False, True, True]])
    >>> masked_mean(x, mask), masked_mean(x, mask, dim=1)
    (tensor(3.5000), tensor([1.5000, 5.5000]))
    >>> masked_mean(x, torch.zeros_like(mask), dim=1)
    tensor([0., 0.])
    """
    count = mask.sum() if dim is None else mask.sum(dim=dim)            # kept entries
    return masked_sum(x, mask, dim) / count.clamp(min=1)


def sequence_logprobs(token_logp: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log π of each row's kept tokens: (B, T-1) log-probs and (B, T-1) mask -> (B,).

    With ``mask = target_mask(responses.response_mask)`` this is log π(response | prompt);
    ``average=True`` divides by the number of kept tokens (a per-token mean, as SimPO uses).

    >>> token_logp = torch.log(torch.tensor([[0.5, 0.5, 0.25], [0.1, 1.0, 0.5]]))
    >>> sequence_logprobs(token_logp, torch.tensor([[False, True, True], [True, True, False]])).exp()
    tensor([0.1250, 0.1000])
    """
    if average:
        return masked_mean(token_logp, mask, dim=-1)                    # (B,)
    return masked_sum(token_logp, mask, dim=-1)                         # (B,)


def response_logprobs(model: GPT, responses: Responses, average: bool = False) -> torch.Tensor:
    """log π(response | prompt) of every row of a `Responses` batch, in one forward pass -> (B,).

    The batch is moved to the model's device; gradients flow unless called under ``torch.no_grad()``.
    """
    device = next(model.parameters()).device
    token_logp = token_logprobs(model, responses.ids.to(device))          # (B, T-1)
    mask = target_mask(responses.response_mask.to(device))                # (B, T-1)
    return sequence_logprobs(token_logp, mask, average)                   # (B,)
