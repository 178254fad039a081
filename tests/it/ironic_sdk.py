"""Drives kiln's Ironic API with openstacksdk, as tests/it/ironic.rs asks.

Usage: ironic_sdk.py URL SCENARIO [ARGS...]; prints one JSON object per
line for the Rust test to check against `kiln node show` on the same site.
Every wait is bounded by a timeout; any failure exits non-zero with the
exception on stderr.
"""
import json
import sys

import openstack
from openstack import exceptions

TIMEOUT = 120


def connect(url, user=None, password=None):
    if user is None:
        return openstack.connection.Connection(
            auth_type='none', auth={'endpoint': url}, baremetal_endpoint_override=url)
    return openstack.connection.Connection(
        auth_type='http_basic',
        auth={'username': user, 'password': password, 'endpoint': url},
        baremetal_endpoint_override=url)


def say(**kw):
    print(json.dumps(kw), flush=True)


def lifecycle(conn, name):
    """create_node, then manage, provide, active, deleted, each waited for."""
    node = conn.baremetal.create_node(driver='fake-hardware', name=name, properties={'cpus': 8})
    say(step='create', uuid=node.id, provision_state=node.provision_state, driver=node.driver)
    for target in ('manage', 'provide', 'active', 'deleted'):
        node = conn.baremetal.set_node_provision_state(node, target, wait=True, timeout=TIMEOUT)
        say(step=target, provision_state=node.provision_state, target=node.target_provision_state)
    for power in ('power on', 'power off'):
        conn.baremetal.set_node_power_state(node, power, wait=True, timeout=TIMEOUT)
        say(step=power, power_state=conn.baremetal.get_node(node.id).power_state)


def many(conn, prefix, count):
    """count nodes created, managed and provided, waited for together."""
    nodes = [conn.baremetal.create_node(driver='fake-hardware', name=f'{prefix}{i}') for i in range(count)]
    for target, state in (('manage', 'manageable'), ('provide', 'available')):
        for n in nodes:
            conn.baremetal.set_node_provision_state(n, target)
        done = conn.baremetal.wait_for_nodes_provision_state(nodes, state, timeout=TIMEOUT)
        say(step=target, states=sorted({n.provision_state for n in done}), count=len(done))
    listed = [n for n in conn.baremetal.nodes(limit=7) if n.name.startswith(prefix)]
    say(step='list', count=len(listed), uuids=len({n.id for n in listed}))


def locked(conn, name):
    """A change of a node a running task holds: 409, naming the holder."""
    try:
        conn.baremetal.update_node(name, retry_on_conflict=False, properties={'x': '1'})
        say(step='update', status=200)
    except exceptions.ConflictException as e:
        say(step='update', status=e.status_code, message=str(e))


def retried(conn, name):
    """A target on a node a short task holds: openstacksdk retries the 409s
    until the task ends, then the node goes on."""
    node = conn.baremetal.set_node_provision_state(name, 'manage', wait=True, timeout=TIMEOUT)
    say(step='manage', provision_state=node.provision_state)


def patch(conn, name):
    """JSON patches of extra and instance_info (nested paths, whole
    objects, removals) and a rename, as openstacksdk sends them."""
    node = conn.baremetal.patch_node(name, [
        {'op': 'add', 'path': '/extra', 'value': {'rack': {'row': 3, 'slot': 'a'}, 'tags': ['x']}},
        {'op': 'add', 'path': '/instance_info/image_url', 'value': 'http://127.0.0.1:1/a.iso'},
        {'op': 'add', 'path': '/instance_info/capabilities', 'value': {'boot_mode': 'uefi'}},
    ])
    say(step='add', extra=node.extra, instance_info=node.instance_info)
    node = conn.baremetal.patch_node(node, [
        {'op': 'replace', 'path': '/extra/rack/slot', 'value': 'b'},
        {'op': 'add', 'path': '/extra/tags/-', 'value': 'y'},
        {'op': 'remove', 'path': '/instance_info/capabilities'},
        {'op': 'replace', 'path': '/name', 'value': name + '-renamed'},
    ])
    say(step='replace', name=node.name, extra=node.extra, instance_info=node.instance_info)
    node = conn.baremetal.update_node(node, extra={'only': True})
    say(step='update', extra=node.extra)
    try:
        conn.baremetal.patch_node(node, [{'op': 'remove', 'path': '/extra/missing'}])
        say(step='bad', status=200)
    except exceptions.BadRequestException as e:
        say(step='bad', status=e.status_code, message=str(e))
    node = conn.baremetal.get_node(node.id)
    say(step='get', name=node.name, extra=node.extra, instance_info=node.instance_info)


def main():
    url, scenario, *args = sys.argv[1:]
    user = password = None
    if args and args[0].startswith('--user='):
        user, password = args.pop(0)[len('--user='):].split(':', 1)
    conn = connect(url, user, password)
    if scenario == 'lifecycle':
        lifecycle(conn, args[0])
    elif scenario == 'many':
        many(conn, args[0], int(args[1]))
    elif scenario == 'locked':
        locked(conn, args[0])
    elif scenario == 'retried':
        retried(conn, args[0])
    elif scenario == 'patch':
        patch(conn, args[0])
    elif scenario == 'list':
        say(step='list', names=sorted(n.name for n in conn.baremetal.nodes()))
    else:
        sys.exit(f'unknown scenario {scenario}')


if __name__ == '__main__':
    main()
