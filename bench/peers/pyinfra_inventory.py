"""pyinfra inventory: the fleet from the JSON named by $BENCH_HOSTS."""

import json
import os

with open(os.environ["BENCH_HOSTS"]) as _fh:
    _fleet = json.load(_fh)

hosts = [
    (
        h["addr"],
        {
            "ssh_port": h["port"],
            "ssh_user": h["user"],
            "ssh_key": _fleet["key"],
            "ssh_known_hosts_file": _fleet["known_hosts"],
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
            # sshd's default MaxStartups drops some of pyinfra's parallel handshakes
            "ssh_connect_retries": 5,
            "ssh_connect_retry_min_delay": 0.05,
            "ssh_connect_retry_max_delay": 0.3,
        },
    )
    for h in _fleet["hosts"]
]
