"""tcplimits: how many TCP connections can a server and its clients hold, and what stops them."""

__version__ = "0.1.0"

# Every container, network and image the project creates carries this label.
LABEL = "tcplimits"
RUN_LABEL = "tcplimits.run"
