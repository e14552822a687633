"""ECS Express Mode: CreateExpressGatewayService makes a task definition, a service behind a
host rule of a shared Application Load Balancer, a target group with the health check path,
a scalable target and a target tracking policy with its CloudWatch alarms; Describe shows
the endpoint and status; Update makes a new deployment; Delete removes what Create made.

The control-plane tests use the module's shared server (it runs no tasks); the live test
runs a real busybox httpd behind the load balancer in a network namespace of its own with no
route out, and reaches it with the endpoint's Host header and through the VPC resolver."""

import os
import re
import urllib.request

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, unique, wait_until

ROLES = dict(executionRoleArn="arn:aws:iam::000000000000:role/ecsTaskExecutionRole",
             infrastructureRoleArn="arn:aws:iam::000000000000:role/ecsInfrastructureRoleForExpressServices")
HOST = re.compile(r"http://([a-z0-9-]+)-[0-9a-f]{8}\.ecs\.us-east-1\.on\.aws")


@pytest.fixture
def clients(shared):
    return {s: shared.client(s) for s in ("ecs", "elbv2", "application-autoscaling", "cloudwatch")}


def create(ecs, **kw):
    args = dict(ROLES, primaryContainer={"image": "public.ecr.aws/nginx/nginx:latest"})
    args.update(kw)
    return ecs.create_express_gateway_service(**args)["service"]


def endpoint(svc):
    cfg = svc["activeConfigurations"][0]
    [path] = cfg["ingressPaths"]
    assert path["accessType"] == "PUBLIC"
    return path["endpoint"]


def rid(svc):
    return f"service/{svc['cluster']}/{svc['serviceName']}"


def test_create_describe_update_delete(clients, shared):
    ecs, elb, aas, cw = (clients[s] for s in ("ecs", "elbv2", "application-autoscaling", "cloudwatch"))
    cluster, name = unique("c"), unique("web")
    ecs.create_cluster(clusterName=cluster)
    svc = create(ecs, serviceName=name, cluster=cluster, tags=[{"key": "team", "value": "a"}],
                 primaryContainer={"image": "repo/app:1", "containerPort": 8080}, healthCheckPath="/health")
    assert svc["serviceArn"] == f"arn:aws:ecs:us-east-1:000000000000:service/{cluster}/{name}"
    assert svc["status"]["statusCode"] == "ACTIVE"
    assert svc["infrastructureRoleArn"] == ROLES["infrastructureRoleArn"]
    url = endpoint(svc)
    assert HOST.fullmatch(url) and HOST.fullmatch(url).group(1) == name.lower()
    [cfg] = svc["activeConfigurations"]
    # Express Mode's defaults where the request named nothing.
    assert (cfg["cpu"], cfg["memory"], cfg["healthCheckPath"]) == ("1024", "2048", "/health")
    assert cfg["scalingTarget"] == {"minTaskCount": 1, "maxTaskCount": 20, "autoScalingMetric": "AVERAGE_CPU",
                                    "autoScalingTargetValue": 60}
    assert cfg["primaryContainer"]["containerPort"] == 8080
    assert cfg["networkConfiguration"]["subnets"] and cfg["networkConfiguration"]["securityGroups"]
    assert cfg["serviceRevisionArn"].startswith(f"arn:aws:ecs:us-east-1:000000000000:service-revision/{cluster}/{name}/")

    got = ecs.describe_express_gateway_service(serviceArn=svc["serviceArn"], include=["TAGS"])["service"]
    assert got["status"]["statusCode"] == "ACTIVE" and endpoint(got) == url
    assert got["tags"] == [{"key": "team", "value": "a"}]
    assert got["currentDeployment"].startswith("arn:aws:ecs:us-east-1:000000000000:service-deployment/")
    assert "tags" not in ecs.describe_express_gateway_service(serviceArn=svc["serviceArn"])["service"]

    # The ECS service: Fargate, awsvpc, behind the target group, minTaskCount tasks.
    [s] = ecs.describe_services(cluster=cluster, services=[name])["services"]
    assert (s["launchType"], s["desiredCount"], s["status"]) == ("FARGATE", 1, "ACTIVE")
    [lb_ref] = s["loadBalancers"]
    assert (lb_ref["containerName"], lb_ref["containerPort"]) == ("Main", 8080)
    td = ecs.describe_task_definition(taskDefinition=s["taskDefinition"])["taskDefinition"]
    assert (td["family"], td["networkMode"], td["cpu"], td["memory"]) == (name, "awsvpc", "1024", "2048")
    assert td["executionRoleArn"] == ROLES["executionRoleArn"]
    assert td["containerDefinitions"][0]["image"] == "repo/app:1"

    # The load balancer side: a target group with the health check path, a host rule on the
    # shared load balancer's HTTP:80 listener.
    tg_arn = lb_ref["targetGroupArn"]
    [tg] = elb.describe_target_groups(TargetGroupArns=[tg_arn])["TargetGroups"]
    assert (tg["TargetType"], tg["Protocol"], tg["Port"], tg["HealthCheckPath"]) == ("ip", "HTTP", 8080, "/health")
    [lb_arn] = tg["LoadBalancerArns"]
    [lb] = elb.describe_load_balancers(LoadBalancerArns=[lb_arn])["LoadBalancers"]
    assert lb["LoadBalancerName"].startswith("ecs-express-gateway-alb-") and lb["Type"] == "application"
    [listener] = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
    assert (listener["Protocol"], listener["Port"]) == ("HTTP", 80)
    rules = [r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    host = url.removeprefix("http://")
    [rule] = [r for r in rules if r["Actions"][0].get("TargetGroupArn") == tg_arn]
    assert rule["Conditions"][0]["Field"] == "host-header"
    assert rule["Conditions"][0]["HostHeaderConfig"]["Values"] == [host]

    # Scaling: the target and the target tracking policy with its two alarms.
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid(svc)])["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (1, 20)
    [p] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid(svc))["ScalingPolicies"]
    ttc = p["TargetTrackingScalingPolicyConfiguration"]
    assert p["PolicyType"] == "TargetTrackingScaling" and ttc["TargetValue"] == 60.0
    assert ttc["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    alarm_names = [a["AlarmName"] for a in p["Alarms"]]
    alarms = cw.describe_alarms(AlarmNames=alarm_names)["MetricAlarms"]
    assert len(alarms) == 2 and {a["MetricName"] for a in alarms} == {"CPUUtilization"}

    # A second service shares the load balancer, with its own rule.
    other = create(ecs, serviceName=unique("api"), cluster=cluster,
                   scalingTarget={"autoScalingMetric": "REQUEST_COUNT_PER_TARGET", "autoScalingTargetValue": 500})
    [s2] = ecs.describe_services(cluster=cluster, services=[other["serviceName"]])["services"]
    [tg2] = elb.describe_target_groups(TargetGroupArns=[s2["loadBalancers"][0]["targetGroupArn"]])["TargetGroups"]
    assert tg2["LoadBalancerArns"] == [lb_arn] and tg2["HealthCheckPath"] == "/ping" and tg2["Port"] == 80
    [p2] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid(other))["ScalingPolicies"]
    spec = p2["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
    assert spec["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    assert spec["ResourceLabel"].startswith(lb_arn.split(":loadbalancer/")[1] + "/targetgroup/ecs-express-tg-")
    prios = sorted(r["Priority"] for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
                   if not r["IsDefault"])
    assert len(prios) == len(set(prios)) >= 2

    # Update: a new task definition revision and deployment, new bounds and health check.
    up = ecs.update_express_gateway_service(serviceArn=svc["serviceArn"], primaryContainer={"image": "repo/app:2"},
                                            cpu="512", memory="1024", healthCheckPath="/ready",
                                            scalingTarget={"minTaskCount": 2, "maxTaskCount": 4})["service"]
    tcfg = up["targetConfiguration"]
    assert (tcfg["cpu"], tcfg["memory"], tcfg["primaryContainer"]["image"]) == ("512", "1024", "repo/app:2")
    assert tcfg["primaryContainer"]["containerPort"] == 8080
    assert tcfg["scalingTarget"]["autoScalingTargetValue"] == 60
    assert tcfg["serviceRevisionArn"] != cfg["serviceRevisionArn"]
    [s] = ecs.describe_services(cluster=cluster, services=[name])["services"]
    assert s["taskDefinition"].endswith(f"task-definition/{name}:2") and s["desiredCount"] == 2
    assert s["deployments"][0]["taskDefinition"] == s["taskDefinition"]
    assert len(ecs.list_service_deployments(cluster=cluster, service=name)["serviceDeployments"]) == 2
    [tg] = elb.describe_target_groups(TargetGroupArns=[tg_arn])["TargetGroups"]
    assert tg["HealthCheckPath"] == "/ready"
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid(svc)])["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (2, 4)
    got = ecs.describe_express_gateway_service(serviceArn=svc["serviceArn"])["service"]
    assert endpoint(got) == url
    # Both configurations are active while the deployment rolls, the new one first.
    images = [c["primaryContainer"]["image"] for c in got["activeConfigurations"]]
    assert images in (["repo/app:2"], ["repo/app:2", "repo/app:1"]), images

    # Delete: the service drains; the rule, target group, policy, alarms and target go; the
    # load balancer stays while the other service uses it.
    gone = ecs.delete_express_gateway_service(serviceArn=svc["serviceArn"])["service"]
    assert gone["status"]["statusCode"] == "DRAINING"
    assert ecs.describe_services(cluster=cluster, services=[name])["services"][0]["status"] in ("DRAINING", "INACTIVE")
    with pytest.raises(ClientError) as e:
        elb.describe_target_groups(TargetGroupArns=[tg_arn])
    assert error_code(e) == "TargetGroupNotFound"
    assert aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid(svc)])["ScalableTargets"] == []
    assert aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid(svc))["ScalingPolicies"] == []
    assert cw.describe_alarms(AlarmNames=alarm_names)["MetricAlarms"] == []
    left = [r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert [r["Actions"][0]["TargetGroupArn"] for r in left] == [tg2["TargetGroupArn"]]
    with pytest.raises(ClientError) as e:
        ecs.delete_express_gateway_service(serviceArn=svc["serviceArn"])
    assert error_code(e) == "ServiceNotActiveException"

    # The last service takes the load balancer with it.
    ecs.delete_express_gateway_service(serviceArn=other["serviceArn"])
    with pytest.raises(ClientError) as e:
        elb.describe_load_balancers(LoadBalancerArns=[lb_arn])
    assert error_code(e) == "LoadBalancerNotFound"


def test_twenty_five_services_share_a_load_balancer(clients):
    ecs, elb = clients["ecs"], clients["elbv2"]
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)

    def lb_of(svc):
        [s] = ecs.describe_services(cluster=cluster, services=[svc["serviceName"]])["services"]
        [tg] = elb.describe_target_groups(TargetGroupArns=[s["loadBalancers"][0]["targetGroupArn"]])["TargetGroups"]
        return tg["LoadBalancerArns"][0]

    before = {lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]}
    svcs = [create(ecs, cluster=cluster, serviceName=f"s{i}") for i in range(26)]
    lbs = [lb_of(s) for s in svcs]
    # The first service's load balancer filled up to 25 services before the 26th got another.
    assert lbs[25] != lbs[0]
    [listener] = elb.describe_listeners(LoadBalancerArn=lbs[0])["Listeners"]
    rules = [r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert len(rules) == 25
    assert all(lb.split("/")[2].startswith("ecs-express-gateway-alb-") for lb in lbs)
    hosts = {endpoint(s) for s in svcs}
    assert len(hosts) == 26
    for s in svcs:
        ecs.delete_express_gateway_service(serviceArn=s["serviceArn"])
    # Load balancers made for these services go with them (one shared with an earlier
    # test's service that is still there stays).
    after = {lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]}
    assert after <= before and lbs[25] not in after


def test_default_cluster_and_generated_name(clients):
    ecs = clients["ecs"]
    svc = create(ecs)
    assert svc["cluster"] == "default" and re.fullmatch(r"express-[0-9a-f]{8}", svc["serviceName"])
    [c] = ecs.describe_clusters(clusters=["default"])["clusters"]
    assert c["status"] == "ACTIVE"
    ecs.delete_express_gateway_service(serviceArn=svc["serviceArn"])


def test_errors(clients, shared):
    ecs = clients["ecs"]
    with pytest.raises(ClientError) as e:
        create(ecs, cluster="no-such-cluster")
    assert error_code(e) == "ClusterNotFoundException"
    cluster, name = unique("c"), unique("dup")
    ecs.create_cluster(clusterName=cluster)
    svc = create(ecs, cluster=cluster, serviceName=name)
    with pytest.raises(ClientError) as e:
        create(ecs, cluster=cluster, serviceName=name)
    assert error_code(e) == "InvalidParameterException"
    assert "not idempotent" in error_message(e)
    for bad, words in [(dict(healthCheckPath="health"), "healthCheckPath"),
                       (dict(cpu="256", memory="8192"), "No Fargate configuration"),
                       (dict(scalingTarget={"minTaskCount": 3, "maxTaskCount": 2}), "minTaskCount"),
                       (dict(primaryContainer={"image": "x", "containerPort": 0}), "containerPort"),
                       (dict(serviceName="bad name!"), "not valid")]:
        with pytest.raises(ClientError) as e:
            create(ecs, cluster=cluster, **{"serviceName": unique("b"), **bad})
        assert error_code(e) == "InvalidParameterException", bad
        assert words in error_message(e), (bad, error_message(e))
    # Nothing of a refused create was written.
    assert ecs.list_services(cluster=cluster)["serviceArns"] == [svc["serviceArn"]]
    # A missing required member, sent as is (boto3 would refuse it before sending).
    raw = boto3.client("ecs", endpoint_url=shared.endpoint, region_name="us-east-1", aws_access_key_id="test",
                       aws_secret_access_key="test",
                       config=botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False))
    with pytest.raises(ClientError) as e:
        raw.create_express_gateway_service(**ROLES, serviceName=unique("m"), cluster=cluster)
    assert error_code(e) == "InvalidParameterException" and "primaryContainer" in error_message(e)
    missing = f"arn:aws:ecs:us-east-1:000000000000:service/{cluster}/nothing"
    with pytest.raises(ClientError) as e:
        ecs.describe_express_gateway_service(serviceArn=missing)
    assert error_code(e) == "ResourceNotFoundException"
    for call in (ecs.update_express_gateway_service, ecs.delete_express_gateway_service):
        with pytest.raises(ClientError) as e:
            call(serviceArn=missing)
        assert error_code(e) == "ServiceNotFoundException"
    with pytest.raises(ClientError) as e:
        ecs.describe_express_gateway_service(serviceArn="arn:aws:ecs:us-east-1:000000000000:service/nope/x")
    assert error_code(e) == "ClusterNotFoundException"
    ecs.delete_express_gateway_service(serviceArn=svc["serviceArn"])


# --- Live: a real task behind the load balancer -------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="task networking needs root")


def isolated_ns():
    from conftest import isolated
    return isolated()


needs_isolation = pytest.mark.skipif(not isolated_ns(), reason="runs in a network namespace with no route out")

# busybox httpd on 8080 answering "$MSG <hostname>" on / and ok on /health.
HTTPD = ("mkdir -p /www && echo \"$MSG $(hostname)\" > /www/index.html && echo ok > /www/health "
         "&& exec httpd -f -p 8080 -h /www")


def get(address, host, path="/"):
    req = urllib.request.Request(f"http://{address}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


@pytest.fixture
def node(tmp_path):
    from test_network import Node, own_netns
    with own_netns():
        n = Node(tmp_path)
        try:
            yield n
        finally:
            n.stop_all()


@needs_root
@needs_isolation
def test_live_service_answers_through_the_load_balancer(node):
    from test_dns import ipv4s, query
    ecs, elb = node.ecs, node.e.client("elbv2")
    env = [{"name": "MSG", "value": "v1"}]
    svc = create(ecs, serviceName="hello", healthCheckPath="/health",
                 primaryContainer={"image": node.image, "containerPort": 8080, "command": ["sh", "-c", HTTPD],
                                   "environment": env},
                 cpu="256", memory="512", scalingTarget={"minTaskCount": 1, "maxTaskCount": 3})
    host = endpoint(svc).removeprefix("http://")
    [s] = ecs.describe_services(cluster="default", services=["hello"])["services"]
    tg_arn = s["loadBalancers"][0]["targetGroupArn"]
    [tg] = elb.describe_target_groups(TargetGroupArns=[tg_arn])["TargetGroups"]
    [lb] = elb.describe_load_balancers(LoadBalancerArns=tg["LoadBalancerArns"])["LoadBalancers"]

    # The endpoint's host resolves, through the VPC resolver, to the load balancer's addresses.
    lb_ips = wait_until(lambda: ipv4s(query(lb["DNSName"])[2]), timeout=20, what="the load balancer in DNS")
    assert wait_until(lambda: ipv4s(query(host)[2]), timeout=20, what="the endpoint in DNS") == lb_ips

    def running():
        arns = ecs.list_tasks(cluster="default", serviceName="hello")["taskArns"]
        ts = ecs.describe_tasks(cluster="default", tasks=arns)["tasks"] if arns else []
        return [t for t in ts if t["lastStatus"] == "RUNNING"]

    [task] = wait_until(running, timeout=90, what="the service's task running")
    wait_until(lambda: [d for d in elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
                        if d["TargetHealth"]["State"] == "healthy"], timeout=60, what="a healthy target")
    status, body = wait_until(lambda: (r := get(lb_ips[0], host)) and r[0] == 200 and r, timeout=30,
                              what="an answer through the load balancer")
    assert body.startswith("v1 ")
    # Another host name gets the listener's default answer.
    assert get(lb_ips[0], "other.example.com")[0] == 404

    # The scaling pieces exist in their APIs.
    aas = node.e.client("application-autoscaling")
    [t] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=["service/default/hello"])["ScalableTargets"]
    assert (t["MinCapacity"], t["MaxCapacity"]) == (1, 3)
    [p] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId="service/default/hello")["ScalingPolicies"]
    cw = node.e.client("cloudwatch")
    assert len(cw.describe_alarms(AlarmNames=[a["AlarmName"] for a in p["Alarms"]])["MetricAlarms"]) == 2

    # Update: a new deployment whose tasks answer with the new environment.
    ecs.update_express_gateway_service(serviceArn=svc["serviceArn"], primaryContainer={
        "image": node.image, "command": ["sh", "-c", HTTPD], "environment": [{"name": "MSG", "value": "v2"}]})
    wait_until(lambda: (r := get(lb_ips[0], host)) and r[0] == 200 and r[1].startswith("v2 "), timeout=120,
               interval=0.5, what="the new deployment answering")
    wait_until(lambda: len(running()) == 1 and running()[0]["taskArn"] != task["taskArn"], timeout=90,
               interval=0.5, what="the old task gone")
    # Once the deployment is over, only the new configuration is active.
    wait_until(lambda: [c["primaryContainer"]["environment"] for c in ecs.describe_express_gateway_service(
        serviceArn=svc["serviceArn"])["service"]["activeConfigurations"]] == [[{"name": "MSG", "value": "v2"}]],
        timeout=60, interval=0.5, what="one active configuration")

    # Delete: the tasks stop, the endpoint stops answering, the load balancer goes.
    ecs.delete_express_gateway_service(serviceArn=svc["serviceArn"])
    wait_until(lambda: not running(), timeout=90, interval=0.5, what="the tasks stopped")
    wait_until(lambda: ecs.describe_express_gateway_service(serviceArn=svc["serviceArn"])["service"]["status"]
               ["statusCode"] == "INACTIVE", timeout=60, interval=0.5, what="the Express service INACTIVE")
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    wait_until(lambda: get(lb_ips[0], host)[0] is None, timeout=20, what="the load balancer gone")
