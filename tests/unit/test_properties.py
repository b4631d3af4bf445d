"""Properties of the pure parts, over inputs nobody would think of writing by hand (hypothesis)."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mlcube_ssh_ansible.errors import SettingsError
from mlcube_ssh_ansible.render import remote_name
from mlcube_ssh_ansible.settings import (
    AUTHENTICATION_KEYS,
    INTERPRETER_KEYS,
    TOP_KEYS,
    Settings,
    parse_settings,
    remote_path,
)
from tests.unit.test_settings import section

# ------------------------------------------------------------------------------------- parse_settings

BASE: dict[str, Any] = section()  # the valid section the settings tests start from

# What YAML (through OmegaConf) can hand us: scalars, lists and mappings, nested.
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30),
                    # strings close to valid ones: digits, paths, names
                    st.from_regex(r"[0-9]{1,6}", fullmatch=True),
                    st.from_regex(r"[~/.a-z0-9 +-]{0,12}", fullmatch=True))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(INTERPRETER_KEYS + AUTHENTICATION_KEYS)),
                    inner, max_size=4)), max_leaves=12)


def merged(base: dict[str, Any], overrides: dict[Any, Any]) -> dict[Any, Any]:
    """base with overrides: nested mappings merge (so a bad value lands inside interpreter/authentication too)."""
    result: dict[Any, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


overrides = st.dictionaries(st.one_of(st.sampled_from(TOP_KEYS), st.text(max_size=12)), values, max_size=5)


def check_parse(section: dict[Any, Any]) -> None:
    try:
        parsed = parse_settings(section)
    except SettingsError as error:
        message = str(error)
        assert len(message.splitlines()) == 1, message
        assert error.key in message
        assert f"'{error.key}'" in message.splitlines()[0]
    else:
        assert isinstance(parsed, Settings)


@settings(max_examples=400, deadline=None)
@given(overrides)
# Found by reasoning about what pathlib and int() do with odd text; kept as fixed examples.
@example({"port": "\u00b9"})  # str.isdigit() is true for a superscript one, int() refuses it
@example({"authentication": {"identity_file": "~nosuchuser/id"}})  # expanduser() raises RuntimeError
@example({"inventory": "~nosuchuser/hosts.yml", "host": None})
@example({"known_hosts": "~nosuchuser/known_hosts"})
@example({"authentication": {"identity_file": "x" * 300}})  # ENAMETOOLONG from stat()
@example({"colour\nblue": 1})  # an unknown key with a line break in it
def test_parse_settings_raises_only_one_line_settings_errors(extra: dict[Any, Any]) -> None:
    check_parse(merged(BASE, extra))


@settings(max_examples=200, deadline=None)
@given(values)
def test_parse_settings_takes_any_value_for_the_whole_section_or_a_subsection(value: Any) -> None:
    check_parse(value)
    check_parse(merged(BASE, {"interpreter": value}))
    check_parse(merged(BASE, {"authentication": value}))


# ---------------------------------------------------------------------------------------- remote_name

REMOTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@settings(max_examples=500, deadline=None)
@given(st.text())
@example("")
@example("/")
@example("a b;$(rm -rf ~)`x`")
@example("..")
@example("/tmp/" + "é" * 100)
def test_remote_name_is_shell_safe_and_short(path: str) -> None:
    assume("\0" not in path)  # no path has one
    name = remote_name(path)
    assert name
    assert REMOTE_NAME.match(name), name
    assert len(name) <= 49, name


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1).filter(lambda p: "\0" not in p), st.text(min_size=1), st.text(min_size=1))
def test_remote_name_tells_apart_same_basename_in_different_folders(base: str, first: str, second: str) -> None:
    base = base.replace("/", "_")
    one, two = os.path.join("/", first, base), os.path.join("/", second, base)
    assume("\0" not in one + two and os.path.abspath(one) != os.path.abspath(two))
    assume(os.path.basename(os.path.abspath(one)) == os.path.basename(os.path.abspath(two)))
    assert remote_name(one) != remote_name(two)


# ---------------------------------------------------------------------------------------- remote_path

# docs/configuration.md: "absolute or starting with `~/`; only letters, digits and `. _ - + /`; no `..`"
# (`~` alone, the home folder itself, is accepted as well). Written here from that sentence, not as a copy of
# settings.py's regex, so that the two can disagree.
DOCUMENTED_SENTENCE = "absolute or starting with `~/`; only letters, digits and `. _ - + /`; no `..`"
_ALLOWED = set(string.ascii_letters + string.digits + "._-+/")


class _Documented:
    """The documented form of a remote path, as a plain function of the text."""

    @staticmethod
    def fullmatch(text: str) -> bool:
        rest = text[1:] if text.startswith("~") else text
        return (text == "~" or rest.startswith("/")) and set(rest) <= _ALLOWED


DOCUMENTED = _Documented()


def test_the_documented_form_is_still_what_the_docs_say() -> None:
    docs = Path(__file__).resolve().parent.parent.parent / "docs" / "configuration.md"
    assert DOCUMENTED_SENTENCE in docs.read_text()
path_like = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"(~|~/|/)?([A-Za-z0-9._+-]{0,4}|\.\.|\.)(/([A-Za-z0-9._+-]{0,4}|\.\.|\.))*/?", fullmatch=True),
)


@settings(max_examples=1000, deadline=None)
@given(path_like)
@example("~/..")
@example("/a/../b")
@example("~/a/b/..")
@example("..")
@example("~user/x")
@example("~/a b")
@example("/a/b//")
@example("//")
def test_remote_path_accepts_only_the_documented_form(text: str) -> None:
    try:
        result = remote_path(text, "remote_root")
    except SettingsError as error:
        assert error.key == "remote_root"
        assert len(str(error).splitlines()) == 1
        assert text and (not DOCUMENTED.fullmatch(text) or ".." in text.split("/")), text
        return
    if not text:
        assert result == "~/mlcube"
        return
    assert DOCUMENTED.fullmatch(text), text
    assert ".." not in text.split("/")
    assert DOCUMENTED.fullmatch(result), result
    assert ".." not in result.split("/"), result
    assert result == (text.rstrip("/") or "/")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(), st.booleans(), st.lists(st.text(max_size=5), max_size=3), st.floats()))
def test_remote_path_refuses_what_is_not_a_string(value: Any) -> None:
    assume(value is not False and value != 0 and value != [])  # falsy: "not set", so the default applies
    try:
        remote_path(value, "remote_root")
    except SettingsError as error:
        assert error.key == "remote_root"
    else:
        raise AssertionError(f"accepted {value!r}")
