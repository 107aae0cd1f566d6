"""``insecure-ro``: Mobile IPv6 route optimisation between the MNs (return routability, binding updates,
HAO and type 2 routing header) with no SA between them: direct, and readable on public links."""
from experiments.strategies import Strategy, StrategyRun, register


def probed_mn_pairs(scenario) -> list[tuple[str, str]]:
    """Pairs of mobile nodes the scenario probes between (each is route-optimised), each pair once."""
    pairs = []
    for probe in scenario.probes:
        a, b = probe.between
        if a.startswith("mn") and b.startswith("mn") and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


@register
class InsecureRouteOptimisation(Strategy):
    name = "insecure-ro"
    description = ("Mobile IPv6 route optimisation between the MNs with no SA between them: direct, and "
                   "readable on public links")
    order = 30
    default = True
    mn_mn_path = "direct"

    def lab_options(self, run: StrategyRun) -> dict:
        return {"route_optimisation": list(run.pairs) or probed_mn_pairs(run.scenario)}
