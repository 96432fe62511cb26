"""The lab's own nft table on this machine: isolation of the lab network, and cuts.

One table per lab (``inet aiorch_lab_<lab>``), removed whole by ``down``:

* forward: nothing is routed into or out of the lab bridge, so hosts reach this
  machine's gateway address and nothing beyond it, even a host that adds routes;
* input: from the bridge only the gateway address is reachable (and no IPv6), besides the
  broadcast DHCP requests of the lab's network-booted machines (aiorch/lab/metal.py);
* cut: packets a cut host *originates* towards this machine are dropped (new and
  already-open connections: TCP to the hub, DNS, ping). Replies on connections
  this machine opened still pass, so SSH from here keeps working during a cut.
* hide: the reverse, for a host behind a bastion: connections this machine opens to
  a hidden host are dropped (SSH from here times out); other lab hosts still reach
  it, and its own connections to the hub still work.

The cut lives here rather than inside the host so that it survives a reboot of
the host (like a real broken link) and root on the host cannot undo it.
"""

from __future__ import annotations

import json
import subprocess

from aiorch.errors import UserError


def _nft(
    *args: str, script: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = ["nft", *args] if script is None else ["nft", "-f", "-"]
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise UserError(f"nft failed: {lines[-1]}")
    return proc


def install(table: str, bridge: str, gateway: str) -> None:
    """(Re)create the lab's table in one transaction; any earlier cuts are healed."""
    _nft(
        script=f"""
table inet {table}
delete table inet {table}
table inet {table} {{
    set cut {{ type ipv4_addr; }}
    set hidden {{ type ipv4_addr; }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{bridge}" meta nfproto ipv6 drop
        iifname "{bridge}" ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept
        iifname "{bridge}" ip daddr != {gateway} drop
        iifname "{bridge}" ip saddr @cut ct direction original drop
    }}
    chain output {{
        type filter hook output priority filter; policy accept;
        oifname "{bridge}" ip daddr @hidden ct direction original drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{bridge}" oifname != "{bridge}" drop
        oifname "{bridge}" iifname != "{bridge}" drop
    }}
}}
"""
    )


def exists(table: str) -> bool:
    return _nft("list", "table", "inet", table, check=False).returncode == 0


def remove(table: str) -> bool:
    """Delete the lab's table; False when there was none."""
    if not exists(table):
        return False
    _nft("delete", "table", "inet", table)
    return True


def cut_addresses(table: str) -> set[str]:
    """Addresses currently cut off (empty when the table does not exist)."""
    return _members(table, "cut")


def cut(table: str, address: str) -> None:
    _nft("add", "element", "inet", table, "cut", f"{{ {address} }}")


def heal(table: str, address: str) -> None:
    _remove_member(table, "cut", address)


def hide(table: str, address: str) -> None:
    _nft("add", "element", "inet", table, "hidden", f"{{ {address} }}")


def unhide(table: str, address: str) -> None:
    _remove_member(table, "hidden", address)


def _members(table: str, name: str) -> set[str]:
    proc = _nft("-j", "list", "set", "inet", table, name, check=False)
    if proc.returncode != 0:
        return set()
    for item in json.loads(proc.stdout)["nftables"]:
        if "set" in item:
            return set(item["set"].get("elem", []))
    return set()


def _remove_member(table: str, name: str, address: str) -> None:
    if address in _members(table, name):
        _nft("delete", "element", "inet", table, name, f"{{ {address} }}")
