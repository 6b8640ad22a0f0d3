"""The same seed gives the same roles, relay paths and chunk schedule (issue: determinism)."""

import random

from controllers import paths as P
from controllers import rules as R
from controllers.migrations import Migrations
from experiments.scenario import load
from experiments.trial import trial_seed
from hosts.chunk_policy import policy_from_settings
from topologies.base import describe


def plan_for(seed: int):
    sc = load("quick")
    topo = describe(sc.build_topology())
    g = P.build_graph(topo)
    agents = {h["name"]: {"vm": "vm1" if h["name"] == "h1" else None}
              for h in topo["hosts"] if not h["attacker"]}
    # what the controller's migrate op does with a seed: one generator for roles and ports,
    # a fresh one seeded alike for the paths (RelayBook.install)
    rng = random.Random(seed)
    roles = Migrations.choose_roles(agents, "h1", "stealth", 3, rng)
    ports, specs = Migrations.relay_hops("h1", roles, rng, hide=True)
    hops = [R.RelayHop(h["from"], h["to"], h["port"]) for h in specs]
    R.choose_paths(g, topo, hops, random.Random(seed))
    policy = policy_from_settings({"kind": "profile"}, seed=seed)
    schedule = [(policy.next_size(), policy.next_gap(1000)) for _ in range(50)]
    return roles, ports, [h.path for h in hops], schedule


def test_same_seed_same_everything():
    assert plan_for(1001) == plan_for(1001)


def test_other_seed_other_plan():
    a, b = plan_for(1001), plan_for(1002)
    assert a != b
    assert a[3] != b[3]  # the chunk schedule depends on the seed too


def test_trial_seeds_are_stable_and_distinct():
    sc = load("quick")
    seeds = [trial_seed(sc, t) for t in range(10)]
    assert seeds == [trial_seed(sc, t) for t in range(10)] and len(set(seeds)) == 10
