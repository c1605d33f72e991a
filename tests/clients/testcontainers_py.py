"""testcontainers-python against berth's API: a container with an exposed port, waited for
by a log message, reached from the host. Run by tests/api_clients.rs (IMAGE is busybox-based).
"""
import os
import socket
import sys

from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs

IMAGE = os.environ["IMAGE"]
server = "echo ready; while :; do nc -l -p 8080 -e echo hello-from-testcontainers; done"
with DockerContainer(IMAGE).with_command(["sh", "-c", server]).with_exposed_ports(8080) as c:
    wait_for_logs(c, "ready", timeout=60)
    host = c.get_container_host_ip()
    port = int(c.get_exposed_port(8080))
    got = b""
    for _ in range(50):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                got = s.recv(100)
            if got:
                break
        except OSError:
            pass
        import time

        time.sleep(0.1)
    if got != b"hello-from-testcontainers\n":
        print(f"FAILED reaching {host}:{port}: {got!r}")
        sys.exit(1)
    print(f"ok reached the container at {host}:{port}")
print("all ok")
