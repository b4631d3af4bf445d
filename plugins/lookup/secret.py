# Copyright: mlcube-ssh-ansible developers. Apache-2.0.
"""Values of the controller's secret environment variables, read without writing them anywhere.

Run by mlcube-ssh-ansible, Ansible's environment does not hold the values (ansible-runner writes that whole
environment into its artifacts): the runner's own process serves them over a Unix socket in its private
folder or Linux's abstract namespace (only the same user may use it), named by MLCUBE_SSH_SECRETS_SOCKET,
and only the names it offers (its `secrets` setting). Run by plain ansible-playbook, the values come from
ansible-playbook's own environment.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: secret
short_description: Values of controller environment variables named as secrets, as one dict
description:
  - Returns one dict, name to value, for the names given as terms. A name that is not set fails with a
    message that names it (never a value).
  - With O(missing), returns the list of the names that are not set (or not offered) instead, and never
    reads a value.
  - Run by mlcube-ssh-ansible, the values come over a Unix socket from the process that started Ansible
    (named by the environment variable C(MLCUBE_SSH_SECRETS_SOCKET)), and only the names it offers. Run by
    plain ansible-playbook, they come from ansible-playbook's own environment.
version_added: 0.1.0
author: mlcube-ssh-ansible developers (!UNKNOWN)
options:
  _terms:
    description: Environment variable names.
    type: list
    elements: str
    required: true
  missing:
    description: Return the missing names instead of the values.
    type: bool
    default: false
notes:
  - The values are marked unsafe, so Ansible never templates them. Pass them only to options declared
    C(no_log), as M(mlcube.ssh.launch) declares O(mlcube.ssh.launch#module:secrets).
"""

EXAMPLES = r"""
- name: Start a run whose task gets HF_TOKEN in its environment
  mlcube.ssh.launch:
    argv: [python3, -m, mlcube, run, --mlcube=., --platform=docker, --task=train]
    chdir: ~/mlcube/hello-1a2b3c4d
    run_dir: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/runs/20250101-120000
    lock: ~/mlcube/.mlcube-ssh-ansible/hello-1a2b3c4d/run.lock
    secrets: "{{ lookup('mlcube.ssh.secret', 'HF_TOKEN') }}"

- name: Fail before touching any host when a secret is not set
  ansible.builtin.assert:
    that: lookup('mlcube.ssh.secret', 'HF_TOKEN', 'WANDB_API_KEY', missing=true) | length == 0
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_raw:
  description:
    - One dict, name to value; or, with O(missing), the list of the names that are not set.
  type: list
  elements: raw
"""

import json
import os
import socket
from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase
from ansible.utils.unsafe_proxy import wrap_var

SOCKET_VARIABLE = "MLCUBE_SSH_SECRETS_SOCKET"


def _ask(path: str, names: list[str]) -> dict[str, Any]:
    """The runner's answer: {"values": {...}, "missing": [...]} for `names`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect("\0" + path[1:] if path.startswith("@") else path)  # @: Linux's abstract namespace
        client.sendall(json.dumps({"names": names}).encode() + b"\n")
        client.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


class LookupModule(LookupBase):
    """lookup('mlcube.ssh.secret', 'HF_TOKEN', 'WANDB_API_KEY') -> {'HF_TOKEN': ..., 'WANDB_API_KEY': ...}"""

    def run(self, terms: list[Any], variables: dict[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        self.set_options(var_options=variables, direct=kwargs)
        names: list[str] = []
        for term in terms:  # names, or lists of names
            names += [str(item) for item in term] if isinstance(term, (list, tuple)) else [str(term)]
        path = os.environ.get(SOCKET_VARIABLE)
        if path:
            try:
                answer = _ask(path, names)
            except (OSError, ValueError) as error:
                raise AnsibleError(f"cannot read the secrets from mlcube-ssh-ansible ({error})") from None
            values, missing = answer.get("values") or {}, list(answer.get("missing") or [])
        else:
            values = {name: os.environ[name] for name in names if name in os.environ}
            missing = [name for name in names if name not in os.environ]
        if self.get_option("missing"):
            return [missing]
        if missing:
            raise AnsibleError("secret(s) " + ", ".join(missing) + " not set on the controller: export them, or "
                               "list them in the platform's `secrets` setting (mlcube-ssh-ansible offers only those)")
        return [wrap_var(values)]
