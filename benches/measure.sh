# Sourced by the benchmark scripts: `measure NAME RUN COMMAND...` runs COMMAND under GNU time
# and appends "NAME wall_s max_rss_kb user_s sys_s" to $WORK/results.txt (WORK must be set).
measure() { # name run command...
    local name=$1 i=$2
    shift 2
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/time.txt" "$@" >/dev/null
    read -r wall rss user sys <"$WORK/time.txt"
    echo "$name $wall $rss $user $sys" >>"$WORK/results.txt"
    echo "   $name run $i: ${wall}s wall, ${user}s user, ${sys}s sys, ${rss} KB" >&2
}
