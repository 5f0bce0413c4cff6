#!/usr/bin/env bash
# Build ${TMPDIR:-/tmp}/tokenmill-bench-corpus/corpus/*.jsonl ({"text","src","lang"} per line) from offline sources:
#   Debian bookworm .deb packages (apt-get download + dpkg-deb -x, nothing is installed),
#   and the CPython stdlib of the interpreter that runs this script.
# Needs: apt-get update done once; python3 >= 3.8. Takes ~1-2 min, ~110 MB download.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)  # before any cd: the script may be given by a relative path
ROOT=${ROOT:-${TMPDIR:-/tmp}/tokenmill-bench-corpus}
PY=${PY:-python3}
DEBS="$ROOT/debs"; EX="$ROOT/extract"; OUT="$ROOT/corpus"; DL="$ROOT/dl"
mkdir -p "$DEBS" "$EX" "$OUT" "$DL"

PKGS=(
  # English
  linux-doc-6.1 python3.11-doc perl-doc postgresql-doc-15 dict-gcide
  # German (Latin script)
  libreoffice-help-de manpages-de fortunes-de
  # Cyrillic
  fortunes-ru manpages-ru manpages-uk
  # Chinese
  manpages-zh fortunes-zh
)
cd "$DEBS"
apt-get download "${PKGS[@]}" 2>&1 | grep -v unsandboxed || true
: > "$ROOT/corpus/DEBS.sha256"
for p in "${PKGS[@]}"; do
  f=$(ls "$DEBS"/${p}_*.deb | sort | tail -1)
  sha256sum "$f" >> "$OUT/DEBS.sha256"
  rm -rf "$EX/$p"; mkdir -p "$EX/$p"; dpkg-deb -x "$f" "$EX/$p"
done


STDLIB=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
echo "stdlib: $STDLIB ($("$PY" -V))" > "$OUT/STDLIB.txt"
"$PY" "$HERE/build_corpus.py" "$EX" "$DL" "$STDLIB" "$OUT"
ls -la "$OUT"
