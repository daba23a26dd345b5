"""`llmcourse.hf`: the course model and tokenizer in transformers form, checked against the course's own code.

Oracles: the course GPT's logits and its greedy answers (`evaluation.complete`), the course's tiktoken encoding,
and the rules (`taskworld.rule_reward`); the transformers side is transformers' own GPT-2, ``generate`` and
`TikTokenConverter`.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from llmcourse import hf
from llmcourse import taskworld as tw
from llmcourse.checkpoint import load_base_model
from llmcourse.evaluation import complete
from llmcourse.tokenizer import encode, special_id


@pytest.fixture(scope="module")
def hf_model(base):
    return hf.to_transformers(base)


def _right_padded(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [encode(t) for t in texts]
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), special_id(tw.PAD))
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


def test_same_logits_on_held_out_transcripts(base, hf_model):
    """GPT-2 (exact GELU, weights transposed into Conv1D) computes the course GPT's logits."""
    problems = tw.eval_problems()[:64]
    ids, mask = _right_padded([tw.transcript(p, s) for p in problems for s in tw.STYLES])
    with torch.no_grad():
        ours, theirs = base(ids), hf_model(input_ids=ids, attention_mask=mask).logits       # (B, T, V) each
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max().item() < 1e-4
    assert ours[real].abs().max().item() > 5                  # not a trivially small comparison


def test_round_trip_is_exact(base, hf_model):
    back = hf.from_transformers(hf_model)
    for (name, a), (_, b) in zip(base.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    assert hf.course_config(hf.hf_config(base.cfg)) == base.cfg


def test_gelu_tanh_is_refused_and_differs(base, hf_model):
    """GPT-2's default activation is the tanh approximation: the course model needs exact GELU."""
    with pytest.raises(ValueError, match="exact GELU"):
        hf.course_config(GPT2Config(activation_function="gelu_new"))
    approx = GPT2LMHeadModel(GPT2Config(**{**hf_model.config.to_dict(), "activation_function": "gelu_new"}))
    approx.load_state_dict(hf_model.state_dict())
    ids, _ = _right_padded([tw.transcript(tw.eval_problems()[0])])
    with torch.no_grad():
        assert (approx(ids).logits - base(ids)).abs().max().item() > 1e-4


def test_saved_folder_loads_by_path(base, tmp_path):
    """What TRL does with a model id: AutoModelForCausalLM / AutoTokenizer from the folder."""
    path = hf.save_pretrained(base, tmp_path / "course")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert isinstance(model, hf.CourseGPTLMHeadModel)
    text = tw.transcript(tw.eval_problems()[3])
    assert tok(text)["input_ids"] == encode(text)
    ids = torch.tensor([encode(text)])
    with torch.no_grad():
        assert (model(ids).logits - base(ids)).abs().max().item() < 1e-4


def test_tokenizer_ids_match_tiktoken():
    tok = hf.hf_tokenizer()
    texts = [tw.transcript(p, s) for p in tw.eval_problems() for s in tw.STYLES]
    texts += [tw.ENGLISH, "  two  spaces, tabs\t and\nnew lines ", "ünïcödé 😀 1234567890", "<|user|><|pad|><think>x"]
    for text in texts:
        assert tok(text)["input_ids"] == encode(text), text
    assert len(tok) == hf.hf_config(load_base_model().cfg).vocab_size
    assert (tok.eos_token_id, tok.pad_token_id) == (special_id(tw.EOS), special_id(tw.PAD))


def test_decoding_skips_only_eos_and_pad():
    """TRL decodes completions with skip_special_tokens=True before the reward functions see them."""
    tok = hf.hf_tokenizer()
    p = tw.eval_problems()[0]
    ids = encode(tw.response(p) + tw.EOS + tw.PAD + tw.PAD)
    assert tok.decode(ids, skip_special_tokens=True) == tw.response(p)
    assert tok.decode(ids) == tw.response(p) + tw.EOS + tw.PAD + tw.PAD


def test_generate_left_padded_matches_course_greedy(base, hf_model):
    """transformers' generate (left-padded batch, KV cache) answers exactly as the course's greedy decoding."""
    problems = tw.eval_problems()[:48]
    tok = hf.hf_tokenizer()
    tok.padding_side = "left"
    batch = tok([tw.prompt(p) for p in problems], return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()                # some rows really are padded
    with torch.no_grad():
        out = hf_model.generate(**batch, do_sample=False, max_new_tokens=48, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id)
    theirs = [tw.strip_eos(t) for t in tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert theirs == [tw.strip_eos(t) for t in complete(base, problems)]


def test_positions_follow_the_mask_when_left_padded(base, hf_model):
    """A left-padded row scores like the unpadded one only when positions start at its first real token:
    `CourseGPTModel` numbers them from the mask; plain GPT-2 numbers columns and scores it elsewhere."""
    short, long_ = tw.eval_problems()[0], tw.Problem(123, 456)
    rows = [encode(tw.transcript(short)), encode(tw.transcript(long_))]
    T = max(map(len, rows))
    ids = torch.tensor([[special_id(tw.PAD)] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    assert mask[0].sum() < T
    plain = GPT2LMHeadModel(GPT2Config(**{**hf_model.config.to_dict(), "model_type": "gpt2"}))
    plain.load_state_dict(hf_model.state_dict())
    n = len(rows[0])
    with torch.no_grad():
        alone = base(torch.tensor([rows[0]]))[0]                                    # (n, V)
        ours = hf_model(input_ids=ids, attention_mask=mask).logits[0, -n:]          # (n, V)
        theirs = plain(input_ids=ids, attention_mask=mask).logits[0, -n:]           # (n, V)
    assert (ours - alone).abs().max().item() < 1e-4
    assert (theirs - alone).abs().max().item() > 1.0


def test_reward_functions_sum_to_the_rule_reward():
    problems = tw.eval_problems()[:20]
    completions = []
    for i, p in enumerate(problems):
        wrong = tw.Problem(p.a, p.b + 1)
        completions += [tw.response(p) + tw.EOS, tw.response(p, tw.BARE), tw.response(wrong), "<answer>x</answer>",
                        tw.response(p) + " extra"][i % 5:i % 5 + 1]
    a, b = [p.a for p in problems], [p.b for p in problems]
    acc, fmt = hf.accuracy_reward(completions, a=a, b=b), hf.format_reward(completions)
    total = [hf.REWARD_WEIGHTS[0] * x + hf.REWARD_WEIGHTS[1] * y for x, y in zip(acc, fmt)]
    assert total == pytest.approx([tw.rule_reward(c, p) for c, p in zip(completions, problems)])
    assert set(total) == {0.0, 0.1, 1.0, 1.1}                                        # every case occurred


def test_datasets_in_trl_formats():
    problems = tw.eval_problems()[:3]
    sft = hf.sft_dataset(problems)
    assert sft.column_names == ["prompt", "completion"]
    assert sft[0]["prompt"] + sft[0]["completion"] == tw.transcript(problems[0])
    rl = hf.prompt_dataset(problems)
    assert rl.column_names == ["prompt", "a", "b"] and rl[2]["a"] == problems[2].a
