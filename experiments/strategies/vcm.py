"""``vcm``: route optimisation handed out by the VPN connectivity manager. When the SG sees two external
MNs talk, the VCM hands them the keys of a direct ESP SA pair (docs/vcm-runtime.md); keys exist only for
pairs that talk, after a few control round trips."""
from experiments.strategies import KEY_MATERIAL_PER_SA, Strategy, StrategyRun, register


@register
class ConnectivityManager(Strategy):
    name = "vcm"
    description = "route optimisation handed out by the VPN connectivity manager (direct ESP SA pair between the MNs)"
    order = 20
    default = True
    mn_mn_path = "direct"

    def lab_options(self, run: StrategyRun) -> dict:
        return {"vcm": "host" if run.vcm_host else "in-sg"}

    def costs(self, mobile_nodes: int, peers_per_mn: int = 1) -> dict:
        peers = min(peers_per_mn, max(0, mobile_nodes - 1))
        per_mn = 2 * peers   # one SA each way per peer that talks
        return {"mn_mn_sas_per_mn": per_mn, "key_bytes_per_mn": per_mn * KEY_MATERIAL_PER_SA,
                "key_bytes_total": mobile_nodes * per_mn * KEY_MATERIAL_PER_SA // 2}
