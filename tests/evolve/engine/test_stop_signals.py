"""Ctrl-C and SIGTERM during a run: the first stops it after the step under way, a second Ctrl-C stops it now, and
once the run has stopped (closing its workers, printing its summary) a further Ctrl-C is held off."""
import signal
import threading
from types import SimpleNamespace

import pytest

from evorank.evolve.engine.loop import install_signal_handlers


def fake_engine():
    engine = SimpleNamespace(_stop=threading.Event(), reasons=[])

    def request_stop(reason):
        engine.reasons.append(reason)
        engine._stop.set()

    engine.request_stop = request_stop
    return engine


def test_first_stops_second_interrupts_then_held_and_restored():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    engine = fake_engine()
    signals = install_signal_handlers(engine)
    try:
        signals.handle(signal.SIGTERM, None)
        assert engine.reasons == ["terminated"]
        with pytest.raises(KeyboardInterrupt):
            signals.handle(signal.SIGINT, None)
        signals.hold()
        signals.handle(signal.SIGINT, None)  # held off: the summary is printed whole
    finally:
        signals()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
