"""The console's walkthrough with real containers (issue 19's check): a cluster, a task
definition and a service of 2 tasks made from the forms, both tasks seen RUNNING in the live
service view, the service updated to a new revision from the form and its deployment watched
to COMPLETED, then everything deleted from the console; every step checked again through boto3.

Needs root, Debian's chromium and pip playwright, and runs only inside a network namespace with
no route out (`cargo xtask test` runs the suite in one).
"""

import os
import time

import pytest

from conftest import isolated, running_node, unique, wait_until
from test_console import HAVE_PLAYWRIGHT, CHROMIUM, Console, browser  # noqa: F401 (browser is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
    pytest.mark.skipif(not (HAVE_PLAYWRIGHT and os.path.exists(CHROMIUM)), reason="needs Debian's chromium and pip playwright"),
]

# A container that runs until told to stop, and stops at once when told (no commas: the form's
# Command field is comma-separated, as the ECS console's).
SERVE = "sh, -c, trap 'exit 0' TERM; echo serving on $HOSTNAME; while :; do sleep 0.1; done"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # Tasks without health checks count as healthy one second after they reach RUNNING; a
    # metric minute lasts 5 s and the node samples every second, so graphs fill quickly.
    with running_node(tmp_path_factory, "--unchecked-task-healthy-after", "1s", "--metric-period", "5s", "--metrics-interval", "1s") as e:
        yield e


@pytest.fixture
def console(browser, node):  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    c = Console(context.new_page(), node.endpoint)
    yield c
    context.close()
    assert c.errors == []


def running(ecs, cluster, revision):
    arns = ecs.list_tasks(cluster=cluster, serviceName="web", desiredStatus="RUNNING")["taskArns"]
    ts = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
    return ts if len(ts) == 2 and all(t["lastStatus"] == "RUNNING" and t["taskDefinitionArn"].endswith(f":{revision}") for t in ts) else None


def test_the_walkthrough_with_real_containers(console, node, busybox):
    from playwright.sync_api import expect

    ecs = node.client()
    cluster, family = unique("walk"), unique("walk")

    console.open("/clusters/create")
    console.field("Cluster name").fill(cluster)
    console.submit("Create", f"/clusters/{cluster}")

    console.open("/task-definitions/create")
    console.field("Task definition family").fill(family)
    app = console.p.get_by_role("group", name="Container - 1")
    app.get_by_label("Name", exact=True).fill("app")
    app.get_by_label("Image URI").fill(busybox)
    app.get_by_role("group", name="Docker configuration").get_by_label("Command").fill(SERVE)
    expect(app.get_by_label("Use log collection")).to_be_checked()
    console.submit("Create", f"/task-definitions/{family}/1")
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["containerDefinitions"][0]["command"] == [
        "sh", "-c", "trap 'exit 0' TERM; echo serving on $HOSTNAME; while :; do sleep 0.1; done"]

    console.open(f"/clusters/{cluster}/services/create")
    console.p.get_by_role("radio", name="Launch type").check()
    console.field("Family").select_option(family)
    console.field("Service name").fill("web")
    console.field("Desired tasks").fill("2")
    console.submit("Create", f"/clusters/{cluster}/services/web")

    # Both tasks RUNNING: the open view shows it within a couple of seconds of the API saying so.
    tasks = wait_until(lambda: running(ecs, cluster, 1), timeout=60, what="2 tasks RUNNING")
    seen = time.monotonic()
    rows = console.wait_table("Tasks", lambda rows: len(rows) == 2 and all(r[1] == "RUNNING" for r in rows), "2 RUNNING in the view", timeout=2.5)
    assert sorted(r[0] for r in rows) == sorted(t["taskArn"].split("/")[-1] for t in tasks)
    print(f"view showed RUNNING {time.monotonic() - seen:.2f}s after the API")
    # Their logs, tailed live from CloudWatch Logs, and CPU and memory graphs from the node's
    # samples (GetMetricData), both the same as boto3 reads.
    logs = node.client("logs")
    group = f"/ecs/{family}"
    events = wait_until(lambda: len(e := logs.filter_log_events(logGroupName=group)["events"]) == 2 and e, timeout=20, what="both tasks' lines")
    assert all(e["message"].startswith("serving on ") for e in events)
    for e in events:
        expect(console.p.locator("#log-lines")).to_contain_text(e["message"], timeout=5000)
    cpu = console.p.locator("#metrics-panel figure[data-metric=CPUUtilization]")
    expect(cpu.locator("svg circle.graph-dot").first).to_be_attached(timeout=45_000)
    assert int(cpu.get_attribute("data-points")) >= 1
    console.shot("walkthrough-running")

    # A task's own view: its container RUNNING, its address.
    first = tasks[0]
    tid = first["taskArn"].split("/")[-1]
    console.p.get_by_role("table", name="Tasks").get_by_role("link", name=tid).click()
    console.at(f"/clusters/{cluster}/tasks/{tid}")
    assert console.details("Task overview")["Last status"] == "RUNNING"
    eni = {d["name"]: d["value"] for d in first["attachments"][0]["details"]}
    assert console.details("Network")["Private IP"] == eni["privateIPv4Address"]
    assert console.table("Containers")[0][:4] == ["app", busybox, "RUNNING", "-"]
    # The task's own log stream only.
    mine = [e["message"] for e in events if e["logStreamName"].endswith(f"/{tid}")]
    expect(console.p.locator("#log-lines")).to_contain_text(mine[0])
    assert len(console.p.locator("#log-lines .log-line").all()) == 1
    console.shot("walkthrough-task")

    # A new revision from the form, then the service updated to it from the form.
    console.open(f"/task-definitions/{family}/1/revise")
    envs = console.p.get_by_role("group", name="Container - 1").get_by_role("group", name="Environment variables")
    envs.get_by_role("button", name="Add environment variable").click()
    envs.get_by_label("Key").fill("VERSION")
    envs.get_by_label("Value").fill("2")
    console.submit("Create", f"/task-definitions/{family}/2")
    console.open(f"/clusters/{cluster}/services/web/update")
    console.field("Revision").select_option(f"{family}:2")
    console.submit("Update", f"/clusters/{cluster}/services/web")

    # The deployment is watched to COMPLETED in the view.
    console.wait_table(
        "Deployments",
        lambda rows: len(rows) == 1 and rows[0][1:4] == ["PRIMARY", "COMPLETED", f"{family}:2"] and rows[0][8] == "2 of 2 running",
        "the new deployment COMPLETED",
        timeout=90,
    )
    s = ecs.describe_services(cluster=cluster, services=["web"])["services"][0]
    assert [(d["status"], d["rolloutState"]) for d in s["deployments"]] == [("PRIMARY", "COMPLETED")]
    assert running(ecs, cluster, 2), "2 tasks of revision 2 RUNNING"
    console.wait_table("Tasks", lambda rows: len(rows) == 2 and all(r[1] == "RUNNING" and r[3] == f"{family}:2" for r in rows), "revision 2's tasks")
    console.shot("walkthrough-deployed")

    # Everything deleted from the console.
    console.delete("Delete service", f"/clusters/{cluster}/services")
    wait_until(lambda: ecs.describe_services(cluster=cluster, services=["web"])["services"][0]["status"] == "INACTIVE", timeout=60, what="INACTIVE")
    console.open(f"/clusters/{cluster}")
    console.delete("Delete cluster", "/clusters")
    assert ecs.describe_clusters(clusters=[cluster])["clusters"][0]["status"] == "INACTIVE"
    for r in (1, 2):
        ecs.deregister_task_definition(taskDefinition=f"{family}:{r}")
