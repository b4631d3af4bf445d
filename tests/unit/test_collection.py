"""The collection mlcube.ssh as Ansible content: prefixed tags that the shim's tags match."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml

from mlcube_ssh_ansible import assets

ROOT = Path(__file__).resolve().parents[2]
SPECIAL_TAGS = {"always", "never"}


def _tags(node: Any) -> Iterator[str]:
    """Every tag set anywhere in a playbook or task file."""
    if isinstance(node, dict):
        tags = node.get("tags")
        if tags is not None:
            yield from [tags] if isinstance(tags, str) else tags
        for value in node.values():
            yield from _tags(value)
    elif isinstance(node, list):
        for item in node:
            yield from _tags(item)


def playbook_tags(name: str) -> set[str]:
    return set(_tags(yaml.safe_load((ROOT / "playbooks" / f"{name}.yml").read_text())))


def test_every_tag_is_prefixed() -> None:
    files = [*ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/tasks/*.yml")]
    found = {str(path.relative_to(ROOT)): set(_tags(yaml.safe_load(path.read_text()))) for path in files}
    assert found["playbooks/run.yml"] >= {"mlcube_ssh_upload", "mlcube_ssh_remote_run", "mlcube_ssh_fetch"}
    bad = {path: tags for path, tags in found.items()
           if any(not tag.startswith("mlcube_ssh_") and tag not in SPECIAL_TAGS for tag in tags)}
    assert not bad, f"tags must start with mlcube_ssh_ so they never collide in a bigger play: {bad}"


def test_the_shims_tags_are_the_playbooks() -> None:
    """workflow runs parts of run.yml and attach.yml by these tags: a renamed tag would run nothing."""
    assert {assets.TAG_FETCH} <= playbook_tags("run")
    assert {assets.TAG_REMOTE_RUN, assets.TAG_FETCH} <= playbook_tags("attach")


def _ansible_doc(kind: str, names: list[str]) -> dict[str, Any]:
    import json
    import os
    import subprocess
    from pathlib import Path as P

    ran = subprocess.run([str(P(assets.ansible_bin_dir(), "ansible-doc")), "--json", "-t", kind, *names],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": assets.ansible_collections_path()})
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


def test_every_plugin_is_documented_for_ansible_doc() -> None:
    """ansible-doc mlcube.ssh.<module> works for each module (the action plugins' too: follow, synchronize),
    with examples and return values; the lookup and the callback have their documentation."""
    modules = sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py"))
    assert {path.stem for path in (ROOT / "plugins" / "action").glob("*.py")} <= set(modules)
    found = _ansible_doc("module", [f"mlcube.ssh.{name}" for name in modules])
    assert sorted(found) == [f"mlcube.ssh.{name}" for name in modules]
    for name, entry in found.items():
        assert entry["doc"]["short_description"] and entry["doc"]["author"], name
        assert entry["examples"].strip() and entry["return"], name
        assert f"mlcube.ssh.{name.rsplit('.', 1)[1]}:" in entry["examples"], f"{name}: examples use the FQCN"
    for kind, name in (("lookup", "secret"), ("callback", "lifeline")):
        entry = _ansible_doc(kind, [f"mlcube.ssh.{name}"])[f"mlcube.ssh.{name}"]
        assert entry["doc"]["description"], name
