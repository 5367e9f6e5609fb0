"""metrics.get as Prometheus reads it: valid for promtool, exact, counters that never fall.

Issue 10: `{value:g}` printed rss 1564672 as 1.56467e+06; CPU was a percent
since the last ask (a second scraper reset the first one's window); and
`sessiond_agent_restarts_total{agent="w"}` fell from 1 to 0 when the next
session had an agent w too. The daemon and its agents are real here.
"""

from __future__ import annotations

import itertools
import re
import shutil
import sqlite3
import subprocess

import pytest
from test_agents import SLEEPER, agent, agents_of
from test_errors import token_of

from harness import wait_for
from sessiond.daemon.store import DB_NAME

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: Debian's 'prometheus' package has it "
    "('./dev test' installs it as root; else: sudo apt-get install prometheus)",
)
BUSY = "import time\nwhile True:\n    sum(range(200_000)); time.sleep(0.01)"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Series = tuple[str, frozenset[tuple[str, str]]]


def samples(text: str) -> dict[Series, str]:
    """Every sample of an exposition: (name, labels) -> the value as written."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        found[(match["name"], labels)] = match["value"]
    return found


def types(text: str) -> dict[str, str]:
    return dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))


def one(found: dict[Series, str], family: str, **labels: str) -> str:
    """The value of the one series of `family` whose labels include `labels`."""
    hits = [v for (n, ls), v in found.items() if n == family and set(labels.items()) <= ls]
    assert len(hits) == 1, f"{family}{labels}: {len(hits)} series in {sorted(found)}"
    return hits[0]


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)  # fmt: skip


def stored_restarts(daemon, session_id: str, name: str) -> int | None:
    with sqlite3.connect(daemon.state_dir / DB_NAME) as db:
        row = db.execute("SELECT restarts FROM agents WHERE session_id = ? AND name = ?",
                         (session_id, name)).fetchone()  # fmt: skip
    return row[0] if row else None


def crew_config() -> str:
    fast = {"min_uptime": "0.2s", "backoff_initial": "0.1s"}
    return (
        agent("w", SLEEPER, **fast)
        + agent("busy", BUSY, **fast)
        + agent("flaky", "import sys; sys.exit(3)", max_restarts=1, min_uptime="5s",
                backoff_initial="0.1s")
        + '[templates.t]\nagents = ["w", "busy", "flaky"]\nerror_threshold = 1000\n'
    )  # fmt: skip


def start_crew(daemon, name: str = "nightly") -> dict:
    session = daemon.call("session.start", name=name, template="t")
    wait_for(lambda: agents_of(daemon)["flaky"]["state"] == "failed", what="flaky failed")
    wait_for(lambda: agents_of(daemon)["w"]["state"] == "running", what="w running")
    return session


@needs_promtool
def test_the_exposition_of_a_daemon_with_agents_passes_promtool(make_daemon):
    daemon = make_daemon(crew_config())
    start_crew(daemon)
    token = token_of(daemon, "w")
    daemon.call("agent.report", token=token, metrics={"tokens": 1_564_672, "cost": 0.025})
    wait_for(lambda: (agents_of(daemon)["busy"]["cpu_seconds"] or 0) > 0.05, what="busy CPU")
    text = daemon.call("metrics.get")["prometheus"]
    checked = promtool(text)
    assert checked.returncode == 0 and not checked.stdout + checked.stderr, (
        f"promtool check metrics: {checked.stdout}{checked.stderr}\n{text}"
    )
    kinds = types(text)
    assert kinds["sessiond_agent_cpu_seconds_total"] == "counter"
    assert kinds["sessiond_agent_restarts_total"] == "counter"
    assert kinds["sessiond_build_info"] == "gauge"
    assert "sessiond_agent_cpu_percent" not in kinds  # "since the last ask" is no figure to scrape
    found = samples(text)
    assert one(found, "sessiond_build_info", version=daemon.call("daemon.ping")["version"]) == "1"
    session = daemon.call("session.status")["session"]
    for (name, labels), _ in found.items():
        if name.startswith(("sessiond_agent_", "sessiond_reported_", "sessiond_session_")):
            assert {("session", "nightly"), ("session_id", session["id"])} <= labels, name
    # sessionc prints the same text, line for line.
    shown = daemon.sessionc("metrics", "--prometheus")
    assert shown.returncode == 0, shown.stderr
    assert samples(shown.stdout).keys() == found.keys()
    assert promtool(shown.stdout).returncode == 0


def test_every_value_is_written_exactly(make_daemon):
    daemon = make_daemon(crew_config())
    start_crew(daemon)
    token = token_of(daemon, "w")
    reported = {"tokens": 1_564_672, "huge": 2**60 + 1, "cost": 0.025, "tiny": 1.5e-7}
    daemon.call("agent.report", token=token, metrics=reported)
    found = daemon.call("metrics.get")
    text = samples(found["prometheus"])
    assert found["counters"] == reported
    for key, value in reported.items():
        assert one(text, "sessiond_reported_total", name=key) == repr(value)
    assert one(text, "sessiond_reported_total", name="tokens") == "1564672"  # not 1.56467e+06
    for figures in found["agents"]:
        name = figures["name"]
        if figures["rss"] is not None:
            assert one(text, "sessiond_agent_rss_bytes", agent=name) == str(figures["rss"])
        assert one(text, "sessiond_agent_restarts_total", agent=name) == str(figures["restarts"])
        cpu = one(text, "sessiond_agent_cpu_seconds_total", agent=name)
        assert float(cpu) == (figures["cpu_seconds"] or 0)


def test_restarts_total_never_falls_across_restarts_crash_loops_and_sessions(make_daemon):
    daemon = make_daemon(crew_config())
    scrapes: list[dict[Series, str]] = []

    def scrape() -> dict[Series, str]:
        found = samples(daemon.call("metrics.get")["prometheus"])
        scrapes.append({k: v for k, v in found.items() if k[0].endswith("_total")})
        return found

    def restarts(found: dict[Series, str], name: str) -> int:
        return int(one(found, "sessiond_agent_restarts_total", agent=name))

    start_crew(daemon)
    assert restarts(scrape(), "flaky") == 1  # one restart, then failed: a crash loop
    daemon.call("agent.kill", name="w", signal="TERM")
    wait_for(lambda: agents_of(daemon)["w"]["restarts"] == 1, what="w restarted")
    assert restarts(scrape(), "w") == 1
    daemon.call("agent.start", name="flaky")  # a fresh start: the crash-loop count begins again
    wait_for(lambda: agents_of(daemon)["flaky"]["restarts"] == 2, what="flaky's next loop")
    wait_for(lambda: agents_of(daemon)["flaky"]["state"] == "failed", what="flaky failed again")
    assert restarts(scrape(), "flaky") == 2
    daemon.call("session.stop")
    start_crew(daemon)  # the same name, the same agents: new series, not a fall to 0
    assert restarts(scrape(), "w") == 0
    daemon.call("agent.kill", name="w", signal="TERM")
    wait_for(lambda: agents_of(daemon)["w"]["restarts"] == 1, what="w restarted")
    scrape()
    session_id = daemon.call("session.status")["session"]["id"]
    wait_for(lambda: stored_restarts(daemon, session_id, "w") == 1, what="w's row written")
    daemon.kill9()
    daemon.restart()  # the agents are adopted; their restarts come back from the store
    wait_for(lambda: agents_of(daemon)["w"]["state"] == "running", what="w adopted")
    assert restarts(scrape(), "w") == 1
    for before, after in itertools.pairwise(scrapes):
        for series, value in after.items():
            if series in before and series[0] != "sessiond_agent_cpu_seconds_total":
                fell = f"{series} fell: {before[series]} -> {value}"
                assert float(value) >= float(before[series]), fell


def test_cpu_seconds_total_counts_every_run_of_an_agent(make_daemon):
    daemon = make_daemon(crew_config())
    start_crew(daemon)

    def spent() -> float:
        found = samples(daemon.call("metrics.get")["prometheus"])
        return float(one(found, "sessiond_agent_cpu_seconds_total", agent="busy"))

    wait_for(lambda: spent() > 0.2, what="busy to use 0.2 s of CPU")
    first = agents_of(daemon)["busy"]
    before = spent()
    assert first["cpu_seconds"] == pytest.approx(before, abs=0.05)
    assert first["cpu_percent"] is not None  # the wire keeps its percent
    daemon.call("agent.kill", name="busy", signal="KILL")
    wait_for(lambda: agents_of(daemon)["busy"]["pid"] not in (None, first["pid"]),
             what="busy restarted")  # fmt: skip
    assert spent() >= before  # the new run starts from what the last one used
    wait_for(lambda: spent() > before + 0.1, what="the new run's CPU added")
    figures = {a["name"]: a for a in daemon.call("metrics.get")["agents"]}
    assert figures["busy"]["cpu_seconds"] > before  # the same sum in the JSON report
