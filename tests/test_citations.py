"""Every TRL, PEFT and transformers API that the course's text cites exists in the pinned versions.

The chapters' markdown (``solutions/*.ipynb``; ``chapters/`` is generated from it), README.md, GLOSSARY.md and
docs/*.md name library APIs: "TRL's `DPOConfig(beta=..., loss_type="ipo")`", "PEFT's `use_dora=True`",
"transformers' `DynamicCache`". Libraries rename and remove things (TRL 1.x moved CPO and ORPO to
``trl.experimental`` and dropped its PPO trainer; transformers 5 dropped ``SinkCache``), so:

1. ``REGISTRY`` lists every citation: the import path, the keyword arguments / attributes the text names with it, the
   values it names for them (a loss type …) and the defaults it states, and the files that cite it. Each entry is
   resolved in the installed (pinned) versions: the object imports from that path, every keyword is a dataclass field
   or a parameter (or an attribute), every cited choice is accepted (the field's ``choices`` or its documented list),
   every stated default is the default. Entries marked ``removed`` are cited as *gone* ("TRL's former `PPOTrainer`"):
   for them the test asserts the opposite, that the pinned version does not have them, and that the text says so.
2. The text is scanned: a backticked span attributed to a library (right after "TRL"/"PEFT"/"transformers"/"Hugging
   Face" in the same sentence, or anywhere in a list item that starts with the library's name), and any backticked
   name that looks like a library class (``…Trainer``, ``…Config``, ``…Cache``, or a registered name) must be in
   the registry, with the keywords and values it is written with. The course's own classes of the same shape
   (``llmcourse.dpo.DPOConfig``, ``llmcourse.grpo.GRPOConfig``, ``ConcatKVCache``, …) are listed in ``COURSE_NAMES``
   and count as library citations only where the text attributes them to a library.

To cite a new API: add it to ``REGISTRY`` (the test says which span is missing). To fix a stale one: change the text
and the entry together.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import re
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBS = ("trl", "peft", "transformers")


@dataclass(frozen=True, eq=False)
class Cite:
    """One cited API: ``path`` resolves in the pinned version, unless ``removed`` (then it must not)."""

    path: str
    """Where it is imported from, e.g. ``trl.experimental.cpo.CPOConfig``; a method as ``pkg.Class.method``."""
    where: tuple[str, ...]
    """Files that cite it (at least these): notebook names in ``solutions/``, or ``README.md``, ``GLOSSARY.md``,
    ``docs/….md``."""
    kwargs: tuple[str, ...] = ()
    """Keyword arguments, config fields or attributes named with it."""
    values: dict = field(default_factory=dict)
    """kwarg -> the values the text names for it (each must be accepted)."""
    defaults: dict = field(default_factory=dict)
    """kwarg -> the default the text states."""
    members: tuple[str, ...] = ()
    """Logged metrics and dataset columns named with it: each appears as a quoted string in its module's source."""
    source: tuple[str, ...] = ()
    """Code the text paraphrases (a loss formula): each appears verbatim in its module's source."""
    removed_kwargs: tuple[str, ...] = ()
    """Keywords it *used to* have, cited as gone: each must not be a field or parameter."""
    removed: bool = False
    """Cited as removed from the library: must not resolve (nor be defined anywhere in the library)."""
    name: str = ""
    """How the text writes it, if not as the last component of ``path``: ``AutoModel….from_pretrained``."""
    kwargs_on: str = ""
    """Where ``kwargs`` are checked when not on the object itself (``from_pretrained`` passes them to the config)."""

    @property
    def lib(self) -> str:
        return self.path.split(".")[0]

    @property
    def written(self) -> str:
        return self.name or self.path.rsplit(".", 1)[-1]


NB = {n: f"{n}.ipynb" for n in ("03_policy_gradients_ppo", "04_attention_kv_cache", "05_pretraining_sft", "06_lora",
                               "07_reward_models", "08_dpo", "09_ppo_rlhf", "10_grpo")}
N03, N04, N05, N06, N07, N08, N09, N10 = NB.values()
NA1 = "A1_trl_peft.ipynb"
N12 = "12_rejection_sampling_distillation.ipynb"
N13 = "13_quantization_moe.ipynb"
DOCS_MOE = "docs/mixture_of_experts.md"
DOCS_DIST = "docs/distillation.md"
GLOSSARY, DOCS_TW = "GLOSSARY.md", "docs/task_world.md"

REGISTRY: tuple[Cite, ...] = (
    # ------------------------------------------------------------------ TRL 1.16
    Cite("trl.SFTTrainer", (N05, N06, N12), kwargs=("peft_config",)),
    Cite("trl.SFTConfig", (N05,), kwargs=("assistant_only_loss",)),
    Cite("trl.RewardTrainer", (N07, DOCS_TW), kwargs=("peft_config",), members=("chosen", "rejected", "margin"),
         source=('-nn.functional.logsigmoid(rewards_chosen - rewards_rejected - inputs["margin"]).mean()',
                 "AutoModelForSequenceClassification")),
    Cite("trl.RewardConfig", (N07,), kwargs=("center_rewards_coefficient",)),
    Cite("trl.DPOTrainer", (N06, N08), kwargs=("peft_config",),
         members=("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")),
    Cite("trl.DPOConfig", (N08, GLOSSARY), kwargs=("beta", "loss_type", "loss_weights", "precompute_ref_log_probs"),
         values={"loss_type": ("sigmoid", "ipo", "hinge", "robust", "sft")},
         removed_kwargs=("rpo_alpha",)),         # RPO is now loss_type=["sigmoid", "sft"] with loss_weights=[1, α]
    Cite("trl.experimental", (N08,)),          # "In `trl.experimental`: `cpo.CPOTrainer` …"
    Cite("trl.experimental.cpo.CPOTrainer", (N08,)),
    Cite("trl.experimental.cpo.CPOConfig", (N08,), kwargs=("loss_type", "cpo_alpha", "simpo_gamma"),
         values={"loss_type": ("sigmoid", "simpo"), "cpo_alpha": (0.0,)},
         defaults={"loss_type": "sigmoid", "cpo_alpha": 1.0}),  # SimPO keeps CPO's NLL term unless cpo_alpha=0
    Cite("trl.experimental.orpo.ORPOTrainer", (N08,)),
    Cite("trl.experimental.orpo.ORPOConfig", (N08,), kwargs=("beta",)),
    Cite("trl.KTOTrainer", (N08,), kwargs=("peft_config",)),
    Cite("trl.KTOConfig", (N08,),
         kwargs=("beta", "desirable_weight", "undesirable_weight", "precompute_ref_log_probs")),
    Cite("trl.experimental.online_dpo.OnlineDPOTrainer", (N08,)),
    Cite("trl.GRPOTrainer", (N03, N06, N10, DOCS_TW), kwargs=("peft_config", "_compute_loss"),
         members=("clip_ratio/region_mean",)),
    Cite("trl.GRPOConfig", (N10, GLOSSARY, DOCS_TW),
         kwargs=("num_generations", "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "num_iterations",
                 "importance_sampling_level", "use_bias_correction_kl"),
         values={"loss_type": ("grpo", "bnpo", "dr_grpo", "dapo"), "importance_sampling_level": ("token", "sequence"),
                 "use_bias_correction_kl": (True, False), "beta": (0.0,), "num_iterations": (1,)},
         defaults={"beta": 0.0, "loss_type": "dapo", "use_bias_correction_kl": True, "num_iterations": 1,
                   "epsilon": 0.2}),
    Cite("trl.RLOOTrainer", (N10,)),
    Cite("trl.experimental.gkd", (N12,)),
    Cite("trl.experimental.gkd.GKDTrainer", (N12,)),
    Cite("trl.experimental.gkd.GKDConfig", (N12,), kwargs=("beta", "lmbda", "temperature"),
         values={"beta": (0.0, 1.0)}),
    Cite("trl.experimental.gkd.GKDTrainer.generalized_jsd_loss", (DOCS_DIST, "README.md"),
         name="GKDTrainer.generalized_jsd_loss"),
    Cite("trl.experimental.distillation.DistillationTrainer", (DOCS_DIST,)),
    # TRL's PPO trainer: in trl.experimental.ppo in its last releases, removed before TRL 1.16
    Cite("trl.experimental.ppo.PPOTrainer", (N03, N09, GLOSSARY), removed=True, members=("approxkl",)),
    Cite("trl.experimental.ppo.PPOConfig", (N09,), removed=True,
         kwargs=("kl_coef", "cliprange", "cliprange_value", "vf_coef", "gamma", "lam", "num_ppo_epochs",
                 "whiten_rewards")),
    Cite("trl.experimental.ppo.masked_mean", (N09, DOCS_TW), removed=True),
    # ------------------------------------------------------------------ PEFT 0.21
    Cite("peft.LoraConfig", (N06,), kwargs=("r", "lora_alpha", "lora_dropout", "target_modules", "use_dora",
                                           "use_rslora", "fan_in_fan_out"),
         values={"target_modules": ("c_attn", "c_proj", "c_fc")}),
    Cite("peft.get_peft_model", (N06,), kwargs=("model",)),
    Cite("peft.PeftModel.disable_adapter", (N06,)),
    Cite("peft.LoraModel.merge_and_unload", (N06,)),
    Cite("peft.tuners.lora.layer.LoraLayer", (N06,), kwargs=("scaling", "lora_alpha", "r"), name="scaling"),
    # ------------------------------------------------------------------ transformers 5.25
    Cite("transformers.DynamicCache", (N04,)),
    Cite("transformers.StaticCache", (N04,)),
    Cite("transformers.SinkCache", (N04,), removed=True),  # removed in v5; a Hub `custom_generate` method now
    Cite("transformers.GenerationMixin.generate", (N04,), kwargs=("custom_generate",)),
    Cite("transformers.PreTrainedTokenizerBase.apply_chat_template", (N05,)),
    Cite("transformers.models.mixtral.modeling_mixtral.MixtralTopKRouter", (DOCS_MOE,)),
    Cite("transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock", (N13, DOCS_MOE)),
    Cite("transformers.models.mixtral.modeling_mixtral.load_balancing_loss_func", (N13, DOCS_MOE)),
    Cite("transformers.MixtralConfig", (DOCS_MOE,), kwargs=("output_router_logits", "router_aux_loss_coef"),
         defaults={"router_aux_loss_coef": 0.001}),
    Cite("transformers.get_cosine_schedule_with_warmup", (N05,)),
    Cite("transformers.TrainingArguments", (N05,), kwargs=("max_grad_norm",)),
    Cite("transformers.AutoModelForSequenceClassification.from_pretrained", (N07,), kwargs=("num_labels",),
         name="AutoModelForSequenceClassification.from_pretrained", kwargs_on="transformers.PretrainedConfig"),
    Cite("transformers.GPT2LMHeadModel", (NA1,)),
    Cite("transformers.convert_slow_tokenizer.TikTokenConverter", (NA1,)),
    Cite("transformers.pytorch_utils.Conv1D", (NA1,)),
)

COURSE_NAMES = {
    # the course's own names that look like library ones; a library citation only where the text attributes them
    "ConcatKVCache": "llmcourse.kv_cache", "PreallocKVCache": "llmcourse.kv_cache",
    "DPOConfig": "llmcourse.dpo", "ORPOConfig": "llmcourse.dpo", "KTOConfig": "llmcourse.dpo",
    "GRPOConfig": "llmcourse.grpo", "PPOConfig": "llmcourse.ppo_rlhf", "RewardConfig": "llmcourse.reward_model",
    "TaskConfig": "llmcourse.taskworld", "GPTConfig": "llmcourse.model", "TrainConfig": "llmcourse.pretraining",
    "PRMConfig": "llmcourse.prm", "InferenceConfig": "llmcourse.inference",
    "RFTConfig": "llmcourse.rejection_sampling", "R1Config": "llmcourse.r1_recipe", "DistillConfig": "llmcourse.distillation",
    "MoEConfig": "llmcourse.moe",
    "inject_lora": "llmcourse.lora",      # "use_rslora=True in PEFT and in `inject_lora`"
}

NOT_API = {
    # spans after a library's name that are not API names; what they paraphrase is checked through `Cite.source`
    "-logsigmoid(chosen - rejected - margin).mean()",
    "trl vllm-serve",                   # a command of TRL's CLI: `test_trl_has_the_cited_commands`
}

NAMES_NOT_CHOICES = {"target_modules"}
"""Keywords whose cited values are names in the model, not choices the library validates."""

REMOVAL_WORDS = re.compile(r"\b(removed|former|formerly|no longer|replaced|older)\b")


# --------------------------------------------------------------------------- resolving an entry


def _quiet_import(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def resolve(path: str):
    """The object at a dotted path (longest importable module prefix, then attributes); AttributeError if none."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = _quiet_import(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = getattr(obj, attr)
        return obj
    raise AttributeError(path)


def _fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}


def _params(obj) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return {}


def has_member(obj, name: str) -> bool:
    """A config field, a parameter, an attribute, or an instance attribute set in the class's code."""
    if name in _fields(obj) or name in _params(obj) or hasattr(obj, name):
        return True
    if inspect.isclass(obj):
        src = "".join(inspect.getsource(c) for c in obj.__mro__ if c.__module__.split(".")[0] in LIBS)
        return re.search(rf"self\.{re.escape(name)}\s*[:=]", src) is not None
    return False


def accepts(obj, kw: str, value) -> bool:
    """Is ``value`` a documented choice of ``kw`` (a field's ``choices``, else quoted in its help or docstring)?"""
    f = _fields(obj).get(kw)
    if f is not None and "choices" in f.metadata:
        return value in f.metadata["choices"]
    if not isinstance(value, str):                   # a number or a bool: the type of the default
        default = default_of(obj, kw)
        return default is None or isinstance(value, type(default)) or (type(default) is float and type(value) is int)
    text = (f.metadata.get("help", "") if f is not None else "") + (inspect.getdoc(obj) or "")
    return any(q in text for q in (f"'{value}'", f'"{value}"', f"`{value}`"))


def default_of(obj, kw: str):
    f = _fields(obj).get(kw)
    if f is not None:
        return f.default_factory() if f.default is dataclasses.MISSING else f.default
    p = _params(obj).get(kw)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def _source_of(obj) -> str:
    return inspect.getsource(inspect.getmodule(obj))


@cache
def _library_source(lib: str) -> str:
    pkg = Path(_quiet_import(lib).__file__).parent
    return "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in sorted(pkg.rglob("*.py")))


def defined_in_library(lib: str, name: str) -> bool:
    """Is ``name`` defined (``def``/``class``), or a quoted string, anywhere in the library's source?"""
    if lib == "transformers":     # too large to read whole: its public namespace and its cache module
        return hasattr(_quiet_import("transformers"), name) or re.search(
            rf"\bclass {name}\b", inspect.getsource(_quiet_import("transformers.cache_utils"))) is not None
    src = _library_source(lib)
    return re.search(rf"^\s*(def|class) {re.escape(name)}\b|[\"']{re.escape(name)}[\"']", src, re.M) is not None


def check_entry(c: Cite) -> list[str]:
    """What in the entry is not true of the installed library (empty: all of it is)."""
    bad = []
    if c.removed:
        try:
            resolve(c.path)
            bad.append(f"{c.path} is cited as removed but resolves")
        except AttributeError:
            pass
        for name in (c.path.rsplit(".", 1)[-1], *c.members):
            if defined_in_library(c.lib, name):
                bad.append(f"{name} is cited as removed but {c.lib} still defines it")
        return bad
    try:
        obj = resolve(c.path)
    except AttributeError:
        return [f"{c.path} does not resolve in {c.lib} {_quiet_import(c.lib).__version__}"]
    target = resolve(c.kwargs_on) if c.kwargs_on else obj
    bad += [f"{c.path}: no field, parameter or attribute {k!r}" for k in c.kwargs if not has_member(target, k)]
    bad += [f"{c.path}: {k!r} is cited as removed but exists" for k in c.removed_kwargs if has_member(target, k)]
    for k, vs in c.values.items():
        assert k in c.kwargs, f"{c.path}: a value for {k!r}, which is not in kwargs"
        if k in NAMES_NOT_CHOICES:          # module names, checked by tests/test_oracle_peft.py on the course GPT
            continue
        bad += [f"{c.path}: {k}={v!r} is not an accepted value" for v in vs if not accepts(target, k, v)]
    for k, v in c.defaults.items():
        assert k in c.kwargs, f"{c.path}: a default for {k!r}, which is not in kwargs"
        if default_of(target, k) != v:
            bad.append(f"{c.path}: the default of {k} is {default_of(target, k)!r}, the text says {v!r}")
    src = _source_of(obj) if (c.members or c.source) else ""
    bad += [f"{c.path}: {m!r} not in its module's source" for m in c.members
            if f'"{m}"' not in src and f"'{m}'" not in src]
    bad += [f"{c.path}: {s!r} not in its module's source" for s in c.source if s not in src]
    return bad


@pytest.mark.parametrize("cite", REGISTRY, ids=lambda c: c.path)
def test_registry_resolves_in_the_pinned_versions(cite):
    assert check_entry(cite) == []


def test_the_installed_versions_are_the_pinned_ones():
    pins = dict(re.findall(r'"(trl|peft|transformers)==([\w.]+)"', (ROOT / "pyproject.toml").read_text()))
    assert set(pins) == set(LIBS)
    for lib, version in pins.items():
        assert _quiet_import(lib).__version__ == version, lib


def test_course_names_are_the_courses():
    for name, module in COURSE_NAMES.items():
        assert hasattr(importlib.import_module(module), name), (name, module)


def test_registry_has_no_duplicates():
    assert len({c.path for c in REGISTRY}) == len(REGISTRY)


# --------------------------------------------------------------------------- scanning the text

ATTR = re.compile(r"\b(TRL|PEFT|[Tt]ransformers|Hugging Face)\b")
ATTR_LIB = {"TRL": "trl", "PEFT": "peft", "transformers": "transformers", "Transformers": "transformers",
            "Hugging Face": "transformers"}
LEAD = re.compile(r"\s*(?:[-*]|\d+\.)\s+(?:Hugging Face\s+)?(TRL|PEFT|transformers)\b")
BREAK = re.compile(r"[);]|\.\s")      # a span is attributed to a library named earlier in the same clause
NEAR = 60                             # … at most this many characters earlier
SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
FENCE = re.compile(r"```.*?```", re.S)
LOOKS_LIBRARY = re.compile(r"^\w+(Trainer|Config|Cache)$")
BARE = re.compile(r"\b(TRL|PEFT)(?:'s)?\s+([A-Za-z_][\w/]*)")      # GLOSSARY writes "TRL's rpo_alpha", no backticks
TOKEN = re.compile(r'"[^"]*"|\'[^\']*\'|-?\d+(?:\.\d+)?|[A-Za-z_][\w.]*(?:/[\w.]+)*|==|[()\[\],=|]|\S')


def sources() -> list[tuple[str, str]]:
    """(file, markdown) for every markdown cell of solutions/*.ipynb, README.md, GLOSSARY.md and docs/*.md."""
    out = []
    for p in sorted((ROOT / "solutions").glob("*.ipynb")):
        for cell in json.loads(p.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "markdown":
                src = cell["source"]
                out.append((p.name, "".join(src) if isinstance(src, list) else src))
    for p in [ROOT / "README.md", ROOT / "GLOSSARY.md", *sorted((ROOT / "docs").glob("*.md"))]:
        out.append((str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")))
    return out


def blocks(markdown: str) -> list[str]:
    """Paragraphs, list items and table rows (continuation lines stay with their item); code fences dropped."""
    text = LINK.sub(r"\1", FENCE.sub("", markdown))
    out, cur = [], []
    for line in text.split("\n"):
        if cur and re.match(r"\s*$|[-*] |\| |#|\d+\. ", line):
            out.append("\n".join(cur))
            cur = []
        if line.strip():
            cur.append(line)
    return out + (["\n".join(cur)] if cur else [])


def attribution(block: str, start: int) -> str | None:
    """The library a span at ``start`` is attributed to, or None."""
    lead = LEAD.match(block)
    if lead:
        return ATTR_LIB[lead.group(1)]
    before = MATH.sub("x", block[:start])
    last = None
    for last in ATTR.finditer(before):
        pass
    if last and len(before) - last.end() <= NEAR and not BREAK.search(before[last.end():]):
        return ATTR_LIB[last.group(1)]
    return None


def _literal(tok: str):
    try:
        return ast.literal_eval(tok)
    except (ValueError, SyntaxError):
        return tok if tok in ("True", "False", "None") else None


@dataclass
class Call:
    name: str | None                              # None: the span's top level (`loss_type="dapo"`, `"grpo"`)
    params: list[str] = field(default_factory=list)
    values: dict = field(default_factory=dict)    # kwarg -> literal values written for it
    literals: list = field(default_factory=list)  # literals with no kwarg


def parse_span(span: str) -> tuple[str, list[Call]]:
    """The span's leading dotted name, and its calls with their keyword arguments and literal values.

    >>> head, calls = parse_span('DPOConfig(beta=..., loss_type=["sigmoid", "sft"], precompute_ref_log_probs=True)')
    >>> head, calls[1].name, calls[1].params
    ('DPOConfig', 'DPOConfig', ['beta', 'loss_type', 'precompute_ref_log_probs'])
    >>> calls[1].values
    {'loss_type': ['sigmoid', 'sft'], 'precompute_ref_log_probs': [True]}
    """
    toks = TOKEN.findall(span.strip().removeprefix("with ").strip())
    head = toks[0] if toks and re.match(r"[A-Za-z_]", toks[0]) else ""
    stack: list[tuple[Call | None, str | None]] = [(Call(None), None)]   # (call or None for a bracket, current kw)
    calls = [stack[0][0]]
    arg_start = True
    i = 0
    while i < len(toks):
        tok, nxt = toks[i], toks[i + 1] if i + 1 < len(toks) else ""
        call, kw = stack[-1]
        if re.match(r"[A-Za-z_]", tok) and nxt == "(":
            stack.append((Call(tok), None))
            calls.append(stack[-1][0])
            i += 2
            arg_start = True
            continue
        if tok in ("(", "["):
            stack.append((None, None))
        elif tok in (")", "]"):
            if len(stack) > 1:
                stack.pop()
        elif tok == ",":
            if call is not None:
                stack[-1] = (call, None)
            arg_start = True
            i += 1
            continue
        elif re.match(r"[A-Za-z_]", tok) and nxt == "=" and tok not in ("True", "False", "None"):
            if call is not None:
                call.params.append(tok)
                stack[-1] = (call, tok)
            i += 2
            arg_start = False
            continue
        elif _literal(tok) is not None and not (re.match(r"[A-Za-z_]", tok) and tok not in ("True", "False", "None")):
            for c, k in reversed(stack):                                    # the kwarg this literal belongs to
                if c is not None:
                    if k is not None:
                        c.values.setdefault(k, []).append(_literal(tok))
                    else:
                        c.literals.append(_literal(tok))
                    break
        elif re.match(r"[A-Za-z_]\w*$", tok) and arg_start and call is not None and call.name and nxt in (",", ")"):
            call.params.append(tok)                             # a parameter named bare: `LoraConfig(r, …)`
        arg_start = False
        i += 1
    return head, calls


@cache
def _by_written() -> dict[str, list[Cite]]:
    index: dict[str, list[Cite]] = {}
    for c in REGISTRY:
        index.setdefault(c.written, []).append(c)
    return index


def lookup(name: str, lib: str | None = None) -> Cite | None:
    """The entry a written name refers to (``model.disable_adapter`` -> ``disable_adapter``; a full path must match)."""
    parts = name.split(".")
    for i in range(len(parts)):
        cands = [c for c in _by_written().get(".".join(parts[i:]), []) if lib in (None, c.lib)]
        if cands:
            c = cands[0]
            if parts[0] in LIBS and name != c.path:
                return None                              # written with a library path that is not the entry's
            return c
    return None


def members_of(lib: str, name: str) -> list[Cite]:
    return [c for c in REGISTRY if c.lib == lib and (name in c.kwargs or name in c.members
                                                      or name in c.removed_kwargs)]


@dataclass
class Finding:
    file: str
    span: str
    problem: str | None            # None: a valid citation
    cites: tuple[Cite, ...] = ()
    gone: tuple[str, ...] = ()     # names cited that the library no longer has
    block: str = ""


def check_call(call: Call, c: Cite) -> list[str]:
    """Problems of one written call against its entry: unregistered keywords or values."""
    bad = []
    allowed = set(c.kwargs) | set(c.removed_kwargs)
    bad += [f"keyword {p!r} of {c.written} is not registered" for p in call.params if p not in allowed]
    for k, vs in call.values.items():       # the choices written (strings) must be registered ones
        vs = [v for v in vs if isinstance(v, str)]
        ok = [*c.values.get(k, ()), *([c.defaults[k]] if k in c.defaults else [])]
        bad += [f"{k}={v!r} of {c.written} is not registered" for v in vs if v not in ok and not c.removed]
    return bad


def scan_span(file: str, block: str, span: str, lib: str | None) -> Finding | None:
    """Check one backticked span; None if it is not a library citation."""
    head, calls = parse_span(span)
    top, named = calls[0], calls[1:]
    if span.strip() in NOT_API or re.fullmatch(r"[\w./-]+\.(py|md|json|ipynb)|llmcourse\.[\w.]+", span.strip()):
        return None                 # a formula, or a path in the course's tree
    names = [head] if head else []
    names += [c.name for c in named if c.name != head]
    if lib is None:                 # unattributed: only names that look like a library's count
        names = [n for n in names if n.split(".")[-1] not in COURSE_NAMES and re.search("[A-Z]", n)
                 and (LOOKS_LIBRARY.match(n.split(".")[-1]) or lookup(n))]
        names += [p for c in calls for p in c.params if LOOKS_LIBRARY.match(p) and p not in COURSE_NAMES]
        if not names:
            return None
    cites, problems, gone = [], [], []
    for n in names:
        c = lookup(n, lib) or lookup(n)        # a bullet on TRL may name a transformers API too
        if c is not None:
            cites.append(c)
            if c.removed:
                gone.append(n)
            for call in named:
                if call.name == n:
                    problems += check_call(call, c)
                    gone += [p for p in call.params if p in c.removed_kwargs]
        elif lib is not None and members_of(lib, n.split(".")[-1]):
            owners = members_of(lib, n.split(".")[-1])
            cites += owners if len(owners) == 1 else []
            gone += [n for o in owners if o.removed or n in o.removed_kwargs]
        elif n in COURSE_NAMES and lib is not None and not any(n == c.written for c in REGISTRY):
            continue                # the course's own name beside a library's ("in PEFT and in `inject_lora`")
        else:
            problems.append(f"{n!r} is not in the registry" + (f" (attributed to {lib})" if lib else ""))
    if lib is not None:             # top-level keywords and literals: `loss_type="dapo"`, `"grpo"`
        for p in top.params:
            owners = members_of(lib, p)
            if not owners:
                problems.append(f"keyword {p!r} is not registered for {lib}")
            for v in (v for v in top.values.get(p, []) if isinstance(v, str)):
                if not any(v in o.values.get(p, ()) or o.defaults.get(p, object()) == v for o in owners):
                    problems.append(f"{p}={v!r} is not registered for {lib}")
            cites += owners if len(owners) == 1 else []
            gone += [p for o in owners if o.removed or p in o.removed_kwargs]
        for v in top.literals:
            if isinstance(v, str) and not any(v in vs for c in REGISTRY if c.lib == lib for vs in c.values.values()):
                problems.append(f"the value {v!r} is not registered for {lib}")
    return Finding(file, span, "; ".join(problems) or None, tuple(dict.fromkeys(cites)), tuple(gone), block)


@cache
def findings() -> tuple[Finding, ...]:
    out = []
    for file, markdown in sources():
        for block in blocks(markdown):
            for m in SPAN.finditer(block):
                f = scan_span(file, block, m.group(1), attribution(block, m.start()))
                if f is not None:
                    out.append(f)
            for m in BARE.finditer(MATH.sub("x", SPAN.sub("", block))):        # unbackticked, as in GLOSSARY.md
                lib, word = ATTR_LIB[m.group(1)], m.group(2)
                if "_" in word or "/" in word or lookup(word, lib) or members_of(lib, word):
                    out.append(scan_span(file, block, word, lib))
    return tuple(out)


def test_the_scan_finds_the_citations():
    """The scanner itself: it sees the chapters' citations, and it flags what is not registered."""
    spans = {(f.file, f.span) for f in findings()}
    assert (N08, 'DPOConfig(loss_type=["sigmoid", "sft"],\n  loss_weights=[1.0, α])') in spans
    assert (N06, "use_dora=True") in spans and (N04, "DynamicCache") in spans
    assert not any(f.span == "DPOConfig()" for f in findings())             # the course's own config
    probe = "- TRL: `FooTrainer(bar=1)`, `DPOConfig(rpo_alpha=1.0)`, `GRPOConfig(loss_type=\"nope\")`"
    got = [scan_span("probe", probe, s, attribution(probe, probe.index(s))) for s in
           ("FooTrainer(bar=1)", "DPOConfig(rpo_alpha=1.0)", 'GRPOConfig(loss_type="nope")')]
    assert "not in the registry" in got[0].problem
    assert got[1].problem is None and got[1].gone == ("rpo_alpha",)   # registered as removed: must be told so
    assert "'nope' of GRPOConfig is not registered" in got[2].problem
    assert attribution("TRL's `RewardTrainer` loss) and judged by `pairwise_accuracy`", 52) is None


def test_every_library_citation_in_the_text_is_registered():
    bad = [f"{f.file}: `{f.span}`: {f.problem}" for f in findings() if f.problem]
    assert not bad, ("register these in REGISTRY (or, if the course's own name or a formula, in COURSE_NAMES or "
                     "NOT_API):\n" + "\n".join(bad))


def test_citations_of_removed_apis_say_so():
    pending = {(f.file, g) for f in findings() for g in f.gone if not REMOVAL_WORDS.search(f.block)}
    assert not pending, f"cited as if present but gone from the pinned version: {sorted(pending)}"


def test_the_registry_lists_where_each_api_is_cited():
    found: dict[str, set[str]] = {c.path: set() for c in REGISTRY}
    for f in findings():
        for c in f.cites:
            found[c.path].add(f.file)
    wrong = {c.path: (sorted(c.where), sorted(found[c.path])) for c in REGISTRY
             if not found[c.path] or not set(c.where) <= found[c.path]}
    assert not wrong, f"registered where vs found where (a citation that is gone, or a stale entry): {wrong}"


def test_trl_has_the_cited_commands():
    """`trl vllm-serve` (the appendix, `llmcourse.scale_up`): a command of the pinned TRL's command line."""
    from trl.cli.commands.vllm_serve import VllmServeCommand
    assert VllmServeCommand().name == "vllm-serve"
