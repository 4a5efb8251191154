"""The real-server image's tag (issue 21): a content hash, as the agent image's."""

from tcplimits.image import build, servers


def test_the_tag_follows_the_base_and_differs_from_the_agent_image():
    a = servers.server_image_tag("sha256:aaa")
    assert a.startswith("tcplimits-servers:") and len(a.split(":")[1]) == 12
    assert a == servers.server_image_tag("sha256:aaa")
    assert a != servers.server_image_tag("sha256:bbb")
    assert a.split(":")[1] != build.image_tag("sha256:aaa").split(":")[1]


def test_the_dockerfile_installs_the_packages_from_the_base():
    text = servers.DOCKERFILE.read_text()
    assert "FROM ${BASE_IMAGE}" in text and "apt-get install" in text
    assert "LABEL tcplimits=1" in text and "USER 65534:65534" in text
    assert set(servers.PACKAGES) >= {"nginx", "libnginx-mod-stream", "redis-server"}
