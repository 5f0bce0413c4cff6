"""Ray job entry point: `ray job submit --working-dir . -- python -m jobs.tokenize --input ... --output ...`.

Takes the same flags as `tokenmill run`; connects to the cluster the job runs on (RAY_ADDRESS)."""

from __future__ import annotations

from jobs.cmd_run import run_cmd

if __name__ == "__main__":
    run_cmd(prog_name="python -m jobs.tokenize")
