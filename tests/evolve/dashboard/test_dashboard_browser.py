"""The dashboard in a real headless Chromium, while a run is being written: the page follows it without a reload,
a click on a grid cell opens that program's code, and a program whose docstring and reply hold HTML and script is
shown as text (nothing of it becomes markup, nothing of it runs, the browser reports no error or CSP violation)."""
import threading

import pytest

from evorank.archive import RunStore
from evorank.evolve.dashboard.server import make_server

from cdp_browser import Page, browser_or_skip
from live_writer import start_writer


def card(key: str) -> str:
    return f"(document.querySelector('#cards [data-key={key}] .v') || {{}}).textContent"


@pytest.fixture
def live_run(tmp_path):
    """A run written by another process: a better program every 0.4 s for about 40 s (the test ends it sooner)."""
    run_dir = tmp_path / "live"
    proc = start_writer(run_dir, 100, 0.4)
    yield run_dir, proc
    proc.kill()
    proc.wait()


def test_dashboard_follows_a_live_run_in_a_real_browser(live_run, tmp_path):
    chromium = browser_or_skip()
    run_dir, writer = live_run
    other = tmp_path / "other"
    start_writer(other, 2, 0.01).wait(timeout=30)  # a second, finished run to show side by side
    # read on every poll (the share of time reads may take is the unit tests' concern): on a loaded machine the default
    # share would let the run end before the page is seen following it
    server = make_server([run_dir, other], poll_s=0.3, min_interval=0.2, duty=1.0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    page = Page(chromium, tmp_path / "profile")
    try:
        page.call("Page.navigate", url=server.url)
        first = page.wait_for(f"{card('proposals')} && {card('best')} !== '-' && [{card('proposals')}, {card('best')}]",
                              what="the first overview")
        page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads
        later = page.wait_for(f"(() => {{ const p = {card('proposals')}, b = {card('best')}; "
                              f"return p !== {first[0]!r} && b !== {first[1]!r} && [p, b]; }})()",
                              timeout=20, what="the proposal count and the best fitness to change")
        assert int(later[0].split("/")[0]) > int(first[0].split("/")[0])
        assert float(later[1]) > float(first[1])
        assert page.evaluate("window.__sameDocument") == "yes", "the page reloaded"
        assert writer.poll() is None, "the run finished before the page was seen following it"

        with RunStore.open(run_dir, readonly=True) as store:
            programs = {p.id: p for p in store.programs()}
        hostile = next(p for p in programs.values() if p.features.get("hostile"))

        # click an island-0 cell of an evolved program: its code appears
        seed0 = min(p.id for p in programs.values() if p.operator == "seed")
        evolved = f".grid[data-island='0'] td.cell[data-id]:not([data-id='{seed0}'])"
        page.wait_for(f"!!document.querySelector({evolved!r})", what="an evolved program's cell")
        cell_id = int(page.evaluate(f"document.querySelector({evolved!r}).getAttribute('data-id')"))
        page.click(f".grid[data-island='0'] td.cell[data-id='{cell_id}'] button")
        page.wait_for(f"document.querySelector('#program-title').textContent.includes('#{cell_id} ')",
                      what=f"program #{cell_id} to open")
        assert page.evaluate("document.querySelector('#program-code').textContent") == programs[cell_id].code
        assert page.evaluate("document.querySelector('#program-lineage button.current').textContent") \
            .startswith(f"#{cell_id} ")
        # its lineage back to the seed as a tree, its diff against its parent; a click on the seed opens the seed
        chain = page.evaluate("[...document.querySelectorAll('#program-lineage button[data-role=step]')]"
                              ".map(b => +b.dataset.id)")
        assert chain[-1] == cell_id and programs[chain[0]].operator == "seed" and len(chain) >= 2
        assert chain[-2] == programs[cell_id].parent_ids[0]
        assert page.evaluate("document.querySelectorAll('#program-diff span.add').length") >= 1
        assert "K1 = " in page.evaluate("document.querySelector('#program-diff').textContent")
        page.click(f"#program-lineage button[data-id='{chain[0]}']")
        page.wait_for(f"document.querySelector('#program-title').textContent.includes('#{chain[0]} ')",
                      what="the seed to open from the lineage tree")
        assert page.evaluate("document.querySelector('#program-diff').textContent") == "(no parent)"

        # the top programs table: a click on its first row opens the best program
        top_id = int(page.wait_for("document.querySelector('#top-table tbody tr[data-id]') && "
                                   "document.querySelector('#top-table tbody tr[data-id]').dataset.id"))
        page.click(f"#top-table tbody tr[data-id='{top_id}'] td")
        page.wait_for(f"document.querySelector('#program-title').textContent.includes('#{top_id} ')",
                      what="the top program to open")

        # two runs side by side: one column each, both best-so-far curves in one plot
        page.wait_for("!document.querySelector('#compare').hidden && "
                      "document.querySelectorAll('#compare-table thead th').length === 3")
        assert page.evaluate("[...document.querySelectorAll('#compare-table thead th')].slice(1)"
                             ".map(th => th.textContent)") == ["live", "other"]
        assert page.evaluate("document.querySelectorAll('#compare-plot path').length") == 2

        # the hostile program (island 1, alone in its cell): its text is shown as text
        page.click(f".grid[data-island='1'] td.cell[data-id='{hostile.id}'] button")
        page.wait_for(f"document.querySelector('#program-title').textContent.includes('#{hostile.id} ')",
                      what="the hostile program to open")
        code = page.evaluate("document.querySelector('#program-code').textContent")
        assert code == hostile.code and "<script>window.__pwned = 1</script>" in code
        assert "<img src=x onerror=" in page.evaluate("document.querySelector('#program-explanation').textContent")
        assert page.evaluate("document.querySelector('#program-code').children.length") == 0
        assert page.evaluate("document.querySelectorAll('script').length") == 1  # the page's own dashboard.js
        assert page.evaluate("document.querySelectorAll('img, b.hostile, main style').length") == 0
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("getComputedStyle(document.body).display") != "none"
        assert page.evaluate("window.__sameDocument") == "yes"
        assert page.problems() == []
        # and were markup ever to reach the page, the Content-Security-Policy would not let its script run
        page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p id=injected onclick=\"window.__ran = 1\">x</p>');"
                      "document.getElementById('injected').click()")
        assert page.evaluate("typeof window.__ran") == "undefined"
        assert [p for p in page.problems() if "Content Security Policy" in p], page.problems()
    finally:
        page.close()
        server.shutdown()
        server.server_close()
