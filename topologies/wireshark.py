"""A run's ESP keys for Wireshark and tshark: the ESP SA table (``esp_sa``) and a profile folder.

The lab's keys are lab keys, made fresh for each run and worth nothing outside it, so handing them to the
analyser is right here (it would not be in a real VPN). Every SA a run used is listed: the configured
ones (MN–SG tunnels, the RFC 3776 pairs for mobility messages, MN–VCM and SG–VCM pairs) and each
generation the VCM handed out, which the mobile nodes write to their key logs as they install it.

Addresses are wildcards: the tunnels' outer ends follow the care-of addresses and the VCM's direct pair
travels care-of to care-of, while every SPI in a lab is unique, so the SPI alone picks the SA.

    WIRESHARK_CONFIG_DIR=captures/vcm/wireshark tshark -r captures/vcm/ar1-lan.pcap
    wireshark -o ... (or copy the folder to ~/.config/wireshark/profiles/svpnlab and pick that profile)
"""
from __future__ import annotations

import os
import shlex

from nodeapps.runtime.events import read_json_lines

# Wireshark's name for RFC 4106 AES-GCM with a 16-octet ICV (the key field holds key and salt together).
GCM = "AES-GCM with 16 octet ICV [RFC4106]"
VCM_PORT = 7420
# Name, filter, foreground, background (16-bit RGB), the colorfilters file's format; first match wins.
COLOURS = (
    ("svpnlab VCM control (202-212)", f"udp.port == {VCM_PORT}", (0, 0, 0), (0xFFFF, 0xD7D7, 0x5E5E)),
    # "mipv6" is Wireshark's protocol name for the Mobility Header (its fields are mip6.*).
    ("svpnlab Mobility Header", "mipv6", (0, 0, 0), (0xC4C4, 0xE3E3, 0xFFFF)),
    ("svpnlab ESP, decrypted", "esp && (icmpv6 || udp || tcp)", (0, 0, 0), (0xD0D0, 0xF0F0, 0xC0C0)),
    ("svpnlab ESP", "esp", (0, 0, 0), (0xE6E6, 0xE6E6, 0xE6E6)),
)


def _is_sa(obj) -> bool:
    return isinstance(obj, dict) and {"spi", "key", "salt", "direction"} <= set(obj)


def configured_sas(node_configs: dict) -> list[dict]:
    """Every SA configuration in the nodes' configurations, wherever a role keeps it, each SPI once."""
    found: list[dict] = []

    def walk(obj) -> None:
        if _is_sa(obj):
            found.append(obj)
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    walk(node_configs)
    return unique(found)


def unique(sas) -> list[dict]:
    """One entry per (SPI, key): both ends of an SA hold it, once as "out" and once as "in"."""
    seen, out = set(), []
    for sa in sas:
        key = (_spi(sa), str(sa["key"]).lower())
        if key not in seen:
            seen.add(key)
            out.append(sa)
    return out


def read_key_logs(folder: str) -> list[dict]:
    """SAs the node apps created while running (``<node>.keys.jsonl`` in a run directory)."""
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".keys.jsonl"):
            out += [record for record in read_json_lines(os.path.join(folder, name)) if _is_sa(record)]
    return out


def _spi(sa: dict) -> int:
    spi = sa["spi"]
    return int(spi, 0) if isinstance(spi, str) else int(spi)


def _hex(value: str) -> str:
    text = str(value).strip().lower()
    return (text[2:] if text.startswith("0x") else text).replace(":", "")


def esp_sa_record(sa: dict) -> str:
    """One record of Wireshark's ESP SA table: protocol, source, destination, SPI, encryption, key (with
    the 4-octet salt, RFC 4106 §8.1), authentication (none apart from GCM's ICV), authentication key."""
    fields = ["IPv6", "*", "*", f"0x{_spi(sa):08x}", GCM, "0x" + _hex(sa["key"]) + _hex(sa["salt"]), "NULL", ""]
    return ",".join(f'"{f}"' for f in fields)


def tshark_options(sas) -> list[str]:
    """tshark arguments that decrypt these SAs without any file."""
    args = ["-o", "esp.enable_encryption_decode:TRUE"]
    for sa in sas:
        args += ["-o", f"uat:esp_sa:{esp_sa_record(sa)}"]
    return args


def tshark_command(capture: str, sas) -> str:
    return shlex.join(["tshark", "-r", capture] + tshark_options(sas))


def write_profile(folder: str, sas) -> str:
    """A Wireshark configuration folder: the ESP SA table, decryption on, colouring rules for ESP, the
    Mobility Header and the VCM's control messages. Returns the folder."""
    sas = unique(sas)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "esp_sa"), "w", encoding="utf-8") as f:
        f.write("# svpnlab: the ESP SAs of one run (lab keys, fresh for every run)\n")
        f.writelines(esp_sa_record(sa) + "\n" for sa in sas)
    with open(os.path.join(folder, "preferences"), "w", encoding="utf-8") as f:
        f.write("# svpnlab: decrypt ESP with the SAs in esp_sa\nesp.enable_encryption_decode: TRUE\n")
    with open(os.path.join(folder, "colorfilters"), "w", encoding="utf-8") as f:
        for name, expression, fg, bg in COLOURS:
            f.write(f"@{name}@{expression}@[{fg[0]},{fg[1]},{fg[2]}][{bg[0]},{bg[1]},{bg[2]}]\n")
    return folder
