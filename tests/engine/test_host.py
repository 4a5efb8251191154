"""tcplimits.engine.host: reading the host's TCP state and waiting for a quiet host (pure logic with a
fake reader and clock; the real files are read once)."""

import pytest

from tcplimits.engine import host

SOCKSTAT = """sockets: used 103
TCP: inuse 8 orphan 40844 tw 24 alloc 40859 mem 40873
UDP: inuse 0 mem 0
"""


def test_parse_sockstat_tcp_line():
    assert host.parse_sockstat(SOCKSTAT) == {"inuse": 8, "orphan": 40844, "tw": 24,
                                             "alloc": 40859, "mem": 40873}
    with pytest.raises(ValueError, match="TCP"):
        host.parse_sockstat("sockets: used 3\n")


def test_parse_slab_tw():
    text = ("slabinfo - version: 2.1\n"
            "tw_sock_TCPv6          0      0    256   16    1 : tunables 0 0 0\n"
            "tw_sock_TCP          742    784    256   16    1 : tunables 0 0 0\n")
    assert host.parse_slab_tw(text) == 742
    assert host.parse_slab_tw("slabinfo - version: 2.1\n") is None


@pytest.mark.parametrize("url, local", [
    ("http+docker://localhost", True),       # unix socket, the SDK's name for it
    ("http+docker://localnpipe", True),
    ("http://127.0.0.1:2375", True),
    ("https://localhost:2376", True),
    ("http://10.0.0.1:2375", False),
    ("https://build-host.example:2376", False),
    ("http+docker://ssh", False),             # ssh:// engine
])
def test_engine_is_local(url, local):
    assert host.engine_is_local(url) is local


def test_read_state_local_reads_proc():
    state = host.read_state(local=True)
    assert state["source"] == "local /proc"
    assert all(isinstance(state[k], int) for k in host.SOCKSTAT_KEYS)
    assert host.leftover_sockets(state) >= state["orphan"]


def test_read_state_remote_is_unknown():
    state = host.read_state(local=False)
    assert state["orphan"] is None and "remote" in state["source"]
    assert host.leftover_sockets(state) is None


class FakeHost:
    """Readings in turn (the last one repeats), a clock that sleep() advances."""

    def __init__(self, leftovers, tw_all=0):
        self.leftovers, self.tw_all = list(leftovers), tw_all
        self.now, self.reads, self.slept = 100.0, 0, []

    def read(self):
        orphan = self.leftovers[min(self.reads, len(self.leftovers) - 1)]
        self.reads += 1
        return {"orphan": orphan, "tw": 5, "tw_all": self.tw_all, "source": "fake"}

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def wait(self, threshold, timeout_s, **kw):
        return host.wait_quiet(threshold, timeout_s, read=self.read, clock=self.clock,
                               sleep=self.sleep, **kw)


def test_quiet_host_does_not_wait():
    fake = FakeHost([10], tw_all=20)
    quiet = fake.wait(1000, 60)
    assert (quiet.noisy, quiet.reason, quiet.waited_s, fake.reads, fake.slept) == \
        (False, None, 0, 1, [])


def test_waits_until_the_orphans_drain():
    told = []
    fake = FakeHost([9000, 5000, 1200, 800, 10])
    quiet = fake.wait(1000, 60, waiting=told.append)
    assert not quiet.noisy and quiet.reason is None
    assert fake.reads == 4 and quiet.waited_s == pytest.approx(3.0)
    assert quiet.before["orphan"] == 800  # the state the point starts from
    assert [s["orphan"] for s in told] == [9000]  # told once, with the first reading


def test_tw_of_every_namespace_counts():
    fake = FakeHost([0], tw_all=5000)
    assert fake.wait(1000, 3).noisy
    fake = FakeHost([0], tw_all=None)  # slabinfo unreadable: the host namespace's tw
    assert not fake.wait(1000, 3).noisy


def test_never_quiet_runs_anyway_marked_noisy_after_the_bound():
    fake = FakeHost([9000, 8000, 7000])
    quiet = fake.wait(1000, 2.5)
    assert quiet.noisy and quiet.waited_s == pytest.approx(2.5)
    assert sum(fake.slept) == pytest.approx(2.5)  # never sleeps past the bound
    assert "7,000 orphaned" in quiet.reason and "threshold 1,000" in quiet.reason
    assert "after 2 s" in quiet.reason or "after 3 s" in quiet.reason


def test_zero_timeout_reads_once():
    fake = FakeHost([9000])
    quiet = fake.wait(1000, 0)
    assert quiet.noisy and fake.reads == 1 and fake.slept == []


def test_unknown_state_is_noisy_without_waiting():
    quiet = host.wait_quiet(1000, 60, read=lambda: host.read_state(local=False),
                            sleep=lambda s: pytest.fail("slept"))
    assert quiet.noisy and "remote" in quiet.reason
