# Entry point of the benchmark cube, run by busybox sh inside a FROM-scratch image.
# MLCube's docker runner calls it as:  bench.sh TASK --param=/mlcube_ioN/path ...
set -eu
bb=/bin/busybox

die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 2
}

task="${1:-}"
[ "$#" -gt 0 ] && shift

seconds_file=""
slept=""
out_dir=""
for arg in "$@"; do
    case "$arg" in
        --seconds_file=*) seconds_file="${arg#*=}" ;;
        --slept=*) slept="${arg#*=}" ;;
        --out_dir=*) out_dir="${arg#*=}" ;;
        *) die "unknown argument: $arg" ;;
    esac
done

# write_random DIR BYTES: BYTES of incompressible data in DIR/data.bin (replaced, never appended).
write_random() {
    "$bb" mkdir -p "$1"
    "$bb" head -c "$2" /dev/urandom > "$1/data.bin.tmp"
    "$bb" mv -f "$1/data.bin.tmp" "$1/data.bin"
    printf 'wrote %s bytes\n' "$2"
}

case "$task" in
    line)
        printf 'one line\n'
        ;;
    sleep)
        [ -n "$slept" ] || die "sleep needs --slept"
        seconds=1
        if [ -n "$seconds_file" ] && [ -f "$seconds_file" ]; then
            seconds="$("$bb" cat "$seconds_file")"
        fi
        "$bb" sleep "$seconds"
        printf 'slept %s s\n' "$seconds" > "$slept"
        printf 'slept %s s\n' "$seconds"
        ;;
    tiny)
        [ -n "$out_dir" ] || die "tiny needs --out_dir"
        write_random "$out_dir" 4096
        ;;
    blob)
        [ -n "$out_dir" ] || die "blob needs --out_dir"
        write_random "$out_dir" 104857600
        ;;
    *)
        die "unknown task: '$task' (expected line, sleep, tiny or blob)"
        ;;
esac
