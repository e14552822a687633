"""The console's third round, control plane only: the Create service form's load balancing,
service discovery and service auto scaling sections; the service and task views' target health,
logs (live tail) and metrics graphs; the pages of their own (ECR repositories, load balancers,
Cloud Map namespaces, log groups with search, alarms, scaling policies); and the region
switcher. Every check of what the console did is made again through boto3.
"""

import time

import pytest
from playwright.sync_api import expect

import images as img
from conftest import register_fargate, unique, wait_until
from test_console import Console, browser, console, pytestmark  # noqa: F401 (fixtures, skip mark)
from test_ecr import small_image

LOGGED = {
    "name": "web",
    "image": "busybox",
    "portMappings": [{"containerPort": 80}],
    "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs"}},
}


def logged_taskdef(ecs, family, group):
    c = dict(LOGGED, logConfiguration={"logDriver": "awslogs", "options": dict(LOGGED["logConfiguration"]["options"], **{"awslogs-group": group})})
    return register_fargate(ecs, family, containers=[c])


def private_namespace(shared, name):
    sd, ec2 = shared.client("servicediscovery"), shared.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    op = sd.create_private_dns_namespace(Name=name, Vpc=vpc)["OperationId"]
    wait_until(lambda: sd.get_operation(OperationId=op)["Operation"]["Status"] == "SUCCESS", what="the namespace")
    return sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]


def open_create_service(console, cluster, family, svc):
    console.open(f"/clusters/{cluster}/services/create")
    console.p.get_by_role("radio", name="Launch type").check()
    console.field("Family").select_option(family)
    expect(console.field("Revision")).to_have_value(f"{family}:1")
    console.field("Service name").fill(svc)


def section(console, legend):
    return console.p.get_by_role("group", name=legend, exact=True)


def test_create_a_service_with_a_new_alb_discovery_and_autoscaling(console, shared):
    ecs, elb, sd, aas = shared.client(), shared.client("elbv2"), shared.client("servicediscovery"), shared.client("application-autoscaling")
    cluster, family, svc = unique("console"), unique("web"), unique("svc")
    ecs.create_cluster(clusterName=cluster)
    logged_taskdef(ecs, family, f"/ecs/{family}")
    ns_name = f"{unique('ns')}.local"
    ns_id = private_namespace(shared, ns_name)
    lb_name, tg_name = unique("alb")[:20], unique("tg")[:20]

    open_create_service(console, cluster, family, svc)
    console.field("Desired tasks").fill("2")
    lb = section(console, "Load balancing")
    lb.get_by_label("Use load balancing").check()
    expect(lb.get_by_label("Container", exact=True)).to_have_value("web:80")
    expect(lb.get_by_role("radio", name="Create a new load balancer")).to_be_checked()
    # A new load balancer has no listener to reuse.
    expect(lb.get_by_role("radio", name="Use an existing listener")).to_be_disabled()
    lb.get_by_label("Load balancer name").fill(lb_name)
    lb.get_by_label("Port", exact=True).fill("8080")
    lb.get_by_label("Target group name").fill(tg_name)
    lb.get_by_label("Health check path").fill("/health")
    lb.get_by_label("Health check grace period").fill("30")
    sdsec = section(console, "Service discovery")
    sdsec.get_by_label("Use service discovery").check()
    sdsec.get_by_label("Namespace").select_option(ns_id)
    sdsec.get_by_label("Service discovery name").fill("web")
    sdsec.get_by_label("DNS record type").select_option("A")
    sdsec.get_by_label("TTL").fill("15")
    scaling = section(console, "Service auto scaling")
    scaling.get_by_label("Use service auto scaling").check()
    scaling.get_by_label("Minimum number of tasks").fill("1")
    scaling.get_by_label("Maximum number of tasks").fill("5")
    scaling.get_by_label("Policy name").fill("requests")
    scaling.get_by_label("ECS service metric").select_option("ALBRequestCountPerTarget")
    scaling.get_by_label("Target value").fill("100")
    scaling.get_by_label("Scale-out cooldown period").fill("60")
    scaling.get_by_label("Scale-in cooldown period").fill("120")
    console.shot("service-create-lb-discovery-scaling")
    console.submit("Create", f"/clusters/{cluster}/services/{svc}", f"Service {svc} has been created successfully.")

    # Through boto3: the load balancer, its target group and listener, the Cloud Map service,
    # the ECS service naming them, and the scaling target and policy.
    [alb] = elb.describe_load_balancers(Names=[lb_name])["LoadBalancers"]
    assert alb["Type"] == "application" and alb["Scheme"] == "internet-facing"
    [tg] = elb.describe_target_groups(Names=[tg_name])["TargetGroups"]
    assert (tg["Protocol"], tg["Port"], tg["TargetType"], tg["HealthCheckPath"]) == ("HTTP", 80, "ip", "/health")
    [listener] = elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    assert (listener["Protocol"], listener["Port"]) == ("HTTP", 8080)
    assert listener["DefaultActions"][0]["Type"] == "forward" and listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    s = ecs.describe_services(cluster=cluster, services=[svc])["services"][0]
    assert s["loadBalancers"] == [{"targetGroupArn": tg["TargetGroupArn"], "containerName": "web", "containerPort": 80}]
    assert s["healthCheckGracePeriodSeconds"] == 30 and s["desiredCount"] == 2
    [reg] = s["serviceRegistries"]
    [dsvc] = [x for x in sd.list_services()["Services"] if x["Arn"] == reg["registryArn"]]
    got = sd.get_service(Id=dsvc["Id"])["Service"]
    assert got["Name"] == "web" and got["NamespaceId"] == ns_id
    assert got["DnsConfig"]["DnsRecords"] == [{"Type": "A", "TTL": 15}]
    rid = f"service/{cluster}/{svc}"
    [target] = aas.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableDimension"]) == (1, 5, "ecs:service:DesiredCount")
    [policy] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]
    conf = policy["TargetTrackingScalingPolicyConfiguration"]
    label = alb["LoadBalancerArn"].split(":loadbalancer/")[1] + "/" + tg["TargetGroupArn"].split(":")[-1]
    assert policy["PolicyName"] == "requests" and conf["TargetValue"] == 100
    assert conf["PredefinedMetricSpecification"] == {"PredefinedMetricType": "ALBRequestCountPerTarget", "ResourceLabel": label}
    assert (conf["ScaleOutCooldown"], conf["ScaleInCooldown"]) == (60, 120)

    # The service view: the overview names them; the steps shown were all done; target
    # health, logs and metrics (with the ALB's requests) have their panels.
    overview = console.details("Service overview")
    assert tg_name in overview["Load balancers"] and "web:80" in overview["Load balancers"]
    assert reg["registryArn"] in overview["Service discovery"]
    expect(console.p.get_by_role("table", name="Target health", exact=True)).to_be_visible()
    expect(console.p.locator("#metrics-panel figure")).to_have_count(3)
    expect(console.p.locator("#metrics-panel figure[data-metric=RequestCount]")).to_have_count(1)
    expect(console.p.locator("#logs-panel")).to_contain_text("Live tail")

    console.delete("Delete service", f"/clusters/{cluster}/services")


def test_existing_load_balancer_listener_and_a_new_target_group_by_rule(console, shared):
    ecs, elb, ec2 = shared.client(), shared.client("elbv2"), shared.client("ec2")
    cluster, family, svc = unique("console"), unique("web"), unique("svc")
    ecs.create_cluster(clusterName=cluster)
    logged_taskdef(ecs, family, f"/ecs/{family}")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    lb_name = unique("alb")[:20]
    alb = elb.create_load_balancer(Name=lb_name, Subnets=subnets)["LoadBalancers"][0]
    first = elb.create_target_group(Name=unique("tg0")[:20], Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip")["TargetGroups"][0]
    listener = elb.create_listener(
        LoadBalancerArn=alb["LoadBalancerArn"], Protocol="HTTP", Port=80, DefaultActions=[{"Type": "forward", "TargetGroupArn": first["TargetGroupArn"]}]
    )["Listeners"][0]
    tg_name = unique("tg1")[:20]

    open_create_service(console, cluster, family, svc)
    lb = section(console, "Load balancing")
    lb.get_by_label("Use load balancing").check()
    lb.get_by_role("radio", name="Use an existing load balancer").check()
    lb.get_by_label("Load balancer", exact=True).select_option(label=lb_name)
    lb.get_by_role("radio", name="Use an existing listener").check()
    expect(lb.get_by_label("Listener", exact=True)).to_have_value(listener["ListenerArn"])
    lb.get_by_label("Target group name").fill(tg_name)
    lb.get_by_label("Path pattern").fill("/api/*")
    lb.get_by_label("Evaluation order").fill("5")
    console.submit("Create", f"/clusters/{cluster}/services/{svc}")

    [tg] = elb.describe_target_groups(Names=[tg_name])["TargetGroups"]
    rules = elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
    [rule] = [r for r in rules if r["Priority"] == "5"]
    assert rule["Conditions"][0]["Field"] == "path-pattern" and rule["Conditions"][0]["PathPatternConfig"]["Values"] == ["/api/*"]
    assert rule["Actions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    assert len(elb.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]) == 1, "no new listener"
    s = ecs.describe_services(cluster=cluster, services=[svc])["services"][0]
    assert s["loadBalancers"][0]["targetGroupArn"] == tg["TargetGroupArn"]

    # The load balancer's own page shows the listener, both rules and both target groups.
    console.open(f"/load-balancers/{lb_name}")
    assert [r[0] for r in console.table("Listeners")] == ["HTTP:80"]
    rows = console.table("Rules")
    assert ["HTTP:80", "5", "path-pattern is /api/*", f"forward to {tg_name}"] in rows
    assert any(r[1] == "default" and r[2] == "(default)" for r in rows)
    assert sorted(r[0] for r in console.table("Target groups")) == sorted([first["TargetGroupName"], tg_name])
    console.shot("load-balancer")
    ecs.delete_service(cluster=cluster, service=svc, force=True)


def test_a_failed_step_stops_the_deploy_and_says_which(console, shared):
    ecs, elb = shared.client(), shared.client("elbv2")
    cluster, family, svc = unique("console"), unique("web"), unique("svc")
    ecs.create_cluster(clusterName=cluster)
    logged_taskdef(ecs, family, f"/ecs/{family}")
    bad = "not_valid!"
    with pytest.raises(Exception) as e:
        elb.create_load_balancer(Name=bad, Subnets=["subnet-1", "subnet-2"])
    code = e.value.response["Error"]["Code"]

    open_create_service(console, cluster, family, svc)
    lb = section(console, "Load balancing")
    lb.get_by_label("Use load balancing").check()
    lb.get_by_label("Load balancer name").fill(bad)
    lb.get_by_label("Target group name").fill(unique("tg")[:20])
    console.button("Create").click()
    console.wait_banner("Service creation failed", code)
    expect(console.p.locator("#deploy-progress li.failed")).to_contain_text(f"Create load balancer {bad}: failed ({code})")
    # Nothing after the failed step was called.
    assert ecs.list_services(cluster=cluster)["serviceArns"] == []
    assert elb.describe_target_groups()["TargetGroups"] == [] or all(t["TargetGroupName"] != bad for t in elb.describe_target_groups()["TargetGroups"])
    console.shot("service-create-step-failed")


def test_the_service_and_task_views_tail_logs_and_graph_metrics(console, shared):
    ecs, logs, cw = shared.client(), shared.client("logs"), shared.client("cloudwatch")
    cluster, family, svc = unique("console"), unique("web"), unique("svc")
    group = f"/ecs/{family}"
    ecs.create_cluster(clusterName=cluster)
    logged_taskdef(ecs, family, group)
    ecs.create_service(
        cluster=cluster, serviceName=svc, taskDefinition=family, desiredCount=1, launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}},
    )
    task_arn = wait_until(lambda: ecs.list_tasks(cluster=cluster, serviceName=svc)["taskArns"], what="the service's task")[0]
    task_id = task_arn.split("/")[-1]
    # The control plane runs no containers: write what the awslogs driver would.
    logs.create_log_group(logGroupName=group)
    stream = f"ecs/web/{task_id}"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now - 1000, "message": "first line"}])
    console.open(f"/clusters/{cluster}/services/{svc}")
    log = console.p.locator("#log-lines")
    expect(log).to_contain_text("first line")
    # AWS/ECS metrics come only from running tasks (test_console_run.py sees them drawn): here
    # the graphs show what GetMetricData answers, no datapoint, and no request graph without
    # a load balancer.
    dims = [{"Name": "ClusterName", "Value": cluster}, {"Name": "ServiceName", "Value": svc}]
    got = cw.get_metric_data(
        MetricDataQueries=[{"Id": "c", "MetricStat": {"Metric": {"Namespace": "AWS/ECS", "MetricName": "CPUUtilization", "Dimensions": dims}, "Period": 60, "Stat": "Average"}}],
        StartTime=time.time() - 3600, EndTime=time.time(),
    )["MetricDataResults"][0]
    cpu = console.p.locator("#metrics-panel figure[data-metric=CPUUtilization]")
    expect(cpu).to_have_attribute("data-points", str(len(got["Values"])))
    expect(cpu.locator("svg")).to_contain_text("No data")
    expect(console.p.locator("#metrics-panel figure[data-metric=MemoryUtilization]")).to_have_count(1)
    expect(console.p.locator("#metrics-panel figure[data-metric=RequestCount]")).to_have_count(0)
    # Live tail: a new event shows without reloading, within a couple of polls.
    console.p.evaluate("window.__same_page = true")
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": int(time.time() * 1000), "message": "second line"}])
    expect(log).to_contain_text("second line", timeout=3000)
    assert log.inner_text().index("first line") < log.inner_text().index("second line")
    assert console.p.evaluate("window.__same_page === true")
    console.shot("service-logs-metrics")

    # The task view tails the task's own stream only.
    other = f"ecs/web/{'0' * 32}"
    logs.create_log_stream(logGroupName=group, logStreamName=other)
    logs.put_log_events(logGroupName=group, logStreamName=other, logEvents=[{"timestamp": int(time.time() * 1000), "message": "another task"}])
    console.open(f"/clusters/{cluster}/tasks/{task_id}")
    expect(console.p.locator("#log-lines")).to_contain_text("second line")
    assert "another task" not in console.p.locator("#log-lines").inner_text()
    console.shot("task-logs")
    ecs.delete_service(cluster=cluster, service=svc, force=True)


def test_the_related_services_pages(console, shared):
    ecr, elb, ec2, sd = shared.client("ecr"), shared.client("elbv2"), shared.client("ec2"), shared.client("servicediscovery")
    logs, cw, aas, ecs = shared.client("logs"), shared.client("cloudwatch"), shared.client("application-autoscaling"), shared.client()
    # ECR: a repository with a pushed image.
    repo = ecr.create_repository(repositoryName=unique("repo"))["repository"]
    digest, _ = small_image(img.Registry(shared.endpoint), repo["repositoryName"], "v1")
    console.open("/repositories")
    [row] = [r for r in console.table("Repositories") if r[0] == repo["repositoryName"]]
    assert row[1] == repo["repositoryUri"]
    console.link(repo["repositoryName"]).click()
    console.at(f"/repositories/{repo['repositoryName']}")
    [image] = console.table("Images")
    assert image[0] == "v1" and image[1] == digest
    console.shot("repository")

    # Load balancers: a target registered and its health.
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    lb_name = unique("alb")[:20]
    alb = elb.create_load_balancer(Name=lb_name, Subnets=subnets)["LoadBalancers"][0]
    tg = elb.create_target_group(Name=unique("tg")[:20], Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip", HealthCheckPath="/ok")["TargetGroups"][0]
    elb.create_listener(LoadBalancerArn=alb["LoadBalancerArn"], Protocol="HTTP", Port=81, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": "172.31.0.50", "Port": 80}])
    console.open("/load-balancers")
    [row] = [r for r in console.table("Load balancers") if r[0] == lb_name]
    assert row[2:4] == ["application", "internet-facing"] and row[4] == alb["DNSName"]
    console.link(lb_name).click()
    console.at(f"/load-balancers/{lb_name}")
    [target] = console.table("Target health")
    health = elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"][0]["TargetHealth"]
    assert target[:4] == [tg["TargetGroupName"], "172.31.0.50", "80", health["State"]]
    assert console.table("Target groups")[0][4] == "HTTP /ok"

    # Cloud Map: a namespace, a service, an instance with attributes.
    ns_name = f"{unique('ns')}.local"
    ns_id = private_namespace(shared, ns_name)
    dsvc = sd.create_service(Name="api", NamespaceId=ns_id, DnsConfig={"DnsRecords": [{"Type": "A", "TTL": 30}]})["Service"]
    sd.register_instance(ServiceId=dsvc["Id"], InstanceId="i-1", Attributes={"AWS_INSTANCE_IPV4": "172.31.0.9"})
    console.open("/namespaces")
    [row] = [r for r in console.table("Namespaces") if r[0] == ns_name]
    assert row[1] == ns_id and row[3] == "1"
    console.link(ns_name).click()
    console.at(f"/namespaces/{ns_id}")
    assert console.table("Services")[0][:3] == ["api", dsvc["Id"], "A (TTL 30)"]
    assert console.table("Service instances") == [["api", "i-1", "AWS_INSTANCE_IPV4=172.31.0.9"]]
    console.shot("namespace")

    # Log groups, with a search by filter pattern.
    group = f"/app/{unique('g')}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="s1", logEvents=[
        {"timestamp": now - 3, "message": "GET /a 200"}, {"timestamp": now - 2, "message": "GET /b 500 error"}, {"timestamp": now - 1, "message": "GET /c 200"},
    ])
    console.open("/log-groups")
    assert group in [r[0] for r in console.table("Log groups")]
    console.link(group).click()
    console.at(f"/log-groups/{group.replace('/', '%2F')}")
    assert [r[2] for r in console.table("Log events")] == ["GET /a 200", "GET /b 500 error", "GET /c 200"]
    assert console.table("Log streams")[0][0] == "s1"
    console.field("Filter pattern").fill("error")
    console.button("Search").click()
    want = [e["message"] for e in logs.filter_log_events(logGroupName=group, filterPattern="error")["events"]]
    console.wait_table("Log events", lambda rows: [r[2] for r in rows] == want == ["GET /b 500 error"], "the search's events")
    console.field("Filter pattern").fill("{ $.x = ")
    console.button("Search").click()
    console.wait_banner("The search failed", "InvalidParameterException")
    console.shot("log-group-search")

    # Alarms and scaling policies: a target tracking policy makes its alarms.
    cluster, svc = unique("c"), unique("s")
    ecs.create_cluster(clusterName=cluster)
    register_fargate(ecs, svc)
    ecs.create_service(cluster=cluster, serviceName=svc, taskDefinition=svc, desiredCount=1, launchType="FARGATE",
                       networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}})
    rid = f"service/{cluster}/{svc}"
    aas.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", MinCapacity=1, MaxCapacity=4)
    aas.put_scaling_policy(
        PolicyName="cpu", ServiceNamespace="ecs", ResourceId=rid, ScalableDimension="ecs:service:DesiredCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={"TargetValue": 50.0, "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"}},
    )
    [policy] = aas.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=rid)["ScalingPolicies"]
    console.open("/scaling-policies")
    [row] = [r for r in console.table("Scaling policies") if r[1] == rid]
    assert row[0] == "cpu" and row[2] == "TargetTrackingScaling" and row[3].startswith("ECSServiceAverageCPUUtilization at 50")
    assert sorted(row[4].split(", ")) == sorted(a["AlarmName"] for a in policy["Alarms"])
    assert [r for r in console.table("Scalable targets") if r[0] == rid][0][2:4] == ["1", "4"]
    console.link("cpu").click()
    console.at(f"/scaling-policies/{rid.replace('/', '%2F')}/cpu")
    assert console.details("Policy details")["Policy type"] == "TargetTrackingScaling"

    alarm = unique("alarm")
    cw.put_metric_alarm(AlarmName=alarm, Namespace="AWS/ECS", MetricName="CPUUtilization", Statistic="Average", Period=60,
                        EvaluationPeriods=1, Threshold=90.0, ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="set by the test")

    def api_state():
        [a] = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
        return a["StateValue"], a["StateReason"]

    # The set state holds until the alarm's next evaluation (as in CloudWatch), which may
    # fall while the pages load: each page must show what the API said just before or after.
    before = api_state()
    console.open("/alarms")
    [row] = [r for r in console.table("Alarms") if r[0] == alarm]
    assert (row[1], row[4]) in {before, api_state()}
    assert sum(1 for r in console.table("Alarms") if r[0] in {a["AlarmName"] for a in policy["Alarms"]}) == len(policy["Alarms"])
    before = api_state()
    console.link(alarm).click()
    console.at(f"/alarms/{alarm}")
    assert console.details("Details")["State reason"] in {before[1], api_state()[1]}
    assert any("ALARM" in r[2] for r in console.table("History"))
    console.shot("alarm")
    ecs.delete_service(cluster=cluster, service=svc, force=True)


def test_the_region_switcher_scopes_every_call(console, shared):
    name = unique("eu")
    shared.client(region="eu-west-1").create_cluster(clusterName=name)
    console.open("/clusters")
    assert name not in [r[0] for r in console.table("Clusters")]
    console.field("Region").select_option("eu-west-1")
    console.wait_table("Clusters", lambda rows: name in [r[0] for r in rows], "the eu-west-1 cluster")
    # Every page and form of the session stays in the chosen region (a reload keeps it).
    console.p.reload()
    console.at("/clusters")
    expect(console.field("Region")).to_have_value("eu-west-1")
    assert name in [r[0] for r in console.table("Clusters")]
    console.link(name).click()
    console.at(f"/clusters/{name}")
    arn = console.details("Cluster overview")["ARN"]
    assert arn.startswith("arn:aws:ecs:eu-west-1:")
    console.field("Region").select_option("us-east-1")
    console.at("/clusters")
    assert name not in [r[0] for r in console.table("Clusters")]


def test_the_tasks_tab_pages_a_large_cluster(console, shared):
    ecs = shared.client()
    cluster, family = unique("big"), unique("web")
    ecs.create_cluster(clusterName=cluster)
    register_fargate(ecs, family)
    for _ in range(11):
        ecs.run_task(cluster=cluster, taskDefinition=family, count=10, launchType="FARGATE",
                     networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}})
    first = ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING", maxResults=100)
    assert len(first["taskArns"]) == 100 and first.get("nextToken")
    rest = ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING", maxResults=100, nextToken=first["nextToken"])["taskArns"]
    console.open(f"/clusters/{cluster}/tasks")
    rows = console.table("Tasks")
    assert sorted(r[0] for r in rows) == sorted(a.split("/")[-1] for a in first["taskArns"])
    expect(console.link("First page")).to_have_count(0)
    console.link("Next page").click()
    wait_until(lambda: sorted(r[0] for r in console.table("Tasks")) == sorted(a.split("/")[-1] for a in rest), what="the second page")
    expect(console.link("Next page")).to_have_count(0)
    console.link("First page").click()
    wait_until(lambda: len(console.table("Tasks")) == 100, what="the first page again")


def test_create_a_service_with_service_connect(console, shared):
    ecs, sd = shared.client(), shared.client("servicediscovery")
    cluster, family, svc = unique("console"), unique("api"), unique("svc")
    ecs.create_cluster(clusterName=cluster)
    register_fargate(ecs, family, containers=[{"name": "api", "image": "busybox", "essential": True,
                                               "portMappings": [{"containerPort": 8080, "name": "http", "appProtocol": "http"}]}])
    op = sd.create_http_namespace(Name=unique("sc"))["OperationId"]
    wait_until(lambda: sd.get_operation(OperationId=op)["Operation"]["Status"] == "SUCCESS", what="the namespace")
    ns_id = sd.get_operation(OperationId=op)["Operation"]["Targets"]["NAMESPACE"]
    ns_arn = sd.get_namespace(Id=ns_id)["Namespace"]["Arn"]

    open_create_service(console, cluster, family, svc)
    sc = section(console, "Service Connect")
    sc.get_by_label("Use Service Connect").check()
    sc.get_by_label("Namespace").select_option(ns_arn)
    expect(sc.get_by_role("radio", name="Client and server")).to_be_checked()
    expect(sc.get_by_label("Port alias")).to_have_value("http")
    sc.get_by_label("Discovery name").fill("api")
    sc.get_by_label("DNS").fill("api.internal")
    sc.get_by_label("Client alias port").fill("80")
    console.shot("service-create-service-connect")
    console.submit("Create", f"/clusters/{cluster}/services/{svc}", f"Service {svc} has been created successfully.")

    s = ecs.describe_services(cluster=cluster, services=[svc])["services"][0]
    cfg = s["deployments"][0]["serviceConnectConfiguration"]
    assert cfg["enabled"] is True and cfg["namespace"] == ns_arn
    assert cfg["services"] == [{"portName": "http", "discoveryName": "api", "clientAliases": [{"port": 80, "dnsName": "api.internal"}]}]
    console.delete("Delete service", f"/clusters/{cluster}/services")
