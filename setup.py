"""svpnlab: a Mininet lab for a secure VPN whose mobile nodes roam with Mobile IPv6."""
from setuptools import find_packages, setup

setup(
    name="svpnlab",
    version="0.1.0",
    description="Emulation lab for an IPsec VPN with Mobile IPv6 nodes and a VPN Connectivity Manager",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["nodeapps", "nodeapps.*", "topologies", "topologies.*", "experiments", "experiments.*"]),
    package_data={"nodeapps.linkemu": ["traces/*.trace"]},
    install_requires=[
        "cryptography>=41",
        "numpy>=1.22",  # vectorised TCP checksums at the TUN boundary (also needed by pandas)
        "scapy>=2.5",
        "matplotlib>=3.6",
        "pandas>=1.5",
        "scipy>=1.9",  # Student-t quantiles for the experiments' confidence intervals
        "tabulate>=0.9",  # status and report tables
        "tomli>=1.1; python_version < '3.11'",  # reading scenario and attack files (tomllib from 3.11)
        "tomli-w>=1.0",  # writing scenario files
        "pyroute2>=0.7",  # rtnetlink messages: the MN's link/address monitor and in-process route changes
        # Comes from Debian's `mininet` package; the venv sees it through --system-site-packages.
        "mininet>=2.3",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6"],
    },
    entry_points={
        "console_scripts": [
            "svpnlab-node=nodeapps.node:main",
            "svpnlab-status=nodeapps.cli:main",
            "svpnlab-clean-net=topologies.runs:main",
            "svpnlab-shell=experiments.shell:main",
        ],
    },
)
