"""Text metrics for `balabol eval`, written out so every number can be checked by hand.

- ROUGE-L: the F1 of precision and recall of the longest common subsequence (Lin, 2004,
  https://aclanthology.org/W04-1013/), per reply, averaged over replies.
- BLEU: corpus BLEU-4 (Papineni et al., 2002): clipped n-gram counts summed over the corpus,
  the geometric mean of the four precisions and a brevity penalty. For n >= 2 the counts are
  add-one smoothed (Lin & Och, 2004, https://aclanthology.org/C04-1072/), so one missing
  4-gram does not zero a whole corpus of short chat replies.
- bits per byte: a total log-loss in nats, in bits, over the UTF-8 bytes of the text it
  was paid on; unlike perplexity it does not depend on the tokenizer.

ROUGE-L and BLEU work on `words(text)`: lowercased words and single punctuation marks
(Unicode-aware, so Russian works too); their values are in [0, 1].

Example: `balabol eval --data data/me --adapter adapters/me` reports all three.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """'Hello, World!' -> ['hello', ',', 'world', '!']"""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, two rows)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """F1 of LCS precision (over the candidate) and recall (over the reference)."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(candidate), lcs / len(reference)
    return 2 * p * r / (p + r)


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[str]], max_n: int = 4
) -> float:
    """Corpus BLEU-max_n with one reference per candidate and add-one smoothing for n >= 2."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} references")
    matches, totals = [0] * max_n, [0] * max_n
    cand_len = ref_len = 0
    for cand, ref in zip(candidates, references, strict=True):
        cand_len, ref_len = cand_len + len(cand), ref_len + len(ref)
        for n in range(1, max_n + 1):
            c, r = ngrams(cand, n), ngrams(ref, n)
            matches[n - 1] += sum(min(k, r[g]) for g, k in c.items())  # clipped counts
            totals[n - 1] += sum(c.values())
    if cand_len == 0 or matches[0] == 0:
        return 0.0
    precisions = [matches[0] / totals[0]]
    precisions += [(m + 1) / (t + 1) for m, t in zip(matches[1:], totals[1:], strict=True)]
    brevity = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    return brevity * math.exp(sum(math.log(p) for p in precisions) / max_n)


def bits_per_byte(nll: float, n_bytes: int) -> float:
    """A summed negative log-likelihood (nats) as bits per UTF-8 byte of the scored text."""
    if n_bytes <= 0:
        raise ValueError(f"bits per byte of {n_bytes} bytes: there is no text to divide by")
    return nll / math.log(2) / n_bytes
