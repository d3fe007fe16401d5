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


class Analyzer:
    """Turns text into index terms. Stems are memoised: vocabularies are small, texts are not."""

    version = ANALYZER_VERSION

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("porter")
        self._stem_cache: dict[str, str] = {}

    def stem(self, token: str) -> str:
        stem = self._stem_cache.get(token)
        if stem is None:
            # Lucene's PorterStemmer (like Porter's C original) leaves words of <= 2 chars alone;
            # Snowball would turn "us" into "u" and "s" into "".
            stem = token if len(token) <= 2 else self._stemmer.stemWord(token)
            self._stem_cache[token] = stem
        return stem

    def analyze(self, text: str) -> list[str]:
        """Index terms of `text`, in order, duplicates kept."""
        cache = self._stem_cache
        out = []
        for tok in tokenize(text):
            if tok in STOPWORDS or not tok:
                continue
            stem = cache.get(tok)
            if stem is None:
                stem = self.stem(tok)
            out.append(stem)
        return out

    def analyze_positions(self, text: str, start: int = 0) -> tuple[list[str], list[int], int]:
        """(index terms, their positions, the next free position) of `text`, positions counted from ``start``.

        As in Lucene, every token of the tokenizer takes a position and stopwords leave gaps: in "cost of
        living" the terms ``cost`` and ``live`` are at positions 0 and 2. Analysing a title and then its body
        with ``start`` = the title's next free position gives the positions of "title body" analysed whole."""
        cache = self._stem_cache
        terms, positions = [], []
        pos = start
        for tok in tokenize(text):
            if tok and tok not in STOPWORDS:
                stem = cache.get(tok)
                if stem is None:
                    stem = self.stem(tok)
                terms.append(stem)
                positions.append(pos)
            pos += 1
        return terms, positions, pos

    def analyze_many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.analyze(t) for t in texts]


def analyze(text: str) -> list[str]:
    """Convenience one-shot analysis with a module-level analyzer."""
    return _DEFAULT.analyze(text)


_DEFAULT = Analyzer()
