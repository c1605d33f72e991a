"""docker-py (PyPI `docker`) against berth's API: what its users do every day.

Run by tests/api_clients.rs with DOCKER_HOST at berth's socket and IMAGE naming a
busybox-based image; prints one line per check and exits non-zero at the first failure.
"""
import os
import sys

import docker

IMAGE = os.environ["IMAGE"]


def check(what, cond, detail=""):
    if not cond:
        print(f"FAILED {what}: {detail}")
        sys.exit(1)
    print(f"ok {what}")


client = docker.from_env()
check("ping", client.ping())
version = client.version()
check("version", version["ApiVersion"] == "1.47", version)

# run in the foreground: the output, as bytes.
out = client.containers.run(IMAGE, ["sh", "-c", "echo hello; echo oops >&2"], remove=True)
check("run returns stdout", out == b"hello\n", out)
try:
    client.containers.run(IMAGE, ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
    check("a failing run raises", False)
except docker.errors.ContainerError as e:
    check("a failing run raises ContainerError", e.exit_status == 3 and b"bad" in e.stderr, e)

# detached: labels, logs, wait, attributes, remove.
c = client.containers.run(
    IMAGE,
    ["sh", "-c", "echo started; sleep 0.3; echo done; exit 5"],
    detach=True,
    name="pyrun",
    labels={"suite": "docker-py"},
    environment={"GREETING": "hi"},
)
check("detached container has an id", len(c.id) == 64, c.id)
status = c.wait(timeout=60)
check("wait returns the status", status["StatusCode"] == 5, status)
check("logs", c.logs() == b"started\ndone\n", c.logs())
check("stdout only logs", c.logs(stdout=True, stderr=False) == b"started\ndone\n")
c.reload()
check("attrs", c.attrs["State"]["ExitCode"] == 5 and c.name == "pyrun", c.attrs["State"])
check("labels", c.labels == {"suite": "docker-py"}, c.labels)
listed = client.containers.list(all=True, filters={"label": "suite=docker-py"})
check("list with a label filter", [x.name for x in listed] == ["pyrun"], listed)
c.remove()
check("removed", client.containers.list(all=True) == [])

# streaming logs while the container runs.
c = client.containers.run(IMAGE, ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.1; done"], detach=True)
lines = [l for l in c.logs(stream=True, follow=True)]
check("follow logs", b"".join(lines) == b"line1\nline2\nline3\n", lines)
c.remove(force=True)

# create, start, stop, restart, kill.
c = client.containers.create(IMAGE, ["sleep", "300"], name="pylife")
check("created", c.status == "created", c.status)
c.start()
c.reload()
check("running", c.status == "running", c.status)
c.stop(timeout=1)
c.reload()
check("stopped", c.status == "exited", c.status)
c.restart(timeout=1)
c.reload()
check("restarted", c.status == "running", c.status)
c.kill()
check("killed", c.wait(timeout=30)["StatusCode"] == 137)
c.remove()

# attach with demultiplexed streams.
c = client.containers.create(IMAGE, ["sh", "-c", "sleep 0.5; echo out; echo err >&2"])
sock = c.attach(stdout=True, stderr=True, stream=True, logs=False, demux=True)
c.start()
got = {"out": b"", "err": b""}
for out, err in sock:
    got["out"] += out or b""
    got["err"] += err or b""
check("attach demuxes", got == {"out": b"out\n", "err": b"err\n"}, got)
c.remove(force=True)

# events, decoded.
since = client.version()  # any call: the clock is the host's
import time

t0 = int(time.time()) - 1
c = client.containers.run(IMAGE, ["true"], detach=True, name="pyev")
c.wait(timeout=30)
c.remove()
evs = list(client.events(since=t0, until=int(time.time()) + 1, decode=True, filters={"container": "pyev"}))
check("events", [e["Action"] for e in evs] == ["create", "start", "die", "destroy"], evs)
check("events carry the name", all(e["Actor"]["Attributes"]["name"] == "pyev" for e in evs), evs)

# errors
try:
    client.containers.get("nope")
    check("missing container raises", False)
except docker.errors.NotFound:
    check("missing container raises NotFound", True)
print("all ok")
