# Shared by the benchmark scripts (sourced; they set $work first).

# run CMD...: runs CMD (stdin from $IN if set), prints "seconds peak_rss_kb"
run() {
  local out="$work/time.out"
  if [ -n "${IN:-}" ]; then /usr/bin/time -o "$out" -f "%e %M" "$@" < "$IN" > /dev/null 2>"$work/err.log" || { cat "$work/err.log" >&2; return 1; }
  else /usr/bin/time -o "$out" -f "%e %M" "$@" > /dev/null 2>"$work/err.log" || { cat "$work/err.log" >&2; return 1; }; fi
  cat "$out"
}
size() { du -sb "$1" | cut -f1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
