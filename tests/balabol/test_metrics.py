"""ROUGE-L and BLEU against values computed by hand (the working is in the comments)."""

from __future__ import annotations

import math

import pytest

from balabol.metrics import corpus_bleu, lcs_length, ngrams, rouge_l, words

CAT = words("The cat sat on the mat.")[:-1]  # the cat sat on the mat
REF = words("the cat is on the mat")


def test_words_lowercases_and_splits_punctuation_in_any_script():
    assert words("Hello, World!") == ["hello", ",", "world", "!"]
    assert words("Привет, мир… 2+2=4") == ["привет", ",", "мир", "…", "2", "+", "2", "=", "4"]
    assert words("  ") == []


def test_lcs_length():
    assert lcs_length(CAT, REF) == 5  # the cat on the mat
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the CLRS example: BCBA
    assert lcs_length([], REF) == 0


def test_rouge_l_is_the_f1_of_lcs_precision_and_recall():
    assert rouge_l(CAT, REF) == pytest.approx(5 / 6)  # P = R = 5/6
    # P = 2/2, R = 2/6 -> F = 2 * 1 * (1/3) / (4/3) = 1/2
    assert rouge_l(["the", "cat"], REF) == pytest.approx(0.5)
    assert rouge_l(REF, REF) == 1.0
    assert rouge_l([], REF) == 0.0
    assert rouge_l(["dog"], REF) == 0.0


def test_ngrams_counts():
    assert ngrams(CAT, 2)[("the", "cat")] == 1
    assert ngrams(CAT, 1)[("the",)] == 2
    assert sum(ngrams(CAT, 4).values()) == 3


def test_bleu_of_one_pair():
    # unigrams: 5 of 6 match (clipped: "the" twice, "sat" not)
    # bigrams: the cat, on the, the mat = 3 of 5 -> (3+1)/(5+1)
    # trigrams: on the mat = 1 of 4 -> (1+1)/(4+1);  4-grams: 0 of 3 -> (0+1)/(3+1)
    # equal lengths: no brevity penalty.  (5/6 * 4/6 * 2/5 * 1/4) ** (1/4) = (1/18) ** (1/4)
    assert corpus_bleu([CAT], [REF]) == pytest.approx(18**-0.25)


def test_bleu_brevity_penalty():
    # every n-gram of "the cat" matches (higher orders have none: (0+1)/(0+1) = 1);
    # c = 2 < r = 6: BP = exp(1 - 6/2)
    assert corpus_bleu([["the", "cat"]], [REF]) == pytest.approx(math.exp(-2))


def test_bleu_sums_counts_over_the_corpus_before_dividing():
    # 1-grams (5+2)/(6+2); 2-grams (3+1+1)/(5+1+1) = 5/7; 3-grams (1+1)/(4+1); 4-grams 1/4
    # c = 8, r = 12: BP = exp(1 - 12/8).  7/8 * 5/7 * 2/5 * 1/4 = 1/16, whose 4th root is 1/2
    got = corpus_bleu([CAT, ["the", "cat"]], [REF, REF])
    assert got == pytest.approx(math.exp(-0.5) * 0.5)


def test_bleu_edge_cases():
    assert corpus_bleu([REF], [REF]) == pytest.approx(1.0)
    assert corpus_bleu([["dog"]], [REF]) == 0.0  # no unigram matches
    assert corpus_bleu([[]], [REF]) == 0.0
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        corpus_bleu([CAT, CAT], [REF])
