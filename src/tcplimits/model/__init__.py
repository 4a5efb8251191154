"""Stage 2, model: what each point should hold and what should stop it, before it runs.

    hold        the hold model: each client's pools, the server's bound, the prediction
    compare     a finished run set against it (``compare_run``: every difference explained)
    churn       open-and-close at a rate: the TIME_WAIT pool and the sustainable rate
    fourtuple   the 4-tuple: port pools per source address, destination and bind mode
    hostlimits  the host's own limits (fs.file-max, conntrack, memory) as ceilings
    words       how the model's sentences spell a count (``plural``)
    nat         clients behind a source NAT: the shared pool, the hashed NAT address, the
                bounded port search (natrun: a run behind the NAT against it)
    natchurn    churn through the NAT: the server's TIME_WAIT on reused NAT ports

Pure functions of the parameters and the engine's facts; imports nothing but tcplimits.config.
The names callers use of the hold model are re-exported here (``model.predict``).
"""

from tcplimits.model import churn, compare, fourtuple, hostlimits, words
from tcplimits.model.compare import (
    ERRNO_CAUSES, TOLERANCE_ABS, TOLERANCE_REL, Comparison, compare_run, compare_runs,
    held_counts, params_of, tolerance)
from tcplimits.model.hold import (
    CLIENT_BASELINE_FDS, CONNTRACK, DESCRIPTORS, ERRNO_OF_LIMIT, LOOPBACK_POOL_FILL,
    MAX_CONNECTIONS, PORTS, SERVER, SERVER_BASELINE_FDS, SOMAXCONN, Prediction, accept_queue,
    auto_server_workers, client_terms, destinations, dropped_syns_reason, limit_reason,
    loopback_destinations, predict)
from tcplimits.model.words import plural

__all__ = [
    "CLIENT_BASELINE_FDS", "CONNTRACK", "DESCRIPTORS", "ERRNO_CAUSES", "ERRNO_OF_LIMIT",
    "LOOPBACK_POOL_FILL", "MAX_CONNECTIONS", "PORTS", "SERVER", "SERVER_BASELINE_FDS",
    "SOMAXCONN", "TOLERANCE_ABS", "TOLERANCE_REL", "Comparison", "Prediction", "accept_queue",
    "auto_server_workers", "churn", "client_terms", "compare", "compare_run", "compare_runs",
    "destinations", "dropped_syns_reason", "fourtuple", "held_counts", "hostlimits",
    "limit_reason", "loopback_destinations", "params_of", "plural", "predict", "tolerance",
    "words"]
