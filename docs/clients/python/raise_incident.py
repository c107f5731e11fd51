"""Raise an incident with Firebreak's gRPC API from Python, then read it back.

Generate the stubs first (from the repository's root):

    python -m grpc_tools.protoc -I proto --python_out=gen --grpc_python_out=gen \
        proto/firebreak/v1/*.proto

then run:

    PYTHONPATH=gen python docs/clients/python/raise_incident.py --addr 127.0.0.1:7400 \
        --token "$FIREBREAK_TOKEN"

Retries reuse one idempotency key, so a retried raise never opens a second incident.
"""

import argparse
import time
import uuid

import grpc

from firebreak.v1 import incidents_pb2, incidents_pb2_grpc, intake_pb2, intake_pb2_grpc

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


def raise_incident(channel, token, title, labels, attempts=5):
    """Raises one alert; returns the answer. Retries transient failures with the same key."""
    stub = intake_pb2_grpc.IntakeServiceStub(channel)
    request = intake_pb2.RaiseIncidentRequest(
        alert=intake_pb2.AlertInput(title=title, labels=labels),
        idempotency_key=str(uuid.uuid4()),
    )
    metadata = [("authorization", f"Bearer {token}")]
    for attempt in range(attempts):
        try:
            return stub.RaiseIncident(request, metadata=metadata, timeout=5)
        except grpc.RpcError as e:
            if e.code() not in RETRYABLE or attempt + 1 == attempts:
                raise
            time.sleep(0.2 * 2**attempt)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:7400")
    parser.add_argument("--token", required=True)
    parser.add_argument("--title", default="checkout latency above SLO")
    args = parser.parse_args()
    with grpc.insecure_channel(args.addr) as channel:
        raised = raise_incident(channel, args.token, args.title, {"service": "checkout"})
        print(f"raised alert {raised.alert_id} -> incident {raised.incident_id}")
        incidents = incidents_pb2_grpc.IncidentServiceStub(channel)
        got = incidents.GetIncident(
            incidents_pb2.GetIncidentRequest(id=raised.incident_id),
            metadata=[("authorization", f"Bearer {args.token}")],
            timeout=5,
        )
        print(f"incident {got.incident.id}: SEV{got.incident.severity} {got.incident.title}")


if __name__ == "__main__":
    main()
