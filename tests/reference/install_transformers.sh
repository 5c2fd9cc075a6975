#!/usr/bin/env bash
# install_transformers.sh — puts Hugging Face transformers 4.40.2 and its pure-Python needs where
# tests/reference/test_llama.py looks for them: $FM_HF_PYTHONPATH, else
# ${XDG_CACHE_HOME:-~/.cache}/fmtrain/pydeps-transformers-4.40.2. For the tests only (the comparison
# with LlamaForCausalLM); fmtrain itself never needs it.
#
# 4.40.2 is the last version that works with Debian's torch 1.13 (python3-torch). It is installed with
# --no-deps --target next to Debian's packages, never into them: numpy and torch stay Debian's (a
# numpy 2 in that directory would break torch 1.13). Quiet and cached: an existing, importable
# installation is kept; needs the network once (about 15 MB). Exit status: 0 installed or already
# there, 1 the install failed (the tests then skip with the reason).
set -euo pipefail
ver=4.40.2
dir=${FM_HF_PYTHONPATH:-${XDG_CACHE_HOME:-$HOME/.cache}/fmtrain/pydeps-transformers-$ver}
py=/usr/bin/python3
if [ -d "$dir" ] && PYTHONPATH="$dir" "$py" -c "import transformers, sys; sys.exit(transformers.__version__ != '$ver')" 2>/dev/null; then
  exit 0
fi
mkdir -p "$dir"
log=$(mktemp)
if ! "$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$dir" \
     "transformers==$ver" "tokenizers==0.19.1" "safetensors==0.4.3" "huggingface_hub==0.23.5" \
     regex tqdm filelock fsspec packaging pyyaml >"$log" 2>&1; then
  echo "install_transformers.sh: pip could not install transformers $ver into $dir (the Llama"\
       "comparison with Hugging Face will be skipped):" >&2
  tail -5 "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
if ! PYTHONPATH="$dir" "$py" -c "import transformers" 2>/dev/null; then
  echo "install_transformers.sh: transformers $ver was installed into $dir but does not import" >&2
  exit 1
fi
echo "install_transformers.sh: transformers $ver in $dir"
