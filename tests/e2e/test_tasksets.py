"""Task sets of ECS services with the EXTERNAL deployment controller: CreateTaskSet,
DescribeTaskSets, UpdateTaskSet, UpdateServicePrimaryTaskSet and DeleteTaskSet. Each task
set runs real tasks (startedBy its id) registered in its own target group; an external
controller shifts traffic between them with the listener's and the rule's weights.

The container test runs in a network namespace of its own with no route out, like
test_lb.py; the API error paths run against the shared server."""

import re

import botocore.exceptions
import pytest

from conftest import error_code, error_message, register_fargate, unique, wait_until
from test_lb import Load, alb, fetch, lb_address, lb_node, needs_isolation, needs_root, target_group  # noqa: F401
from test_dns import local_namespace
from test_network import NET, eni


def colored(color):
    """An httpd answering its color on / and "api <color>" on /api/x."""
    return (f"mkdir -p /www/api && echo {color} > /www/index.html && echo \"api {color}\" > /www/api/x "
            f"&& echo ok > /www/health && exec httpd -f -p 8080 -h /www")


def forward(*weighted):
    return [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": tg, "Weight": w} for tg, w in weighted]}}]


def tasks_of(ecs, task_set_id, status="RUNNING"):
    arns = ecs.list_tasks(cluster="default", serviceName="ext")["taskArns"]
    ts = ecs.describe_tasks(cluster="default", tasks=arns)["tasks"] if arns else []
    return [t for t in ts if t.get("startedBy") == task_set_id and t["lastStatus"] == status]


def healthy(elb, tg):
    return [d for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
            if d["TargetHealth"]["State"] == "healthy"]


def sample(url, n=30):
    return {fetch(url)[1] for _ in range(n)}


@needs_root
@needs_isolation
def test_blue_and_green_task_sets_behind_weighted_listener_and_rule(lb_node):
    node = lb_node
    ecs, elb = node.ecs, node.e.client("elbv2")
    lb = alb(node)
    blue_tg = target_group(node, "blue")
    green_tg = target_group(node, "green")
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                                   DefaultActions=forward((blue_tg, 100), (green_tg, 0)))["Listeners"][0]
    rule = elb.create_rule(ListenerArn=listener["ListenerArn"], Priority=10,
                           Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}],
                           Actions=forward((blue_tg, 100), (green_tg, 0)))["Rules"][0]["RuleArn"]
    blue_fam = node.register([{"name": "web", "command": ["sh", "-c", colored("blue")],
                               "portMappings": [{"containerPort": 8080}]}])
    green_fam = node.register([{"name": "web", "command": ["sh", "-c", colored("green")],
                                "portMappings": [{"containerPort": 8080}]}])
    ecs.create_service(cluster="default", serviceName="ext", desiredCount=2, healthCheckGracePeriodSeconds=0,
                       deploymentController={"type": "EXTERNAL"})
    # Each task set registers its tasks in its own Cloud Map service.
    sd, ns = local_namespace(node)
    cm = {c: sd.create_service(Name=c, NamespaceId=ns, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 10}]})[
        "Service"] for c in ("blue", "green")}

    def create(fam, tg, scale, color):
        return ecs.create_task_set(
            cluster="default", service="ext", taskDefinition=fam, launchType="FARGATE", networkConfiguration=NET,
            loadBalancers=[{"targetGroupArn": tg, "containerName": "web", "containerPort": 8080}],
            serviceRegistries=[{"registryArn": cm[color]["Arn"]}],
            scale={"value": scale, "unit": "PERCENT"}, externalId=color,
            tags=[{"key": "color", "value": color}])["taskSet"]

    blue = create(blue_fam, blue_tg, 100, "blue")
    assert re.fullmatch(r"ecs-svc/\d{19}", blue["id"]), blue["id"]
    assert blue["taskSetArn"] == f"arn:aws:ecs:us-east-1:000000000000:task-set/default/ext/{blue['id']}"
    assert blue["serviceArn"] == "arn:aws:ecs:us-east-1:000000000000:service/default/ext"
    assert blue["status"] == "ACTIVE" and blue["stabilityStatus"] == "STABILIZING"
    assert blue["computedDesiredCount"] == 2 and blue["scale"] == {"value": 100.0, "unit": "PERCENT"}
    assert blue["launchType"] == "FARGATE" and blue["externalId"] == "blue"
    assert blue["taskDefinition"].endswith(f"task-definition/{blue_fam}:1")
    assert blue["loadBalancers"][0]["targetGroupArn"] == blue_tg
    assert blue["tags"] == [{"key": "color", "value": "blue"}]

    # The primary task set: the service shows its task definition and load balancers.
    p = ecs.update_service_primary_task_set(cluster="default", service="ext", primaryTaskSet=blue["id"])["taskSet"]
    assert p["status"] == "PRIMARY"
    s = ecs.describe_services(cluster="default", services=["ext"])["services"][0]
    assert s["taskDefinition"] == blue["taskDefinition"] and s["loadBalancers"] == blue["loadBalancers"]
    assert [t["id"] for t in s["taskSets"]] == [blue["id"]]

    green = create(green_fam, green_tg, 50, "green")
    assert green["computedDesiredCount"] == 1 and green["status"] == "ACTIVE"

    # Real tasks, startedBy their task set, each in its task set's target group.
    wait_until(lambda: len(tasks_of(ecs, blue["id"])) == 2 and len(tasks_of(ecs, green["id"])) == 1, timeout=60,
               what="2 blue tasks and 1 green task running")
    wait_until(lambda: len(healthy(elb, blue_tg)) == 2 and len(healthy(elb, green_tg)) == 1, timeout=40,
               what="the targets healthy in their own groups")

    def sets():
        return {t["id"]: t for t in ecs.describe_task_sets(cluster="default", service="ext")["taskSets"]}
    wait_until(lambda: all(t["stabilityStatus"] == "STEADY_STATE" for t in sets().values()), timeout=30,
               what="both task sets in a steady state")
    t = sets()
    assert (t[blue["id"]]["runningCount"], t[green["id"]]["runningCount"]) == (2, 1)

    def instances(color):
        return {i["Id"]: i["Attributes"] for i in sd.list_instances(ServiceId=cm[color]["Id"])["Instances"]}
    for color, ts in (("blue", blue), ("green", green)):
        mine = tasks_of(ecs, ts["id"])
        insts = wait_until(lambda: len(i := instances(color)) == len(mine) and i, timeout=10,
                           what=f"the {color} tasks in Cloud Map")
        assert sorted(insts) == sorted(t["taskArn"].rsplit("/", 1)[1] for t in mine)
        for a in insts.values():
            assert a["ECS_TASK_SET_EXTERNAL_ID"] == color and a["ECS_SERVICE_NAME"] == "ext", a
            assert a["AWS_INSTANCE_IPV4"] in {eni(t)["privateIPv4Address"] for t in mine}
    s = ecs.describe_services(cluster="default", services=["ext"])["services"][0]
    assert s["runningCount"] == 3 and len(s["taskSets"]) == 2
    events = [e["message"] for e in s["events"]]
    assert any(m.startswith(f"(service ext, taskSet {green['id']}) has started 1 tasks:") for m in events), events

    # Weights move traffic: the listener's default action and the rule, each on its own.
    ip = lb_address(lb)
    assert sample(f"http://{ip}/") == {"blue"}
    assert sample(f"http://{ip}/api/x") == {"api blue"}
    elb.modify_listener(ListenerArn=listener["ListenerArn"], DefaultActions=forward((blue_tg, 0), (green_tg, 100)))
    wait_until(lambda: sample(f"http://{ip}/", 10) == {"green"}, timeout=10, what="the listener shifted to green")
    assert sample(f"http://{ip}/api/x") == {"api blue"}
    elb.modify_rule(RuleArn=rule, Actions=forward((blue_tg, 50), (green_tg, 50)))
    wait_until(lambda: sample(f"http://{ip}/api/x", 40) == {"api blue", "api green"}, timeout=10,
               what="the rule splitting traffic")

    # UpdateTaskSet scales green to 100%: a second green task, in its group.
    u = ecs.update_task_set(cluster="default", service="ext", taskSet=green["id"],
                            scale={"value": 100, "unit": "PERCENT"})["taskSet"]
    assert u["computedDesiredCount"] == 2 and u["scale"]["value"] == 100.0
    wait_until(lambda: len(tasks_of(ecs, green["id"])) == 2 and len(healthy(elb, green_tg)) == 2, timeout=60,
               what="2 green tasks healthy")
    # The service's desired count scales every task set.
    ecs.update_service(cluster="default", service="ext", desiredCount=1)
    wait_until(lambda: len(tasks_of(ecs, blue["id"])) == 1 and len(tasks_of(ecs, green["id"])) == 1, timeout=40,
               what="each task set scaled in to 1")
    assert {t["computedDesiredCount"] for t in sets().values()} == {1}

    # Green becomes primary; the service follows it.
    p = ecs.update_service_primary_task_set(cluster="default", service="ext", primaryTaskSet=green["taskSetArn"])
    assert p["taskSet"]["status"] == "PRIMARY"
    t = sets()
    assert (t[blue["id"]]["status"], t[green["id"]]["status"]) == ("ACTIVE", "PRIMARY")
    s = ecs.describe_services(cluster="default", services=["ext"])["services"][0]
    assert s["taskDefinition"] == green["taskDefinition"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.delete_task_set(cluster="default", service="ext", taskSet=green["id"])
    assert error_code(e) == "InvalidParameterException" and "Primary TaskSet cannot be deleted" in error_message(e)

    # All traffic on green; deleting blue drains and stops its task without a failed request.
    elb.modify_rule(RuleArn=rule, Actions=forward((blue_tg, 0), (green_tg, 100)))
    wait_until(lambda: sample(f"http://{ip}/api/x", 10) == {"api green"}, timeout=10, what="the rule on green")
    [blue_task] = tasks_of(ecs, blue["id"])
    load = Load(f"http://{ip}/")
    try:
        d = ecs.delete_task_set(cluster="default", service="ext", taskSet=blue["id"])["taskSet"]
        assert d["status"] == "DRAINING" and d["computedDesiredCount"] == 0
        wait_until(lambda: node.describe(blue_task["taskArn"])["lastStatus"] == "STOPPED", timeout=40,
                   what="the blue task stopped")
    finally:
        load.done()
    assert load.failures == [], load.failures[:5]
    assert node.describe(blue_task["taskArn"])["stoppedReason"].startswith("Scaling activity initiated by")
    wait_until(lambda: blue["id"] not in sets(), timeout=20, what="the blue task set gone")
    r = ecs.describe_task_sets(cluster="default", service="ext", taskSets=[blue["id"], green["id"]],
                               include=["TAGS"])
    assert [t["id"] for t in r["taskSets"]] == [green["id"]]
    assert r["taskSets"][0]["tags"] == [{"key": "color", "value": "green"}]
    assert r["failures"] == [{"arn": blue["taskSetArn"], "reason": "MISSING"}]
    wait_until(lambda: elb.describe_target_health(TargetGroupArn=blue_tg)["TargetHealthDescriptions"] == [],
               timeout=20, what="the blue target deregistered")
    assert instances("blue") == {} and len(instances("green")) == 1

    # Forced, the primary goes too, and DeleteService finishes once nothing runs.
    ecs.delete_task_set(cluster="default", service="ext", taskSet=green["id"], force=True)
    wait_until(lambda: not sets() and not tasks_of(ecs, green["id"]), timeout=40, what="the green task set gone")
    ecs.delete_service(cluster="default", service="ext", force=True)
    wait_until(lambda: ecs.describe_services(cluster="default", services=["ext"])["services"][0]["status"] ==
               "INACTIVE", timeout=20, what="the service INACTIVE")


def test_task_set_api_errors(shared, ecs):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    fam = unique("f")
    register_fargate(ecs, fam)
    ecs.create_service(cluster=cluster, serviceName="ext", desiredCount=3, deploymentController={"type": "EXTERNAL"})
    net = {"awsvpcConfiguration": {"subnets": ["subnet-1"]}}

    def refused(code, text, fn, **kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            fn(**kw)
        assert error_code(e) == code, e.value.response
        assert text in error_message(e), error_message(e)

    ts = ecs.create_task_set(cluster=cluster, service="ext", taskDefinition=fam, launchType="FARGATE",
                             networkConfiguration=net, scale={"value": 40, "unit": "PERCENT"})["taskSet"]
    assert ts["computedDesiredCount"] == 2  # ceil(1.2)
    assert ts["platformVersion"] == "1.4.0" and ts["platformFamily"] == "Linux"
    # Shown in DescribeServices and tagged through the usual calls.
    s = ecs.describe_services(cluster=cluster, services=["ext"])["services"][0]
    assert [t["id"] for t in s["taskSets"]] == [ts["id"]]
    ecs.tag_resource(resourceArn=ts["taskSetArn"], tags=[{"key": "k", "value": "v"}])
    assert ecs.list_tags_for_resource(resourceArn=ts["taskSetArn"])["tags"] == [{"key": "k", "value": "v"}]

    refused("ClusterNotFoundException", "Cluster not found", ecs.create_task_set, cluster="nope", service="ext",
            taskDefinition=fam)
    refused("ServiceNotFoundException", "Service not found", ecs.create_task_set, cluster=cluster, service="nope",
            taskDefinition=fam)
    refused("ClientException", "TaskDefinition not found", ecs.create_task_set, cluster=cluster, service="ext",
            taskDefinition="nope")
    refused("InvalidParameterException", "between 0 and 100", ecs.create_task_set, cluster=cluster, service="ext",
            taskDefinition=fam, launchType="FARGATE", networkConfiguration=net, scale={"value": 150, "unit": "PERCENT"})
    refused("InvalidParameterException", "launchType and capacityProviderStrategy", ecs.create_task_set,
            cluster=cluster, service="ext", taskDefinition=fam, launchType="FARGATE", networkConfiguration=net,
            capacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    refused("TaskSetNotFoundException", "task set", ecs.update_task_set, cluster=cluster, service="ext",
            taskSet="ecs-svc/1234567890123456789", scale={"value": 10, "unit": "PERCENT"})
    refused("TaskSetNotFoundException", "task set", ecs.delete_task_set, cluster=cluster, service="ext",
            taskSet="ecs-svc/1234567890123456789")
    refused("TaskSetNotFoundException", "task set", ecs.update_service_primary_task_set, cluster=cluster,
            service="ext", primaryTaskSet="ecs-svc/1234567890123456789")
    # Task sets belong to EXTERNAL services only.
    ecs.create_service(cluster=cluster, serviceName="rolling", taskDefinition=fam, desiredCount=0,
                       launchType="FARGATE", networkConfiguration=net)
    for fn, kw in [(ecs.create_task_set, {"taskDefinition": fam}), (ecs.describe_task_sets, {}),
                   (ecs.update_service_primary_task_set, {"primaryTaskSet": ts["id"]})]:
        refused("InvalidParameterException", "only supports task set management on services configured to use "
                "external deployment controllers", fn, cluster=cluster, service="rolling", **kw)
    # At most five per service.
    for _ in range(4):
        ecs.create_task_set(cluster=cluster, service="ext", taskDefinition=fam, launchType="FARGATE",
                            networkConfiguration=net, scale={"value": 0, "unit": "PERCENT"})
    refused("InvalidParameterException", "5 deployments exist on the service", ecs.create_task_set, cluster=cluster,
            service="ext", taskDefinition=fam, launchType="FARGATE", networkConfiguration=net)
    # Without a node, the first task set's tasks wait to be placed; its computed count follows
    # the service's desired count.
    ecs.update_service(cluster=cluster, service="ext", desiredCount=10)
    [d] = ecs.describe_task_sets(cluster=cluster, service="ext", taskSets=[ts["taskSetArn"]])["taskSets"]
    assert d["computedDesiredCount"] == 4
    # The AWS CLI, by the task set's ARN.
    u = shared.aws("ecs", "update-task-set", "--cluster", cluster, "--service", "ext", "--task-set",
                   ts["taskSetArn"], "--scale", "unit=PERCENT,value=0")["taskSet"]
    assert u["computedDesiredCount"] == 0 and u["scale"] == {"value": 0.0, "unit": "PERCENT"}
    d = shared.aws("ecs", "describe-task-sets", "--cluster", cluster, "--service", "ext", "--task-sets", ts["id"],
                   "--include", "TAGS")["taskSets"][0]
    assert d["tags"] == [{"key": "k", "value": "v"}] and d["status"] == "ACTIVE"
    ecs.delete_service(cluster=cluster, service="ext", force=True)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.create_task_set(cluster=cluster, service="ext", taskDefinition=fam, launchType="FARGATE",
                            networkConfiguration=net)
    # DRAINING, or already INACTIVE.
    assert error_code(e) in ("ServiceNotActiveException", "ServiceNotFoundException"), e.value.response
