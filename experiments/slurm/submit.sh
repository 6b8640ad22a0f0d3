#!/bin/bash
# Submit a sharded stealth-mtd run to Slurm: a job array of N shards (sweep.sbatch), then a merge
# job that waits for all of them (merge.sbatch, --dependency=afterok).
#   experiments/slurm/submit.sh SCENARIO N OUT [run options, e.g. --trials 10]
# OUT (made absolute; on a shared file system) gets shard-0 .. shard-(N-1), merged/ (the run
# folder), slurm-*.out (the jobs' output) and jobs.env (ARRAY=<id> MERGE=<id>).
# Extra sbatch options for both jobs: SBATCH_OPTS (e.g. "--partition=net --time=4:00:00").
# SMTD: the stealth-mtd executable on the nodes (default: the one on PATH).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 SCENARIO N OUT [run options]" >&2
    exit 2
fi
scenario=$1 n=$2 out=$3
shift 3
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
    echo "$0: N must be a whole number >= 1, got '$n'" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
if [ -f "$scenario" ]; then  # a file: by absolute path (the jobs start elsewhere); else a name
    scenario=$(cd "$(dirname "$scenario")" && pwd)/$(basename "$scenario")
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -e "$out/merged" ] || compgen -G "$out/shard-*" > /dev/null; then
    echo "$0: $out already holds shards or a merged run: choose a new OUT" >&2
    exit 2
fi
export SMTD=${SMTD:-$(command -v stealth-mtd || echo stealth-mtd)}
# shellcheck disable=SC2086  # SBATCH_OPTS is a list of options
array=$(sbatch --parsable ${SBATCH_OPTS:-} --array="0-$((n - 1))" --chdir="$out" \
    --output="$out/slurm-shard-%a.out" --export=ALL \
    "$here/sweep.sbatch" "$scenario" "$n" "$out" "$@")
array=${array%%;*}  # --parsable prints "id" or "id;cluster"
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_OPTS:-} --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --chdir="$out" --output="$out/slurm-merge.out" --export=ALL \
    "$here/merge.sbatch" "$n" "$out")
merge=${merge%%;*}
printf 'ARRAY=%s\nMERGE=%s\n' "$array" "$merge" > "$out/jobs.env"
echo "submitted: array job $array ($n shards of $scenario), merge job $merge -> $out/merged"
