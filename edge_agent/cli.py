"""`aiorch-agent`: enroll once, then run (a loop, or `--once` for one round)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from edge_agent import __version__
from edge_agent.agent import Agent, enroll
from edge_agent.client import HubRefused, HubUnavailable
from edge_agent.config import DEFAULT_CONFIG, AgentConfig, ConfigError
from edge_agent.contract.fields import ContractError
from edge_agent.gpu.acceptance import (
    ProfileError,
    accept,
    add_threshold_flags,
    thresholds_from_args,
)
from edge_agent.identity import PinMismatch
from edge_agent.trust import NotEnrolled

TOKEN_ENV = "AIORCH_ENROLL_TOKEN"
TOKEN_WAYS = f"on stdin, in {TOKEN_ENV}, or with --token-file"


class _NoTokenOnArgv(argparse.Action):
    """`--token` is refused: every user of the host can read a command line (ps, /proc)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> NoReturn:
        parser.error(
            f"--token is not accepted (argv is visible to every user): pass it {TOKEN_WAYS}"
        )


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
        "enroll",
        parents=[common],
        allow_abbrev=False,
        help="trade an enrollment token and a CSR for a certificate",
        description=f"The token from 'aiorch enroll-token create' comes {TOKEN_WAYS}.",
    )
    p_enroll.add_argument("--hub", required=True, help="hub URL, e.g. https://10.89.0.1:8700")
    p_enroll.add_argument(
        "--token-file", type=Path, help="a file holding the enrollment token ('-': stdin)"
    )
    p_enroll.add_argument("--token", nargs=0, action=_NoTokenOnArgv, help=argparse.SUPPRESS)
    p_run = sub.add_parser(
        "run",
        parents=[common],
        allow_abbrev=False,
        help="check in, apply desired state, send telemetry",
    )
    p_run.add_argument(
        "--once",
        action="store_true",
        help="one round, then exit (non-zero if the hub was unreachable)",
    )
    p_gpu = sub.add_parser(
        "gpu-acceptance",
        parents=[common],
        allow_abbrev=False,
        help="check this machine's GPUs; print the acceptance record (JSON)",
        description="Exit 0: accepted; 1: not accepted (the record says why); 2: bad input.",
    )
    p_gpu.add_argument("--backend", help="nvml or simulated:<profile> (default: the config's)")
    add_threshold_flags(p_gpu)
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
            result = enroll(config, args.hub, enrollment_token(args.token_file))
            print(json.dumps(result, sort_keys=True))
            return 0
        if args.command == "gpu-acceptance":
            record = accept(args.backend or config.gpu_backend, thresholds_from_args(args))
            print(json.dumps(record, indent=2))
            return 0 if record["accepted"] else 1
        agent = Agent(config)
        try:
            if args.once:
                agent.round()
            else:
                agent.run_forever()
        finally:
            agent.close()
    except (
        ConfigError,
        ContractError,
        PinMismatch,
        NotEnrolled,
        HubRefused,
        HubUnavailable,
        OSError,
        ProfileError,
    ) as exc:
        print(f"aiorch-agent: error: {exc}", file=sys.stderr)
        return 2 if args.command == "gpu-acceptance" else 1  # 1 there means "not accepted"
    except KeyboardInterrupt:
        return 130
    return 0


def enrollment_token(token_file: Path | None) -> str:
    """The token from --token-file, else AIORCH_ENROLL_TOKEN, else stdin (asked for, unechoed,
    on a terminal): anywhere but argv."""
    if token_file is not None and str(token_file) != "-":
        try:
            text = token_file.read_text()
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc}") from None
    elif token_file is None and os.environ.get(TOKEN_ENV):
        text = os.environ[TOKEN_ENV]
    elif sys.stdin is None:
        text = ""
    elif sys.stdin.isatty():
        import getpass  # only where a person types the token

        text = getpass.getpass("enrollment token: ")
    else:
        text = sys.stdin.read()
    token = text.strip()
    if not token:
        raise ConfigError(f"no enrollment token: pass it {TOKEN_WAYS}")
    return token


def run() -> None:
    sys.exit(main())
