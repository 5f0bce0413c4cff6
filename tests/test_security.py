"""Untrusted tokenizer and config files, paths that try to leave the output prefix, and credentials
that must never reach logs, ledgers, summaries or error messages."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, StorageError
from pipeline.output.storage import Output
from pipeline.tokenize.config import load_config
from pipeline.tokenize.engine import run_job
from pipeline.tokenize.inputs import ReadOptions, plan_units
from schemas.layout import UnitNames
from tokenizers_impl import load_tokenizer
from tokenizers_impl.base import TokenizerError
from tokenizers_impl.files import read_file

from .helpers import REPO

PACKAGES = ("pipeline", "jobs", "tokenizers_impl", "schemas", "infra", "bench")
UNSAFE = [
    (
        re.compile(
            r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|marshal|shelve)\b", re.M
        ),
        "imports a pickle-family module",
    ),
    (re.compile(r"\b(c?pickle|dill|cloudpickle|joblib|marshal)\.loads?\("), "unpickles"),
    (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
    (
        re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"),
        "torch.load without weights_only",
    ),
    (re.compile(r"yaml\.(unsafe_)?load\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\beval\(|\bexec\("), "eval/exec"),
]


def test_no_pickle_or_other_code_executing_loaders_in_the_package_source():
    offences = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
            offences += [
                f"{path.relative_to(REPO)}: {what}" for rx, what in UNSAFE if rx.search(code)
            ]
    assert offences == []


class _Payload:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece", "lib"])
def test_a_pickled_tokenizer_file_is_refused_and_never_executed(tmp_path, kind):
    marker = tmp_path / "pwned"
    evil = tmp_path / "tokenizer.bin"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises((TokenizerError, ValueError, RuntimeError, OSError)):
        load_tokenizer(f"{kind}:{evil}")
    assert not marker.exists()


def test_tokenizer_files_have_a_size_limit_and_must_be_files(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * 1000 + b"}")
    with pytest.raises(TokenizerError, match=r"1002 bytes, over the 100-byte limit"):
        read_file(str(big), limit=100)
    with pytest.raises(TokenizerError, match="is not a file"):
        load_tokenizer(f"bpe:{tmp_path}")
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(f"bpe:{tmp_path / 'missing.json'}")
    (tmp_path / "garbage.json").write_bytes(b"\x00\xff not json")
    with pytest.raises(TokenizerError):
        load_tokenizer(f"lib:{tmp_path / 'garbage.json'}")


def test_config_files_are_schema_checked_size_limited_and_safe_yaml(tmp_path, bpe_path):
    base = f"input: [x.jsonl]\noutput: out\ntokenizer: bpe:{bpe_path}\n"
    cases = {
        "unknown field": (base + "shell: rm -rf /\n", r"shell: Extra inputs are not permitted"),
        "wrong type": (base + "unit_bytes: lots\n", r"unit_bytes: Input should be a valid integer"),
        "negative": (
            base + "max_doc_bytes: -1\n",
            r"max_doc_bytes: Input should be greater than 0",
        ),
        "python tag": (
            base + "x: !!python/object/apply:os.system ['touch pwned']\n",
            r"is not valid YAML",
        ),
        "not a mapping": ("- a\n- b\n", r"must hold a mapping"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(str(path))
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    huge = tmp_path / "huge.yaml"
    huge.write_text(base + "#" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="over the 1048576-byte limit"):
        load_config(str(huge))


@pytest.mark.parametrize(
    "rel", ["../x", "../../etc/x", "shards/../../x", "/etc/passwd", "a/../../b"]
)
def test_output_paths_cannot_leave_the_prefix(tmp_path, rel):
    with pytest.raises(StorageError, match="outside the output prefix"):
        Output(str(tmp_path)).path(rel)


def test_hostile_document_ids_and_sources_never_become_paths(ray_session, tmp_path, bpe_path):
    root = tmp_path / "sandbox"
    (root / "in").mkdir(parents=True)
    hostile = [
        "../../etc/x",
        "/etc/passwd",
        "..",
        "a/../../../b",
        "C:\\\\x",
        "\u202e../evil",
        "%2e%2e/x",
    ]
    (root / "in" / "ids.jsonl").write_text(
        "".join(
            json.dumps({"id": h, "source": h, "lang": h, "text": f"text {i}"}) + "\n"
            for i, h in enumerate(hostile)
        )
    )
    cfg = load_config(
        input=[str(root / "in" / "*.jsonl")],
        output=str(root / "out"),
        tokenizer=f"bpe:{bpe_path}",
        unit_bytes=64,
        progress=False,
    )
    for unit in plan_units(cfg.input, ReadOptions(unit_bytes=64)):
        names = UnitNames.of(unit.unit_id, "0123456789abcdef")
        assert re.fullmatch(r"shards/[0-9a-f]{24}\.[0-9a-f]{12}\.arrow", names.shard)
    summary = run_job(cfg)
    assert summary.documents == len(hostile)
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert all(w.startswith(("in/", "out/")) for w in written), written
    outside = [p for p in tmp_path.iterdir() if p.name != "sandbox"]
    assert outside == []
    assert all(
        re.fullmatch(r"out/(shards|ledger)/[0-9a-f]{24}\.[0-9a-f]{12}\.(arrow|json)", w)
        for w in written
        if w.startswith(("out/shards", "out/ledger"))
    )


CANARY_KEY = "AKIACANARY7TOKENMILL"
CANARY_SECRET = "canary-SECRET-d0-n0t-l0g-93f1"
CANARY_ENV_SECRET = "canary-ENV-secret-never-print-5a2e"


def test_credentials_never_appear_in_outputs_logs_or_errors(s3, s3_sample, bpe_path):
    """A run through the CLI against the S3 server with recognisable credentials (as storage
    options and in the environment), plus two failing runs; every object written, stdout, stderr
    and the driver's Ray session logs are searched for them."""
    s3.create_bucket("secrets")
    ray_tmp = tempfile.mkdtemp(prefix="tmr", dir="/tmp")  # short: Ray's socket paths must fit
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_TMPDIR": ray_tmp,
        "AWS_SECRET_ACCESS_KEY": CANARY_ENV_SECRET,
        "AWS_ACCESS_KEY_ID": CANARY_KEY,
    }
    opts = [
        "--storage-option",
        f"endpoint_url={s3.endpoint}",
        "--storage-option",
        f"key={CANARY_KEY}",
        "--storage-option",
        f"secret={CANARY_SECRET}",
    ]
    tokenmill = str(Path(sys.executable).parent / "tokenmill")
    runs = [
        [
            tokenmill,
            "-v",
            "run",
            "--input",
            s3_sample,
            "--output",
            "s3://secrets/out",
            "--tokenizer",
            f"bpe:{bpe_path}",
            "--actors",
            "1",
            "--no-progress",
            *opts,
        ],
        [tokenmill, "-v", "verify", "s3://secrets/out", *opts],
        [
            tokenmill,
            "run",
            "--input",
            "s3://secrets/missing/*.jsonl",
            "--output",
            "s3://secrets/o2",
            "--tokenizer",
            f"bpe:{bpe_path}",
            *opts,
        ],
        [
            tokenmill,
            "run",
            "--input",
            s3_sample,
            "--output",
            "s3://no-such-bucket-x/out",
            "--tokenizer",
            f"bpe:{bpe_path}",
            *opts[:2],
            "--storage-option",
            f"key={CANARY_KEY}",
            "--storage-option",
            f"secret={CANARY_SECRET}",
        ],
    ]
    texts = []
    codes = []
    for argv in runs:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        codes.append(proc.returncode)
        texts += [proc.stdout, proc.stderr]
    assert codes[:3] == [0, 0, 2], texts
    assert codes[3] != 0 and "Traceback" not in texts[-1], texts[-1]
    fs = s3.filesystem()
    objects = fs.find("secrets/")
    assert any("/runs/" in o for o in objects) and any("/ledger/" in o for o in objects)
    blobs = {o: fs.cat_file(o) for o in objects}
    for root, _, files in os.walk(ray_tmp):
        for name in files:
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    blobs[path] = handle.read()
    assert any("logs" in k for k in blobs), "no Ray session logs found to search"
    for secret in (CANARY_SECRET, CANARY_ENV_SECRET):
        assert [k for k, v in blobs.items() if secret.encode() in v] == []
        assert [t for t in texts if secret in t] == []
    summary = json.loads(texts[0])
    assert summary["storage_options"] == {
        "endpoint_url": s3.endpoint,
        "key": "***",
        "secret": "***",
    }
