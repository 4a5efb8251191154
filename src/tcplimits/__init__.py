"""tcplimits: how many TCP connections can a server and its clients hold, and what stops them.

The package is the pipeline, one subpackage a stage, in the order data flows:

    config/   parameters and sweeps, checked before anything starts
    model/    what each point should hold and what should stop it (pure)
    image/    the agent image, built offline from Debian packages
    engine/   one experiment on the Docker engine -> one run directory
    agents/   the programs inside the containers (standard library only)
    results/  the run directory's contract, and the dataset of a sweep
    report/   the dataset set against the model, as one HTML page
    cli/      the `tcplimits` command: parser, commands (one a stage), main
"""

__version__ = "0.1.0"

# Every container, network and image the project creates carries this label.
LABEL = "tcplimits"
RUN_LABEL = "tcplimits.run"
OWNER_LABEL = "tcplimits.owner"  # engine.ownership.Owner.label() of the process that created it
# The uid of the user who created it: `tcplimits clean --all` removes that user's own only.
USER_LABEL = "tcplimits.uid"
# One execution of a run: run ids repeat (the workflow's point ids), names must not.
INSTANCE_LABEL = "tcplimits.instance"
ROLE_LABEL = "tcplimits.role"  # server, client, netadmin, probe, watch
CLIENT_LABEL = "tcplimits.client"  # a client container's number, from 1
