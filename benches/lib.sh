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

# peer_env: the passwords and cache directories every tool uses under $work.
peer_env() {
  export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench CAIRN_PASSWORD=bench RUSTIC_PASSWORD=bench \
    RESTIC_CACHE_DIR="$work/restic-cache" BORG_BASE_DIR="$work/borgbase" CAIRN_CACHE_DIR="$work/cairn-cache" \
    XDG_CACHE_HOME="$work/xdg-cache"
}

# restore_cmd TOOL SNAPSHOT: the command line that writes the newest dump.sql of the repository
# $work/series/TOOL to stdout (cairn reads SNAPSHOT by name, as borg does; $cairn is its binary).
restore_cmd() {
  case $1 in
    cairn) echo "'$cairn' -q -r '$work/series/cairn' dump '$2' dump.sql" ;;
    restic) echo "restic -q --repo '$work/series/restic' dump latest dump.sql" ;;
    borg) echo "borg extract --stdout '$work/series/borg::$2'" ;;
    rustic) echo "rustic -r '$work/series/rustic' dump latest:dump.sql" ;;
  esac
}
