"""``mesh``: the full-mesh baseline. Every two mobile nodes hold an ESP SA pair from the start, keys
distributed before the run (``SvpnLab(mesh=True)``): direct between external MNs from the first packet,
no VCM and no signalling to set a pair up, at the price of keys for every pair whether it talks or not:
2 (N - 1) SAs per MN and N (N - 1) in all.

A move needs the SG after all: the peers' SAs end at the moving node's care-of address, which only its
BU to the SG reveals. The SG sends every other external MN a care-of notice (as for the VCM's care-of
pairs, ``nodeapps/roles/security_gateway.py``) and they move their SAs' outer end; a peer inside the office
is reached through the SG until it is outside again."""
from experiments.strategies import KEY_MATERIAL_PER_SA, Strategy, StrategyRun, register


def mesh_costs(mobile_nodes: int) -> dict:
    per_mn = 2 * max(0, mobile_nodes - 1)
    return {"mn_mn_sas_per_mn": per_mn, "key_bytes_per_mn": per_mn * KEY_MATERIAL_PER_SA,
            "key_bytes_total": mobile_nodes * per_mn * KEY_MATERIAL_PER_SA // 2}


@register
class FullMesh(Strategy):
    name = "mesh"
    description = ("baseline: an ESP SA pair between every two MNs from the start (no VCM; the SG's care-of "
                   "notices move them)")
    order = 40
    mn_mn_path = "direct"

    def lab_options(self, run: StrategyRun) -> dict:
        return {"mesh": True}

    def lab_summary(self, run: StrategyRun) -> str:
        return "mesh of pre-distributed SA pairs"

    def costs(self, mobile_nodes: int, peers_per_mn: int = 1) -> dict:
        return mesh_costs(mobile_nodes)   # every pair, whoever talks

    def report(self, lab, run: StrategyRun) -> list[dict]:
        """What the mesh held (from the configurations the nodes started with) and what following the
        moves cost (the SG's notices, the SAs the MNs moved, from their final counters)."""
        sections = [c["mobility"]["mesh"] for c in lab.node_configs.values()
                    if c.get("mobility", {}).get("mesh")]
        n = len(sections)
        sas = [2 * len(s["peers"]) for s in sections]
        rows = [{"metric": "mesh_mobile_nodes", "detail": "", "value": n},
                {"metric": "mn_mn_sas", "detail": "per-mn", "value": max(sas, default=0)},
                {"metric": "mn_mn_sas", "detail": "total", "value": sum(sas)},
                {"metric": "key_material_bytes", "detail": "per-mn",
                 "value": max(sas, default=0) * KEY_MATERIAL_PER_SA},
                {"metric": "key_material_bytes", "detail": "total", "value": sum(sas) // 2 * KEY_MATERIAL_PER_SA},
                {"metric": "setup_s", "detail": "mn-mn", "value": 0.0}]
        final = lab.final_counters
        rows.append({"metric": "care_of_notices", "detail": "sg",
                     "value": final.get("sg", {}).get("care_of_notices", 0)})
        rows.append({"metric": "direct_sas_moved", "detail": "mns",
                     "value": sum(c.get("direct_sas_moved", 0) for node, c in final.items()
                                  if node.startswith("mn"))})
        return rows
