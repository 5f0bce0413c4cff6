"""A real S3-protocol server on 127.0.0.1 (moto's server mode) for local runs and tests.

`python -m infra.s3_server --port 9000 --bucket corpus` serves until interrupted; tests use
`S3Server` as a context manager. Credentials are throwaway values for the local server only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LOCAL_KEY = "tokenmill-local"
LOCAL_SECRET = "tokenmill-local-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """Starts `moto_server` on 127.0.0.1:port as a subprocess; stop() / restart() for fault tests."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint, "key": LOCAL_KEY, "secret": LOCAL_SECRET}

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": LOCAL_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> S3Server:
        own = Path(sys.executable).parent / "moto_server"  # this venv's, not the PATH's first
        exe = str(own) if own.exists() else shutil.which("moto_server") or str(own)
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {self.proc.returncode}") from None
                time.sleep(0.2)
        raise RuntimeError(f"moto_server did not answer on {self.endpoint}")

    def stop(self) -> None:
        """Stop the server (its in-memory buckets are lost, as with a real outage of a fresh server)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(
            client_kwargs={"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            key=LOCAL_KEY,
            secret=LOCAL_SECRET,
            skip_instance_cache=True,
        )

    def create_bucket(self, name: str) -> None:
        """Buckets are created explicitly (s3fs's mkdir with us-east-1 fails on moto)."""
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=LOCAL_KEY,
            aws_secret_access_key=LOCAL_SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=name)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", action="append", default=[])
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:  # SIGTERM too: the server goes with us
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server = S3Server(args.port).start()
    try:
        for bucket in args.bucket:
            server.create_bucket(bucket)
        print(
            f"S3 server on {server.endpoint} (local and unauthenticated: any key and secret "
            f"work); storage options: --storage-option endpoint_url={server.endpoint} "
            f"--storage-option key={LOCAL_KEY} --storage-option secret={LOCAL_SECRET}",
            flush=True,
        )
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:  # (a bad bucket name, a signal: never a server left behind)
        server.stop()


if __name__ == "__main__":
    main()
