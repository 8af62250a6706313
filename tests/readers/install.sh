#!/usr/bin/env bash
# Create the virtual environment of one third-party reader: tests/readers/install.sh NAME [DIR]
# NAME is datumaro, fiftyone or mmseg (requirements in tests/readers/NAME.txt, one pip call per
# line, in order); DIR defaults to $READER_VENVS, else .venvs/ in the repository. The file
# DIR/NAME/complete marks a finished install (tests/reader_envs.py looks for it).
set -euo pipefail
name=$1
here=$(cd "$(dirname "$0")" && pwd)
dir=${2:-${READER_VENVS:-$here/../../.venvs}}
start=$(date +%s)
rm -rf "${dir:?}/$name"
python3.11 -m venv "$dir/$name"
grep -v '^#' "$here/$name.txt" | while read -r line; do
  # shellcheck disable=SC2086  # a line may list several requirements
  [ -n "$line" ] && "$dir/$name/bin/python" -m pip install -q $line
done
cp "$here/$name.txt" "$dir/$name/complete"
echo "$name: installed in $(( $(date +%s) - start )) s"
