#!/bin/sh
# The GPU acceptance check for real, on a lent GPU machine (python3 with nvidia-ml-py; no agent
# install, no hub dependencies): the checker module from this checkout, over NVML.
#
#   sh benchmarks/device/gpu_acceptance.sh [CHECKER FLAGS...]
#
# Defaults to the lent machine's shape (one H200); flags given are added after the defaults
# (the last of a flag wins), e.g. --min-pcie-gen 5 --min-pcie-width 16, or --dcgm-level 0 to
# skip DCGM where dcgmi is installed. Prints nvidia-smi's view of the same link and ECC mode
# (to compare with NVML's), the acceptance JSON, and the wall time; writes the JSON to
# $OUT/gpu_acceptance.json when OUT is set. Exit status: the checker's (0 accepted, 1 not).
set -u
cd "$(dirname "$0")/../.." || exit 2
out="${OUT:-${TMPDIR:-/tmp}}/gpu_acceptance.json"

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --format=csv --query-gpu=name,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,ecc.mode.current,retired_pages.pending
fi
for tool in dcgmi all_reduce_perf; do
    echo "$tool: $(command -v "$tool" || echo 'not installed')"
done

start=$(date +%s%N)
PYTHONPATH="$PWD" python3 -m edge_agent.gpu.acceptance --backend nvml \
    --expect-count 1 --model H200 "$@" >"$out"
rc=$?
end=$(date +%s%N)

cat "$out"
echo "gpu_acceptance: exit $rc, wall $(( (end - start) / 1000000 )) ms (python start included)"
exit "$rc"
