"""Text analysis equivalent to Lucene's EnglishAnalyzer, as Pyserini uses it for BEIR "flat" indexes.

Pipeline (Lucene 9): StandardTokenizer (Unicode UAX#29 word boundaries) -> EnglishPossessiveFilter
-> LowerCaseFilter -> StopFilter (Lucene's 33 English stopwords) -> PorterStemFilter.

The tokenizer is a regular expression implementing the UAX#29 rules that matter for text in Latin
script: letters and digits run together ("h2o", "covid19"), underscores join (ExtendNumLet),
"." "'" "’" ":" join two letters (MidLetter/MidNumLet: "u.s.a", "don't"), and "." "," ";" "'" join
two digits (MidNum/MidNumLet: "3.14", "1,000"). Everything else separates tokens; tokens longer than
255 characters are split, as Lucene's default maxTokenLength does. Lowercasing before tokenizing is
equivalent to Lucene's order (the possessive filter accepts both "'s" and "'S").

Stemming uses PyStemmer's "porter" (Snowball's rendering of Porter's algorithm). Known departure
from Lucene's PorterStemmer: Lucene keeps the C original's two step-2 extras ("bli"->"ble",
"logi"->"log"), so e.g. "possibly" stems to "possibl" in Lucene and "possibli" here. Both sides of
the index use the same stemmer, so only the conflation of those rare forms differs.

`ANALYZER_VERSION` is part of every index cache key: bump it whenever the output can change.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import compress

import Stemmer

ANALYZER_VERSION = "lucene-english-1"

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET.
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with".split()
)
assert len(STOPWORDS) == 33

_LETTER = r"[^\W\d_]"
_TOKEN = re.compile(
    r"\w+(?:(?:(?<=" + _LETTER + r")[.'’:·](?=" + _LETTER + r")|(?<=\d)[.,;'’](?=\d))\w+)*"
)
_POSSESSIVE = re.compile(r"['’＇]s$")
_MAX_TOKEN_LEN = 255


def tokenize(text: str) -> list[str]:
    """Lower-cased StandardTokenizer tokens with possessives stripped (no stopping, no stemming)."""
    tokens = []
    for tok in _TOKEN.findall(text.lower()):
        if tok.strip("_") == "":
            continue  # a run of underscores is not a word in UAX#29 terms
        if len(tok) > _MAX_TOKEN_LEN:
            tokens.extend(tok[i : i + _MAX_TOKEN_LEN] for i in range(0, len(tok), _MAX_TOKEN_LEN))
            continue
        tokens.append(_POSSESSIVE.sub("", tok))
    return tokens


def raw_tokens(text: str) -> list[str]:
    """The tokenizer's raw matches in lower-cased ``text``, before the rare cases ``tokenize`` treats specially
    (runs of underscores, tokens over 255 characters) and before possessives are stripped. ``Analyzer.token_term``
    turns each into its index term."""
    return _TOKEN.findall(text.lower())


#: ``Analyzer.token_term`` of a stopword: the token takes a position but gives no term.
STOP = ""


class _TermMemo(dict):
    """raw token -> ``Analyzer.token_term``, computed on a miss (so lookups run as one C-level ``map``)."""

    def __init__(self, analyzer: "Analyzer"):
        super().__init__()
        self.analyzer = analyzer

    def __missing__(self, raw: str) -> str | None:
        term = self[raw] = self.analyzer.token_term(raw)
        return term


class Analyzer:
    """Turns text into index terms. Memoised per raw token (vocabularies are small, texts are not): the cache maps a
    token as the tokenizer finds it to its term, so analysing text costs one regular-expression pass and one
    dictionary lookup per token. ``cache_limit`` bounds the memo (it is emptied when it grows past that many
    entries; the output never depends on it)."""

    version = ANALYZER_VERSION

    def __init__(self, cache_limit: int = 2_000_000) -> None:
        self._stemmer = Stemmer.Stemmer("porter")
        self._stem_cache: dict[str, str] = {}
        self._term_cache = _TermMemo(self)
        self.cache_limit = cache_limit

    def stem(self, token: str) -> str:
        stem = self._stem_cache.get(token)
        if stem is None:
            # Lucene's PorterStemmer (like Porter's C original) leaves words of <= 2 chars alone;
            # Snowball would turn "us" into "u" and "s" into "".
            stem = token if len(token) <= 2 else self._stemmer.stemWord(token)
            if len(self._stem_cache) >= self.cache_limit:
                self._stem_cache.clear()
            self._stem_cache[token] = stem
        return stem

    def token_term(self, raw: str) -> str | None:
        """The index term of one raw token (an item of ``raw_tokens``): its stem, ``STOP`` ("") for a stopword, or
        None when ``tokenize`` does not keep the token as it is (a run of underscores, which it drops, or a token
        over 255 characters, which it splits): ``analyze_positions`` takes the exact path for such text."""
        if len(raw) > _MAX_TOKEN_LEN or raw.strip("_") == "":
            return None
        tok = _POSSESSIVE.sub("", raw)
        if not tok or tok in STOPWORDS:
            return STOP
        return self.stem(tok)

    def terms_of_tokens(self, raw: list[str]) -> list[str | None]:
        """``token_term`` of every raw token, through the memo (one C-level lookup per token)."""
        if len(self._term_cache) > self.cache_limit:
            self._term_cache.clear()
        return list(map(self._term_cache.__getitem__, raw))

    def analyze(self, text: str) -> list[str]:
        """Index terms of `text`, in order, duplicates kept."""
        return self.analyze_positions(text)[0]

    def analyze_positions(self, text: str, start: int = 0) -> tuple[list[str], list[int], int]:
        """(index terms, their positions, the next free position) of `text`, positions counted from ``start``.

        As in Lucene, every token of the tokenizer takes a position and stopwords leave gaps: in "cost of
        living" the terms ``cost`` and ``live`` are at positions 0 and 2. Analysing a title and then its body
        with ``start`` = the title's next free position gives the positions of "title body" analysed whole."""
        terms = self.terms_of_tokens(raw_tokens(text))
        if None in terms:  # a run of underscores or an over-long token: the exact, token-by-token path
            return self._analyze_positions_exact(text, start)
        end = start + len(terms)
        return list(compress(terms, terms)), list(compress(range(start, end), terms)), end

    def _analyze_positions_exact(self, text: str, start: int) -> tuple[list[str], list[int], int]:
        terms, positions = [], []
        pos = start
        for tok in tokenize(text):
            if tok and tok not in STOPWORDS:
                terms.append(self.stem(tok))
                positions.append(pos)
            pos += 1
        return terms, positions, pos

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.analyze(t) for t in texts]


def analyze(text: str) -> list[str]:
    """Convenience one-shot analysis with a module-level analyzer."""
    return _DEFAULT.analyze(text)


_DEFAULT = Analyzer()
