#!/usr/bin/python3
"""Tests of run_bench.goal_lines(): how a run's rounds become the goal verdicts.

The machine these benchmarks run on jumps between a fast and a slow state, so the verdicts are
taken on ratios paired within each round, with the ratio of the medians shown beside them.
These cases build rounds by hand (no server runs) and check the verdicts the issues' goals get.
"""
import os
import sys
import unittest

sys.dont_write_bytecode = True  # leave no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench as rb  # noqa: E402


def server(key, family):
    return rb.Server(key, key, "/nonexistent/" + key, [], "echo", family)


def rounds(rates, cpus):
    out = []
    for rate, cpu in zip(rates, cpus):
        s = rb.Sample()
        s["msgs_per_s"] = float(rate)
        s["cpu_ns_per_msg"] = float(cpu)
        out.append(s)
    return out


def counting(syscalls):
    s = rb.Sample()
    s["syscalls_per_msg"] = syscalls
    return s


def echo_case(rows):
    """rows: (key, family, rates, cpus, syscalls)"""
    cr = rb.CaseResult("echo-64-50", "echo ping-pong 64 B × 50 conns", "echo")
    for key, family, rates, cpus, sc in rows:
        cr.rows.append((server(key, family), rounds(rates, cpus), counting(sc), None))
    return cr


def line(lines, what):
    found = [x for x in lines if what in x]
    assert len(found) == 1, (what, lines)
    return found[0]


# A run whose state flips between raw epoll's and evnet's turn in rounds 2 and 4: raw epoll met
# the fast state (2×) in rounds 2, 3 and 4, evnet only in round 3. Within every round evnet is at
# 0.98× raw epoll's throughput and 1.02× its CPU, except where the flip split the pair.
RAW_RATES = [100, 200, 200, 200, 100]
RAW_CPUS = [10.0, 5.0, 5.0, 5.0, 10.0]
EV_RATES = [98, 98, 196, 98, 98]
EV_CPUS = [10.2, 10.2, 5.1, 10.2, 10.2]
LIB = [[60, 120, 120, 120, 60], [16.0, 8.0, 8.0, 8.0, 16.0]]


class PairedVerdicts(unittest.TestCase):
    def lines(self, ev_rates=EV_RATES, ev_cpus=EV_CPUS, libuv_cpus=None, ev_sc=2.02):
        cr = echo_case([
            ("raw", "raw", RAW_RATES, RAW_CPUS, 2.02),
            ("evnet", "evnet", ev_rates, ev_cpus, ev_sc),
            ("libevent", "lib", LIB[0], LIB[1], 5.0),
            ("libuv", "lib", RAW_RATES, libuv_cpus or [c * 1.05 for c in EV_CPUS], 2.02),
        ])
        return rb.goal_lines([cr])

    def test_a_split_pair_does_not_decide_the_verdict(self):
        out = self.lines()
        t = line(out, "throughput vs raw epoll")
        # The ratio of the medians (98 ÷ 200) says 0.49×; 3 of 5 pairs say 0.98×.
        self.assertIn("**met**", t)
        self.assertIn("median of the per-round ratios 0.980×", t)
        self.assertIn("ratio of the medians 0.490×", t)
        self.assertIn("3 of 5 rounds meet it", t)
        c = line(out, "CPU/msg vs raw epoll")
        self.assertIn("**met**", c)
        self.assertIn("median of the per-round ratios 1.020×", c)

    def test_a_real_shortfall_is_not_met(self):
        out = self.lines(ev_rates=[r * 0.9 for r in RAW_RATES],
                         ev_cpus=[c * 1.10 for c in RAW_CPUS])
        self.assertIn("**NOT met**", line(out, "throughput vs raw epoll"))
        self.assertIn("0 of 5 rounds meet it", line(out, "throughput vs raw epoll"))
        self.assertIn("**NOT met**", line(out, "CPU/msg vs raw epoll"))

    def test_lowest_cpu_of_the_libraries_is_paired_against_each(self):
        out = self.lines()
        self.assertIn("**met**", line(out, "CPU/msg lowest of"))
        # libuv 2% below evnet in every round: not the lowest, whatever the medians say.
        out = self.lines(libuv_cpus=[c / 1.02 for c in EV_CPUS])
        low = line(out, "CPU/msg lowest of")
        self.assertIn("**NOT met**", low)
        self.assertIn("libuv 1.020×", low)

    def test_throughput_against_libevent(self):
        t = line(self.lines(), "throughput vs libevent")
        # 98 ÷ 60 in rounds 1 and 5, 98 ÷ 120 in 2 and 4, 196 ÷ 120 in 3.
        self.assertIn("**met**", t)
        self.assertIn("median of the per-round ratios 1.633×", t)

    def test_system_calls_allow_two_hundredths(self):
        self.assertIn("**met**", line(self.lines(ev_sc=2.04), "syscalls/msg"))
        self.assertIn("**NOT met**", line(self.lines(ev_sc=2.05), "syscalls/msg"))

    def test_fewer_than_three_rounds_fall_back_to_the_medians(self):
        cr = echo_case([
            ("raw", "raw", [100, 200], [10.0, 5.0], 2.0),
            ("evnet", "evnet", [98, 98], [10.2, 10.2], 2.0),
        ])
        t = line(rb.goal_lines([cr]), "throughput vs raw epoll")
        self.assertIn("**NOT met**", t)
        self.assertNotIn("per-round", t)


if __name__ == "__main__":
    unittest.main()
