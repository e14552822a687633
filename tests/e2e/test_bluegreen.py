"""ECS blue/green deployments behind an Application Load Balancer: the new revision's tasks
start in the alternate target group, production traffic moves to them by the weights of the
production listener rule (DescribeRules shows them), the old tasks stop after the bake time,
and a bounded loop of requests through the load balancer sees no failure. PAUSE lifecycle
hooks hold the deployment until ContinueServiceDeployment.

Like test_lb.py, these tests run in a network namespace of their own with no route out."""

import botocore.exceptions
import pytest

from conftest import wait_until
from test_lb import HTTPD, Load, alb, fetch, lb_address, lb_node, needs_isolation, needs_root, running, target_group  # noqa: F401
from test_network import NET, eni


def weights(elb, rule_arn):
    [rule] = elb.describe_rules(RuleArns=[rule_arn])["Rules"]
    [action] = rule["Actions"]
    groups = action.get("ForwardConfig", {}).get("TargetGroups")
    if groups is None:
        return {action["TargetGroupArn"]: 1}
    return {g["TargetGroupArn"]: g.get("Weight", 1) for g in groups}


def hostnames(tasks):
    return {eni(t)["privateDnsName"].split(".")[0] for t in tasks}


def completed(ecs, name):
    s = ecs.describe_services(cluster="default", services=[name])["services"][0]
    return len(s["deployments"]) == 1 and s["deployments"][0]["rolloutState"] == "COMPLETED" and s


def record(ecs, name):
    arns = ecs.list_service_deployments(cluster="default", service=name)["serviceDeployments"]
    newest = max(arns, key=lambda d: d["createdAt"])
    return ecs.describe_service_deployments(serviceDeploymentArns=[newest["serviceDeploymentArn"]])[
        "serviceDeployments"][0]


@needs_root
@needs_isolation
def test_blue_green_under_load_and_paused_hooks(lb_node):
    node = lb_node
    ecs, elb = node.ecs, node.e.client("elbv2")
    lb = alb(node)
    blue_tg = target_group(node, "bg-a")
    green_tg = target_group(node, "bg-b")
    other_tg = target_group(node, "other")
    listener = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                                   DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
                                       "StatusCode": "404", "ContentType": "text/plain"}}])["Listeners"][0]
    rule = elb.create_rule(ListenerArn=listener["ListenerArn"], Priority=10,
                           Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/*"]}}],
                           Actions=[{"Type": "forward", "TargetGroupArn": blue_tg}])["Rules"][0]["RuleArn"]
    other_rule = elb.create_rule(ListenerArn=listener["ListenerArn"], Priority=20,
                                 Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/x/*"]}}],
                                 Actions=[{"Type": "forward", "TargetGroupArn": other_tg}])["Rules"][0]["RuleArn"]
    fam = node.register([{"name": "web", "command": ["sh", "-c", HTTPD], "portMappings": [{"containerPort": 8080}]}])

    def lbs(**adv):
        a = {"alternateTargetGroupArn": green_tg, "productionListenerRule": rule,
             "roleArn": "arn:aws:iam::000000000000:role/ecs-bg"}
        a.update(adv)
        return [{"targetGroupArn": blue_tg, "containerName": "web", "containerPort": 8080,
                 "advancedConfiguration": {k: v for k, v in a.items() if v is not None}}]

    def create(name="web", load_balancers=None, **config):
        conf = {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0}
        conf.update(config)
        return ecs.create_service(cluster="default", serviceName=name, taskDefinition=fam, desiredCount=2,
                                  launchType="FARGATE", networkConfiguration=NET, healthCheckGracePeriodSeconds=0,
                                  deploymentConfiguration=conf,
                                  loadBalancers=load_balancers if load_balancers is not None else lbs())

    def refused(code, text, **kw):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            create(**kw)
        assert e.value.response["Error"]["Code"] == code, e.value.response
        assert text in e.value.response["Error"]["Message"], e.value.response

    # Validation: the advanced configuration is required, and its rule must forward to the
    # primary or the alternate group; Lambda hooks cannot run here.
    refused("InvalidParameterException", "alternateTargetGroupArn",
            load_balancers=[{"targetGroupArn": blue_tg, "containerName": "web", "containerPort": 8080}])
    refused("InvalidParameterException", "productionListenerRule", load_balancers=lbs(productionListenerRule=None))
    refused("InvalidParameterException", f"The listener rule {other_rule} must forward to the target group",
            load_balancers=lbs(productionListenerRule=other_rule))
    refused("InvalidParameterException", "Unable to find the target group",
            load_balancers=lbs(alternateTargetGroupArn=blue_tg.replace("bg-a", "nope")))
    refused("InvalidParameterException", "stepPercent", strategy="LINEAR", linearConfiguration={"stepPercent": 1.0})
    refused("UnsupportedFeatureException", "Lambda", lifecycleHooks=[{
        "hookTargetArn": "arn:aws:lambda:us-east-1:000000000000:function:check", "roleArn": "arn:aws:iam::0:role/x",
        "lifecycleStages": ["POST_SCALE_UP"]}])

    create()
    first = wait_until(lambda: len(r := running(ecs, "web")) == 2 and r, timeout=60, what="2 blue tasks")
    wait_until(lambda: completed(ecs, "web"), timeout=60, what="the first deployment completed")
    # The production rule forwards to both groups, all to the primary.
    assert weights(elb, rule) == {blue_tg: 100, green_tg: 0}
    ip = lb_address(lb)
    seen = set()
    wait_until(lambda: seen.add(fetch(f"http://{ip}/")[1].split(".")[0]) or hostnames(first) <= seen, timeout=20,
               what="both blue tasks answering")

    # Blue/green under load: no request fails, traffic ends on the new tasks, in the
    # alternate group.
    stages = set()
    load = Load(f"http://{ip}/")
    try:
        ecs.update_service(cluster="default", service="web", forceNewDeployment=True)

        def done():
            stages.add(record(ecs, "web").get("lifecycleStage"))
            return completed(ecs, "web")
        wait_until(done, timeout=180, interval=0.3, what="the blue/green deployment completed")
    finally:
        load.done()
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50, load.ok
    second = running(ecs, "web")
    assert len(second) == 2 and not {t["taskArn"] for t in second} & {t["taskArn"] for t in first}
    assert weights(elb, rule) == {blue_tg: 0, green_tg: 100}
    answers = {fetch(f"http://{ip}/")[1].split(".")[0] for _ in range(20)}
    assert answers <= hostnames(second), (answers, hostnames(second))
    rec = record(ecs, "web")
    assert rec["status"] == "SUCCESSFUL", rec
    assert stages & {"SCALE_UP", "PRODUCTION_TRAFFIC_SHIFT", "BAKE_TIME", "CLEAN_UP"}, stages
    green_ips = sorted(eni(t)["privateIPv4Address"] for t in second)
    wait_until(lambda: sorted(d["Target"]["Id"] for d in elb.describe_target_health(TargetGroupArn=green_tg)[
        "TargetHealthDescriptions"]) == green_ips, timeout=20, what="the green tasks alone in the alternate group")

    # A PAUSE hook after scale-up holds the next deployment (traffic stays on the current
    # tasks) until ContinueServiceDeployment; the deployment then moves traffic back to the
    # primary group.
    ecs.update_service(cluster="default", service="web", forceNewDeployment=True, deploymentConfiguration={
        "lifecycleHooks": [{"targetType": "PAUSE", "lifecycleStages": ["POST_SCALE_UP"],
                            "timeoutConfiguration": {"timeoutInMinutes": 30, "action": "ROLLBACK"}}]})
    paused = wait_until(lambda: (r := record(ecs, "web")).get("lifecycleHookDetails") and r, timeout=90,
                        what="the deployment paused at its hook")
    [hook] = paused["lifecycleHookDetails"]
    assert hook["status"] == "AWAITING_ACTION" and hook["targetType"] == "PAUSE", hook
    assert paused["lifecycleStage"] == "POST_SCALE_UP", paused
    assert weights(elb, rule) == {blue_tg: 0, green_tg: 100}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        ecs.continue_service_deployment(serviceDeploymentArn=paused["serviceDeploymentArn"], hookId="nope")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    ecs.continue_service_deployment(serviceDeploymentArn=paused["serviceDeploymentArn"], hookId=hook["hookId"],
                                    action="CONTINUE")
    wait_until(lambda: completed(ecs, "web"), timeout=120, interval=0.3, what="the continued deployment completed")
    assert weights(elb, rule) == {blue_tg: 100, green_tg: 0}
    assert record(ecs, "web")["lifecycleHookDetails"][0]["status"] == "SUCCEEDED"

    # ROLLBACK at the hook: traffic stays on (goes back to) the tasks that served it.
    third = running(ecs, "web")
    ecs.update_service(cluster="default", service="web", forceNewDeployment=True)
    paused = wait_until(lambda: (r := record(ecs, "web")).get("lifecycleHookDetails") and r
                        and r["lifecycleHookDetails"][0]["status"] == "AWAITING_ACTION" and r,
                        timeout=90, what="the next deployment paused")
    ecs.continue_service_deployment(serviceDeploymentArn=paused["serviceDeploymentArn"],
                                    hookId=paused["lifecycleHookDetails"][0]["hookId"], action="ROLLBACK")
    wait_until(lambda: completed(ecs, "web"), timeout=120, interval=0.3, what="the rollback completed")
    assert weights(elb, rule) == {blue_tg: 100, green_tg: 0}
    rolled = ecs.describe_service_deployments(serviceDeploymentArns=[paused["serviceDeploymentArn"]])[
        "serviceDeployments"][0]
    assert rolled["status"] in ("ROLLBACK_IN_PROGRESS", "ROLLBACK_SUCCESSFUL"), rolled
    answers = {fetch(f"http://{ip}/")[1].split(".")[0] for _ in range(20)}
    assert answers <= hostnames(running(ecs, "web")), answers
    assert third
