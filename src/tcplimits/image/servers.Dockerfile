# The real servers of issue 21 (nginx, its stream module for the TCP proxy, Redis, HAProxy)
# from Debian's packages, with the agents beside them (realserver.py runs each server and
# counts what it holds). Built FROM the same base as the agent image: the base's apt sources
# name the Debian mirror the host's apt sources name (tcplimits.image.base), so no registry
# is needed. Containers run it read-only as 65534 (nobody, like the agents), with tmpfs where
# the server writes (tcplimits.engine.servers). The one change to what the packages ship:
# /etc/redis and redis.conf (modes 2770 and 640, owner redis) are made readable by others.
ARG BASE_IMAGE=python:3.13-slim
FROM ${BASE_IMAGE}
ARG PACKAGES="nginx libnginx-mod-stream redis-server haproxy"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${PACKAGES} \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
 && chmod o+rx /etc/redis && chmod o+r /etc/redis/redis.conf \
 && dpkg-query -W ${PACKAGES}
COPY agents/ /opt/tcplimits/agents/
LABEL tcplimits=1
USER 65534:65534
# Fail the build, not a run, when the user the containers run as cannot read what it needs.
RUN cat /etc/redis/redis.conf /etc/nginx/nginx.conf > /dev/null \
 && python3 -c "import json, os, re, resource, signal, socket, subprocess, threading" \
 && cat /opt/tcplimits/agents/*.py > /dev/null && nginx -v && redis-server --version
