"""docs/api.md's examples, run as a doctest in an empty folder: every call the page shows works as shown (a tiny
offline run on the built-in demo collection, then reading, comparing and exporting it)."""
import doctest
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_every_example_in_the_api_docs_runs(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    failures, tried = doctest.testfile(str(REPO / "docs" / "api.md"), module_relative=False, verbose=False,
                                       optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert tried >= 30, f"only {tried} examples found in docs/api.md"
    assert failures == 0
