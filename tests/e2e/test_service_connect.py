"""ECS Service Connect: services publish named ports of their task definitions under client
aliases (a DNS name and a port) in a Cloud Map namespace; every node answers the alias's name
with a virtual address (VIP) and proxies VIP:port to the RUNNING tasks of the service, with
retries on a failed connect; any task (client-only services included) reaches
`http://<alias>:<port>`.

The API tests run anywhere; the ones with containers run like test_dns.py: in a network
namespace of the test's own, with real containers."""

import os
import socket
import threading
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, isolated, register_fargate, wait_until, AWSVPC
from test_dns import ipv4s, query
from test_network import NET, Node, eni, own_netns

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="task networking needs root")
needs_isolation = pytest.mark.skipif(not isolated(), reason="network tests run inside a network namespace with no route out")

PORT_NAMED = [{"name": "app", "image": "busybox", "portMappings": [{"name": "http", "containerPort": 8080}]}]


def namespace(e, name="local"):
    sd = e.client("servicediscovery")
    op = sd.create_http_namespace(Name=name)["OperationId"]
    o = wait_until(lambda: (o := sd.get_operation(OperationId=op)["Operation"])["Status"] == "SUCCESS" and o,
                   what="the namespace created")
    ns_id = o["Targets"]["NAMESPACE"]
    return sd.get_namespace(Id=ns_id)["Namespace"]["Arn"]


def sc(namespace=None, services=None):
    c = {"enabled": True}
    if namespace:
        c["namespace"] = namespace
    if services is not None:
        c["services"] = services
    return c


def api_service(port_name="http", dns="api", port=8080, discovery="api"):
    s = {"portName": port_name, "clientAliases": [{"dnsName": dns, "port": port}]}
    if discovery:
        s["discoveryName"] = discovery
    return s


def test_configuration_is_checked_and_described(estiba):
    ecs = estiba.client()
    ecs.create_cluster(clusterName="default")
    ns_arn = namespace(estiba)
    register_fargate(ecs, "api", PORT_NAMED)

    def create(name, cfg, **kw):
        return ecs.create_service(cluster="default", serviceName=name, taskDefinition="api", desiredCount=0,
                                  launchType="FARGATE", networkConfiguration=AWSVPC,
                                  serviceConnectConfiguration=cfg, **kw)["service"]

    def refused(name, cfg, code="InvalidParameterException"):
        with pytest.raises(ClientError) as e:
            create(name, cfg)
        assert error_code(e) == code, error_message(e)
        return error_message(e)

    # What to fix is in the message.
    assert "namespace" in refused("a", sc(services=[api_service()]))
    assert "does-not-exist" in refused("a", sc("does-not-exist", [api_service()]), "NamespaceNotFoundException")
    msg = refused("a", sc("local", [api_service(port_name="grpc")]))
    assert "portName 'grpc'" in msg and "portMappings[].name" in msg, msg
    assert "at most 1" in refused("a", sc("local", [{"portName": "http", "clientAliases": [
        {"port": 80}, {"port": 81}]}]))
    assert "dnsName 'API'" in refused("a", sc("local", [api_service(dns="API")]))

    # Published under its namespace's ARN, with ECS's defaults filled in.
    svc = create("api", sc("local", [api_service()]))
    [d] = svc["deployments"]
    assert d["serviceConnectConfiguration"] == {
        "enabled": True, "namespace": ns_arn,
        "services": [{"portName": "http", "discoveryName": "api", "clientAliases": [{"dnsName": "api", "port": 8080}]}],
    }
    # A Cloud Map service per discovery name, as ECS makes them.
    [res] = d["serviceConnectResources"]
    sd = estiba.client("servicediscovery")
    [cm] = [s for s in sd.list_services()["Services"] if s["Name"] == "api"]
    assert res == {"discoveryName": "api", "discoveryArn": cm["Arn"]} and cm["Type"] == "HTTP"
    # Defaults: discoveryName is the port name, dnsName <discoveryName>.<namespace>.
    svc = create("api2", sc(ns_arn, [{"portName": "http", "clientAliases": [{"port": 9090}]}]))
    s = svc["deployments"][0]["serviceConnectConfiguration"]["services"][0]
    assert (s["discoveryName"], s["clientAliases"][0]["dnsName"]) == ("http", "http.local")
    # A client alias, and a discovery name, belong to one service in their namespace.
    assert "already used" in refused("api3", sc("local", [api_service()]))
    assert "discoveryName 'api' is already used" in refused("api3", sc("local", [api_service(dns="x")]))

    # The cluster's default namespace serves services that name none; client-only services.
    with pytest.raises(ClientError):
        create("client", sc())
    c = ecs.update_cluster(cluster="default", serviceConnectDefaults={"namespace": "local"})["cluster"]
    assert c["serviceConnectDefaults"] == {"namespace": ns_arn}, "an existing namespace, as its ARN"
    svc = create("client", sc())
    assert svc["deployments"][0]["serviceConnectConfiguration"] == {"enabled": True, "namespace": ns_arn}

    desc = ecs.describe_services(cluster="default", services=["api"])["services"][0]
    assert desc["deployments"][0]["serviceConnectConfiguration"]["namespace"] == ns_arn
    [brief] = ecs.list_service_deployments(cluster="default", service="api")["serviceDeployments"]
    rev = ecs.describe_service_revisions(serviceRevisionArns=[brief["targetServiceRevisionArn"]])
    assert rev["serviceRevisions"][0]["serviceConnectConfiguration"] == d["serviceConnectConfiguration"]
    listed = ecs.list_services_by_namespace(namespace="local")["serviceArns"]
    assert sorted(a.rsplit("/", 1)[1] for a in listed) == ["api", "api2", "client"]

    # UpdateService: a changed configuration is a new deployment; a task definition without
    # the port name is refused.
    svc = ecs.update_service(cluster="default", service="api",
                             serviceConnectConfiguration=sc("local", [api_service(port=8081)]))["service"]
    assert len(svc["deployments"]) == 2
    assert svc["deployments"][0]["serviceConnectConfiguration"]["services"][0]["clientAliases"][0]["port"] == 8081
    register_fargate(ecs, "plain")
    with pytest.raises(ClientError) as e:
        ecs.update_service(cluster="default", service="api", taskDefinition="plain")
    assert error_code(e) == "InvalidParameterException" and "portName 'http'" in error_message(e)


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def who(vip):
    """The short host name of the task that answered through the VIP."""
    r = fetch(f"http://{vip}:8080/")
    return r and r.split(".")[0]


# The api's server does nothing on SIGTERM (pid 1 without a handler): it is killed after its
# stopTimeout (2 s); its task leaves the proxies' table when it is asked to stop.
HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
# A client counting its requests through the alias.
CLIENT = ("ok=0; fail=0; while :; do if wget -q -O /dev/null http://api:8080/; then ok=$((ok+1)); "
          "else fail=$((fail+1)); echo failed; fi; echo \"ok=$ok fail=$fail\" > /tmp/c && mv /tmp/c /tmp/count; sleep 0.05; done")


@pytest.fixture
def fast_node(tmp_path):
    with own_netns():
        n = Node(tmp_path, extra_args=["--unchecked-task-healthy-after", "1s"])
        try:
            yield n
        finally:
            n.stop_all()


@needs_root
@needs_isolation
def test_clients_reach_the_alias_across_a_rolling_update(fast_node):
    node = fast_node
    ecs = node.ecs
    namespace(node.e)
    api = node.register([{"name": "web", "command": ["sh", "-c", HTTPD],
                          "portMappings": [{"name": "http", "containerPort": 8080}]}])
    ecs.create_service(cluster="default", serviceName="api", taskDefinition=api, desiredCount=2,
                       launchType="FARGATE", networkConfiguration=NET,
                       serviceConnectConfiguration=sc("local", [api_service()]))

    def running(service):
        arns = ecs.list_tasks(cluster="default", serviceName=service)["taskArns"]
        ts = ecs.describe_tasks(cluster="default", tasks=arns)["tasks"] if arns else []
        return [t for t in ts if t["lastStatus"] == "RUNNING"]
    ts = wait_until(lambda: len(r := running("api")) == 2 and r, timeout=60, what="2 api tasks")

    # The alias's name is a VIP outside the VPC, the same wherever it is asked.
    [vip] = wait_until(lambda: ipv4s(query("api")[2]), timeout=2, what="the alias in DNS")
    assert vip.startswith("198.18."), vip
    # Through the VIP, connections are spread over both tasks.
    names = {eni(t)["privateDnsName"].split(".")[0] for t in ts}
    seen = set()
    wait_until(lambda: seen.add(who(vip)) or names <= seen, timeout=10,
               what=f"both tasks answering through the VIP ({names}; {seen})")

    # A client-only service's task reaches http://api:8080.
    cli = node.register([{"name": "cli", "command": ["sh", "-c", CLIENT]}])
    ecs.create_service(cluster="default", serviceName="client", taskDefinition=cli, desiredCount=1,
                       launchType="FARGATE", networkConfiguration=NET, serviceConnectConfiguration=sc("local"))
    [client] = wait_until(lambda: running("client"), timeout=60, what="the client task")
    from test_deployments import task_pids
    count_file = f"/proc/{min(task_pids(client['taskArn']))}/root/tmp/count"

    def counts():
        try:
            text = open(count_file).read().split()
        except OSError:
            return (0, 0)
        return tuple(int(kv.split("=")[1]) for kv in text)
    wait_until(lambda: counts()[0] >= 5, timeout=20, what="the client's requests through the alias")

    # The test fetches through the VIP too, all along a rolling update of api.
    failures, done, stop = [], [0], threading.Event()

    def loop():
        while not stop.is_set():
            if fetch(f"http://{vip}:8080/") is None:
                failures.append(time.time())
            else:
                done[0] += 1
            time.sleep(0.01)
    th = threading.Thread(target=loop)
    th.start()
    ok0 = counts()[0]
    try:
        ecs.update_service(cluster="default", service="api", forceNewDeployment=True)

        def completed():
            s = ecs.describe_services(cluster="default", services=["api"])["services"][0]
            return len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED" and s
        svc = wait_until(completed, timeout=120, interval=0.2, what="the rolling update completed")
        new = {t["taskArn"] for t in running("api")}
        assert not new & {t["taskArn"] for t in ts}, "every api task was replaced"
        wait_until(lambda: counts()[0] >= ok0 + 20, timeout=20, what="the client's requests during the update")
    finally:
        stop.set()
        th.join()
    [res] = svc["deployments"][0]["serviceConnectResources"]
    assert res["discoveryName"] == "api" and res["discoveryArn"].startswith("arn:aws:servicediscovery:")
    # The RUNNING tasks are the Cloud Map service's instances, as ECS registers them.
    sd = node.e.client("servicediscovery")
    ids = sorted(t["taskArn"].rsplit("/", 1)[1] for t in running("api"))
    wait_until(lambda: sorted(i["Id"] for i in sd.list_instances(ServiceId=res["discoveryArn"].rsplit("/", 1)[1])[
        "Instances"]) == ids, timeout=5, what="the api tasks as Cloud Map instances")
    inst = sd.list_instances(ServiceId=res["discoveryArn"].rsplit("/", 1)[1])["Instances"][0]
    assert inst["Attributes"]["AWS_INSTANCE_PORT"] == "8080" and inst["Attributes"]["ECS_SERVICE_NAME"] == "api"
    ok, fail = counts()
    assert failures == [] and fail == 0, (failures, ok, fail, node.logs(client["taskArn"]))
    assert done[0] > 20, done[0]

    # The new tasks answer through the VIP.
    new_names = {eni(t)["privateDnsName"].split(".")[0] for t in running("api")}
    seen = set()
    wait_until(lambda: seen.add(who(vip)) or new_names <= seen, timeout=10,
               what="the new tasks answering")

    # Scaled to 0: no endpoint, connections are closed rather than hang.
    ecs.update_service(cluster="default", service="api", desiredCount=0)
    wait_until(lambda: not running("api"), timeout=60, what="api scaled to 0")
    s = socket.create_connection((vip, 8080), timeout=5)
    s.settimeout(5)
    assert s.recv(10) == b""
    s.close()


def test_cluster_defaults_create_a_namespace_as_ecs_does(estiba):
    ecs, sd = estiba.client(), estiba.client("servicediscovery")
    # A name Cloud Map does not know: an HTTP namespace is made for it.
    c = ecs.create_cluster(clusterName="shop", serviceConnectDefaults={"namespace": "shop"})["cluster"]
    [ns] = [n for n in sd.list_namespaces()["Namespaces"] if n["Name"] == "shop"]
    assert ns["Type"] == "HTTP" and c["serviceConnectDefaults"] == {"namespace": ns["Arn"]}
    desc = ecs.describe_clusters(clusters=["shop"])["clusters"][0]
    assert desc["serviceConnectDefaults"] == {"namespace": ns["Arn"]}
    # The same name again finds it; an ARN that names nothing is refused; "" removes the defaults.
    c = ecs.update_cluster(cluster="shop", serviceConnectDefaults={"namespace": "shop"})["cluster"]
    assert c["serviceConnectDefaults"] == {"namespace": ns["Arn"]}
    assert len([n for n in sd.list_namespaces()["Namespaces"] if n["Name"] == "shop"]) == 1
    with pytest.raises(ClientError) as e:
        ecs.update_cluster(cluster="shop",
                           serviceConnectDefaults={"namespace": ns["Arn"].rsplit("/", 1)[0] + "/ns-doesnotexist1"})
    assert error_code(e) == "NamespaceNotFoundException", error_message(e)
    c = ecs.update_cluster(cluster="shop", serviceConnectDefaults={"namespace": ""})["cluster"]
    assert "serviceConnectDefaults" not in c
