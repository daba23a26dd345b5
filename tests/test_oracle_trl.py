"""The course's losses against TRL's own code, run on the same inputs: an oracle, not a transcription.

Each test builds one batch, hands it to a TRL trainer's own method (``compute_loss``, the advantage code inside
``_generate_and_score_completions``, or the smallest method that holds the formula where the loss is not reachable
otherwise) and to the course's function, and compares the values and the gradients with respect to the inputs:
to float rounding where the conventions agree, and by the exact documented difference where they do not.

The trainers are built once per module on a tiny random GPT-2 and a word-level tokenizer made here (nothing is
downloaded). Where a trainer computes its log-probs inside ``compute_loss(model, inputs)``, the model passed is
`PreparedLogProbs`: it returns log-probs of our choosing in the format of TRL's fused LM head, so that TRL's loss can
be differentiated with respect to exactly the tensor the course's function receives (float64 where TRL keeps the
dtype). `test_fused_lm_head_log_probs_and_entropy_match_the_course_on_gpt2` checks that the real head keeps that
format and gives the course's log-probs; the CPO and ORPO tests run the real model end to end in float32.

Not here: PPO (TRL 1.16 has no PPO trainer).
"""

import functools
import math
import warnings

import pytest
import torch

import datasets
import tokenizers
import transformers
import trl
with warnings.catch_warnings():                                         # "APIs here are unstable": known
    warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
from trl.trainer import utils as trl_utils
from trl.trainer.utils import FusedCausalLMOutput, add_fused_lm_head

from llmcourse import dpo, grpo, kl
from llmcourse.logprobs import (entropy_from_logits, logprobs_from_logits, masked_mean, sequence_logprobs,
                                target_mask)
from llmcourse.reward_model import bradley_terry_loss, pairwise_accuracy

pytestmark = pytest.mark.filterwarnings(                                # transformers 5.25 inside TRL 1.16's code
    "ignore:`gradient_checkpointing` is deprecated:FutureWarning",
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

PAD, EOS, VOCAB = 48, 49, 50
F64 = dict(rtol=1e-12, atol=1e-12)      # float64 on both sides: rounding only
DIFFS: dict[str, float] = {}           # largest |TRL − course| per comparison (printed at teardown; see with -s)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, rtol: float, atol: float) -> None:
    """torch.testing.assert_close, recording the largest absolute difference under ``name``."""
    actual, expected = (x if torch.is_tensor(x) else torch.tensor(x, dtype=torch.float64) for x in (actual, expected))
    diff = (actual.double() - expected.double()).abs().max().item()
    DIFFS[name] = max(DIFFS.get(name, 0.0), diff)
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def f32_close(actual, expected, name):
    """float32 on at least one side: 1e-6 relative, the absolute floor scaled by the size of the values."""
    scale = abs(expected) if isinstance(expected, float) else expected.abs().max().item()
    assert_close(actual, expected, name, rtol=1e-6, atol=1e-6 * max(scale, 1e-3))


class PreparedLogProbs(torch.nn.Module):
    """The policy in ``trainer.compute_loss(model, inputs)``, with prepared log-probs.

    TRL's trainers call ``model(input_ids=…, labels=labels, fused_lm_head=True)`` and read a
    `trl.trainer.utils.FusedCausalLMOutput`: per-token log-probs (B, T − 1), column t scoring token t + 1, zero where
    the label is −100. This module returns ``values`` registered for the ``input_ids`` it is called with, in that
    format; entropy and the logged logit statistics are zeros. The values are leaves we choose, so TRL's loss can be
    differentiated with respect to them.
    """

    def __init__(self, *pairs: tuple[torch.Tensor, torch.Tensor]):
        super().__init__()
        self.pairs = pairs                                              # (input_ids (B, T), values (B, T − 1))

    def forward(self, input_ids, labels, fused_lm_head=False, **kwargs):
        assert fused_lm_head, "the trainers read log-probs from the fused LM head"
        found = [v for ids, v in self.pairs if ids.shape == input_ids.shape and torch.equal(ids, input_ids)]
        assert len(found) == 1, "called with input_ids that were not prepared"
        keep = labels[:, 1:] != -100                                     # (B, T − 1)
        zeros = torch.zeros_like(found[0]).detach()
        return FusedCausalLMOutput(log_probs=torch.where(keep, found[0], zeros), entropy=zeros, mean_logits=zeros,
                                   is_top1=torch.zeros_like(keep), label_mask=keep)


class PreparedScores(torch.nn.Module):
    """The reward model in ``RewardTrainer.compute_loss``: returns prepared scores (2B,) as its (2B, 1) logits."""

    def __init__(self, scores: torch.Tensor):
        super().__init__()
        self.scores = scores

    def forward(self, **inputs):
        return transformers.modeling_outputs.SequenceClassifierOutputWithPast(logits=self.scores.unsqueeze(-1))


def grads(loss: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, inputs, retain_graph=True)


# --------------------------------------------------------------------------- the tiny model and the trainers

REWARDS: list[float] = []
"""What `fixed_rewards` returns, one per completion in the order of the batch (set by each test)."""


def fixed_rewards(prompts, completions, **kwargs):
    """A reward function for GRPO and RLOO: the prepared rewards, whatever was generated."""
    assert len(REWARDS) == len(prompts)
    return list(REWARDS)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny random GPT-2 (no dropout) and its word-level tokenizer: tokens "t0" … "t47", <pad> 48, <eos> 49."""
    progress = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    vocab = {f"t{i}": i for i in range(PAD)} | {"<pad>": PAD, "<eos>": EOS}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=32,
                                  bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    yield {"path": str(path), "tok": tok, "out": tmp_path_factory.mktemp("trainers")}
    if progress:
        datasets.enable_progress_bars()
    if DIFFS:
        print("\nlargest |TRL - course|:\n" + "\n".join(f"  {k:55s} {v:.3g}" for k, v in sorted(DIFFS.items())))


@pytest.fixture(scope="module")
def make(tiny):
    """``make(kind, **config)``: a TRL trainer of that kind on the tiny model, built once per configuration, with
    its model in eval mode (so the loss is not divided by a gradient-accumulation count, which is set only while
    ``train()`` runs)."""
    built = {}
    pref = datasets.Dataset.from_dict({"prompt": ["t1 t2", "t3", "t4 t5 t6"], "chosen": [" t7", " t8 t9", " t10"],
                                       "rejected": [" t11 t12", " t13", " t14 t15 t16"]})
    prompts = datasets.Dataset.from_dict({"prompt": ["t1 t2", "t3", "t4 t5 t6"]})
    unpaired = datasets.Dataset.from_dict({"prompt": ["t1 t2", "t3", "t4", "t5 t6"],
                                           "completion": [" t7", " t8 t9", " t10", " t11"],
                                           "label": [True, False, True, False]})

    def build(kind, **config):
        key = (kind, repr(sorted(config.items())))
        if key in built:
            return built[key]
        common = dict(output_dir=str(tiny["out"] / f"{kind}{len(built)}"), report_to="none", use_cpu=True)
        model = tiny["path"]       # loaded by the trainer (and its reference model, where it needs one)
        if kind == "dpo":          # reference log-probs read from the batch (precomputed), so no reference model
            t = trl.DPOTrainer(model=model, args=trl.DPOConfig(**common, precompute_ref_log_probs=True, **config),
                               train_dataset=pref, processing_class=tiny["tok"])
        elif kind == "kto":
            t = trl.KTOTrainer(model=model, args=trl.KTOConfig(**common, precompute_ref_log_probs=True,
                                                               per_device_train_batch_size=4, **config),
                               train_dataset=unpaired, processing_class=tiny["tok"])
        elif kind == "cpo":
            t = CPOTrainer(model=model, args=CPOConfig(**common, **config), train_dataset=pref,
                           processing_class=tiny["tok"])
        elif kind == "orpo":
            t = ORPOTrainer(model=model, args=ORPOConfig(**common, **config), train_dataset=pref,
                            processing_class=tiny["tok"])
        elif kind == "reward":
            pairs = datasets.Dataset.from_dict({"chosen": ["t1 t2"], "rejected": ["t1 t3"]})
            t = trl.RewardTrainer(model=model, args=trl.RewardConfig(**common, **config), train_dataset=pairs,
                                  processing_class=tiny["tok"])
        elif kind == "grpo":       # a reference model is loaded from the saved path when beta != 0
            args = trl.GRPOConfig(**common, **dict(num_generations=4, per_device_train_batch_size=4,
                                                   max_completion_length=8) | config)
            t = trl.GRPOTrainer(model=model, reward_funcs=[fixed_rewards], args=args, train_dataset=prompts,
                                processing_class=tiny["tok"])
        elif kind == "rloo":
            args = trl.RLOOConfig(**common, **dict(num_generations=4, per_device_train_batch_size=4,
                                                   max_completion_length=4) | config)
            t = trl.RLOOTrainer(model=model, reward_funcs=[fixed_rewards], args=args, train_dataset=prompts,
                                processing_class=tiny["tok"])
        else:
            raise ValueError(kind)
        t.model.eval()
        built[key] = t
        return t

    return build


# --------------------------------------------------------------------------- token log-probs and entropy


def test_token_logprobs_match_trl_selective_log_softmax():
    """`logprobs_from_logits` against ``trl.trainer.utils.selective_log_softmax`` (values and gradients w.r.t. the
    logits, float32). The course always answers in float32; TRL keeps float64 logits in float64."""
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 6, VOCAB, generator=g)).requires_grad_()        # (B, T − 1, V)
    ids = torch.randint(0, VOCAB, (3, 7), generator=g)                            # (B, T)
    weights = torch.randn(3, 6, generator=g)
    mine, theirs = logprobs_from_logits(logits, ids), trl_utils.selective_log_softmax(logits, ids[:, 1:])
    f32_close(theirs, mine, "token log-probs (fp32)")
    f32_close(grads((theirs * weights).sum(), logits)[0], grads((mine * weights).sum(), logits)[0],
              "token log-probs (fp32), gradient")
    wide = logits.detach().double()
    assert trl_utils.selective_log_softmax(wide, ids[:, 1:]).dtype == torch.float64
    assert logprobs_from_logits(wide, ids).dtype == torch.float32


def test_entropy_matches_trl_entropy_from_logits():
    """`llmcourse.logprobs.entropy_from_logits` against ``trl.trainer.utils.entropy_from_logits`` (float32, values and
    gradients w.r.t. the logits)."""
    g = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(3, 6, VOCAB, generator=g)).requires_grad_()
    weights = torch.randn(3, 6, generator=g)
    mine, theirs = entropy_from_logits(logits), trl_utils.entropy_from_logits(logits)
    f32_close(theirs, mine, "entropy (fp32)")
    f32_close(grads((theirs * weights).sum(), logits)[0], grads((mine * weights).sum(), logits)[0],
              "entropy (fp32), gradient")


def test_fused_lm_head_log_probs_and_entropy_match_the_course_on_gpt2(tiny):
    """What the trainers really score with: TRL's fused LM head (``add_fused_lm_head``; ``model(…, labels,
    fused_lm_head=True)``) on the tiny GPT-2 against `logprobs_from_logits` and `entropy_from_logits` on the same
    model's logits, float32, values and gradients w.r.t. the model's parameters. Also checks the format
    `PreparedLogProbs` imitates: zero wherever the label is −100."""
    model = transformers.GPT2LMHeadModel.from_pretrained(tiny["path"])
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, PAD, (3, 9), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 6:] = 0
    ids[1, 6:] = PAD
    labels = ids.masked_fill(attention == 0, -100)
    labels[:, :3] = -100                                                          # the prompt is not scored
    keep = labels[:, 1:] != -100
    weights = torch.randn(3, 8, generator=g)
    params = [p for p in model.parameters()]

    fused = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]       # the unfused forward
    mine = torch.where(keep, logprobs_from_logits(logits, ids), 0.0)
    my_entropy = torch.where(keep, entropy_from_logits(logits), 0.0)
    assert torch.equal(fused.log_probs[~keep], torch.zeros((~keep).sum().item()))
    f32_close(fused.log_probs, mine, "fused head log-probs (fp32)")
    f32_close(fused.entropy, my_entropy, "fused head entropy (fp32)")
    theirs_g = grads((fused.log_probs * weights).sum(), *params)
    mine_g = grads((mine * weights).sum(), *params)
    for t, m in zip(theirs_g, mine_g):
        f32_close(t, m, "fused head log-probs (fp32), parameter gradient")


# --------------------------------------------------------------------------- DPO and its variants

PAIRS = [([1, 2, 3], [4, 5], [6]),                                  # (prompt, chosen, rejected) token ids
         ([7, 8], [9, 10, 11, 12], [13, 14]),
         ([15], [16, 17, 18], [19, 20, 21, 22, 23]),
         ([24, 25, 26, 27], [28], [29, 30])]
PAIRS_EQUAL_CHOSEN = [(p, c, r) for (p, _, r), c in zip(PAIRS, ([4, 5, 6], [9, 10, 11], [16, 17, 18], [28, 29, 30]))]


def dpo_case(trainer, pairs=PAIRS, seed=0, tie=False):
    """A DPO batch made by the trainer's own collator ([chosen rows; rejected rows], right-padded), float64 reference
    log-probs, and float64 per-token policy log-probs (the leaf). Returns (stub model, batch, the course's inputs).
    ``tie``: pair 0's rejected response is its chosen one, so its two implicit rewards are equal."""
    if tie:
        pairs = [(pairs[0][0], pairs[0][1], pairs[0][1])] + pairs[1:]
    batch = trainer.data_collator([{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in pairs])
    g = torch.Generator().manual_seed(seed)
    n, width = len(pairs), batch["input_ids"].size(1)
    values = -3 * torch.rand(2 * n, width - 1, generator=g, dtype=torch.float64)
    ref_c, ref_r = (-6 * torch.rand(n, generator=g, dtype=torch.float64) for _ in range(2))
    if tie:
        values[n] = values[0]
        ref_r[0] = ref_c[0]
    values.requires_grad_()
    batch["ref_chosen_logps"], batch["ref_rejected_logps"] = ref_c, ref_r
    mask = target_mask(batch["completion_mask"].bool())                 # (2n, T − 1): the course's alignment
    seq = sequence_logprobs(values, mask)                               # (2n,) summed log-probs
    lens = mask.sum(dim=1)                                              # (2n,) response lengths
    course = dict(values=values, mask=mask, pc=seq[:n], pr=seq[n:], rc=ref_c, rr=ref_r, lc=lens[:n], lr=lens[n:])
    return PreparedLogProbs((batch["input_ids"], values)), batch, course


def test_dpo_sigmoid_loss_matches_trl(make):
    """`dpo_loss` on summed response log-probs against ``DPOTrainer.compute_loss`` with ``loss_type=["sigmoid"]``
    (float64, values and gradients w.r.t. the per-token log-probs). Same convention: the sum over response tokens."""
    trainer = make("dpo", beta=0.3)
    stub, batch, c = dpo_case(trainer)
    theirs = trainer.compute_loss(stub, batch)
    mine = dpo.dpo_loss(c["pc"], c["pr"], c["rc"], c["rr"], beta=0.3)
    assert_close(theirs, mine, "DPO sigmoid loss", **F64)
    assert_close(grads(theirs, c["values"])[0], grads(mine, c["values"])[0], "DPO sigmoid loss, gradient", **F64)


def test_implicit_rewards_match_trls_logged_rewards(make):
    """`implicit_rewards` against what ``DPOTrainer`` logs: ``rewards/chosen``, ``rewards/rejected`` (batch means of
    β log π/π_ref), ``rewards/margins`` and ``rewards/accuracies``; a tied pair counts as wrong in both."""
    trainer = make("dpo", beta=0.3)
    stub, batch, c = dpo_case(trainer, seed=1, tie=True)
    with torch.no_grad():
        trainer.compute_loss(stub, batch)
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    chosen, rejected, accuracy = dpo.implicit_rewards(c["pc"], c["pr"], c["rc"], c["rr"], beta=0.3)
    assert chosen[0] == rejected[0]                                     # the tie
    assert_close(logged["rewards/chosen"], chosen.mean(), "DPO implicit rewards", **F64)
    assert_close(logged["rewards/rejected"], rejected.mean(), "DPO implicit rewards", **F64)
    assert_close(logged["rewards/margins"], (chosen - rejected).mean(), "DPO implicit rewards", **F64)
    assert logged["rewards/accuracies"] == accuracy < 1
    assert_close(logged["logps/chosen"], c["pc"].mean(), "DPO implicit rewards", **F64)


def test_ipo_loss_matches_trl_on_per_token_mean_logprobs_only(make):
    """`ipo_loss` against ``DPOTrainer`` with ``loss_type=["ipo"]`` (float64, values and gradients). Different
    convention: TRL divides each response's log-ratio by its number of tokens (its comment: the IPO authors' normalised
    form), so TRL's IPO is the course's `ipo_loss` fed per-token MEAN log-probs (policy and reference alike), and not
    the course's `ipo_loss` fed summed log-probs, as `train_dpo` would feed it."""
    trainer = make("dpo", beta=0.3, loss_type=["ipo"])
    stub, batch, c = dpo_case(trainer, seed=2)
    theirs = trainer.compute_loss(stub, batch)
    lc, lr = c["lc"], c["lr"]
    on_means = dpo.ipo_loss(c["pc"] / lc, c["pr"] / lr, c["rc"] / lc, c["rr"] / lr, beta=0.3)
    on_sums = dpo.ipo_loss(c["pc"], c["pr"], c["rc"], c["rr"], beta=0.3)
    assert_close(theirs, on_means, "IPO loss (per-token means)", **F64)
    assert_close(grads(theirs, c["values"])[0], grads(on_means, c["values"])[0], "IPO loss (per-token means), gradient",
                 **F64)
    assert abs(theirs.item() - on_sums.item()) > 1.0                    # summed log-probs: another loss


def token_weighted_chosen_nll(policy_chosen_logps, chosen_lens):
    """The chosen responses' NLL as ONE mean over all their tokens in the batch (TRL's "sft" term), in the signature
    of `dpo.chosen_nll`, which instead averages each response's per-token NLL over the pairs."""
    return -policy_chosen_logps.sum() / chosen_lens.sum()


@pytest.mark.parametrize("pairs", [PAIRS_EQUAL_CHOSEN, PAIRS], ids=["equal_chosen_lengths", "unequal_chosen_lengths"])
def test_rpo_sft_term_matches_trl_only_for_equal_chosen_lengths(make, pairs):
    """`rpo_loss` against ``DPOTrainer`` with ``loss_type=["sigmoid", "sft"], loss_weights=[1, α]`` (TRL 1.16 has no
    ``rpo_alpha``), float64, values and gradients. Different convention: TRL's SFT term is one mean over all chosen
    tokens of the batch; the course's `chosen_nll` is the mean over pairs of each response's per-token mean. They agree
    when the chosen responses have equal lengths; otherwise TRL's loss is `rpo_loss` with that token-weighted NLL."""
    alpha = 0.7
    trainer = make("dpo", beta=0.3, loss_type=["sigmoid", "sft"], loss_weights=[1.0, alpha])
    stub, batch, c = dpo_case(trainer, pairs=pairs, seed=3)
    theirs = trainer.compute_loss(stub, batch)
    args = (c["pc"], c["pr"], c["rc"], c["rr"], c["lc"])
    mine = dpo.rpo_loss(*args, beta=0.3, alpha=alpha)
    token_weighted = dpo.rpo_loss(*args, beta=0.3, alpha=alpha, nll_fn=token_weighted_chosen_nll)
    assert_close(theirs, token_weighted, "RPO (token-weighted NLL)", **F64)
    assert_close(grads(theirs, c["values"])[0], grads(token_weighted, c["values"])[0],
                 "RPO (token-weighted NLL), gradient", **F64)
    if len(set(c["lc"].tolist())) == 1:
        assert_close(theirs, mine, "RPO, equal chosen lengths", **F64)
        assert_close(grads(theirs, c["values"])[0], grads(mine, c["values"])[0], "RPO, equal chosen lengths, gradient",
                     **F64)
    else:
        assert abs(theirs.item() - mine.item()) > 1e-3


def test_simpo_loss_matches_trl_cpo_simpo_loss(make):
    """`simpo_loss` against ``CPOTrainer.cpo_loss`` with ``loss_type="simpo"``, ``cpo_alpha=0`` (float64, values and
    gradients w.r.t. the summed log-probs). TRL's ``simpo_gamma`` is the paper's γ (it subtracts γ/β inside, then
    multiplies by β), and ``cpo_loss`` takes what ``get_batch_logps(average_log_prob=True)`` gives it for SimPO:
    per-token MEAN log-probs; the course takes sums and lengths. (``compute_loss`` computes its log-probs from the
    model's logits, in float32 here: see the end-to-end test below.)"""
    trainer = make("cpo", loss_type="simpo", cpo_alpha=0.0, beta=2.5, simpo_gamma=1.4)
    g = torch.Generator().manual_seed(4)
    pc = (-30 * torch.rand(8, generator=g, dtype=torch.float64)).requires_grad_()
    pr = (-30 * torch.rand(8, generator=g, dtype=torch.float64)).requires_grad_()
    lc, lr = torch.randint(1, 30, (8,), generator=g), torch.randint(1, 30, (8,), generator=g)
    losses, chosen_rewards, rejected_rewards = trainer.cpo_loss(pc / lc, pr / lr)
    theirs, mine = losses.mean(), dpo.simpo_loss(pc, pr, lc, lr, beta=2.5, gamma=1.4)
    assert_close(theirs, mine, "SimPO loss", **F64)
    assert_close(torch.cat(grads(theirs, pc, pr)), torch.cat(grads(mine, pc, pr)), "SimPO loss, gradient", **F64)


def test_simpo_loss_matches_trl_cpo_trainer_end_to_end(make, tiny):
    """The same through the whole ``CPOTrainer.compute_loss`` on the tiny GPT-2 and a batch of TRL's own collator
    (``loss_type="simpo"``, ``cpo_alpha=0``), float32, values and gradients w.r.t. the model's parameters: the course
    scores the same concatenated batch with `dpo.sequence_logprob`. Different with TRL's default ``cpo_alpha=1``:
    TRL then adds α times the NLL of the chosen tokens, one mean over all of them in the batch."""
    simpo = make("cpo", loss_type="simpo", cpo_alpha=0.0, beta=2.0, simpo_gamma=0.5)
    with_nll = make("cpo", loss_type="simpo", beta=2.0, simpo_gamma=0.5)
    assert with_nll.cpo_alpha == 1.0
    batch = simpo.data_collator([simpo.train_dataset[i] for i in range(3)])
    model = simpo.model                                                 # one policy for both trainers
    params = list(model.parameters())
    theirs = simpo.compute_loss(model, batch)
    theirs_nll = with_nll.compute_loss(model, batch)

    both = CPOTrainer.concatenated_inputs(batch, padding_value=simpo.pad_token_id)
    ids, labels = both["concatenated_input_ids"], both["concatenated_labels"]
    logits = model(ids, attention_mask=both["concatenated_attention_mask"]).logits
    seq = dpo.sequence_logprob(logits, ids, labels != -100)              # (2B,) summed response log-probs
    lens = target_mask(labels != -100).sum(dim=1)
    n = len(seq) // 2
    mine = dpo.simpo_loss(seq[:n], seq[n:], lens[:n], lens[n:], beta=2.0, gamma=0.5)
    f32_close(theirs, mine, "SimPO via CPOTrainer (fp32)")
    for t, m in zip(grads(theirs, *params), grads(mine, *params)):
        f32_close(t, m, "SimPO via CPOTrainer (fp32), parameter gradient")
    token_logp = logprobs_from_logits(logits[:, :-1], ids)
    nll = masked_mean(-token_logp[:n], target_mask(labels != -100)[:n])   # one mean over the chosen tokens
    f32_close(theirs_nll, mine + nll, "SimPO + CPO's NLL (fp32)")


def test_orpo_odds_ratio_term_matches_trl(make):
    """The odds-ratio term of `orpo_loss` (``orpo_loss − chosen_nll``) against ``ORPOTrainer.odds_ratio_loss``, which
    takes per-token mean log-probs and computes in float32 whatever it is given (it casts with ``.float()``): values
    and gradients to float32 rounding, including a likelihood within 1e-6 of 1, where both stay exact
    (TRL's ``log1mexp``, the course's ``log(−expm1)``). TRL's ``beta`` is the paper's λ."""
    trainer = make("orpo", beta=0.25)
    lc, lr = torch.tensor([1, 3, 7, 2, 5]), torch.tensor([2, 1, 4, 6, 3])
    cavg = torch.tensor([-1e-6, -0.05, -3.0, -0.7, -12.0], dtype=torch.float64)
    ravg = torch.tensor([-0.4, -1e-3, -2.0, -0.69, -0.2], dtype=torch.float64)
    pc, pr = (cavg * lc).requires_grad_(), (ravg * lr).requires_grad_()
    losses, *_ = trainer.odds_ratio_loss(pc / lc, pr / lr)
    theirs = -losses.mean()
    mine = dpo.orpo_loss(pc, pr, lc, lr, lam=0.25) - dpo.chosen_nll(pc, lc)
    assert theirs.dtype == torch.float32
    f32_close(theirs, mine, "ORPO odds-ratio term (fp32)")
    f32_close(torch.cat(grads(theirs, pc, pr)), torch.cat(grads(mine, pc, pr)), "ORPO odds-ratio term (fp32), gradient")


def test_orpo_loss_matches_trl_up_to_its_nll_over_prompt_and_response(make):
    """`orpo_loss` against ``ORPOTrainer.compute_loss`` end to end on the tiny GPT-2 (float32, values and gradients
    w.r.t. the parameters). Different convention: TRL's SFT term is the NLL of ALL the chosen rows' tokens, prompt
    included (its comment: "computed over the full prompt and response"), one mean over the batch's tokens; the
    course's is `chosen_nll`, the response tokens only, averaged per response. So TRL's loss is
    ``orpo_loss − chosen_nll + (mean NLL over the chosen rows' prompt and response tokens)``."""
    trainer = make("orpo", beta=0.25)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    model = trainer.model
    params = list(model.parameters())
    theirs = trainer.compute_loss(model, batch)

    both = ORPOTrainer.concatenated_inputs(batch, padding_value=trainer.padding_value)
    ids, labels = both["concatenated_input_ids"], both["concatenated_labels"]
    attention = both["concatenated_attention_mask"]
    logits = model(ids, attention_mask=attention).logits
    seq = dpo.sequence_logprob(logits, ids, labels != -100)
    lens = target_mask(labels != -100).sum(dim=1)
    n = len(seq) // 2
    mine = dpo.orpo_loss(seq[:n], seq[n:], lens[:n], lens[n:], lam=0.25)
    token_logp = logprobs_from_logits(logits[:, :-1], ids)
    full_nll = masked_mean(-token_logp[:n], target_mask(attention.bool())[:n])
    expected = mine - dpo.chosen_nll(seq[:n], lens[:n]) + full_nll
    f32_close(theirs, expected, "ORPO via ORPOTrainer (fp32)")
    for t, m in zip(grads(theirs, *params), grads(expected, *params)):
        f32_close(t, m, "ORPO via ORPOTrainer (fp32), parameter gradient")
    assert abs(theirs.item() - mine.item()) > 1e-2


@pytest.mark.parametrize("kl_shift", [1.5, -1.5], ids=["z0_positive", "z0_clamped_at_0"])
def test_kto_loss_matches_trl(make, kl_shift):
    """`kto_loss` against ``KTOTrainer.compute_loss`` (``loss_type="kto"``, precomputed reference log-probs in the
    batch, mismatched rows from TRL's collator), float64, values and gradients w.r.t. the per-token log-probs. Same
    convention: z0 = max(0, mean of the mismatched rows' log-ratios), detached; the loss a mean over all examples."""
    trainer = make("kto", beta=0.4, desirable_weight=0.8, undesirable_weight=1.3)
    prompts, completions = [[1, 2], [3], [4, 5, 6], [7]], [[8, 9], [10], [11, 12, 13], [14, 15]]
    labels = [True, False, True, False]
    examples = [{"prompt_ids": p, "completion_ids": c, "KL_completion_ids": completions[i - 1], "label": lab}
                for i, (p, c, lab) in enumerate(zip(prompts, completions, labels))]
    batch = trainer.data_collator(examples)
    g = torch.Generator().manual_seed(5)
    values = (-3 * torch.rand(4, batch["input_ids"].size(1) - 1, generator=g, dtype=torch.float64)).requires_grad_()
    kl_values = -3 * torch.rand(4, batch["KL_input_ids"].size(1) - 1, generator=g, dtype=torch.float64)
    policy = sequence_logprobs(values, target_mask(batch["completion_mask"].bool()))
    kl_policy = sequence_logprobs(kl_values, target_mask(batch["KL_completion_mask"].bool()))
    ref = policy.detach() + torch.randn(4, generator=g, dtype=torch.float64)
    kl_ref = kl_policy - kl_shift + 0.3 * torch.randn(4, generator=g, dtype=torch.float64)
    batch["ref_logps"], batch["ref_KL_logps"] = ref, kl_ref
    stub = PreparedLogProbs((batch["input_ids"], values), (batch["KL_input_ids"], kl_values))
    theirs = trainer.compute_loss(stub, batch)
    mine = dpo.kto_loss(policy, ref, batch["label"], kl_policy, kl_ref, beta=0.4, lambda_d=0.8, lambda_u=1.3)
    assert ((kl_policy - kl_ref).mean() > 0) == (kl_shift > 0)
    assert_close(theirs, mine, "KTO loss", **F64)
    assert_close(grads(theirs, values)[0], grads(mine, values)[0], "KTO loss, gradient", **F64)


# --------------------------------------------------------------------------- the reward model


@pytest.mark.parametrize("margin", ["per_pair", "none"])
def test_bradley_terry_loss_with_margin_matches_trl_reward_trainer(make, margin):
    """`bradley_terry_loss` against ``RewardTrainer.compute_loss`` (float64 scores, values and gradients w.r.t. the
    scores), with a per-pair ``margin`` column (the course's ``margin`` broadcasts a (N,) tensor the same way) and
    without; its logged ``accuracy`` and ``margin`` against `pairwise_accuracy` and the mean difference."""
    trainer = make("reward")
    g = torch.Generator().manual_seed(6)
    scores = (3 * torch.randn(12, generator=g, dtype=torch.float64)).requires_grad_()   # [chosen (6); rejected (6)]
    scores.data[5] = scores.data[11]                                    # a tie: wrong in both
    inputs = {"input_ids": torch.ones(12, 3, dtype=torch.long), "attention_mask": torch.ones(12, 3, dtype=torch.long)}
    m = torch.rand(6, generator=g, dtype=torch.float64)
    if margin == "per_pair":
        inputs["margin"] = m
    theirs = trainer.compute_loss(PreparedScores(scores), inputs)
    chosen, rejected = scores[:6], scores[6:]
    mine = bradley_terry_loss(chosen, rejected, m if margin == "per_pair" else 0.0)
    assert_close(theirs, mine, "Bradley-Terry loss", **F64)
    assert_close(grads(theirs, scores)[0], grads(mine, scores)[0], "Bradley-Terry loss, gradient", **F64)
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    assert logged["accuracy"] == pairwise_accuracy(chosen.detach(), rejected.detach())
    assert_close(logged["margin"], (chosen - rejected).mean(), "Bradley-Terry loss", **F64)


# --------------------------------------------------------------------------- GRPO

GRPO_MODES = {"grpo": "sequence", "bnpo": "token", "dapo": "token", "dr_grpo": "dr_grpo"}
MAX_COMPLETION_LENGTH = 8                                               # TRL's max_completion_length: Dr. GRPO's L


def grpo_case(seed=7, prompts=([1, 2, 3], [4, 5], [6], [7, 8, 9]), lens=(5, 3, 1, 4), **given):
    """A GRPO batch as ``_generate_and_score_completions`` returns it (left-padded prompts, right-padded completions,
    advantages, old and reference per-token log-probs, the token count), with float64 policy log-probs (the leaf)
    whose ratios to the old ones span both sides of the clip range; ``given`` replaces any of logp, old, ref, adv.
    Returns (stub model, inputs, the course's inputs)."""
    g = torch.Generator().manual_seed(seed)
    n, width, c = len(prompts), max(map(len, prompts)), max(lens)
    prompt_ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    prompt_mask = (prompt_ids != PAD).long()
    completion_mask = (torch.arange(c) < torch.tensor(lens).unsqueeze(1)).long()
    completion_ids = torch.randint(10, 40, (n, c), generator=g).masked_fill(completion_mask == 0, PAD)
    logp = (-3 * torch.rand(n, c, generator=g, dtype=torch.float64)).requires_grad_()
    ratio = 0.5 + 1.1 * torch.rand(n, c, generator=g, dtype=torch.float64)
    old = logp.detach() - ratio.log()
    ref = logp.detach() + 0.5 * torch.randn(n, c, generator=g, dtype=torch.float64)
    advantages = torch.tensor([1.2, -0.7, 0.4, -1.5][:n], dtype=torch.float64)
    if "logp" in given:
        logp = given["logp"].clone().requires_grad_()
    old, ref, advantages = given.get("old", old), given.get("ref", ref), given.get("adv", advantages)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": advantages, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": completion_mask.sum()}
    full = torch.cat([torch.zeros(n, width - 1, dtype=torch.float64), logp], dim=1)   # (B, P + C − 1)
    stub = PreparedLogProbs((torch.cat([prompt_ids, completion_ids], dim=1), full))
    return stub, inputs, dict(logp=logp, old=old, ref=ref, adv=advantages, mask=completion_mask.bool())


KL_TERMS = {"no_kl": {"beta": 0.0},
            "k3": {"beta": 0.04, "use_bias_correction_kl": False},
            "k3_ratio": {"beta": 0.04}}                                 # TRL 1.16's default: use_bias_correction_kl=True


@pytest.mark.parametrize("kl_term", list(KL_TERMS))
@pytest.mark.parametrize("loss_type", list(GRPO_MODES))
def test_grpo_loss_and_clip_fraction_match_trl(make, loss_type, kl_term):
    """`grpo_loss` against ``GRPOTrainer.compute_loss`` for TRL's four clipped aggregations (float64, values and
    gradients w.r.t. the per-token log-probs), ε_low = 0.2, ε_high = 0.28: TRL "grpo" is the course's "sequence",
    "bnpo" and "dapo" are "token" (on one process: DAPO's normaliser ``num_items_in_batch`` is then this batch's token
    count), "dr_grpo" is "dr_grpo" with L = ``max_completion_length``. The KL term: none; β · k3 with
    ``use_bias_correction_kl=False`` (the course's default, ``kl_ratio=False``); and TRL 1.16's DEFAULT,
    ``use_bias_correction_kl=True``, which multiplies k3 by π_θ/π_old: the course's ``kl_ratio=True`` (k3 × ratio,
    DeepSeek-V3.2), not its default. Also TRL's logged ``clip_ratio/region_mean`` against `clip_fraction`, and its
    ``kl`` against the masked mean of the KL term as TRL adds it (k3, or k3 × ratio under the default)."""
    config = KL_TERMS[kl_term]
    trainer = make("grpo", loss_type=loss_type, epsilon=0.2, epsilon_high=0.28,
                   max_completion_length=MAX_COMPLETION_LENGTH, **config)
    assert trainer.args.use_bias_correction_kl == (kl_term != "k3")
    stub, inputs, c = grpo_case()
    theirs = trainer.compute_loss(stub, inputs)
    course = functools.partial(grpo.grpo_loss, c["logp"], c["old"], c["ref"], c["adv"], c["mask"],
                               beta=config["beta"], eps_low=0.2, eps_high=0.28, mode=GRPO_MODES[loss_type],
                               max_len=MAX_COMPLETION_LENGTH)
    mine = course(kl_ratio=kl_term == "k3_ratio")
    name = f"GRPO loss {loss_type}" + {"no_kl": "", "k3": " + k3", "k3_ratio": " + k3 x ratio"}[kl_term]
    assert_close(theirs, mine, name, **F64)
    assert_close(grads(theirs, c["logp"])[0], grads(mine, c["logp"])[0], name + ", gradient", **F64)
    if kl_term == "k3_ratio":                                           # not the course's default KL term
        plain = course(kl_ratio=False)
        assert abs(theirs.item() - plain.item()) > 1e-6
        assert (grads(theirs, c["logp"])[0] - grads(plain, c["logp"])[0]).abs().max() > 1e-6
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    fraction = grpo.clip_fraction(c["logp"], c["old"], c["adv"], c["mask"], 0.2, 0.28)
    assert 0 < fraction < 1
    assert_close(logged["clip_ratio/region_mean"], fraction, "clip fraction", **F64)
    if kl_term != "no_kl":
        k3 = kl.k3(c["logp"], c["ref"])
        if kl_term == "k3_ratio":
            k3 = kl.importance_weighted(k3, c["logp"], c["old"])
        assert_close(logged["kl"], masked_mean(k3, c["mask"]), "k3 (logged kl)", **F64)


def test_gspo_loss_matches_trl_sequence_level_but_its_clip_fraction_counts_sequences(make):
    """`grpo_loss` with `sequence_clipped_surrogate` against ``GRPOTrainer`` with
    ``importance_sampling_level="sequence"`` and ``loss_type="grpo"`` (GSPO, with β · k3 and
    ``use_bias_correction_kl=False``: TRL's default would multiply each token's k3 by the SEQUENCE ratio s_i, which no
    option of the course does), float64, values and gradients. Different convention in the logged clip fraction:
    TRL's ``clip_ratio/region_mean`` is then the share of clipped SEQUENCES; the course's
    `clip_fraction(…, ratio_level="sequence")` the share of tokens in clipped sequences. TRL's equals the mean over
    rows of the course's fraction for each row alone."""
    trainer = make("grpo", loss_type="grpo", beta=0.04, epsilon=0.05, epsilon_high=0.1,
                   use_bias_correction_kl=False, importance_sampling_level="sequence",
                   max_completion_length=MAX_COMPLETION_LENGTH)
    stub, inputs, c = grpo_case(seed=8)
    theirs = trainer.compute_loss(stub, inputs)
    surrogate = functools.partial(grpo.sequence_clipped_surrogate, mask=c["mask"])
    mine = grpo.grpo_loss(c["logp"], c["old"], c["ref"], c["adv"], c["mask"], beta=0.04, eps_low=0.05, eps_high=0.1,
                          mode="sequence", surrogate_fn=surrogate)
    assert_close(theirs, mine, "GSPO loss + k3", **F64)
    assert_close(grads(theirs, c["logp"])[0], grads(mine, c["logp"])[0], "GSPO loss + k3, gradient", **F64)
    logged = trainer._metrics["eval"]["clip_ratio/region_mean"][-1]
    args = (c["logp"], c["old"], c["adv"], c["mask"], 0.05, 0.1, "sequence")
    per_row = [grpo.clip_fraction(*(a[i:i + 1] for a in args[:4]), *args[4:]) for i in range(len(c["adv"]))]
    assert set(per_row) == {0.0, 1.0} and logged == sum(per_row) / len(per_row)
    assert abs(grpo.clip_fraction(*args) - logged) > 0.05               # token-weighted: another number


def test_k3_matches_trls_per_token_kl(make):
    """`kl.k3` per token against GRPOTrainer's ``per_token_kl`` (float64, value and derivative), read off its loss with
    β = 1, a zero advantage and one completion token, on-policy: the loss is then exactly that token's KL term. With
    ``use_bias_correction_kl=False`` it is k3; with TRL's default it is k3 × π_θ/π_old, equal to k3 in value at ratio 1
    but not in derivative (k3' + k3): the course's `kl.k3_ratio_loss`."""
    plain = make("grpo", loss_type="grpo", beta=1.0, use_bias_correction_kl=False)
    default = make("grpo", loss_type="grpo", beta=1.0)
    logp = torch.tensor([-0.1, -2.3, -0.7, -5.0, -1.2, -1e-4], dtype=torch.float64)
    ref_logp = torch.tensor([-0.3, -1.1, -0.7, -2.0, -4.2, -2e-4], dtype=torch.float64)
    for lp, rp in zip(logp.view(-1, 1, 1), ref_logp.view(-1, 1, 1)):
        for trainer, course_fn, name in ((plain, kl.k3, "k3 per token"),
                                         (default, kl.k3_ratio_loss, "k3 x ratio per token (TRL default)")):
            stub, inputs, c = grpo_case(prompts=([1, 2],), lens=(1,), logp=lp, old=lp, ref=rp,
                                        adv=torch.zeros(1, dtype=torch.float64))
            theirs = trainer.compute_loss(stub, inputs)
            mine = course_fn(c["logp"], rp).sum()
            assert_close(theirs, mine, name, **F64)
            assert_close(grads(theirs, c["logp"])[0], grads(mine, c["logp"])[0], name + ", derivative", **F64)
            if course_fn is kl.k3_ratio_loss:                           # the slope of k3 plus k3 itself
                k3 = kl.k3(c["logp"], rp)
                assert_close(grads(theirs, c["logp"])[0] - grads(k3.sum(), c["logp"])[0], k3,
                             name + ", derivative minus k3'", **F64)


# --------------------------------------------------------------------------- advantages (through the rollout code)


def rollout(trainer, groups: list[list[float]]):
    """TRL's own ``_generate_and_score_completions`` on one prompt per group (each repeated G times, as its sampler
    does), the tiny model generating and `fixed_rewards` returning ``groups``'s rewards. Returns TRL's output."""
    REWARDS[:] = [r for group in groups for r in group]
    prompts = ["t1 t2", "t3", "t4 t5 t6", "t7"]
    torch.manual_seed(0)
    return trainer._generate_and_score_completions(
        [{"prompt": prompts[i % len(prompts)]} for i, group in enumerate(groups) for _ in group])


GROUPS = [[0.3] * 7,                                    # all equal; in float32 the sum of seven 0.3s rounds
          [1.0] * 7,                                    # all equal, exact
          [1.0, 0.0, 0.0, 1.0, 0.5, 0.25, 0.0]]


@pytest.mark.parametrize("scale", ["group", "none"])
def test_group_advantages_match_trl_except_all_equal_groups(make, scale):
    """`group_advantages` against the advantages ``GRPOTrainer`` computes in its rollout (rewards in float32, as TRL
    stores them; ``scale_rewards="group"`` is ``scale=True``, ``"none"`` is ``scale=False``). Where a group's rewards
    differ they agree to float32 rounding. Different for an all-equal group: the course gives exactly 0; TRL gives
    (r − mean)/(std + 1e-4), so where the float32 mean of the group rounds (seven 0.3s: the mean is 0.3 − 3.0e-8)
    every member gets minus that rounding error divided by about 1e-4 (+3.0e-4, scaled) or the error itself (+3.0e-8,
    not scaled); where the mean is exact (seven 1.0s) TRL's is 0 too."""
    trainer = make("grpo", num_generations=7, per_device_train_batch_size=7, max_completion_length=3, beta=0.0,
                   scale_rewards=scale)
    out = rollout(trainer, GROUPS)
    rewards = torch.tensor(REWARDS)                                     # float32, as TRL's rewards_per_func
    theirs, mine = out["advantages"], grpo.group_advantages(rewards, 7, scale=scale == "group")
    f32_close(theirs[14:], mine[14:], f"GRPO advantages ({scale})")
    assert torch.equal(mine[:14], torch.zeros(14)) and torch.equal(theirs[7:14], torch.zeros(7))
    rounding = (rewards[:7].mean() - rewards[0]).item()                 # the float32 mean of seven 0.3s, minus 0.3
    assert rounding != 0 and torch.all(theirs[:7] == theirs[0])
    expected = -rounding / 1e-4 if scale == "group" else -rounding       # std of equal values ≈ |rounding| ≪ 1e-4
    assert math.isclose(theirs[0].item(), expected, rel_tol=1e-3)


def test_rloo_advantages_and_k1_in_the_reward_match_trl(make):
    """`rloo_advantages` of `kl_penalized_rewards` (k1 summed over each response, in the reward) against the
    advantages ``RLOOTrainer`` computes in its rollout with β = 0.05 (float32), the policy moved away from the
    reference first so that the KL is not 0; and TRL's logged ``kl`` against the masked mean of `kl.k1`. The course's
    side is fed the per-token log-probs of TRL's own ``_get_per_token_logps_and_entropies`` on the policy and the
    reference, for the completions TRL generated."""
    trainer = make("rloo", beta=0.05)
    with torch.no_grad():
        g = torch.Generator().manual_seed(9)
        for p in trainer.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    groups = [[1.0, 0.0, 0.0, 0.5], [0.2, 0.2, 0.2, 0.2]]
    out = rollout(trainer, groups)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    width = out["completion_ids"].size(1)
    with torch.no_grad():
        old, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, width)
        ref, _, _ = trainer._get_per_token_logps_and_entropies(trainer.ref_model, ids, attention, width)
    mask = out["completion_mask"].bool()
    rewards = grpo.kl_penalized_rewards(torch.tensor(REWARDS), old, ref, mask, beta=0.05, kl_fn=kl.k1)
    mine = grpo.rloo_advantages(rewards, 4)
    assert not torch.equal(rewards, torch.tensor(REWARDS))              # the KL penalty is there
    f32_close(out["advantages"], mine, "RLOO advantages with k1 in the reward (fp32)")
    f32_close(trainer._metrics["eval"]["kl"][-1], masked_mean(kl.k1(old, ref), mask), "k1 (RLOO's logged kl, fp32)")


def test_rloo_advantages_of_all_equal_groups(make):
    """`rloo_advantages` against ``RLOOTrainer``'s with β = 0 (float32). Where a group's rewards differ they agree to
    float32 rounding. Different for an all-equal group: the course gives exactly 0; TRL's r − (Σ r − r)/(G − 1) keeps
    the float32 rounding of the sum (seven 0.3s: a few 1e-8, one last bit of 0.3), and is 0 where the sum is exact."""
    trainer = make("rloo", beta=0.0, num_generations=7, per_device_train_batch_size=7)
    out = rollout(trainer, GROUPS)
    theirs, mine = out["advantages"], grpo.rloo_advantages(torch.tensor(REWARDS), 7)
    f32_close(theirs[14:], mine[14:], "RLOO advantages (fp32)")
    assert torch.equal(mine[:14], torch.zeros(14)) and torch.equal(theirs[7:14], torch.zeros(7))
    assert torch.all(theirs[:7] == theirs[0]) and 0 < abs(theirs[0].item()) < 1e-7
    DIFFS["RLOO advantages, all-equal group of 0.3s (TRL's value)"] = abs(theirs[0].item())
