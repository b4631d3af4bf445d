"""Why a failed task failed: the reason line built from what the module returned (issue 11, point 3).

The results below have the shapes ansible-core 2.19 returns for `command`, a failing module and synchronize;
the integration tests (test_host_faults.py) show the same on real hosts.
"""

from __future__ import annotations

from mlcube_ssh_ansible.report import HOST_KEY_HINT, INTERPRETER_HINT, REASON_LINES, Reporter, _reason


def test_a_failed_command_shows_its_last_stderr_lines_not_the_generic_message() -> None:
    stderr = "\n".join(f"line {n}" for n in range(1, 9)) + "\n\n[notice] A new release of pip is available\n"
    reason = _reason({"rc": 1, "msg": "non-zero return code", "stderr": stderr, "stdout": "Collecting mlcube"})
    assert reason == " | ".join(f"line {n}" for n in range(9 - REASON_LINES, 9))
    assert "non-zero return code" not in reason


def test_a_command_that_only_spoke_on_stdout_shows_stdout() -> None:
    """Debian's venv without ensurepip says why on stdout, with an empty stderr."""
    stdout = ("The virtual environment was not created successfully because ensurepip is not\navailable.  On "
              "Debian/Ubuntu systems, you need to install the python3-venv\npackage using the following command.\n")
    reason = _reason({"rc": 1, "msg": "non-zero return code", "stderr": "", "stdout": stdout})
    assert "ensurepip is not" in reason and "python3-venv" in reason


def test_a_traceback_is_reduced_to_what_it_says() -> None:
    stderr = ('Traceback (most recent call last):\n  File "/x/mlcube/__main__.py", line 3, in <module>\n'
              "    main()\nmlcube.errors.ConfigurationError: docker build failed\n")
    assert _reason({"rc": 1, "msg": "non-zero return code", "stderr": stderr}) == (
        "mlcube.errors.ConfigurationError: docker build failed")


def test_a_full_disk_is_named_even_before_the_last_lines() -> None:
    """rsync's sender reports the broken pipe last; the receiver's 'No space left' comes first."""
    msg = ('rsync: [receiver] write failed on "/home/u/mlcube/c/big.bin": No space left on device (28)\n'
           + "".join(f"rsync: noise {n}\n" for n in range(6))
           + "rsync error: error in file IO (code 11) at receiver.c(381) [receiver=3.2.3]\n"
           "rsync: [sender] write error: Broken pipe (32)\n")
    reason = _reason({"rc": 11, "msg": msg, "failed": True})
    assert reason.startswith('rsync: [receiver] write failed on "/home/u/mlcube/c/big.bin": No space left')
    assert reason.endswith("Broken pipe (32)") and reason.count(" | ") == REASON_LINES


def test_a_module_message_is_kept_and_the_other_hints_still_apply() -> None:
    assert _reason({"msg": "busy: run 1 of this cube is still running"}) == "busy: run 1 of this cube is still running"
    assert _reason({"msg": "Host key verification failed.", "unreachable": True}) == HOST_KEY_HINT
    assert _reason({"rc": 127, "msg": "MODULE FAILURE: No start of json char found\nSee stdout/stderr",
                    "module_stderr": "/bin/sh: 1: /usr/bin/python3: not found\n"}) == INTERPRETER_HINT
    assert _reason({"rc": 2, "msg": "non-zero return code", "stderr": "", "stdout": ""}) == "failed with exit code 2"


def test_the_reporter_keeps_the_reason_for_the_failed_step() -> None:
    lines: list[str] = []
    reporter = Reporter(write=lines.append)
    start = {"event": "runner_on_start", "event_data": {"host": "h1", "role": "mlcube_ssh_python_env"}}
    failed = {"event": "runner_on_failed", "event_data": {
        "host": "h1", "role": "mlcube_ssh_python_env", "task": "Install the missing requirements",
        "res": {"rc": 1, "msg": "non-zero return code", "stderr": "ERROR: No matching distribution found for x==9"}}}
    reporter(start)
    reporter(failed)
    assert reporter.failures() == {"h1": ("python env", "ERROR: No matching distribution found for x==9")}
    assert lines[-1].startswith("h1: python env FAILED")
