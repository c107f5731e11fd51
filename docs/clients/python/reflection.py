"""A generic client with no generated code: grpc-requests reads Firebreak's services through
server reflection (v1alpha, what grpc-requests speaks), lists them, and raises an incident.

    python reflection.py ADDR TOKEN
"""

import sys

from grpc_requests import Client


def main():
    addr, token = sys.argv[1:3]
    client = Client.get_by_endpoint(addr)
    services = sorted(client.service_names)
    for name in services:
        print(f"service {name}")
    answer = client.request(
        "firebreak.v1.IntakeService",
        "RaiseIncident",
        {"alert": {"title": "raised by grpc-requests", "labels": {"service": "reflection"}}},
        metadata=[("authorization", f"Bearer {token}")],
    )
    print(f"incident {answer.get('incident_id') or answer.get('incidentId')}")


if __name__ == "__main__":
    main()
