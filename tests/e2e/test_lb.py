"""Elastic Load Balancing v2's data plane with ECS services behind it: an ALB and an NLB get
addresses in the VPC (their DNS names resolve to them through the VPC resolver), their
listeners carry real traffic to real containers, ECS registers its services' tasks as
targets, counts a task healthy once its target groups say so, replaces a task they find
unhealthy, and drains a task before it stops it.

Like test_dns.py, these tests run in a network namespace of their own with no route out."""

import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import isolated, wait_until
from test_dns import ipv4s, query
from test_network import NET, Node, eni, own_netns
from test_deployments import task_pids

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="task networking needs root")
needs_isolation = pytest.mark.skipif(not isolated(), reason="network tests run inside a network namespace with no route out")

# Answers its host name on /, "api <host name>" under /api/, and /health while /www/health
# exists. It ignores SIGTERM (pid 1 without a handler), so it serves until killed after its
# stopTimeout: requests it gets while draining are answered.
HTTPD = ("mkdir -p /www/api && hostname > /www/index.html && echo \"api $(hostname)\" > /www/api/x "
         "&& echo ok > /www/health && exec httpd -f -p 8080 -h /www")


@pytest.fixture
def lb_node(tmp_path, request):
    with own_netns():
        n = Node(tmp_path, extra_args=getattr(request, "param", ()))
        try:
            yield n
        finally:
            n.stop_all()


def fetch(url, timeout=3):
    """(status, body) or (None, error). HTTPS certificates are not checked."""
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=insecure) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def subnets(node):
    ec2 = node.e.client("ec2")
    return [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]


def alb(node, name="web"):
    elb = node.e.client("elbv2")
    lb = elb.create_load_balancer(Name=name, Subnets=subnets(node), Type="application")["LoadBalancers"][0]
    wait_until(lambda: elb.describe_load_balancers(Names=[name])["LoadBalancers"][0]["State"]["Code"] == "active",
               timeout=30, what="the load balancer active")
    return lb


def target_group(node, name, target_type="ip", protocol="HTTP", port=8080, path="/health", delay="2"):
    elb = node.e.client("elbv2")
    kw = dict(Name=name, Protocol=protocol, Port=port, VpcId=node.e.client("ec2").describe_vpcs()["Vpcs"][0]["VpcId"],
              TargetType=target_type, HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
              HealthyThresholdCount=2, UnhealthyThresholdCount=2)
    if protocol in ("HTTP", "HTTPS"):
        kw["HealthCheckPath"] = path
    tg = elb.create_target_group(**kw)["TargetGroups"][0]
    elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": delay}])
    return tg["TargetGroupArn"]


def healthy_targets(node, tg):
    elb = node.e.client("elbv2")
    return [d for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
            if d["TargetHealth"]["State"] == "healthy"]


def running(ecs, service, cluster="default"):
    arns = ecs.list_tasks(cluster=cluster, serviceName=service)["taskArns"]
    ts = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
    return [t for t in ts if t["lastStatus"] == "RUNNING"]


def lb_address(lb):
    """The load balancer's address, through its DNS name at the VPC resolver."""
    return wait_until(lambda: ipv4s(query(lb["DNSName"])[2]), timeout=10, what="the load balancer's name in DNS")[0]


class Load:
    """A bounded loop of requests in a thread, counting failures."""

    def __init__(self, url, seconds=300):
        self.url, self.failures, self.ok, self.stop = url, [], 0, threading.Event()
        self.deadline = time.time() + seconds
        self.th = threading.Thread(target=self.loop)
        self.th.start()

    def loop(self):
        while not self.stop.is_set() and time.time() < self.deadline:
            status, body = fetch(self.url)
            if status == 200:
                self.ok += 1
            else:
                self.failures.append((time.time(), status, body[:200]))
            time.sleep(0.01)

    def done(self):
        self.stop.set()
        self.th.join()
        return self


@needs_root
@needs_isolation
def test_service_behind_an_alb_spreads_routes_replaces_and_rolls_without_failures(lb_node):
    node = lb_node
    ecs, elb = node.ecs, node.e.client("elbv2")
    lb = alb(node)
    assert lb["DNSName"].startswith("web-") and lb["DNSName"].endswith(".us-east-1.elb.amazonaws.com")
    web_tg = target_group(node, "web")
    api_tg = target_group(node, "api")
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": web_tg}])["Listeners"][0]
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD],
                          "portMappings": [{"containerPort": 8080}]}])

    def service(name, tg, count):
        ecs.create_service(cluster="default", serviceName=name, taskDefinition=fam, desiredCount=count,
                           launchType="FARGATE", networkConfiguration=NET, healthCheckGracePeriodSeconds=0,
                           loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}])
    service("web", web_tg, 3)
    ts = wait_until(lambda: len(r := running(ecs, "web")) == 3 and r, timeout=60, what="3 web tasks")
    # ECS registers each task's ENI address; the targets turn healthy after two probes.
    ips = sorted(eni(t)["privateIPv4Address"] for t in ts)
    wait_until(lambda: sorted(d["Target"]["Id"] for d in healthy_targets(node, web_tg)) == ips, timeout=40,
               what="the 3 tasks healthy in the target group")
    [d] = [d for d in elb.describe_target_health(TargetGroupArn=web_tg)["TargetHealthDescriptions"]][:1]
    assert d["Target"]["Port"] == 8080

    # Through the load balancer's DNS name: requests spread over all 3.
    ip = lb_address(lb)
    names = {eni(t)["privateDnsName"].split(".")[0] for t in ts}
    seen = set()
    wait_until(lambda: seen.add(fetch(f"http://{ip}/")[1].split(".")[0]) or names <= seen, timeout=10,
               what=f"all 3 tasks answering ({names}; {seen})")
    # The deployment counts them healthy through the target group: it completes.
    wait_until(lambda: ecs.describe_services(cluster="default", services=["web"])["services"][0]["deployments"][0][
        "rolloutState"] == "COMPLETED", timeout=30, what="the first deployment completed")

    # /api/* goes to a second service.
    # (ECS refuses a target group no listener or rule forwards to.)
    elb.create_rule(ListenerArn=listener["ListenerArn"], Priority=10,
                    Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}],
                    Actions=[{"Type": "forward", "TargetGroupArn": api_tg}])
    service("api", api_tg, 1)
    wait_until(lambda: healthy_targets(node, api_tg), timeout=60, what="the api task healthy")
    [api_task] = running(ecs, "api")
    api_name = eni(api_task)["privateDnsName"]
    assert fetch(f"http://{ip}/api/x") == (200, f"api {api_name}")
    assert fetch(f"http://{ip}/")[1].split(".")[0] in names
    # An HTTPS listener: there is no ACM, an ARN that names no file gets a self-signed
    # certificate; the same rules apply behind it.
    https = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=443,
                                Certificates=[{"CertificateArn": "arn:aws:acm:us-east-1:000000000000:certificate/x"}],
                                DefaultActions=[{"Type": "forward", "TargetGroupArn": web_tg}])["Listeners"][0]
    assert https["SslPolicy"]
    wait_until(lambda: fetch(f"https://{ip}/")[1].split(".")[0] in names, timeout=10, what="HTTPS through the ALB")
    elb.delete_listener(ListenerArn=https["ListenerArn"])

    # A rolling update of web under load: no request fails.
    load = Load(f"http://{ip}/")
    try:
        # The load runs before the update starts (the count below is then about the rollout,
        # not about how fast a loaded machine started the thread).
        wait_until(lambda: load.ok >= 20 or load.failures, timeout=30, what="the load running")
        before = load.ok
        ecs.update_service(cluster="default", service="web", forceNewDeployment=True)

        def completed():
            s = ecs.describe_services(cluster="default", services=["web"])["services"][0]
            return len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED" and s
        wait_until(completed, timeout=180, interval=0.5, what="the rolling update completed")
    finally:
        load.done()
    assert load.failures == [], load.failures[:5]
    assert load.ok > before + 10, (before, load.ok)
    # The load balancer's counters (AWS/ApplicationELB names) reach the server, kept for
    # CloudWatch: every request of the loop is counted, for the load balancer and its group.
    lb_dim = "app/web/" + lb["LoadBalancerArn"].rsplit("/", 1)[1]
    tg_dim = "targetgroup/web/" + web_tg.rsplit("/", 1)[1]

    def counted():
        m = json.loads(urllib.request.urlopen(node.e.endpoint + "/_estiba/lb-metrics", timeout=5).read())
        lbm, tgm = m["loadBalancers"].get(lb_dim, {}), m["targetGroups"].get(tg_dim, {})
        return lbm.get("RequestCount", 0) >= load.ok and tgm.get("HTTPCode_Target_2XX_Count", 0) >= load.ok and m
    m = wait_until(counted, timeout=30, what="the load balancer's counters")
    assert m["loadBalancers"][lb_dim].get("HTTPCode_ELB_5XX_Count", 0) == 0, m
    assert m["targetGroups"][tg_dim]["TargetResponseTimeUsSum"] > 0, m
    new = running(ecs, "web")
    assert not {t["taskArn"] for t in new} & {t["taskArn"] for t in ts}, "every web task was replaced"

    # A task whose health check fails is replaced, with ECS's reason.
    victim = new[0]
    os.unlink(f"/proc/{min(task_pids(victim['taskArn']))}/root/www/health")
    stopped = wait_until(lambda: (t := node.describe(victim["taskArn"]))["desiredStatus"] == "STOPPED" and t,
                         timeout=60, what="the unhealthy task stopped")
    assert stopped["stoppedReason"] == f"Task failed ELB health checks in (target-group {web_tg})", stopped
    events = ecs.describe_services(cluster="default", services=["web"])["services"][0]["events"]
    assert any(f"is unhealthy in (target-group {web_tg})" in e["message"] for e in events), events[:5]
    wait_until(lambda: len(healthy_targets(node, web_tg)) == 3 and len(running(ecs, "web")) == 3, timeout=60,
               what="a replacement healthy")

    # Scale-in drains: the stopping task's target is draining, and no request fails.
    load = Load(f"http://{ip}/")
    try:
        ecs.update_service(cluster="default", service="web", desiredCount=2)
        wait_until(lambda: any(d["TargetHealth"]["State"] == "draining" for d in
                               elb.describe_target_health(TargetGroupArn=web_tg)["TargetHealthDescriptions"]),
                   timeout=20, interval=0.2, what="a target draining")
        wait_until(lambda: len(running(ecs, "web")) == 2, timeout=30, what="scaled in to 2")
        wait_until(lambda: len(elb.describe_target_health(TargetGroupArn=web_tg)["TargetHealthDescriptions"]) == 2,
                   timeout=20, what="the drained target gone")
    finally:
        load.done()
    assert load.failures == [], load.failures[:5]


@needs_root
@needs_isolation
@pytest.mark.parametrize("lb_node", [["--lb-host-address", "127.0.0.1"]], indirect=True)
def test_nlb_forwards_tcp_to_a_bridge_service_on_dynamic_host_ports(lb_node):
    node = lb_node
    ecs, elb = node.ecs, node.e.client("elbv2")
    nlb = elb.create_load_balancer(Name="tcp", Subnets=subnets(node)[:1], Type="network",
                                   Scheme="internal")["LoadBalancers"][0]
    assert nlb["DNSName"].startswith("internal-tcp-")
    tg = target_group(node, "tcp", target_type="instance", protocol="TCP", port=8080)
    elb.create_listener(LoadBalancerArn=nlb["LoadBalancerArn"], Protocol="TCP", Port=9000,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD],
                          "portMappings": [{"containerPort": 8080, "hostPort": 0}]}], mode="bridge")
    ecs.create_service(cluster="ec2", serviceName="tcp", taskDefinition=fam, desiredCount=2, launchType="EC2",
                       loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}])
    ts = wait_until(lambda: len(r := running(ecs, "tcp", "ec2")) == 2 and r, timeout=60, what="2 bridge tasks")
    ports = sorted(t["containers"][0]["networkBindings"][0]["hostPort"] for t in ts)
    assert all(p >= 32768 for p in ports), ports
    # Instance targets: the container instance's EC2 id and each task's host port.
    [instance] = ecs.describe_container_instances(
        cluster="ec2", containerInstances=ecs.list_container_instances(cluster="ec2")["containerInstanceArns"])[
        "containerInstances"]
    wait_until(lambda: sorted((d["Target"]["Id"], d["Target"]["Port"]) for d in healthy_targets(node, tg)) ==
               [(instance["ec2InstanceId"], p) for p in ports], timeout=40, what="both targets healthy")
    ip = lb_address(nlb)
    seen = set()
    names = {t["containers"][0]["runtimeId"] for t in ts}
    for _ in range(40):
        # Each connection is a new flow (a new source port): flows spread over both tasks.
        status, body = fetch(f"http://{ip}:9000/")
        assert status == 200, body
        seen.add(body)
        if len(seen) == 2:
            break
    assert len(seen) == 2, (seen, names)
    # --lb-host-address: the listener also answers on the host's loopback at its own port.
    assert fetch("http://127.0.0.1:9000/")[0] == 200
