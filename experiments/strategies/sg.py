"""``sg``: today's VPN. External mobile nodes always talk through the security gateway; nothing to set up."""
from experiments.strategies import Strategy, register


@register
class ThroughTheGateway(Strategy):
    name = "sg"
    description = "today's VPN: external mobile nodes always talk through the security gateway"
    order = 10
    default = True
    mn_mn_path = "via-sg"
