#!/usr/bin/python3
"""Compare declared links with the kernel's live state, read through netlink (pyroute2).

Prints {"problems": [...]} and exits 1 when anything differs, so Ansible can
retry until networkd has finished applying and then fail with the reasons.
"""

import ipaddress
import json
import sys

from pyroute2 import IPRoute


def check(ipr, want):
    name = want["name"]
    found = ipr.link_lookup(ifname=name)
    if not found:
        return [f"{name}: no such link"]
    index = found[0]
    link = ipr.get_links(index)[0]
    problems = []
    mtu = link.get_attr("IFLA_MTU")
    if want.get("mtu") is not None and mtu != int(want["mtu"]):
        problems.append(f"{name}: mtu {mtu}, want {want['mtu']}")
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    if want.get("kind", "ethernet") != "ethernet" and kind != want["kind"]:
        problems.append(f"{name}: kind {kind}, want {want['kind']}")
    if want.get("kind") == "vlan":
        vid = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
        if vid != int(want["vlan"]["id"]):
            problems.append(f"{name}: vlan id {vid}, want {want['vlan']['id']}")
    live = {
        ipaddress.ip_interface(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        for a in ipr.get_addr(index=index)
    }
    for address in want.get("addresses", []):
        if ipaddress.ip_interface(address) not in live:
            problems.append(f"{name}: address {address} missing (live: {sorted(map(str, live))})")
    for member in want.get("bond", {}).get("members", []):
        ids = ipr.link_lookup(ifname=member)
        master = ipr.get_links(ids[0])[0].get_attr("IFLA_MASTER") if ids else None
        if master != index:
            problems.append(f"{name}: {member} is not enslaved to it")
    return problems


def main():
    wanted = json.loads(sys.argv[1])
    with IPRoute() as ipr:
        problems = [p for want in wanted for p in check(ipr, want)]
    print(json.dumps({"problems": problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
