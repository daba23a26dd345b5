"""The course tokenizer: a real tiktoken.Encoding from the shipped ranks file."""

import tiktoken

from llmcourse import taskworld as tw
from llmcourse.tokenizer import (PAT_STR, RANKS_FILE, decode, encode, get_encoding, get_stats, load_ranks, merge,
                                 special_id, train_bpe)


def test_is_a_tiktoken_encoding_with_the_special_tokens():
    enc = get_encoding()
    assert isinstance(enc, tiktoken.Encoding)
    assert enc.n_vocab == len(load_ranks()) + len(tw.SPECIAL_TOKENS)
    for tok in tw.SPECIAL_TOKENS:
        assert enc.decode([special_id(tok)]) == tok


def test_shipped_ranks_are_what_training_produces():
    assert load_ranks() == train_bpe(tw.tokenizer_corpus())


def test_round_trip_on_task_text_and_arbitrary_unicode():
    for p in tw.sample_problems(50, seed=2):
        assert decode(encode(tw.transcript(p))) == tw.transcript(p)
    for text in ["Hello, world!", "déjà vu — 强化学习 🤖", "  spaces\n\nnewlines\t"]:
        assert decode(encode(text)) == text


def test_digits_are_single_tokens_and_tags_are_one_token():
    ids = encode("<think>12+345</think>")
    assert ids[0] == special_id("<think>") and ids[-1] == special_id("</think>")
    assert [decode([i]) for i in ids[1:-1]] == ["1", "2", "+", "3", "4", "5"]


def test_bpe_helpers_worked_examples():
    assert get_stats([b"a", b"b", b"a", b"b"]) == {(b"a", b"b"): 2, (b"b", b"a"): 1}
    assert merge((b"a", b"b", b"c", b"a", b"b"), (b"a", b"b")) == (b"ab", b"c", b"ab")


def test_trained_merges_compress_and_tiktoken_agrees_with_them():
    ranks = train_bpe("low lower lowest " * 20, n_merges=5)
    assert b" low" in ranks or b"low" in ranks
    enc = tiktoken.Encoding("t", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens={})
    assert len(enc.encode(" lowest")) < len(" lowest".encode())


def test_ranks_file_is_package_data():
    assert RANKS_FILE.parent.name == "data" and RANKS_FILE.exists()
