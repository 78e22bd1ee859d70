#!/bin/sh
# Install torch into a virtual environment without a surprise: the CPU build unless CUDA is asked for.
#
#   deploy/install-torch.sh PIP [cpu|cuda]        e.g. deploy/install-torch.sh .venv/bin/pip cpu
#
# cpu (default): torch==$TORCH_VERSION+cpu, the CPU-only build (about 200 MB): a local wheel that
#   pip's find-links holds when there is one, else from PyTorch's CPU index ($TORCH_CPU_INDEX).
#   The +cpu pin means pip cannot fall back to the multi-GB CUDA build of the public index.
# cuda: torch==$TORCH_VERSION from the public index, which on Linux x86-64 is the CUDA build
#   (several GB; for training on an NVIDIA GPU).
# TORCH_PIP_OPTS: extra options for pip install (the test passes --dry-run --report FILE).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 PIP [cpu|cuda]" >&2; exit 2; }
PIP=$1
KIND=${2:-cpu}
VERSION=${TORCH_VERSION:-2.13.0}
INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
OPTS=${TORCH_PIP_OPTS:-}
case $KIND in
  cpu)
    # shellcheck disable=SC2086
    if $PIP install -q $OPTS --no-index --no-deps "torch==$VERSION+cpu" 2>/dev/null; then
      echo "torch $VERSION+cpu: a local wheel"
      $PIP install -q $OPTS "torch==$VERSION+cpu"  # and its dependencies
    else
      echo "torch $VERSION+cpu: from $INDEX"
      $PIP install -q $OPTS "torch==$VERSION+cpu" --extra-index-url "$INDEX" || {
        echo "no CPU build of torch $VERSION for this machine at $INDEX; TORCH=cuda installs the public" \
             "index's build instead (on Linux x86-64 the CUDA one, several GB)" >&2; exit 1; }
    fi;;
  cuda)
    echo "torch $VERSION: the public index's build (CUDA on Linux x86-64, several GB)"
    # shellcheck disable=SC2086
    $PIP install -q $OPTS "torch==$VERSION";;
  *)
    echo "TORCH must be cpu or cuda, not '$KIND'" >&2; exit 2;;
esac
