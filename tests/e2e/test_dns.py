"""The VPC resolver: every node serves DNS at the VPC's base address plus two (172.31.0.2 for
the default VPC), task networks (awsvpc and bridge) use it, and it answers tasks' private DNS
names and their reverse names from the control plane's state, with authority; the rest goes
to the host's name servers (none inside a test's namespace: SERVFAIL).

Runs like test_network.py: in a network namespace of the test's own, with real containers."""

import os
import random
import socket
import struct

import pytest

from conftest import isolated, wait_until
from test_network import NET, SERVE, eni, node  # noqa: F401 (the node fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="task networking needs root"),
    pytest.mark.skipif(not isolated(), reason="network tests run inside a network namespace with no route out"),
]

RESOLVER = "172.31.0.2"
TYPES = {"A": 1, "PTR": 12, "SRV": 33, "AAAA": 28}


def query(name, qtype="A", tcp=False, server=RESOLVER):
    """Asks `server` one question; returns (rcode, flags, answer records as (type, rdata bytes))."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", TYPES[qtype], 1)
    if tcp:
        with socket.create_connection((server, 53), timeout=5) as s:
            s.sendall(struct.pack(">H", len(q)) + q)
            n = struct.unpack(">H", s.recv(2))[0]
            data = b""
            while len(data) < n:
                data += s.recv(n - len(data))
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(q, (server, 53))
            data = s.recv(65535)
    rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    assert rid == qid
    i = 12
    for _ in range(qd):
        i = skip_name(data, i) + 4
    answers = []
    for _ in range(an):
        i = skip_name(data, i)
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[i:i + 10])
        answers.append((rtype, data[i + 10:i + 10 + rdlen]))
        i += 10 + rdlen
    return flags & 0xF, flags, answers


def skip_name(data, i):
    while True:
        n = data[i]
        if n == 0:
            return i + 1
        if n & 0xC0:
            return i + 2
        i += n + 1


def ipv4s(answers):
    return sorted(socket.inet_ntoa(r) for t, r in answers if t == 1)


def private_name(ip):
    return f"ip-{ip.replace('.', '-')}.ec2.internal"


def test_private_names_resolve_inside_tasks_and_from_the_host(node):
    fam = node.register([{"name": "app", "command": ["sh", "-c", SERVE]}])
    a = node.run(fam)
    ip_a = eni(node.wait(a, "RUNNING"))["privateIPv4Address"]
    name_a = private_name(ip_a)

    # From the host, with authority, over UDP and TCP; the reverse name too.
    rcode, flags, ans = query(name_a)
    assert (rcode, ipv4s(ans)) == (0, [ip_a]) and flags & 0x0400, "an authoritative answer"
    assert ipv4s(query(name_a, tcp=True)[2]) == [ip_a]
    rev = ".".join(reversed(ip_a.split("."))) + ".in-addr.arpa"
    rcode, _, ans = query(rev, "PTR")
    assert rcode == 0 and ans and b"ip-" in ans[0][1], ans
    # A name of ours that does not exist: NXDOMAIN; one that exists without the type: NODATA.
    assert query(private_name("172.31.9.9"))[0] == 3
    rcode, _, ans = query(name_a, "AAAA")
    assert (rcode, ans) == (0, [])
    # Not ours, and no upstream in the test's namespace: SERVFAIL.
    assert query("example.com")[0] == 2

    # Inside an awsvpc task and a bridge task: resolv.conf points at the resolver.
    for mode, run in (("awsvpc", node.run), ("bridge", node.run_ec2)):
        cli = node.register([{"name": "cli", "command": ["sh", "-c",
                              f"cat /etc/resolv.conf; nslookup {name_a} && nslookup {ip_a}"]}], mode=mode)
        b = run(cli)
        tb = node.wait(b, "STOPPED")
        out = node.logs(b)
        assert tb["containers"][0]["exitCode"] == 0, (mode, tb.get("stoppedReason"), out)
        assert f"nameserver {RESOLVER}" in out and "search ec2.internal" in out, out
        assert ip_a in out and name_a in out, out

    # A stopped task's name goes within a second.
    node.ecs.stop_task(cluster="default", task=a)
    node.wait(a, "STOPPED")
    wait_until(lambda: query(name_a)[0] == 3, timeout=1.5, interval=0.05, what="the stopped task's name gone")


def local_namespace(node):
    """Cloud Map's client and the id of a new private DNS namespace `local`."""
    sd = node.e.client("servicediscovery")
    op = sd.create_private_dns_namespace(Name="local", Vpc="vpc-12345678")["OperationId"]
    ns = wait_until(lambda: (o := sd.get_operation(OperationId=op)["Operation"])["Status"] == "SUCCESS" and o,
                    what="the namespace created")["Targets"]["NAMESPACE"]
    return sd, ns


def srv_ports(answers):
    return sorted(struct.unpack(">HHH", r[:6])[2] for t, r in answers if t == 33)


def test_cloud_map_names_resolve_with_health_and_changes(node):
    sd, ns = local_namespace(node)
    svc = sd.create_service(Name="api", NamespaceId=ns, HealthCheckCustomConfig={},
                            DnsConfig={"RoutingPolicy": "MULTIVALUE",
                                       "DnsRecords": [{"Type": "A", "TTL": 10}, {"Type": "SRV", "TTL": 10}]})["Service"]
    for i, port in ((5, 8080), (6, 8081)):
        sd.register_instance(ServiceId=svc["Id"], InstanceId=f"i{i}",
                             Attributes={"AWS_INSTANCE_IPV4": f"172.31.5.{i}", "AWS_INSTANCE_PORT": str(port)})
    wait_until(lambda: ipv4s(query("api.local")[2]) == ["172.31.5.5", "172.31.5.6"], timeout=1,
               what="both instances in DNS")
    rcode, flags, ans = query("api.local", "SRV", tcp=True)
    assert (rcode, srv_ports(ans)) == (0, [8080, 8081]) and flags & 0x0400
    assert ipv4s(query("i5.api.local")[2]) == ["172.31.5.5"], "an SRV target has the instance's address"
    assert query("web.local")[0] == 3, "a service that does not exist: NXDOMAIN"
    assert query("api.local", "AAAA")[:3:2] == (0, []), "no AAAA records: NODATA"

    # Unhealthy instances leave the answer (while one is healthy); deregistered ones too.
    sd.update_instance_custom_health_status(ServiceId=svc["Id"], InstanceId="i5", Status="UNHEALTHY")
    wait_until(lambda: ipv4s(query("api.local")[2]) == ["172.31.5.6"], timeout=1, what="the unhealthy one gone")
    sd.update_instance_custom_health_status(ServiceId=svc["Id"], InstanceId="i5", Status="HEALTHY")
    sd.deregister_instance(ServiceId=svc["Id"], InstanceId="i6")
    wait_until(lambda: ipv4s(query("api.local")[2]) == ["172.31.5.5"], timeout=1, what="the deregistered one gone")

    # Inside a task: the namespace's names through the resolver in resolv.conf.
    cli = node.register([{"name": "cli", "command": ["sh", "-c", "nslookup api.local && nslookup -type=SRV api.local"]}])
    b = node.run(cli)
    tb = node.wait(b, "STOPPED")
    out = node.logs(b)
    assert tb["containers"][0]["exitCode"] == 0, (tb.get("stoppedReason"), out)
    assert "172.31.5.5" in out and "8080" in out, out


HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"


def test_service_tasks_register_in_cloud_map_and_resolve_in_other_tasks(node):
    from test_deployments import task_pids
    sd, ns = local_namespace(node)
    cm = sd.create_service(Name="api", NamespaceId=ns, HealthCheckCustomConfig={},
                           DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 10}, {"Type": "SRV", "TTL": 10}]})["Service"]
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD], "portMappings": [{"containerPort": 8080}],
                          "healthCheck": {"command": ["CMD-SHELL", "test ! -e /sick"], "interval": 5, "timeout": 2,
                                          "retries": 1}}])
    ecs = node.ecs
    svc = ecs.create_service(cluster="default", serviceName="api", taskDefinition=fam, desiredCount=2,
                             launchType="FARGATE", networkConfiguration=NET,
                             serviceRegistries=[{"registryArn": cm["Arn"], "containerName": "web",
                                                 "containerPort": 8080}])["service"]
    assert svc["serviceRegistries"] == [{"registryArn": cm["Arn"], "containerName": "web", "containerPort": 8080}]

    def healthy_tasks():
        arns = ecs.list_tasks(cluster="default", serviceName="api")["taskArns"]
        ts = ecs.describe_tasks(cluster="default", tasks=arns)["tasks"] if arns else []
        return [t for t in ts if t["lastStatus"] == "RUNNING" and t.get("healthStatus") == "HEALTHY"]
    ts = wait_until(lambda: len(h := healthy_tasks()) == 2 and h, timeout=60, what="2 healthy tasks")
    ips = sorted(eni(t)["privateIPv4Address"] for t in ts)
    wait_until(lambda: ipv4s(query("api.local")[2]) == ips, timeout=2, what="both tasks in DNS")
    assert srv_ports(query("api.local", "SRV")[2]) == [8080, 8080]

    # The instances ECS registered: the task ids, with ECS's attributes.
    insts = {i["Id"]: i["Attributes"] for i in sd.list_instances(ServiceId=cm["Id"])["Instances"]}
    assert sorted(insts) == sorted(t["taskArn"].rsplit("/", 1)[1] for t in ts)
    a = next(iter(insts.values()))
    assert a["AWS_INSTANCE_PORT"] == "8080" and a["ECS_CLUSTER_NAME"] == "default"
    assert a["ECS_SERVICE_NAME"] == "api" and a["ECS_TASK_DEFINITION_FAMILY"] == fam
    assert a["REGION"] == "us-east-1" and a["AVAILABILITY_ZONE"].startswith("us-east-1")

    # A task of another service finds every healthy task by name and reaches the service.
    cli = node.register([{"name": "cli", "command": ["sh", "-c", "nslookup api.local && nslookup -type=SRV api.local"
                          " && wget -q -O- http://api.local:8080/ && echo fetched-ok; sleep 600"]}])
    ecs.create_service(cluster="default", serviceName="cli", taskDefinition=cli, desiredCount=1,
                       launchType="FARGATE", networkConfiguration=NET)

    def cli_out():
        arns = ecs.list_tasks(cluster="default", serviceName="cli")["taskArns"]
        return arns and "fetched-ok" in (o := node.logs(arns[0])) and o
    out = wait_until(cli_out, timeout=60, what="the other service's task fetching api.local")
    assert all(ip in out for ip in ips) and out.count("8080") >= 2, out
    ecs.update_service(cluster="default", service="cli", desiredCount=0)

    # A failing health check takes the task's address out.
    sick = ts[0]
    open(f"/proc/{min(task_pids(sick['taskArn']))}/root/sick", "w").close()
    sick_ip = eni(sick)["privateIPv4Address"]
    wait_until(lambda: sick_ip not in ipv4s(query("api.local")[2]), timeout=20, what="the sick task out of DNS")

    # A stopped task's address goes within a second of StopTask.
    other = ts[1]
    other_ip = eni(other)["privateIPv4Address"]
    ecs.stop_task(cluster="default", task=other["taskArn"])
    wait_until(lambda: other_ip not in ipv4s(query("api.local")[2]), timeout=1, interval=0.02,
               what="the stopped task out of DNS")

    # The service keeps 2 tasks, and DNS follows: the replacements' addresses.
    ts = wait_until(lambda: len(h := healthy_tasks()) == 2 and h, timeout=90, what="2 healthy replacements")
    ips = sorted(eni(t)["privateIPv4Address"] for t in ts)
    wait_until(lambda: ipv4s(query("api.local")[2]) == ips, timeout=2, what="the replacements in DNS")

    # Scaled to 0, the service leaves no instance behind.
    ecs.update_service(cluster="default", service="api", desiredCount=0)
    wait_until(lambda: not sd.list_instances(ServiceId=cm["Id"])["Instances"], timeout=30, what="no instance left")
    assert query("api.local")[0] == 0 and not query("api.local")[2]


def test_bridge_mode_service_tasks_register_srv_records_on_their_host_port(node):
    sd, ns = local_namespace(node)
    cm = sd.create_service(Name="legacy", NamespaceId=ns,
                           DnsConfig={"DnsRecords": [{"Type": "SRV", "TTL": 10}]})["Service"]
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD],
                          "portMappings": [{"containerPort": 8080, "hostPort": 0}]}], mode="bridge",
                        requiresCompatibilities=["EC2"])
    node.ecs.create_service(cluster="ec2", serviceName="legacy", taskDefinition=fam, desiredCount=1,
                            launchType="EC2", serviceRegistries=[{"registryArn": cm["Arn"], "containerName": "web",
                                                                  "containerPort": 8080}])
    arn = wait_until(lambda: node.ecs.list_tasks(cluster="ec2", serviceName="legacy")["taskArns"], timeout=30,
                     what="the task")[0]
    t = node.wait(arn, "RUNNING")
    port = t["containers"][0]["networkBindings"][0]["hostPort"]
    tid = arn.rsplit("/", 1)[1]
    ans = wait_until(lambda: query("legacy.local", "SRV")[2], timeout=2, what="the SRV record")
    assert srv_ports(ans) == [port]
    # The SRV target is the task's instance name, at its node's address (the VPC gateway).
    assert ipv4s(query(f"{tid}.legacy.local")[2]) == ["172.31.0.1"]
    from test_network import fetch
    assert fetch(f"http://172.31.0.1:{port}/")
