"""`python3 -m edge_agent`: the agent CLI where no console script is installed."""

from edge_agent.cli import run

run()
