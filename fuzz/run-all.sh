#!/usr/bin/env bash
# Runs every fuzz target for a budget of executions (or seconds), starting
# from the minimized seed corpus kept in fuzz/seeds/TARGET, and prints one
# line per target: executions, seconds, executions per second, corpus size,
# and whether it crashed. Exits non-zero if any target crashed; the crash
# input is left in fuzz/artifacts/TARGET.
#
#   fuzz/run-all.sh                       # 10,000,000 executions per target
#   RUNS=1000000 fuzz/run-all.sh          # fewer
#   SECS=60 fuzz/run-all.sh               # by time instead (no run budget)
#   fuzz/run-all.sh gossip_machine dns_message   # only these targets
#   UPDATE_SEEDS=1 fuzz/run-all.sh        # then minimize the corpus back
#                                         # into fuzz/seeds (keep it small)
#   SANITIZER=none fuzz/run-all.sh        # without AddressSanitizer (built
#                                         # apart, in target/san-none)
#
# AddressSanitizer (cargo fuzz's default) finds memory errors in unsafe
# code; rumor-core forbids unsafe code, so for long runs of its parsers
# and machines the sanitizer is mostly cost (dht_machine: 669 executions
# a second with it, 5,944 without). The panics and failed assertions
# these targets look for are caught either way.
#
# Needs cargo-fuzz (cargo install --locked cargo-fuzz); runs on the stable
# toolchain through RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
runs=${RUNS:-10000000}
secs=${SECS:-}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi
san=()
[ -n "${SANITIZER:-}" ] && san=(-s "$SANITIZER" --target-dir "target/san-$SANITIZER")
cargo fuzz build -O "${san[@]}" >/dev/null 2>&1 || cargo fuzz build -O "${san[@]}"
failed=0
printf '%-22s %12s %8s %10s %7s %s\n' target executions seconds exec/s corpus result
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t"
  cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true
  limit=(-runs="$runs")
  [ -n "$secs" ] && limit=(-max_total_time="$secs")
  log=$(mktemp)
  start=$(date +%s.%N)
  if cargo fuzz run -O "${san[@]}" "$t" "corpus/$t" -- "${limit[@]}" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    failed=1
  fi
  end=$(date +%s.%N)
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  elapsed=$(python3 -c "print(f'{$end-$start:.0f}')")
  rate=$(python3 -c "print(f'{${execs:-0}/max($end-$start,1e-9):.0f}')")
  size=$(ls "corpus/$t" | wc -l)
  printf '%-22s %12s %8s %10s %7s %s\n' "$t" "${execs:-0}" "$elapsed" "$rate" "$size" "$result"
  if [ "$result" = CRASH ]; then
    grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 | sed 's/^/    /'
  fi
  if [ -n "${UPDATE_SEEDS:-}" ] && [ "$result" = ok ]; then
    rm -rf "seeds/$t.new" && mkdir -p "seeds/$t.new"
    cargo fuzz run -O "${san[@]}" "$t" "seeds/$t.new" "corpus/$t" -- -merge=1 >/dev/null 2>&1
    rm -rf "seeds/$t" && mv "seeds/$t.new" "seeds/$t"
  fi
  rm -f "$log"
done
exit $failed
