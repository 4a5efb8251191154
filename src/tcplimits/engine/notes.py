"""Sentences explaining a run (moves into tcplimits.model next)."""

from __future__ import annotations

from .. import model
from ..params import RunParams


def explain(params: RunParams, prediction: model.Prediction, clients: list[dict],
            server: list[dict], held: dict[int, list[dict]], backlog_queue: int) -> list[str]:
    """Sentences that explain the outcome, for run.json's notes and the report."""
    notes = []
    for client, sockets in held.items():
        for s in sockets:
            who = ("Docker's embedded DNS resolver, which listens on 127.0.0.11 in every "
                   "container on a user-defined network"
                   if s["addr"] == "127.0.0.11" else
                   "the server's listening socket (on loopback the clients share the "
                   "server's namespace)"
                   if params.network == "loopback" and s["state"] == "LISTEN"
                   else f"a socket on {s['addr']}")
            notes.append(
                f"client {client}: port {s['port']} of the range {params.port_range} was already "
                f"held ({s['state']}) in the container's namespace by {who}; connect() never "
                "takes a port held by bind(), so the pool is one port smaller.")
    per_client: dict[int, int] = {}
    for row in clients:
        per_client[row["client"]] = per_client.get(row["client"], 0) + (row["connections"] or 0)
    for client, observed in sorted(per_client.items()):
        predicted = prediction.per_client[client - 1]
        errors = sorted({r["error"] for r in clients if r["client"] == client and r["error"]})
        verdict = "as predicted" if observed == predicted else f"predicted {predicted:,}"
        notes.append(f"client {client}: {observed:,} connections ({verdict}; limit: "
                     f"{prediction.limit}), stopped by {', '.join(errors) or 'nothing'}.")
        emfile = [r["proc"] for r in clients if r["client"] == client and r["error"] == "EMFILE"]
        if emfile and prediction.limit == model.PORTS:
            notes.append(
                f"client {client}: process(es) {', '.join(map(str, emfile))} reached their own "
                f"descriptor limit (nofile - {model.CLIENT_BASELINE_FDS} = "
                f"{params.nofile - model.CLIENT_BASELINE_FDS:,}) first; the other processes took "
                "the rest of the shared port pool, which is what bound the container.")
    if prediction.limit == model.DESCRIPTORS:
        notes.append(f"each client process holds nofile - {model.CLIENT_BASELINE_FDS} = "
                     f"{params.nofile - model.CLIENT_BASELINE_FDS:,} sockets: descriptors 0-2 "
                     "(stdin, stdout, stderr) are already open.")
    total = sum(per_client.values())
    accepted = sum(r.get("accepted") or 0 for r in server)
    if server and accepted != total:
        notes.append(
            f"the clients counted {total:,} connections and the server accepted {accepted:,}: "
            f"the kernel completes the handshake before accept(), so up to {backlog_queue} "
            "(backlog + 1) more wait in the accept queue.")
    failing = [r for r in server if r.get("error")]
    if failing:
        errors = ", ".join(sorted({r["error"] for r in failing}))
        workers = ", ".join(str(r["worker"]) for r in failing)
        if accepted >= total:
            notes.append(f"server worker(s) {workers} hit {errors} in accept() at their "
                         "descriptor limit; the other workers accepted the rest, so the server "
                         "did not limit the run.")
        else:
            notes.append(f"the server's accept() failed with {errors} in worker(s) {workers} "
                         "once out of descriptors; the server kept running, clients saw their "
                         "SYNs dropped once the accept queue was full.")
    return notes
