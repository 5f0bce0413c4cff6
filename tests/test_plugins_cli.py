"""A tokenizer plugin used from the `tokenmill` command, as docs/plugins.md shows it: the module
named by `--plugin` (a module name or a `.py` file) or by TOKENMILL_PLUGINS, or an installed
package's entry point (group `tokenmill.tokenizers`); the run's driver threads, helper processes
and a local Ray's actors find it too. A plugin cannot take over a built-in kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from tests.helpers import REPO, SAMPLE_DIR

PLUGIN = textwrap.dedent(
    '''
    import json

    import numpy as np

    from tokenizers_impl import TokenizerBase, register
    from tokenizers_impl.base import fingerprint_of
    from tokenizers_impl.files import read_json, write_file


    class CharTokenizer(TokenizerBase):
        """One id per character of a fixed alphabet, id 0 for anything else (lossy)."""

        kind = "chars"
        lossless = False

        def __init__(self, alphabet, name="chars"):
            self.alphabet, self.name = alphabet, name
            self.ids = {c: i + 1 for i, c in enumerate(alphabet)}
            self.vocab_size = len(alphabet) + 1
            self.fingerprint = fingerprint_of(self.kind, alphabet)

        def encode_batch(self, texts):
            return [np.array([self.ids.get(c, 0) for c in t], dtype=np.uint32) for t in texts]

        def token_bytes(self, token_id):
            return self.alphabet[token_id - 1].encode() if token_id else b""

        @classmethod
        def load(cls, path, storage_options=None, **options):
            data = read_json(path, storage_options)
            return cls(data["alphabet"], name=options.get("name") or path.rsplit("/", 1)[-1])

        def save(self, url, storage_options=None):
            write_file(url, json.dumps({"alphabet": self.alphabet}).encode(), storage_options)
    '''
)
ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def tokenmill(*args, cwd, env=None):
    environment = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    environment.pop("TOKENMILL_PLUGINS", None)
    environment.update({"RAY_AUTH_MODE": "disabled", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "chars_plugin.py").write_text(PLUGIN + '\nregister("chars", CharTokenizer)\n')
    (tmp_path / "alphabet.json").write_text(json.dumps({"alphabet": ALPHABET}))
    return tmp_path


def expected_tokens(path) -> list[list[int]]:
    ids = {c: i + 1 for i, c in enumerate(ALPHABET)}
    texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    return sorted([ids.get(c, 0) for c in t] for t in texts)


def shard_tokens(output) -> list[list[int]]:
    rows = []
    for shard in sorted((output / "shards").rglob("*.arrow")):
        with pa.memory_map(str(shard)) as source:
            rows += pa.ipc.open_file(source).read_all().column("tokens").to_pylist()
    return sorted(rows)


@pytest.mark.parametrize("how", ["file", "module", "environment", "threads", "helpers", "actors"])
def test_a_plugin_runs_from_the_command_line(plugin_dir, how):
    """Before: `tokenmill run --tokenizer chars:...` said "unknown tokenizer kind 'chars';
    known: " (an empty list): the command had no way to import a plugin."""
    args = ["run", "--input", str(SAMPLE_DIR / "de.jsonl"), "--output", str(plugin_dir / "out")]
    args += ["--tokenizer", f"chars:{plugin_dir / 'alphabet.json'}", "--no-progress"]
    env = {"PYTHONPATH": f"{plugin_dir}{os.pathsep}{REPO}"}
    front = ["--plugin", str(plugin_dir / "chars_plugin.py")]
    if how == "module":
        front = ["--plugin", "chars_plugin"]
    elif how == "environment":
        front, env = [], {**env, "TOKENMILL_PLUGINS": "chars_plugin"}
    elif how == "threads":
        args += ["--local-bytes", "0", "--unit-bytes", "20000", "--driver-threads", "2"]
    elif how == "helpers":
        args += ["--local-bytes", "0", "--unit-bytes", "20000", "--driver-threads", "2"]
        args += ["--driver-processes"]
    elif how == "actors":
        args += ["--actors", "1", "--unit-bytes", "20000"]
    result = tokenmill(*front, *args, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["tokenizer"]["kind"] == "chars"
    assert shard_tokens(plugin_dir / "out") == expected_tokens(SAMPLE_DIR / "de.jsonl")


def test_a_plugin_from_an_installed_packages_entry_point(plugin_dir):
    """A package that declares `[project.entry-points."tokenmill.tokenizers"] chars =
    "chars_plugin:CharTokenizer"` (here its installed metadata, on PYTHONPATH): no flag needed."""
    (plugin_dir / "chars_plugin.py").write_text(PLUGIN)  # registers nothing itself
    info = plugin_dir / "chars_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chars-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[tokenmill.tokenizers]\nchars = chars_plugin:CharTokenizer\n"
    )
    result = tokenmill(
        "run",
        *("--input", str(SAMPLE_DIR / "ru.jsonl"), "--output", str(plugin_dir / "out")),
        *("--tokenizer", f"chars:{plugin_dir / 'alphabet.json'}", "--no-progress"),
        cwd=REPO,
        env={"PYTHONPATH": f"{plugin_dir}{os.pathsep}{REPO}"},
    )
    assert result.returncode == 0, result.stderr
    assert shard_tokens(plugin_dir / "out") == expected_tokens(SAMPLE_DIR / "ru.jsonl")


def test_an_unknown_kind_lists_the_built_in_ones_and_says_how_to_import_a_plugin(plugin_dir):
    result = tokenmill(
        "run",
        *("--input", str(SAMPLE_DIR / "de.jsonl"), "--output", str(plugin_dir / "out")),
        *("--tokenizer", f"chars:{plugin_dir / 'alphabet.json'}", "--no-progress"),
        cwd=REPO,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown tokenizer kind 'chars'; known: bpe, dynamic_merge, lib, " in result.stderr
    assert "tokenmill --plugin MODULE" in result.stderr
    missing = tokenmill("--plugin", "no_such_plugin_module", "run", "--help", cwd=REPO)
    assert missing.returncode == 2
    assert "cannot import tokenizer plugin module 'no_such_plugin_module'" in missing.stderr
    broken = plugin_dir / "broken_plugin.py"  # (a SyntaxError or an error raised at import)
    for body, says in (("def (:\n", "SyntaxError"), ("raise RuntimeError('no GPU')\n", "no GPU")):
        broken.write_text(body)
        result = tokenmill("--plugin", str(broken), "run", "--help", cwd=REPO)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "cannot import tokenizer plugin module" in result.stderr and says in result.stderr


def test_a_plugin_cannot_take_a_built_in_kind_before_its_module_is_imported(plugin_dir):
    """`register("bpe", ...)` before tokenizers_impl.bpe was imported was accepted; the real bpe
    then failed to load (KeyError 'alphabet') or to import."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import chars_plugin\n"
        "from tokenizers_impl import register\n"
        "from tokenizers_impl.errors import TokenizerError\n"
        "try:\n    register('bpe', chars_plugin.CharTokenizer)\n"
        "except TokenizerError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(plugin_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "tokenizer kind 'bpe' is built in (tokenizers_impl.bpe)" in result.stdout


def test_a_plugin_that_kills_its_actor_fails_the_unit_instead_of_restarting_forever(plugin_dir):
    """A tokenizer that crashes its process on a document (here: os._exit on a German text; a segfault, the
    machine's memory) restarted its Ray actor and resent the unit forever; after 6 deaths the
    unit fails the run, naming it (exit 3)."""
    crashing = PLUGIN.replace(
        "    def encode_batch(self, texts):\n",
        "    def encode_batch(self, texts):\n"
        "        import os\n"
        "        if any(' und ' in t for t in texts):\n"
        "            os._exit(1)\n",
    )
    (plugin_dir / "crash_plugin.py").write_text(crashing + '\nregister("chars", CharTokenizer)\n')
    result = tokenmill(
        *("--plugin", str(plugin_dir / "crash_plugin.py"), "run", "--actors", "1"),
        *("--input", str(SAMPLE_DIR / "de.jsonl"), "--output", str(plugin_dir / "out")),
        *("--tokenizer", f"chars:{plugin_dir / 'alphabet.json'}", "--no-progress"),
        cwd=REPO,
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "its actor died 6 times while the unit ran or waited on it" in result.stderr
