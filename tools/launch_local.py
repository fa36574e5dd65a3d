"""Run one swejax command as several JAX processes on this machine, each with its own fake CPU
devices: a pod on localhost (docs/launching.md).

    python tools/launch_local.py --processes 2 --devices 4 -- \
        python -m swejax.main train --config.name=pod

Each process gets `--config.distributed.coordinator=127.0.0.1:PORT`, `num_processes` and its
`process_id` appended, `XLA_FLAGS=--xla_force_host_platform_device_count=DEVICES`, and its
output in LOG_DIR/process_I.out (process 0's is also echoed here). The launcher waits for all;
once one fails, the rest get `--grace` seconds to stop on their own (a JAX process notices a
lost peer by itself) and are then killed. It exits with the first failure's status, else 0.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_command(command: list[str], port: int, processes: int, index: int) -> list[str]:
    return [
        *command,
        f"--config.distributed.coordinator=127.0.0.1:{port}",
        f"--config.distributed.num_processes={processes}",
        f"--config.distributed.process_id={index}",
    ]


def process_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def launch(command, processes, devices, log_dir, port=None, grace=150.0) -> int:
    """Start the processes, wait for them; the exit status (see the module docstring)."""
    port = port or free_port()
    os.makedirs(log_dir, exist_ok=True)
    children, logs = [], []
    for index in range(processes):
        log = open(os.path.join(log_dir, f"process_{index}.out"), "w")  # noqa: SIM115
        logs.append(log)
        children.append(
            subprocess.Popen(
                process_command(command, port, processes, index),
                env=process_env(devices),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    status, failed_at, ended = 0, None, {}
    try:
        while any(child.poll() is None for child in children):
            for index, child in enumerate(children):
                code = child.poll()
                if code is not None and index not in ended:
                    ended[index] = time.monotonic()
                if code not in (None, 0) and failed_at is None:
                    status, failed_at = code, time.monotonic()
                    print(f"launch_local: process {index} exited with {code}", file=sys.stderr)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for index, child in enumerate(children):
                    if child.poll() is None:
                        print(f"launch_local: killing process {index}", file=sys.stderr)
                        child.kill()
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
        for log in logs:
            log.close()
    for index, child in enumerate(children):
        if child.returncode and not status:
            status = child.returncode
        after = ""
        if failed_at is not None:
            after = (
                f", {ended.get(index, time.monotonic()) - failed_at:.1f} s after the first failure"
            )
        print(f"launch_local: process {index}: exit {child.returncode}{after}", file=sys.stderr)
    with open(os.path.join(log_dir, "process_0.out")) as f:
        sys.stdout.write(f.read())
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices", type=int, default=4, help="fake CPU devices per process")
    parser.add_argument("--log-dir", default="launch_logs")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    parser.add_argument("--grace", type=float, default=150.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    if args.processes < 1 or args.devices < 1:
        parser.error("--processes and --devices must be positive")
    return launch(command, args.processes, args.devices, args.log_dir, args.port, args.grace)


if __name__ == "__main__":
    sys.exit(main())
