"""Python fedmsg 1.1.7 side of scripts/compare.sh (run with the venv's python).

    python_bench.py sub COUNT TIMEOUT [READY_FIFO] -> prints "<received> <seconds>"
    python_bench.py pub COUNT SIZE

Both read fedmsg.d/ in the working directory (written by compare.sh): the
publisher binds the endpoint named "pybench.host", the subscriber connects
to it. The subscriber times from the first to the last message received.
"""
import sys
import time

import fedmsg


def sub(count, timeout, ready=None):
    messages = fedmsg.tail_messages(topic="org.fedoraproject.dev.bench.data", mute=True)
    if ready:
        # Imports are done; the socket connects on the first next(), well
        # within the publisher's post_init_sleep.
        with open(ready, "w") as fifo:
            fifo.write("ready\n")
    received = 0
    first = last = None
    started = time.time()
    for name, endpoint, topic, msg in messages:
        now = time.time()
        if first is None:
            first = now
        last = now
        received += 1
        if received >= count or now - started > timeout:
            break
    seconds = (last - first) if first is not None else 0.0
    print(received, seconds, flush=True)


def pub(count, size):
    fedmsg.init(name="pybench.host")
    payload = "x" * size
    for n in range(count):
        fedmsg.publish(topic="data", modname="bench", msg={"n": n, "data": payload})
    # Give the socket time to drain before exit (fedmsg has no flush).
    time.sleep(1)


if __name__ == "__main__":
    role, count = sys.argv[1], int(sys.argv[2])
    if role == "sub":
        sub(count, float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        pub(count, int(sys.argv[3]))
