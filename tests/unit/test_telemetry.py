"""chimeway.telemetry when nothing traces: without the extra, or with the API and no SDK
provider, every call is a no-op and nothing is stored or exported. Each case runs in a
fresh interpreter: the process running the suite may have set a provider."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from chimeway import telemetry

CHECK = """
from chimeway import telemetry
assert telemetry.INSTALLED is {installed}
assert not telemetry.tracing() and not telemetry.metering()
parent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
with telemetry.span("chimeway.send", delivery_id="d", parent=parent) as span:
    assert span is telemetry.NO_SPAN and not span.recording
    span.set(outcome="succeeded")
    assert telemetry.traceparent() is None
telemetry.add("chimeway.sends", channel="email")
telemetry.observe("chimeway.send.duration", 0.1, channel="email")
print("ok")
"""


@pytest.mark.parametrize("installed", [True, False])
def test_without_a_provider_or_the_extra_nothing_is_traced(installed: bool) -> None:
    hide = "" if installed else "import sys; sys.modules['opentelemetry'] = None\n"
    code = hide + textwrap.dedent(CHECK).format(installed=installed)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_trace_id_reads_a_traceparent() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert telemetry.trace_id(f"00-{trace}-00f067aa0ba902b7-01") == trace
    assert telemetry.trace_id(None) is None
    assert telemetry.trace_id("garbage") is None


def test_every_instrument_is_described() -> None:
    for name, (kind, unit, description) in telemetry.INSTRUMENTS.items():
        assert name.startswith("chimeway.")
        assert kind in ("counter", "histogram") and unit and description
