"""VPN Connectivity Manager: control protocol and the three sans-IO cores.

- protocol.py: wire format (docs/vcm-protocol.md), encode/decode, VcmParseError
- channel.py: per-peer counters, replay checks, retransmission with backoff, idempotent handling of repeated requests
- sg_monitor.py: SG side; watches relayed traffic and bindings, reports MN locations and sessions (202)
- manager.py: the VCM; MN context database, key generation, KEYS/PEER_READY/FALLBACK, rekeying
- mobile_agent.py: MN side; turns key material into ordered SA/SPD changes and keeps the path status
"""
