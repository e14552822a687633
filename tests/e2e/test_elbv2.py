"""Elastic Load Balancing v2 (AWS Query): load balancers, target groups and targets,
listeners, rules, attributes and tags, with boto3 and the AWS CLI, success and error paths.
Control plane only: no traffic flows, so no containers and no network namespace."""

import time

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from conftest import error_code, error_message, unique


@pytest.fixture(scope="module")
def elb(shared):
    return shared.client("elbv2")


@pytest.fixture(scope="module")
def raw(shared):
    """A client that sends values boto3 would refuse (so the server's checks answer)."""
    return boto3.client("elbv2", endpoint_url=shared.endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test",
                        config=botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False))


@pytest.fixture(scope="module")
def net(shared):
    ec2 = shared.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    return {"vpc": vpc["VpcId"], "cidr": vpc["CidrBlock"], "subnets": [s["SubnetId"] for s in subnets],
            "sg": ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]}


def fails(code, fn, *args, **kw):
    with pytest.raises(ClientError) as e:
        fn(*args, **kw)
    assert error_code(e) == code, error_message(e)
    return error_message(e)


def alb(elb, net, **kw):
    return elb.create_load_balancer(Name=unique("alb"), Subnets=net["subnets"][:2], **kw)["LoadBalancers"][0]


def http_tg(elb, net, **kw):
    args = dict(Name=unique("tg"), Protocol="HTTP", Port=80, VpcId=net["vpc"], TargetType="ip")
    args.update(kw)
    return elb.create_target_group(**args)["TargetGroups"][0]


def forward(tg):
    return [{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}]


def test_alb_happy_path(elb, net):
    lb = alb(elb, net, Tags=[{"Key": "team", "Value": "web"}])
    assert lb["Type"] == "application" and lb["Scheme"] == "internet-facing"
    assert lb["State"]["Code"] == "provisioning"
    assert lb["CanonicalHostedZoneId"] == "Z35SXDOTRQ7X7K"
    assert lb["DNSName"].startswith(lb["LoadBalancerName"] + "-") and lb["DNSName"].endswith(".us-east-1.elb.amazonaws.com")
    assert lb["VpcId"] == net["vpc"] and lb["SecurityGroups"] == [net["sg"]]
    assert sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == sorted(net["subnets"][:2])
    assert {z["ZoneName"] for z in lb["AvailabilityZones"]} == {"us-east-1a", "us-east-1b"}
    arn = lb["LoadBalancerArn"]
    assert ":loadbalancer/app/" in arn
    time.sleep(2.1)
    by_name = elb.describe_load_balancers(Names=[lb["LoadBalancerName"]])["LoadBalancers"]
    assert by_name[0]["State"]["Code"] == "active"
    assert elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]["LoadBalancerArn"] == arn

    attrs = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]}
    assert attrs["idle_timeout.timeout_seconds"] == "60" and attrs["deletion_protection.enabled"] == "false"
    assert attrs["routing.http2.enabled"] == "true"
    out = elb.modify_load_balancer_attributes(
        LoadBalancerArn=arn, Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "120"}])
    assert {"Key": "idle_timeout.timeout_seconds", "Value": "120"} in out["Attributes"]
    fails("ValidationError", elb.modify_load_balancer_attributes, LoadBalancerArn=arn,
          Attributes=[{"Key": "no.such.key", "Value": "1"}])
    fails("InvalidConfigurationRequest", elb.modify_load_balancer_attributes, LoadBalancerArn=arn,
          Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "99999"}])

    tg = http_tg(elb, net, HealthCheckPath="/health")
    assert tg["HealthCheckProtocol"] == "HTTP" and tg["HealthCheckIntervalSeconds"] == 30
    assert tg["HealthCheckTimeoutSeconds"] == 5 and tg["HealthyThresholdCount"] == 5
    assert tg["UnhealthyThresholdCount"] == 2 and tg["Matcher"] == {"HttpCode": "200"}
    assert tg["HealthCheckPort"] == "traffic-port" and tg["ProtocolVersion"] == "HTTP1"
    assert tg["LoadBalancerArns"] == []
    tg2 = http_tg(elb, net)

    # Targets before the group is in use: unused.
    ip = net["cidr"].rsplit(".", 2)[0] + ".1.10"
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": ip}, {"Id": ip, "Port": 8080}])
    health = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
    assert len(health) == 2
    assert {h["TargetHealth"]["State"] for h in health} == {"unused"}
    assert health[0]["TargetHealth"]["Reason"] == "Target.NotInUse"

    listener = elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80, DefaultActions=forward(tg))["Listeners"][0]
    larn = listener["ListenerArn"]
    assert listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    assert elb.describe_target_groups(TargetGroupArns=[tg["TargetGroupArn"]])["TargetGroups"][0]["LoadBalancerArns"] == [arn]
    assert [t["TargetGroupName"] for t in elb.describe_target_groups(LoadBalancerArn=arn)["TargetGroups"]] == [tg["TargetGroupName"]]
    assert elb.describe_listeners(LoadBalancerArn=arn)["Listeners"][0]["ListenerArn"] == larn
    assert elb.describe_listeners(ListenerArns=[larn])["Listeners"][0]["Port"] == 80

    # In use: initial, then draining after deregistration.
    health = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": ip, "Port": 80}])
    h = health["TargetHealthDescriptions"][0]
    assert h["TargetHealth"] == {"State": "initial", "Reason": "Elb.RegistrationInProgress",
                                 "Description": h["TargetHealth"]["Description"]}
    assert h["Target"]["AvailabilityZone"] == "us-east-1a" and h["HealthCheckPort"] == "80"
    elb.deregister_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": ip, "Port": 8080}])
    states = {h["Target"]["Port"]: h["TargetHealth"] for h in
              elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]}
    assert states[8080]["State"] == "draining" and states[8080]["Reason"] == "Target.DeregistrationInProgress"
    assert states[80]["State"] == "initial"

    # Rules with every condition type.
    conditions = [
        [{"Field": "path-pattern", "Values": ["/api/*"]}],
        [{"Field": "host-header", "HostHeaderConfig": {"Values": ["api.example.com"]}}],
        [{"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["prod"]}}],
        [{"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["GET", "HEAD"]}}],
        [{"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}]}}],
        [{"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/8"]}}],
    ]
    created = []
    for i, c in enumerate(conditions):
        r = elb.create_rule(ListenerArn=larn, Priority=10 + i, Conditions=c, Actions=forward(tg2))["Rules"][0]
        assert r["Priority"] == str(10 + i) and r["IsDefault"] is False
        created.append(r)
    assert created[0]["Conditions"][0]["PathPatternConfig"]["Values"] == ["/api/*"]
    fixed = elb.create_rule(ListenerArn=larn, Priority=5, Conditions=[{"Field": "path-pattern", "Values": ["/teapot"]}],
                            Actions=[{"Type": "fixed-response", "FixedResponseConfig": {
                                "StatusCode": "418", "ContentType": "text/plain", "MessageBody": "short and stout"}}])["Rules"][0]
    redirect = elb.create_rule(ListenerArn=larn, Priority=6, Conditions=[{"Field": "path-pattern", "Values": ["/old"]}],
                               Actions=[{"Type": "redirect", "RedirectConfig": {"Path": "/new", "StatusCode": "HTTP_301"}}])["Rules"][0]
    rules = elb.describe_rules(ListenerArn=larn)["Rules"]
    assert [r["Priority"] for r in rules] == ["5", "6", "10", "11", "12", "13", "14", "15", "default"]
    assert rules[-1]["IsDefault"] is True
    assert elb.describe_rules(RuleArns=[fixed["RuleArn"]])["Rules"][0]["Actions"][0]["Type"] == "fixed-response"

    out = elb.set_rule_priorities(RulePriorities=[
        {"RuleArn": fixed["RuleArn"], "Priority": 6}, {"RuleArn": redirect["RuleArn"], "Priority": 5}])
    assert {r["RuleArn"]: r["Priority"] for r in out["Rules"]} == {fixed["RuleArn"]: "6", redirect["RuleArn"]: "5"}
    fails("PriorityInUse", elb.set_rule_priorities, RulePriorities=[{"RuleArn": fixed["RuleArn"], "Priority": 10}])
    fails("PriorityInUse", elb.create_rule, ListenerArn=larn, Priority=10,
          Conditions=[{"Field": "path-pattern", "Values": ["/x"]}], Actions=forward(tg2))
    modified = elb.modify_rule(RuleArn=created[0]["RuleArn"], Conditions=[{"Field": "path-pattern", "Values": ["/v2/*"]}])
    assert modified["Rules"][0]["Conditions"][0]["Values"] == ["/v2/*"]
    elb.delete_rule(RuleArn=created[0]["RuleArn"])
    fails("RuleNotFound", elb.describe_rules, RuleArns=[created[0]["RuleArn"]])
    fails("OperationNotPermitted", elb.delete_rule, RuleArn=rules[-1]["RuleArn"])
    assert tg2["TargetGroupArn"] in [t["TargetGroupArn"] for t in elb.describe_target_groups(LoadBalancerArn=arn)["TargetGroups"]]

    # Target group and listener changes.
    m = elb.modify_target_group(TargetGroupArn=tg["TargetGroupArn"], HealthCheckIntervalSeconds=10,
                                HealthCheckTimeoutSeconds=3, Matcher={"HttpCode": "200-299"})["TargetGroups"][0]
    assert (m["HealthCheckIntervalSeconds"], m["HealthCheckTimeoutSeconds"], m["Matcher"]["HttpCode"]) == (10, 3, "200-299")
    tattrs = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])["Attributes"]}
    assert tattrs["deregistration_delay.timeout_seconds"] == "300" and tattrs["stickiness.type"] == "lb_cookie"
    assert tattrs["stickiness.enabled"] == "false" and tattrs["load_balancing.algorithm.type"] == "round_robin"
    elb.modify_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"], Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"},
        {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"}])
    fails("InvalidConfigurationRequest", elb.modify_target_group_attributes, TargetGroupArn=tg["TargetGroupArn"],
          Attributes=[{"Key": "slow_start.duration_seconds", "Value": "10"}])
    # Without a delay, deregistering removes the target at once (and the draining one is done).
    elb.deregister_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": ip}])
    assert elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"] == []
    ml = elb.modify_listener(ListenerArn=larn, Port=8080, DefaultActions=forward(tg2))["Listeners"][0]
    assert ml["Port"] == 8080 and ml["DefaultActions"][0]["TargetGroupArn"] == tg2["TargetGroupArn"]
    assert elb.describe_rules(ListenerArn=larn)["Rules"][-1]["Actions"][0]["TargetGroupArn"] == tg2["TargetGroupArn"]
    lattrs = {a["Key"]: a["Value"] for a in elb.describe_listener_attributes(ListenerArn=larn)["Attributes"]}
    assert lattrs["routing.http.response.server.enabled"] == "true"

    # Tags on every kind.
    resources = [arn, tg["TargetGroupArn"], larn, fixed["RuleArn"]]
    elb.add_tags(ResourceArns=resources, Tags=[{"Key": "env", "Value": "test"}])
    descs = elb.describe_tags(ResourceArns=resources)["TagDescriptions"]
    assert all({"Key": "env", "Value": "test"} in d["Tags"] for d in descs)
    assert {"Key": "team", "Value": "web"} in descs[0]["Tags"]
    elb.remove_tags(ResourceArns=[arn], TagKeys=["team"])
    assert elb.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"] == [{"Key": "env", "Value": "test"}]
    fails("TooManyTags", elb.add_tags, ResourceArns=[arn], Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    fails("DuplicateTagKeys", elb.add_tags, ResourceArns=[arn], Tags=[{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])

    # In use, deletion protection, then deletion of everything.
    msg = fails("ResourceInUse", elb.delete_target_group, TargetGroupArn=tg2["TargetGroupArn"])
    assert "is currently in use by a listener or a rule" in msg
    elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[{"Key": "deletion_protection.enabled", "Value": "true"}])
    fails("OperationNotPermitted", elb.delete_load_balancer, LoadBalancerArn=arn)
    elb.modify_load_balancer_attributes(LoadBalancerArn=arn, Attributes=[{"Key": "deletion_protection.enabled", "Value": "false"}])
    elb.delete_load_balancer(LoadBalancerArn=arn)
    elb.delete_load_balancer(LoadBalancerArn=arn)  # again: succeeds, as on AWS
    fails("LoadBalancerNotFound", elb.describe_load_balancers, LoadBalancerArns=[arn])
    fails("ListenerNotFound", elb.describe_listeners, ListenerArns=[larn])
    fails("RuleNotFound", elb.describe_rules, RuleArns=[fixed["RuleArn"]])
    assert elb.describe_target_groups(TargetGroupArns=[tg2["TargetGroupArn"]])["TargetGroups"][0]["LoadBalancerArns"] == []
    elb.delete_target_group(TargetGroupArn=tg2["TargetGroupArn"])
    elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])
    fails("TargetGroupNotFound", elb.describe_target_groups, TargetGroupArns=[tg["TargetGroupArn"]])


def test_nlb_and_the_cli(shared, elb, net):
    name = unique("nlb")
    lb = shared.aws("elbv2", "create-load-balancer", "--name", name, "--type", "network", "--scheme", "internal",
                    "--subnets", net["subnets"][0])["LoadBalancers"][0]
    assert lb["Type"] == "network" and lb["CanonicalHostedZoneId"] == "Z26RNL4JYFTOTI"
    assert lb["DNSName"].startswith(f"internal-{name}-")
    addr = lb["AvailabilityZones"][0]["LoadBalancerAddresses"][0]["PrivateIPv4Address"]
    assert addr.startswith(net["cidr"].split(".")[0] + ".")
    attrs = {a["Key"]: a["Value"] for a in elb.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
    assert attrs["load_balancing.cross_zone.enabled"] == "false"
    # A second NLB in the subnet gets another address.
    other = elb.create_load_balancer(Name=unique("nlb"), Type="network", Subnets=[net["subnets"][0]])["LoadBalancers"][0]
    assert other["AvailabilityZones"][0]["LoadBalancerAddresses"][0]["PrivateIPv4Address"] != addr
    tg = elb.create_target_group(Name=unique("tcp"), Protocol="TCP", Port=6379, VpcId=net["vpc"])["TargetGroups"][0]
    assert tg["TargetType"] == "instance" and tg["HealthCheckProtocol"] == "TCP"
    assert tg["HealthCheckTimeoutSeconds"] == 10 and "Matcher" not in tg
    tattrs = {a["Key"]: a["Value"] for a in elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])["Attributes"]}
    assert tattrs["stickiness.type"] == "source_ip"
    http = http_tg(elb, net)
    fails("IncompatibleProtocols", elb.create_listener, LoadBalancerArn=lb["LoadBalancerArn"], Protocol="TCP", Port=6379,
          DefaultActions=forward(http))
    fails("ValidationError", elb.create_listener, LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
          DefaultActions=forward(tg))
    listener = shared.aws("elbv2", "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"], "--protocol", "TCP",
                          "--port", "6379", "--default-actions", f"Type=forward,TargetGroupArn={tg['TargetGroupArn']}")
    assert listener["Listeners"][0]["Protocol"] == "TCP"
    fails("TargetGroupAssociationLimit", elb.create_listener, LoadBalancerArn=other["LoadBalancerArn"], Protocol="TCP",
          Port=6379, DefaultActions=forward(tg))
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "i-0123456789abcdef0"}])
    h = shared.aws("elbv2", "describe-target-health", "--target-group-arn", tg["TargetGroupArn"])
    assert h["TargetHealthDescriptions"][0]["TargetHealth"]["State"] == "initial"
    assert h["TargetHealthDescriptions"][0]["Target"]["Port"] == 6379
    fails("ValidationError", elb.register_targets, TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "web-1"}])
    p = shared.aws("elbv2", "describe-load-balancers", "--names", "nope-" + name, check=False)
    assert p.returncode != 0 and "LoadBalancerNotFound" in p.stderr
    for arn in (lb["LoadBalancerArn"], other["LoadBalancerArn"]):
        elb.delete_load_balancer(LoadBalancerArn=arn)
    # The addresses are free again.
    again = elb.create_load_balancer(Name=unique("nlb"), Type="network", Subnets=[net["subnets"][0]])["LoadBalancers"][0]
    assert again["AvailabilityZones"][0]["LoadBalancerAddresses"][0]["PrivateIPv4Address"] == addr
    elb.delete_load_balancer(LoadBalancerArn=again["LoadBalancerArn"])


def test_create_errors(elb, raw, net):
    lb = alb(elb, net)
    fails("DuplicateLoadBalancerName", elb.create_load_balancer, Name=lb["LoadBalancerName"], Subnets=net["subnets"][:2],
          Scheme="internal")
    # The same settings again answer the same load balancer, as on AWS.
    same = elb.create_load_balancer(Name=lb["LoadBalancerName"], Subnets=net["subnets"][:2])["LoadBalancers"][0]
    assert same["LoadBalancerArn"] == lb["LoadBalancerArn"]
    msg = fails("ValidationError", elb.create_load_balancer, Name=unique("one"), Subnets=net["subnets"][:1])
    assert "two different Availability Zones" in msg
    for bad in ["-web", "web-", "web_1", "a" * 33, "internal-web"]:
        fails("ValidationError", raw.create_load_balancer, Name=bad, Subnets=net["subnets"][:2])
        if bad != "internal-web":
            fails("ValidationError", raw.create_target_group, Name=bad, Protocol="HTTP", Port=80, VpcId=net["vpc"])
    fails("SubnetNotFound", elb.create_load_balancer, Name=unique("sn"), Subnets=["subnet-0000000000000000a", net["subnets"][0]])

    tg = http_tg(elb, net)
    fails("DuplicateTargetGroupName", elb.create_target_group, Name=tg["TargetGroupName"], Protocol="HTTP", Port=8080,
          VpcId=net["vpc"])
    for hc in [dict(HealthCheckIntervalSeconds=4), dict(HealthCheckIntervalSeconds=301), dict(HealthCheckTimeoutSeconds=1),
               dict(HealthCheckIntervalSeconds=10, HealthCheckTimeoutSeconds=10), dict(HealthyThresholdCount=1),
               dict(UnhealthyThresholdCount=11), dict(Matcher={"HttpCode": "600"}), dict(Matcher={"HttpCode": "2xx"})]:
        fails("ValidationError", raw.create_target_group, Name=unique("hc"), Protocol="HTTP", Port=80, VpcId=net["vpc"], **hc)
    fails("ValidationError", elb.modify_target_group, TargetGroupArn=tg["TargetGroupArn"], HealthCheckTimeoutSeconds=60)

    fails("ValidationError", elb.register_targets, TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "192.0.2.1"}])
    fails("InvalidTarget", elb.deregister_targets, TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "172.31.0.99"}])
    # Asked for by name, a target that is not registered is `unused` (AWS answers, no error).
    [d] = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "172.31.0.99"}])[
        "TargetHealthDescriptions"]
    assert d["TargetHealth"] == {"State": "unused", "Reason": "Target.NotRegistered",
                                 "Description": "Target is not registered to the target group"}, d

    l = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=forward(tg))
    larn = l["Listeners"][0]["ListenerArn"]
    fails("DuplicateListener", elb.create_listener, LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
          DefaultActions=forward(tg))
    fails("CertificateNotFound", elb.create_listener, LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=443,
          DefaultActions=forward(tg))
    https = elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTPS", Port=443, DefaultActions=forward(tg),
                                Certificates=[{"CertificateArn": "file:///etc/estiba/web.pem"}])["Listeners"][0]
    assert https["SslPolicy"] == "ELBSecurityPolicy-2016-08"
    assert https["Certificates"] == [{"CertificateArn": "file:///etc/estiba/web.pem"}]
    fails("InvalidLoadBalancerAction", elb.create_listener, LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=81,
          DefaultActions=[{"Type": "redirect", "RedirectConfig": {"StatusCode": "HTTP_302"}}])
    fails("ValidationError", elb.create_rule, ListenerArn=larn, Priority=1,
          Conditions=[{"Field": "path-pattern", "Values": ["/1", "/2", "/3"]}, {"Field": "host-header", "Values": ["a", "b", "c"]}],
          Actions=forward(tg))
    fails("ValidationError", elb.create_rule, ListenerArn=larn, Priority=1,
          Conditions=[{"Field": "cookie", "Values": ["a"]}], Actions=forward(tg))
    fails("ValidationError", raw.create_rule, ListenerArn=larn, Priority=50001,
          Conditions=[{"Field": "path-pattern", "Values": ["/a"]}], Actions=forward(tg))
    r1 = elb.create_rule(ListenerArn=larn, Priority=1, Conditions=[{"Field": "path-pattern", "Values": ["/a"]}], Actions=forward(tg))
    r2 = elb.create_rule(ListenerArn=larn, Priority=2, Conditions=[{"Field": "path-pattern", "Values": ["/b"]}], Actions=forward(tg))
    fails("ValidationError", elb.set_rule_priorities, RulePriorities=[
        {"RuleArn": r1["Rules"][0]["RuleArn"], "Priority": 3}, {"RuleArn": r2["Rules"][0]["RuleArn"], "Priority": 3}])

    # Unknown ARNs of every kind.
    region_acct = lb["LoadBalancerArn"].split(":loadbalancer/")[0]
    lb_arn = f"{region_acct}:loadbalancer/app/nope/0123456789abcdef"
    tg_arn = f"{region_acct}:targetgroup/nope/0123456789abcdef"
    l_arn = f"{region_acct}:listener/app/nope/0123456789abcdef/0123456789abcdef"
    r_arn = f"{region_acct}:listener-rule/app/nope/0123456789abcdef/0123456789abcdef/0123456789abcdef"
    fails("LoadBalancerNotFound", elb.describe_load_balancer_attributes, LoadBalancerArn=lb_arn)
    fails("LoadBalancerNotFound", elb.create_listener, LoadBalancerArn=lb_arn, Protocol="HTTP", Port=80, DefaultActions=forward(tg))
    fails("LoadBalancerNotFound", elb.describe_listeners, LoadBalancerArn=lb_arn)
    fails("TargetGroupNotFound", elb.register_targets, TargetGroupArn=tg_arn, Targets=[{"Id": "172.31.0.9"}])
    fails("TargetGroupNotFound", elb.describe_target_health, TargetGroupArn=tg_arn)
    fails("TargetGroupNotFound", elb.delete_target_group, TargetGroupArn=tg_arn)
    fails("TargetGroupNotFound", elb.create_listener, LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=82,
          DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    fails("ListenerNotFound", elb.describe_listeners, ListenerArns=[l_arn])
    fails("ListenerNotFound", elb.create_rule, ListenerArn=l_arn, Priority=1,
          Conditions=[{"Field": "path-pattern", "Values": ["/a"]}], Actions=forward(tg))
    fails("ListenerNotFound", elb.delete_listener, ListenerArn=l_arn)
    fails("RuleNotFound", elb.delete_rule, RuleArn=r_arn)
    fails("RuleNotFound", elb.modify_rule, RuleArn=r_arn, Actions=forward(tg))
    fails("LoadBalancerNotFound", elb.describe_tags, ResourceArns=[lb_arn])

    elb.delete_listener(ListenerArn=larn)
    fails("RuleNotFound", elb.describe_rules, RuleArns=[r1["Rules"][0]["RuleArn"]])
    elb.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    elb.delete_target_group(TargetGroupArn=tg["TargetGroupArn"])


def test_paging_limits_and_policies(elb, net):
    names = [unique("pg") for _ in range(3)]
    arns = [elb.create_target_group(Name=n, Protocol="HTTP", Port=80, VpcId=net["vpc"])["TargetGroups"][0]["TargetGroupArn"]
            for n in names]
    seen, marker = [], None
    while True:
        kw = {"Marker": marker} if marker else {}
        page = elb.describe_target_groups(PageSize=2, **kw)
        seen += [t["TargetGroupArn"] for t in page["TargetGroups"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert set(arns) <= set(seen) and len(seen) == len(set(seen))
    limits = {l["Name"]: l["Max"] for l in elb.describe_account_limits()["Limits"]}
    assert limits["target-groups"] == "3000"
    policies = [p["Name"] for p in elb.describe_ssl_policies()["SslPolicies"]]
    assert "ELBSecurityPolicy-2016-08" in policies
    fails("SSLPolicyNotFound", elb.describe_ssl_policies, Names=["nope"])
    for a in arns:
        elb.delete_target_group(TargetGroupArn=a)
