# Entry point of the hello example cube, run by busybox sh inside a FROM-scratch image.
#
# MLCube's docker runner calls it as:  hello.sh TASK --param=/mlcube_ioN/path ...
# (one --key=value argument per task input/output, paths already mapped into the container).
# The image holds nothing but /bin/busybox, so every non-builtin command goes through "$bb".
set -eu
bb=/bin/busybox

die() {
    printf 'hello.sh: %s\n' "$*" >&2
    exit 2
}

task="${1:-}"
[ "$#" -gt 0 ] && shift

name_file=""
greeting=""
output_dir=""
seconds_file=""
seconds=""
slept=""
for arg in "$@"; do
    case "$arg" in
        --name_file=*) name_file="${arg#*=}" ;;
        --greeting=*) greeting="${arg#*=}" ;;
        --output_dir=*) output_dir="${arg#*=}" ;;
        --seconds_file=*) seconds_file="${arg#*=}" ;;
        --seconds=*) seconds="${arg#*=}" ;;
        --slept=*) slept="${arg#*=}" ;;
        *) die "unknown argument: $arg" ;;
    esac
done

case "$task" in
    hello)
        [ -n "$name_file" ] || die "hello needs --name_file"
        [ -n "$greeting" ] || die "hello needs --greeting"
        [ -f "$name_file" ] || die "no such name file: $name_file"
        name="$("$bb" cat "$name_file")"
        message="Hello, ${name}!"
        printf '%s\n' "$message" > "$greeting"
        printf '%s\n' "$message"
        ;;
    fail)
        [ -n "$output_dir" ] || die "fail needs --output_dir"
        "$bb" mkdir -p "$output_dir"
        printf 'partial result, written before failing\n' > "$output_dir/partial.txt"
        printf 'fail: failing on purpose with exit status 3\n' >&2
        exit 3
        ;;
    sleep)
        [ -n "$slept" ] || die "sleep needs --slept"
        if [ -z "$seconds" ]; then
            if [ -n "$seconds_file" ] && [ -f "$seconds_file" ]; then
                seconds="$("$bb" cat "$seconds_file")"
            else
                seconds=1
            fi
        fi
        printf 'sleeping %s s\n' "$seconds"
        "$bb" sleep "$seconds"
        printf 'slept %s s\n' "$seconds" > "$slept"
        printf 'slept %s s\n' "$seconds"
        ;;
    *)
        die "unknown task: '$task' (expected hello, fail or sleep)"
        ;;
esac
