"""The VCM as its own office host: MN–VCM ESP SAs nested in the MN–SG tunnel (or, embodiment 2, sent
directly between care-of address and VCM), an SG–VCM SA for the reports; the same scenario as with the
VCM built into the SG (direct, move, fall-back)."""
import pytest

from tests.integration.test_vcm_in_sg import run_direct_path_scenario


@pytest.mark.parametrize("addressing", ["public", "private"])
def test_vcm_host_direct_path_follows_moves_and_falls_back(addressing):
    run_direct_path_scenario(addressing, "host")


def test_vcm_host_with_direct_mn_vcm_sas_follows_moves_and_falls_back():
    run_direct_path_scenario("public", "host", vcm_control="direct")
