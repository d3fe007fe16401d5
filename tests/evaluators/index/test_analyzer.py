from evorank.evaluators.index.analyzer import STOPWORDS, Analyzer, analyze, tokenize


def test_standard_tokenizer_rules():
    assert tokenize("U.S.A. GDP grew 3.14% over 1,000 days; don't stop") == [
        "u.s.a", "gdp", "grew", "3.14", "over", "1,000", "days", "don't", "stop"]
    assert tokenize("covid-19 h2o foo_bar a/b e-mail") == ["covid", "19", "h2o", "foo_bar", "a", "b", "e", "mail"]
    assert tokenize("a.1 1.a") == ["a", "1", "1", "a"]  # mid-punctuation joins like with like only
    assert tokenize("___ __x") == ["__x"]


def test_possessive_and_case():
    assert tokenize("John's DOG'S Jones’s") == ["john", "dog", "jones"]


def test_long_tokens_are_split_like_lucene():
    assert [len(t) for t in tokenize("x" * 600)] == [255, 255, 90]


def test_stopwords_are_lucenes_33():
    assert len(STOPWORDS) == 33 and {"the", "with", "will", "such"} <= STOPWORDS
    assert analyze("the cat is on the mat") == ["cat", "mat"]


def test_porter_stemming_and_short_words():
    assert analyze("running runs easily connections") == ["run", "run", "easili", "connect"]
    # Lucene's Porter leaves words of <= 2 characters alone (Snowball would make "us" -> "u").
    assert analyze("us is as ds") == ["us", "ds"]


def test_analyzer_is_deterministic_and_cached():
    a = Analyzer()
    assert a.analyze("Stemming stems stemmed") == a.analyze("stemming STEMS Stemmed") == ["stem", "stem", "stem"]
