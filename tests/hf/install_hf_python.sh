#!/usr/bin/env bash
# install_hf_python.sh — installs the PyPI packages the tests/hf comparisons need (transformers, tokenizers,
# safetensors and their pure-Python dependencies) for Debian's /usr/bin/python3 (whose torch 1.13 they
# use), with `pip install --no-deps --target` into one directory, pinned, quietly. Nothing is installed
# when the directory already holds these versions (CI keeps it between runs).
#   tests/hf/install_hf_python.sh [DIR]     (default: $FMTRAIN_HF_PYTHONPATH, else ~/.cache/fmtrain/hf-python)
# Prints the directory; the tests find it there (tests/hf/hfenv.py) or through FMTRAIN_HF_PYTHONPATH.
# numpy is not installed: numpy 2 in the directory would break Debian's torch 1.13.
set -euo pipefail
dir=${1:-${FMTRAIN_HF_PYTHONPATH:-$HOME/.cache/fmtrain/hf-python}}
pkgs=(transformers==4.40.2 tokenizers==0.19.1 safetensors==0.4.3 huggingface_hub==0.23.5
      regex==2026.11.19 tqdm==4.70.1 filelock==4.3.1 fsspec==2026.9.0 packaging==26.4 pyyaml==6.0.4)
stamp="$dir/.fmtrain-packages"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pkgs[*]}" ]; then
  echo "$dir"
  exit 0
fi
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || { echo "install_hf_python.sh: /usr/bin/python3 has no pip (Debian: python3-pip)" >&2; exit 1; }
mkdir -p "$dir"
/usr/bin/python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade --target "$dir" "${pkgs[@]}" >&2
echo "${pkgs[*]}" > "$stamp"
echo "$dir"
