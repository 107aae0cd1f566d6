"""``vcm-key``: the VCM's direct pair, with the MN–MN bindings authenticated by a static key the VCM hands
out inside the KEYS (RFC 4449) instead of return routability: each MN sends its first BU to the peer at
once, straight to the care-of address the VCM knew, so the pair goes direct about one round trip through
the home agents sooner. Same keys per pair as ``vcm``, plus the 20-byte binding key."""
from experiments.strategies import register
from experiments.strategies.vcm import ConnectivityManager

BINDING_KEY_BYTES = 20


@register
class ConnectivityManagerKeyedBindings(ConnectivityManager):
    name = "vcm-key"
    description = ("as vcm, with the MN–MN binding updates authenticated by a key the VCM hands out "
                   "(RFC 4449) instead of return routability")
    order = 25
    default = False

    def lab_options(self, run) -> dict:
        return {**super().lab_options(run), "vcm_binding": "static-key"}

    def costs(self, mobile_nodes: int, peers_per_mn: int = 1) -> dict:
        costs = super().costs(mobile_nodes, peers_per_mn)
        peers = costs["mn_mn_sas_per_mn"] // 2
        costs["key_bytes_per_mn"] += peers * BINDING_KEY_BYTES
        costs["key_bytes_total"] += mobile_nodes * peers * BINDING_KEY_BYTES // 2
        return costs
