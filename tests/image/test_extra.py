"""The images some points need besides the agent image (tcplimits.image.extra) and
`tcplimits image --router / --servers / --all`, which builds them ahead of the runs."""

import os
import subprocess
import sys

import pytest

from tcplimits import cli
from tcplimits.config.params import RunParams
from tcplimits.image import extra

NAT = RunParams(nat="gateway", nat_port_range="40000-40099")
NGINX = RunParams(server="nginx")


@pytest.mark.parametrize("points, names, flags", [
    ([RunParams()], [], ""),
    ([RunParams(), NAT], ["router"], "--router"),
    ([NGINX], ["servers"], "--servers"),
    ([NGINX, RunParams(), NAT, NAT], ["router", "servers"], "--router --servers"),
])
def test_the_points_say_which_images_they_need(points, names, flags):
    assert extra.needed(points) == names
    assert extra.flags(names) == flags


def test_an_unknown_image_is_refused_by_name():
    with pytest.raises(ValueError, match="'proxy'.*router, servers"):
        extra.ensure(None, "proxy")


def test_the_flags_and_their_help():
    parser = cli.build_parser()
    args = parser.parse_args(["image", "--router"])
    assert (args.router, args.servers, args.all) == (True, False, False)
    assert parser.parse_args(["image", "--all"]).all
    text = subprocess.run([sys.executable, "-m", "tcplimits", "image", "--help"],
                          capture_output=True, text=True, timeout=60).stdout
    for flag in ("--router", "--servers", "--all", "--stamp", "--rebuild"):
        assert flag in text
    assert "tcplimits image --router" in text  # an example


@pytest.mark.docker
def test_image_router_builds_or_finds_the_router_image(tmp_path):
    """The CLI against the real engine: the agent image's tag, then the router's (a content
    tag over the agent image: a second call finds it), both in the stamp with their ids."""
    import docker

    from tcplimits.image.router import router_tag

    stamp = tmp_path / "image.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-m", "tcplimits", "image", "--router", "-q",
                           "--stamp", str(stamp)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    agent_tag, router = done.stdout.split()
    lines = stamp.read_text().split()
    assert lines[0::2] == [agent_tag, router]
    engine = docker.from_env()
    agent = engine.images.get(agent_tag)
    assert lines[1] == agent.id and router == router_tag(agent.id)
    built = engine.images.get(router)
    assert lines[3] == built.id and built.labels.get("tcplimits") == "1"
    # iptables is in it, and the router agent beside the others
    out = engine.containers.run(router, ["/usr/sbin/iptables-nft", "--version"], remove=True,
                                network_mode="none", user="65534:65534", cap_drop=["ALL"],
                                security_opt=["no-new-privileges"], read_only=True,
                                labels={"tcplimits": "1"})
    assert b"iptables" in out
