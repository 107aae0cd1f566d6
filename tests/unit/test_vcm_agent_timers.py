"""The mobile agent's timers kept as they change (nodeapps/vcm/deadlines.py) against the reference: a scan
of every generation on every link, asserted after every step of labs that rekey, lose messages, fall back,
restart and let keys expire."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.vcm.mobile_agent import MobileAgent
from nodeapps.vcm.simulation import MN1, MN2, Lab


def scanned_timer(agent: MobileAgent):
    """The earliest deadline by a scan over every generation the agent holds (the model)."""
    best = agent.channel.get_timer()
    for link in agent._links.values():
        for gen in list(link.generations.values()) + link.retiring:
            for up, when in ((gen.outbound_up, gen.expires), (gen.inbound_up, gen.retire_at)):
                if up and (best is None or when < best):
                    best = when
    return best


def check_timers(lab: Lab) -> None:
    for node, agent in lab.agents.items():
        assert agent.get_timer() == scanned_timer(agent), f"MN{node - 10} at t={lab.now}"
        assert len(agent._timers._heap) <= 2 * len(agent._timers) + 65


def prepare(lab):
    lab.go_outside(MN2)
    lab.send_data(MN1, MN2)
    lab.send_data(MN2, MN1)
    lab.run(1.0)
    lab.go_outside(MN1)
    lab.send_data(MN1, MN2)


def test_the_check_fails_on_an_agent_that_forgets_a_timer():
    class Forgetful(MobileAgent):
        def get_timer(self):
            return self.channel.get_timer()

    lab = Lab(agent_factory=Forgetful, lifetime=100)
    lab.after_step.append(check_timers)
    prepare(lab)
    try:
        lab.run(10.0)
    except AssertionError:
        return
    raise AssertionError("a missing generation timer went unnoticed")


def test_expiry_with_the_vcm_cut_off_and_rekeys_match_the_scan():
    lab = Lab(lifetime=100, inbound_grace=5.0)
    lab.after_step.append(check_timers)
    prepare(lab)
    lab.run(400.0)                            # rekeys: generations come and retire
    lab.fault = lambda msg, s, d: []          # no rekey completes: outbound expires, inbound retires
    lab.run(300.0)
    assert all(scanned_timer(a) is None or scanned_timer(a) > lab.now for a in lab.agents.values())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2 ** 32), loss=st.floats(0.0, 0.3), dup=st.floats(0.0, 0.3))
def test_random_faults_rekeys_fall_back_and_restart_match_the_scan(seed, loss, dup):
    rng = random.Random(seed)
    lab = Lab(lifetime=120, inbound_grace=rng.choice([5.0, 45.0]))
    lab.fault = lambda msg, s, d: ([] if rng.random() < loss else
                                   [rng.uniform(0.001, 0.1) for _ in range(2 if rng.random() < dup else 1)])
    lab.after_step.append(check_timers)
    prepare(lab)
    lab.run(200.0)
    lab.go_inside(MN2)
    lab.run(60.0)
    lab.go_outside(MN2)
    lab.send_data(MN2, MN1)
    lab.run(50.0)
    lab.restart_mn(MN1)
    lab.send_data(MN1, MN2)
    lab.run(200.0)
