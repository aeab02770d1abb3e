#!/usr/bin/env python3
"""Summarises `GET /cluster` answers of several nodes and checks that they agree.

Usage: cluster_view.py [--expect-leader] [--agree] [--state NODE=STATE ...] FILE_OR_URL...
Each argument is a URL (fetched) or a file holding one node's `/cluster` JSON. Prints one line per
node (its id, the leader and term it sees, the map version, node states, islands and how many
slots each island holds) and exits 1 when a check fails:
  --agree             every node sees the same leader, term, map version, islands and slot table
  --placed            every slot is on an island, and islands hold slot counts within one
  --state N=STATE     node N has STATE (active, down, joining, draining, removed) in every map given
"""
import json
import sys
import urllib.request


def load(source):
    if source.startswith("http://") or source.startswith("https://"):
        with urllib.request.urlopen(source, timeout=5) as answer:
            return json.load(answer)
    with open(source) as file:
        return json.load(file)


def summary(view):
    cluster_map = view["map"]
    counts = {}
    for island in cluster_map["slots"]:
        counts[island] = counts.get(island, 0) + 1
    states = ",".join(f'{n["id"]}:{n["state"]}' for n in cluster_map["nodes"])
    islands = " ".join(
        f'{i["id"]}={"+".join(str(m) for m in i["members"])}({counts.get(i["id"], 0)})'
        for i in cluster_map["islands"]
    )
    return (
        f'node {view["node"]}: leader {view["leader"]} term {view["term"]} '
        f'map v{cluster_map["version"]} nodes [{states}] islands [{islands}] '
        f'slots {len(cluster_map["slots"])}'
    )


def agreement(view):
    cluster_map = view["map"]
    return (
        view["leader"],
        view["term"],
        cluster_map["version"],
        json.dumps(cluster_map["islands"], sort_keys=True),
        json.dumps(cluster_map["slots"]),
        json.dumps(cluster_map["nodes"], sort_keys=True),
    )


def placed(view):
    cluster_map = view["map"]
    islands = {i["id"] for i in cluster_map["islands"]}
    if not cluster_map["slots"] or any(s not in islands for s in cluster_map["slots"]):
        return False
    counts = [cluster_map["slots"].count(i) for i in islands]
    return max(counts) - min(counts) <= 1


def main(argv):
    checks = {"agree": False, "placed": False, "states": []}
    sources = []
    args = iter(argv)
    for arg in args:
        if arg == "--agree":
            checks["agree"] = True
        elif arg == "--placed":
            checks["placed"] = True
        elif arg == "--state":
            node, state = next(args).split("=")
            checks["states"].append((int(node), state))
        else:
            sources.append(arg)
    views = []
    for source in sources:
        try:
            views.append(load(source))
        except Exception as error:  # an unreachable node is a failed check, not a crash
            print(f"{source}: unreachable ({error})")
            return 1
    ok = True
    for view in views:
        print(summary(view))
    if checks["agree"] and len({agreement(v) for v in views}) != 1:
        print("the nodes do not agree")
        ok = False
    if checks["placed"] and not all(placed(v) for v in views):
        print("some slot is unplaced or the islands are unbalanced")
        ok = False
    for node, state in checks["states"]:
        for view in views:
            seen = [n["state"] for n in view["map"]["nodes"] if n["id"] == node]
            if seen != [state]:
                print(f'node {view["node"]} sees node {node} as {seen or "absent"}, not {state}')
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
