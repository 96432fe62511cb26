"""`aiorch-agent`: enroll once, then run (a loop, or `--once` for one round)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edge_agent import __version__
from edge_agent.agent import Agent, NotEnrolled, enroll
from edge_agent.client import HubRefused, HubUnavailable
from edge_agent.config import DEFAULT_CONFIG, AgentConfig, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiorch-agent", description="aiorch edge agent: pull-based, survives disconnection."
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"config file (default {DEFAULT_CONFIG})",
    )
    common.add_argument("--state-dir", type=Path, help="overrides state_dir from the config")
    common.add_argument("--log-level", default="info")
    p_enroll = sub.add_parser(
        "enroll", parents=[common], help="trade an enrollment token for a credential"
    )
    p_enroll.add_argument("--hub", required=True, help="hub URL, e.g. http://10.89.0.1:8700")
    p_enroll.add_argument(
        "--token", required=True, help="enrollment token from 'aiorch enroll-token create'"
    )
    p_run = sub.add_parser(
        "run", parents=[common], help="check in, apply desired state, send telemetry"
    )
    p_run.add_argument(
        "--once",
        action="store_true",
        help="one round, then exit (non-zero if the hub was unreachable)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        config = AgentConfig.load(args.config)
        if args.state_dir:
            config.state_dir = args.state_dir
        if args.command == "enroll":
            result = enroll(config, args.hub, args.token)
            print(json.dumps(result, sort_keys=True))
            return 0
        agent = Agent(config)
        try:
            if args.once:
                agent.round()
            else:
                agent.run_forever()
        finally:
            agent.close()
    except (ConfigError, NotEnrolled, HubRefused, HubUnavailable, OSError) as exc:
        print(f"aiorch-agent: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run() -> None:
    sys.exit(main())
