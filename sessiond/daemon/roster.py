"""The agents of a session as status and agent.list send them, made once per change.

A status of 200 agents is 60 KB of JSON. Encoding it on every call was two thirds of
the call (issue 14); here it is made again only after an agent changed (`changes`, which
the fleet counts) or a tenth of a second passed, the unit of the uptimes it shows, and
then only the agents whose fields as sent changed are encoded again (crew.agent_json).
"""

from __future__ import annotations

from typing import Any

from sessiond.core.raw import Raw
from sessiond.core.records import Session
from sessiond.daemon.clock import Clock
from sessiond.daemon.crew import Crew, agent_json, agent_wire
from sessiond.daemon.gauges import Gauges
from sessiond.daemon.ledger import stored_wire
from sessiond.daemon.store import Store


class Roster:
    def __init__(self, crew: Crew, store: Store, gauges: Gauges, clock: Clock) -> None:
        self.crew, self.store, self.gauges, self.clock = crew, store, gauges, clock
        self.changes = 0  # agent changes so far: what encoded() keeps is of one count
        self._encoded: tuple[tuple[Any, ...], Raw] | None = None

    def wire(self, session: Session) -> list[dict[str, Any]]:
        agents = self.crew.agents(session.id)
        if not agents and not session.state.live:
            return [stored_wire(r, session.name) for r in self.store.agents(session.id)]
        now = self.clock.monotonic()
        return [agent_wire(a, self.gauges.facts(a, now), now) for a in agents]

    def encoded(self, session: Session) -> Raw | list[dict[str, Any]]:
        """wire()'s, encoded, for status and agent.list: made again after any change of
        an agent, else once a tenth of a second (its uptimes' unit), from what each agent
        kept (crew.agent_json). A status loop then costs what it sends, not 200 agents."""
        now = self.clock.monotonic()
        key = (session.id, self.changes, int(now * 10))
        if self._encoded is not None and self._encoded[0] == key:
            return self._encoded[1]
        agents = self.crew.agents(session.id)
        if not agents:
            return self.wire(session)
        facts = self.gauges.facts
        found = Raw("[" + ",".join(agent_json(a, facts(a, now), now) for a in agents) + "]")
        self._encoded = key, found
        return found
