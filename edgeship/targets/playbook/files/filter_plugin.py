"""edgeship's filters for its Ansible role (written by `edgeship ansible init`): the device agent's arguments and
the preflight and soak verdicts come from the edgeship installed beside ansible-core, so `edgeship flash` and
this playbook cannot drift apart."""

from edgeship.targets.playbook import FILTERS


class FilterModule:
    def filters(self):
        return dict(FILTERS)
