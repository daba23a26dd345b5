"""The course's tokenizer: a byte-level BPE trained on the task world, loaded as a `tiktoken.Encoding`.

Byte-pair encoding starts from the 256 bytes and repeatedly merges the most frequent adjacent
pair into a new token. tiktoken does the *encoding* (fast, in Rust) from a table of
``token bytes -> rank``; this module *trains* that table (minbpe style) and ships it as
``llmcourse/data/course_bpe.tiktoken``, so nothing is downloaded at run time::

    enc = get_encoding()
    enc.encode("What is 47+385?")       # digits are always single tokens (see PAT_STR)
    enc.encode("<think>", allowed_special="all")  # one special token

Rebuild the shipped file (deterministic) with ``python -m llmcourse.tokenizer``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections import Counter
from functools import lru_cache
from pathlib import Path

import regex
import tiktoken

from llmcourse.taskworld import SPECIAL_TOKENS, tokenizer_corpus

DATA = Path(__file__).parent / "data"
RANKS_FILE = DATA / "course_bpe.tiktoken"
N_MERGES = 96
"""How many merges the course's BPE learns (vocabulary = 256 bytes + merges + specials)."""

PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenization regex, except that a number is split into single digits
(`` ?\\p{N}`` instead of `` ?\\p{N}+``), so that column arithmetic sees one digit per token."""


def get_stats(ids: list[bytes], counts: Counter | None = None, weight: int = 1) -> Counter:
    """Count adjacent pairs: ``get_stats([b'a', b'b', b'a', b'b']) -> {(b'a', b'b'): 2, (b'b', b'a'): 1}``."""
    counts = Counter() if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] += weight
    return counts


def merge(ids: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    """Replace each occurrence of ``pair``: ``merge((b'a', b'b', b'c'), (b'a', b'b')) -> (b'ab', b'c')``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(ids[i] + ids[i + 1])
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def train_bpe(text: str, n_merges: int = N_MERGES, pat_str: str = PAT_STR) -> dict[bytes, int]:
    """Learn ``n_merges`` merges on ``text``; return tiktoken's ``mergeable_ranks`` (bytes -> rank).

    Text is first split by ``pat_str`` (merges never cross chunk boundaries); each distinct
    chunk is kept once with its count, so training is fast. Ties go to the smallest pair.
    """
    ranks = {bytes([i]): i for i in range(256)}
    chunks = Counter(regex.findall(pat_str, text))
    words: Counter = Counter()
    for chunk, n in chunks.items():
        words[tuple(bytes([b]) for b in chunk.encode("utf-8"))] += n
    for _ in range(n_merges):
        stats: Counter = Counter()
        for w, n in words.items():
            get_stats(list(w), stats, n)
        candidates = [(n, pair) for pair, n in stats.items() if pair[0] + pair[1] not in ranks]
        if not candidates:
            break
        n, pair = max(candidates, key=lambda c: (c[0], tuple(-b for b in c[1][0] + c[1][1])))
        if n < 2:
            break
        ranks[pair[0] + pair[1]] = len(ranks)
        merged: Counter = Counter()
        for w, c in words.items():
            merged[merge(w, pair)] += c
        words = merged
    return ranks


def save_ranks(ranks: dict[bytes, int], path: Path = RANKS_FILE) -> None:
    """Write ranks in tiktoken's file format: one ``base64(token) rank`` per line."""
    lines = [f"{base64.b64encode(tok).decode()} {rank}" for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def load_ranks(path: Path = RANKS_FILE) -> dict[bytes, int]:
    """Read a ``.tiktoken`` ranks file (the inverse of `save_ranks`)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: rebuild it with `python -m llmcourse.tokenizer`.")
    ranks = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    return ranks


@lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    """The course's tokenizer: a real `tiktoken.Encoding` with the task world's special tokens."""
    ranks = load_ranks()
    special = {tok: len(ranks) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(name="llmcourse_bpe", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=special)


def encode(text: str) -> list[int]:
    """Encode with the course's tokenizer, special tokens allowed (the task world's text has them)."""
    return get_encoding().encode(text, allowed_special="all")


def decode(ids: list[int]) -> str:
    return get_encoding().decode(list(ids))


def special_id(token: str) -> int:
    """Id of a special token, e.g. ``special_id('<|endoftext|>')``."""
    return get_encoding().encode_single_token(token)


def gpt2_if_cached() -> tiktoken.Encoding | None:
    """GPT-2's encoding if tiktoken already has its files cached on this machine, else None.

    Never downloads: ``tiktoken.get_encoding('gpt2')`` would try to, so look in its cache first.
    """
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") \
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    urls = ["https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
            "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"]
    if not all(os.path.exists(os.path.join(cache, hashlib.sha1(u.encode()).hexdigest())) for u in urls):
        return None
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception:  # noqa: BLE001 - a broken cache is the same as no cache
        return None


def main() -> None:
    ranks = train_bpe(tokenizer_corpus())
    save_ranks(ranks)
    print(f"wrote {RANKS_FILE} ({len(ranks)} ranks; vocabulary {len(ranks) + len(SPECIAL_TOKENS)} with specials)")


if __name__ == "__main__":
    main()
