"""``evorank dashboard``: a local web page that follows runs live, while they run and after.

- ``views``   what the page shows of a run, as JSON-ready dicts: progress and ETA, outcomes, the best, the
              MAP-Elites grids, the top programs, plot points, and one program in full (code, diff, metrics,
              explanation, lineage tree)
- ``server``  the HTTP server (the standard library's ``ThreadingHTTPServer``, bound to 127.0.0.1), one cached
              read-only ``RunWatcher`` per run, the security headers; ``evorank dashboard``
- ``static/`` the page itself: ``index.html``, ``dashboard.js``, ``dashboard.css`` (plain files shipped as
              package data; no build step, nothing fetched from elsewhere)

Public: ``make_server``, ``RunWatcher``.

May import: evorank.archive, evorank.evaluators, evorank.threadsafe_ast, evorank.evolve.config,
evorank.evolve.inspection
"""
