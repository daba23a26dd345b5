"""The course's model, tokenizer, data and rewards in Hugging Face form, for TRL and PEFT.

The course GPT has GPT-2's shape and GPT-2's parameter names (``wte``, ``wpe``, ``ln_1``,
``attn.c_attn``, ``mlp.c_fc``, ``c_proj``, ``ln_f``), so it *is* a `transformers.GPT2LMHeadModel`
once three things are set: exact GELU (GPT-2 ships the tanh approximation, ``gelu_new``), no dropout,
and GPT-2's ``Conv1D`` layers, which store a linear layer's weight transposed ((in, out) where
``nn.Linear`` stores (out, in))::

    hf_model = to_transformers(load_base_model())     # same logits, to float rounding
    tok = hf_tokenizer()                              # same ids as the course's tiktoken encoding
    model = from_transformers(hf_model)               # and back, to evaluate with the course's code

`sft_dataset`, `preference_dataset` and `prompt_dataset` write the task world in the formats TRL's
SFT, DPO and GRPO trainers read (prompt / completion, prompt / chosen / rejected, prompt), and
`accuracy_reward` and `format_reward` are the course's rule rewards as TRL reward functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset
from tokenizers import AddedToken
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from llmcourse import taskworld as tw
from llmcourse.grpo import RECIPE
from llmcourse.model import GPT, GPTConfig
from llmcourse.tokenizer import PAT_STR, RANKS_FILE, special_id

# Course parameter names (suffixes) whose weight is an nn.Linear's (out, in): GPT-2's Conv1D holds (in, out).
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class CourseGPTConfig(GPT2Config):
    """GPT-2's config under its own model type, so that ``AutoModelForCausalLM`` builds `CourseGPTLMHeadModel`."""

    model_type = "course_gpt"
    auto_map = {}     # not remote code: TRL looks here for an architecture transformers does not name


class CourseGPTModel(GPT2Model):
    """GPT-2's body, whose positions follow the attention mask, as the course's sampler's do.

    GPT-2 learns one embedding per absolute position. ``generate`` numbers a left-padded prompt's tokens from
    its first real token (positions from the attention mask), but a plain forward pass numbers every column
    from 0, pads included; TRL scores completions with plain forward passes (through the body, under its own
    fused LM head), so a left-padded row would be scored at positions it was not sampled at, and training
    would chase those out-of-place positions (measured: the KL to the reference jumps to hundreds of nats
    after one GRPO step). Models with rotary positions (Llama, Qwen) see only relative positions and do not
    care; this one does. Without explicit ``position_ids``, this body numbers each row's tokens from its first
    real one, ``cumsum(attention_mask) - 1``, as ``generate`` does (the mask covers the cached tokens too)."""

    config_class = CourseGPTConfig

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, **kwargs):
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            T = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]   # (B, T): the new tokens'
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               inputs_embeds=inputs_embeds, **kwargs)


class CourseGPTLMHeadModel(GPT2LMHeadModel):
    """`GPT2LMHeadModel` on `CourseGPTModel`: the course GPT as a transformers causal LM."""

    config_class = CourseGPTConfig

    def __init__(self, config: CourseGPTConfig):
        super().__init__(config)
        self.transformer = CourseGPTModel(config)
        self.post_init()


AutoConfig.register(CourseGPTConfig.model_type, CourseGPTConfig)
AutoModelForCausalLM.register(CourseGPTConfig, CourseGPTLMHeadModel)


def hf_config(cfg: GPTConfig) -> CourseGPTConfig:
    """The GPT-2 config of a course model's shape: exact GELU, no dropout, tied embeddings."""
    return CourseGPTConfig(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True, bos_token_id=special_id(tw.EOS),
        eos_token_id=special_id(tw.EOS), pad_token_id=special_id(tw.PAD),
    )


def course_config(config: GPT2Config) -> GPTConfig:
    """The inverse of `hf_config`: the course shape of a GPT-2 config (exact GELU required)."""
    if config.activation_function != "gelu":
        raise ValueError(f"the course GPT uses exact GELU, not {config.activation_function!r}")
    return GPTConfig(vocab_size=config.vocab_size, block_size=config.n_positions, n_layer=config.n_layer,
                     n_head=config.n_head, n_embd=config.n_embd)


def _hf_name(name: str) -> str:
    """Course parameter name -> GPT2LMHeadModel's: ``blocks.0.attn.c_attn.weight -> transformer.h.0.attn.c_attn.weight``."""
    return "transformer." + name.replace("blocks.", "h.", 1) if name != "lm_head.weight" else name


def to_transformers(model: GPT) -> CourseGPTLMHeadModel:
    """A GPT-2 model (`CourseGPTLMHeadModel`) with the course model's weights (a copy; eval mode, float32)."""
    hf = CourseGPTLMHeadModel(hf_config(model.cfg))
    state = {}
    for name, p in model.state_dict().items():
        p = p.detach().clone()
        state[_hf_name(name)] = p.t().contiguous() if name.endswith(CONV1D) else p
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # GPT-2 keeps no buffers the course lacks; the only key allowed to be missing is none.
    if unexpected or [k for k in missing if not k.endswith(".attn.bias") and not k.endswith(".attn.masked_bias")]:
        raise RuntimeError(f"weights did not map: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()


def from_transformers(hf: GPT2LMHeadModel) -> GPT:
    """A course `GPT` with a GPT-2 model's weights (merge any PEFT adapters first: ``merge_and_unload()``)."""
    model = GPT(course_config(hf.config))
    hf_state = hf.state_dict()
    state = {}
    for name in model.state_dict():
        p = hf_state[_hf_name(name)].detach().clone().float()
        state[name] = p.t().contiguous() if name.endswith(CONV1D) else p
    model.load_state_dict(state)
    return model.eval()


def hf_tokenizer() -> PreTrainedTokenizerFast:
    """The course's BPE as a transformers fast tokenizer, with the same ids as `llmcourse.tokenizer`.

    Converted by transformers' own `TikTokenConverter` from the course's ranks file and pre-split pattern
    (GPT-2's, with single digits). ``<|endoftext|>`` (EOS) and ``<|pad|>`` are special tokens; the chat and
    format markers (``<|user|>``, ``<think>``, ``<answer>``, …) are added tokens that are *not* special, as
    reasoning models' ``<think>`` tokens are: decoding with ``skip_special_tokens=True`` (TRL does, before
    calling reward functions) keeps them, so the rules can read the format. No BOS is added."""
    converted = TikTokenConverter(vocab_file=str(RANKS_FILE), pattern=PAT_STR).converted()
    converted.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (tw.EOS, tw.PAD)])
    converted.add_tokens([AddedToken(t, special=False, normalized=False) for t in tw.SPECIAL_TOKENS[2:]])
    tok = PreTrainedTokenizerFast(tokenizer_object=converted, eos_token=tw.EOS, pad_token=tw.PAD,
                                  padding_side="right", model_max_length=GPTConfig.block_size)
    assert tw.SPECIAL_TOKENS[:2] == [tw.EOS, tw.PAD]
    assert [tok.convert_tokens_to_ids(t) for t in tw.SPECIAL_TOKENS] == [special_id(t) for t in tw.SPECIAL_TOKENS]
    return tok


# --------------------------------------------------------------------------- the task world as TRL datasets


def sft_dataset(problems: Sequence[tw.Problem], style: str = tw.REASONED) -> Dataset:
    """Prompt-completion rows (TRL's SFT format; the loss is on the completion only by default).

    The completion ends with EOS, as the course's SFT data do (`tw.transcript`)."""
    return Dataset.from_dict({
        "prompt": [tw.prompt(p) for p in problems],
        "completion": [tw.response(p, style) + tw.EOS for p in problems],
    })


def preference_dataset(pairs) -> Dataset:
    """Prompt / chosen / rejected rows from course `PreferencePairs` (TRL's preference format)."""
    from llmcourse.tokenizer import decode
    return Dataset.from_dict({
        "prompt": [tw.prompt(p) for p in pairs.problems],
        "chosen": [decode(r) for r in pairs.chosen],
        "rejected": [decode(r) for r in pairs.rejected],
    })


def prompt_dataset(problems: Sequence[tw.Problem]) -> Dataset:
    """Prompt-only rows for GRPO, with the operands as extra columns: TRL passes every column of
    the dataset to the reward functions as keyword arguments, so they can check the answer."""
    return Dataset.from_dict({
        "prompt": [tw.prompt(p) for p in problems],
        "a": [p.a for p in problems],
        "b": [p.b for p in problems],
    })


def accuracy_reward(completions: list[str], a: list[int], b: list[int], **kwargs) -> list[float]:
    """TRL reward function: 1.0 for the exact sum in ``<answer>…</answer>``, else 0.0 (`tw.is_correct`)."""
    return [float(tw.is_correct(text, tw.Problem(x, y))) for text, x, y in zip(completions, a, b)]


def format_reward(completions: list[str], **kwargs) -> list[float]:
    """TRL reward function: 1.0 for ``<think>…</think><answer>DIGITS</answer>`` exactly, else 0.0 (`tw.format_ok`).

    With ``reward_weights=[1.0, 0.1]`` the two sum to the course's `tw.rule_reward`."""
    return [float(tw.format_ok(text)) for text in completions]


REWARD_WEIGHTS = [1.0, RECIPE.format_weight]
"""Weights of `accuracy_reward` and `format_reward` in ``GRPOConfig(reward_weights=...)``: the course's rule reward."""


def save_pretrained(model: GPT, path) -> str:
    """Write a course model and the course tokenizer as a transformers model folder (safetensors, config,
    tokenizer files) that ``AutoModelForCausalLM.from_pretrained(path)``, TRL and PEFT load by path.
    Returns the path as a string."""
    to_transformers(model).save_pretrained(path)
    hf_tokenizer().save_pretrained(path)
    return str(path)
