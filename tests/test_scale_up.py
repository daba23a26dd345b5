"""`llmcourse.scale_up`: chapter 10's recipe through TRL's GRPOTrainer, run here on the CPU on the course's model.

The real-model path (a Hugging Face instruct model on a GPU, vLLM, DeepSpeed) is not run here: nothing may be
downloaded and there is no GPU. What is checked instead: the course's model trains through the script's own
`main` (its parameters move, TRL logs finite rule rewards); the TRL config carries every setting of
`llmcourse.grpo.RECIPE`; ``--vllm`` only sets the config (vLLM is never imported); the conversational reward
functions score right, wrong and malformed answers in both of TRL's completion forms; the conversational
training path runs end to end on the course's weights dressed as a plain GPT-2 chat model; the greedy chat
evaluation reproduces the course's own greedy evaluation; and the accelerate configs named in the docs exist.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # TRL's call

from llmcourse import hf, scale_up  # noqa: E402
from llmcourse import taskworld as tw  # noqa: E402
from llmcourse.grpo import RECIPE  # noqa: E402
from llmcourse.trl_runs import grpo_settings  # noqa: E402

COURSE_CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
                        "{% else %}{{ m['content'] }}<|endoftext|>{% endif %}{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
"""A chat template that writes one user turn exactly as the course's prompt (`taskworld.prompt`)."""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.set_num_threads(1)


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(Path(folder) / "model.safetensors"))


# --------------------------------------------------------------------------- the course's model trains through main


def test_main_trains_the_course_model(tmp_path, capsys):
    out = tmp_path / "run"
    summary = scale_up.main(["--model", "course", "--max-steps", "2", "--prompts-per-update", "4",
                             "--output-dir", str(out), "--eval", "--eval-problems", "8"])
    logs = summary["log_history"]
    assert len(logs) == 2
    for log in logs:
        for key in ("reward", "reward_std", "kl", "entropy", "loss", "grad_norm", "completions/mean_length",
                    "rewards/accuracy_reward/mean", "rewards/format_reward/mean", "frac_reward_zero_std"):
            assert key in log and math.isfinite(log[key]), key
        assert 0.0 <= log["reward"] <= 1.0 + RECIPE.format_weight
        # TRL's reward is the course's rule reward: correct + format_weight · format
        expected = log["rewards/accuracy_reward/mean"] + RECIPE.format_weight * log["rewards/format_reward/mean"]
        assert log["reward"] == pytest.approx(expected, abs=1e-5)
        assert 0.0 < log["completions/mean_length"] <= RECIPE.max_new_tokens
    assert logs[0]["kl"] == 0.0 and logs[1]["kl"] > 0.0          # the first update starts at the reference
    before, after = _weights(out / "course_base"), _weights(out)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter moved"
    assert all(torch.isfinite(t).all() for t in after.values())
    ev = summary["eval"]
    assert ev["n_problems"] == 8 and all(0.0 <= ev[k] <= 1.0 for k in ("greedy_accuracy", "sampled_accuracy",
                                                                         "format_rate"))
    assert json.loads((out / "scale_up_summary.json").read_text())["max_steps"] == 2
    printed = capsys.readouterr().out
    assert "update    2/2: reward" in printed and "trained model (8 held-out problems)" in printed


# --------------------------------------------------------------------------- the config is the recipe


def test_build_config_maps_the_recipe():
    args = scale_up.parse_args(["--model", "course", "--output-dir", "unused"])
    cfg = scale_up.build_config(args)
    assert cfg.max_steps == RECIPE.updates * RECIPE.epochs              # optimizer steps
    assert cfg.num_generations == RECIPE.samples_per_prompt
    assert cfg.generation_batch_size == RECIPE.prompts_per_update * RECIPE.samples_per_prompt
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps == cfg.generation_batch_size
    assert cfg.steps_per_generation == cfg.gradient_accumulation_steps        # one generation per optimizer step
    assert cfg.learning_rate == RECIPE.lr and cfg.lr_scheduler_type == "constant" and cfg.weight_decay == 0.0
    assert cfg.beta == RECIPE.beta and cfg.use_bias_correction_kl is (RECIPE.kl_estimator == "k3_ratio")
    assert cfg.epsilon == RECIPE.eps_low and cfg.epsilon_high == RECIPE.eps_high
    assert cfg.num_iterations == RECIPE.epochs
    assert cfg.temperature == RECIPE.temperature and cfg.top_p == 1.0 and cfg.top_k == 0
    assert cfg.max_completion_length == RECIPE.max_new_tokens
    assert cfg.scale_rewards == ("group" if RECIPE.scale_rewards else "none")
    assert RECIPE.aggregation == "sequence" and cfg.loss_type == "grpo"
    assert cfg.importance_sampling_level == RECIPE.ratio_level
    assert cfg.max_grad_norm == 0.0                                            # no clipping, as the course
    assert cfg.reward_weights == [1.0, RECIPE.format_weight] == hf.REWARD_WEIGHTS
    assert cfg.seed == RECIPE.seed and cfg.shuffle_dataset is False and cfg.logging_steps == 1
    assert cfg.bf16 is False and cfg.gradient_checkpointing is False and cfg.use_vllm is False
    # the course's problems, in the course's order, in the course's prompt format, scored by the course's rules
    problems = tw.sample_problems(RECIPE.updates * RECIPE.prompts_per_update, seed=10_000 + RECIPE.seed)
    assert scale_up.train_problems(args) == problems
    data = scale_up.build_dataset(args)
    assert data["prompt"][:3] == [tw.prompt(p) for p in problems[:3]] and data["a"][0] == problems[0].a
    assert scale_up.reward_functions(args) == [hf.accuracy_reward, hf.format_reward]


def test_a_real_models_config_keeps_the_algorithm_and_changes_the_budget():
    args = scale_up.parse_args(["--output-dir", "unused"])          # the default model: nothing is loaded
    assert args.model == scale_up.DEFAULT_MODEL and not scale_up.is_course(args.model)
    cfg = scale_up.build_config(args)
    for field in ("num_generations", "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "temperature",
                  "use_bias_correction_kl", "max_grad_norm", "reward_weights", "num_iterations"):
        assert getattr(cfg, field) == grpo_settings(RECIPE)[field], field
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (16, 8)
    assert cfg.max_steps == scale_up.REAL_MODEL_STEPS and cfg.learning_rate == scale_up.REAL_MODEL_LR
    assert cfg.max_completion_length == scale_up.REAL_MODEL_MAX_NEW_TOKENS and cfg.gradient_checkpointing is True
    assert scale_up.parse_args(["--use-peft"]).lr == scale_up.REAL_MODEL_LORA_LR
    assert scale_up.batch_layout(args, processes=4) == (16, 2)      # same update on four GPUs
    assert scale_up.batch_layout(args, processes=8) == (16, 1)
    with pytest.raises(ValueError, match="does not split"):
        scale_up.batch_layout(args, processes=7)
    row = scale_up.build_dataset(scale_up.parse_args(["--max-steps", "1"]))[0]
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"].startswith(f"What is {row['a']}+")
    assert "<think>" in row["prompt"][0]["content"] and "<answer>" in row["prompt"][0]["content"]


def test_vllm_sets_the_config_without_importing_vllm():
    cfg = scale_up.build_config(scale_up.parse_args(["--vllm", "colocate", "--output-dir", "unused"]))
    assert cfg.use_vllm is True and cfg.vllm_mode == "colocate" and cfg.vllm_gpu_memory_utilization == 0.3
    cfg = scale_up.build_config(scale_up.parse_args(["--vllm", "server", "--vllm-server-port", "8123"]))
    assert cfg.use_vllm is True and cfg.vllm_mode == "server" and cfg.vllm_server_port == 8123
    assert "vllm" not in sys.modules and "deepspeed" not in sys.modules
    with pytest.raises(SystemExit):                                   # vLLM cannot run the course's model type
        scale_up.parse_args(["--model", "course", "--vllm", "colocate"])


# --------------------------------------------------------------------------- rewards for a real model


RIGHT = "<think>\n7+5=12, 4+8+1=13, 0+3+1=4\n</think>\n<answer>432</answer>"
WRONG = "<think>7+5=12, 4+8+1=13, 3</think><answer>332</answer>"
MALFORMED = "The sum of 47 and 385 is 432."
BARE = "<answer> 432 </answer>"


@pytest.mark.parametrize("form", ["string", "messages"])
def test_chat_rewards_score_both_completion_forms(form):
    texts = [RIGHT, WRONG, MALFORMED, BARE]
    completions = texts if form == "string" else [[{"role": "assistant", "content": t}] for t in texts]
    a, b = [47] * 4, [385] * 4
    assert scale_up.chat_accuracy_reward(completions, a=a, b=b) == [1.0, 0.0, 0.0, 1.0]
    assert scale_up.chat_format_reward(completions) == [1.0, 1.0, 0.0, 0.0]
    weights = grpo_settings()["reward_weights"]
    totals = [weights[0] * x + weights[1] * y for x, y in zip(scale_up.chat_accuracy_reward(completions, a=a, b=b),
                                                              scale_up.chat_format_reward(completions))]
    assert totals == pytest.approx([1.1, 0.1, 0.0, 1.0])


def test_the_loose_format_only_forgives_whitespace():
    assert not tw.format_ok(RIGHT) and scale_up.loose_format_ok(RIGHT)      # the course's rule refuses newlines
    p = tw.Problem(47, 385)
    assert tw.format_ok(tw.response(p)) and scale_up.loose_format_ok(tw.response(p) + tw.EOS)
    for text in (BARE, MALFORMED, "Sure! " + RIGHT, RIGHT + " Done.", "<think>a<b</think><answer>1</answer>",
                 "<think>x</think><answer>4 3 2</answer>"):
        assert not scale_up.loose_format_ok(text), text
    assert scale_up.completion_text([{"role": "assistant", "content": [{"type": "text", "text": RIGHT}]}]) == RIGHT


# --------------------------------------------------------------------------- the conversational path, on course weights


def _course_as_chat_model(folder: Path) -> Path:
    """The course's base model saved as a plain ``gpt2`` model with a chat template: not the course's model type,
    so the script takes the real-model path (conversational prompts and rewards), yet nothing is downloaded."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmcourse.checkpoint import load_base_model
    course = hf.to_transformers(load_base_model())
    config = GPT2Config(**{k: v for k, v in course.config.to_dict().items() if k not in ("model_type", "auto_map")})
    model = GPT2LMHeadModel(config)
    model.load_state_dict(course.state_dict())
    model.save_pretrained(folder)
    tok = hf.hf_tokenizer()
    tok.chat_template = COURSE_CHAT_TEMPLATE
    tok.save_pretrained(folder)
    return folder


def test_the_conversational_path_trains(tmp_path, monkeypatch):
    folder = _course_as_chat_model(tmp_path / "chat_model")
    assert not scale_up.is_course(str(folder))
    seen = []

    def recording(fn):
        @functools.wraps(fn)
        def wrapped(completions, **kwargs):
            seen.append(completions)
            return fn(completions, **kwargs)
        return wrapped
    monkeypatch.setattr(scale_up, "chat_accuracy_reward", recording(scale_up.chat_accuracy_reward))
    # the course's model has a 64-token context: the question alone, without the instruction
    monkeypatch.setattr(scale_up, "chat_prompt", lambda p: [{"role": "user", "content": p.question}])
    summary = scale_up.main(["--model", str(folder), "--max-steps", "1", "--prompts-per-update", "2",
                             "--max-completion-length", "16", "--no-gradient-checkpointing",
                             "--output-dir", str(tmp_path / "run")])
    log, = summary["log_history"]
    assert "rewards/chat_accuracy_reward/mean" in log and "rewards/chat_format_reward/mean" in log
    assert 0.0 <= log["reward"] <= 1.1 and math.isfinite(log["loss"])
    completions = seen[0]
    assert len(completions) == 2 * RECIPE.samples_per_prompt
    assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in completions)   # TRL's message form


def test_the_chat_evaluation_is_the_courses_greedy_evaluation(monkeypatch):
    """With the course's prompt as the chat turn, greedy transformers decoding and the rules give what the
    course's own `evaluate` gives."""
    from llmcourse.checkpoint import load_base_model
    from llmcourse.evaluation import evaluate
    monkeypatch.setattr(scale_up, "chat_prompt", lambda p: [{"role": "user", "content": p.question}])
    base = load_base_model()
    tok = hf.hf_tokenizer()
    tok.chat_template = COURSE_CHAT_TEMPLATE
    n = 48
    ours = scale_up.evaluate_chat(hf.to_transformers(base), tok, n, max_new_tokens=RECIPE.max_new_tokens)
    theirs = evaluate(base, scale_up.eval_problem_set(n), k=0)
    assert ours["n_problems"] == n
    assert ours["greedy_accuracy"] == theirs["greedy_accuracy"]
    assert ours["greedy_strict_format_rate"] == theirs["greedy_format_rate"]


# --------------------------------------------------------------------------- multi-GPU configs


def test_print_accelerate_config_points_into_the_installed_trl(capsys):
    import trl
    summary = scale_up.main(["--print-accelerate-config", "zero3"])
    path = Path(summary["accelerate_config"])
    assert path.is_file() and path.parent == Path(trl.__file__).parent / "accelerate_configs"
    assert capsys.readouterr().out.strip() == str(path)
    assert "zero_stage: 3" in path.read_text()
    for name in ("zero2", "fsdp2", "multi_gpu", "single_gpu.yaml"):
        assert scale_up.accelerate_config(name).is_file()
    with pytest.raises(FileNotFoundError, match="zero2"):
        scale_up.accelerate_config("zero9")
