"""The web console, driven by a real browser: Debian's headless chromium through Playwright's
Python package (`executable_path="/usr/bin/chromium"`; Playwright's own browser download is never
used). Controls are found by role and visible label, as a person or a screen reader finds them.
Every check of what the console did is made again through boto3 or the AWS CLI, since the
console must only call the public APIs.

Control plane only: the server runs no tasks, so a service's tasks stay PROVISIONING.
Screenshots of each page land in $ESTIBA_ARTIFACTS (when set) for CI to keep.
"""

import datetime
import json
import os
import re
import shutil

import pytest
from botocore.exceptions import ClientError

import images as img
from conftest import AWSVPC, register_fargate, unique, wait_until
from test_ecr import small_image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

try:
    from playwright.sync_api import expect, sync_playwright

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

pytestmark = pytest.mark.skipif(
    not (HAVE_PLAYWRIGHT and os.path.exists(CHROMIUM)),
    reason="the console tests need Debian's chromium and pip playwright (scripts/install-test-deps.sh installs them)",
)

RES = [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}, {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}]
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-default-apps",
            ],
        )
        yield b
        b.close()


class Console:
    """The console at one server, seen through one browser page."""

    def __init__(self, page, endpoint):
        self.p = page
        self.endpoint = endpoint
        self.errors = []
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _on_console(self, msg):
        # The API's refusals (a 4xx answer to `POST /`) are logged as failed loads; the tests
        # cause those on purpose. Any other error fails the test.
        if msg.type != "error":
            return
        refusal = msg.text.startswith("Failed to load resource: the server responded with a status of 4")
        if refusal and msg.location.get("url") == f"{self.endpoint}/":
            return
        self.errors.append(f"{msg.text} ({msg.location.get('url')})")

    def open(self, route):
        self.p.goto(f"{self.endpoint}/#{route}")
        self.at(route)

    def at(self, route):
        """Waits until the console has rendered `route` (the shell marks the body with the route
        it finished rendering, so a test never reads the previous page)."""
        self.p.wait_for_function("r => document.body.dataset.route === r", arg=route, timeout=TIMEOUT_MS)

    def field(self, label):
        """The form control a visible label names."""
        return self.p.get_by_label(label, exact=True)

    def button(self, name):
        return self.p.get_by_role("button", name=name, exact=True)

    def link(self, name):
        return self.p.get_by_role("link", name=name, exact=True)

    def banner(self):
        b = self.p.locator("#banner")
        return b.inner_text() if b.is_visible() else ""

    def wait_banner(self, *parts):
        for part in parts:
            expect(self.p.locator("#banner")).to_contain_text(part)
        return self.banner()

    def table(self, caption):
        """A table's body rows, each a list of cell texts."""
        return self.p.get_by_role("table", name=caption, exact=True).evaluate(
            "t => [...t.tBodies[0].rows].filter(r => !r.querySelector('td.empty'))"
            ".map(r => [...r.cells].map(c => c.innerText.trim()))"
        )

    def details(self, heading):
        """The label/value pairs of the panel under `heading`."""
        panel = self.p.locator(".panel").filter(has=self.p.get_by_role("heading", name=heading, exact=True))
        return panel.evaluate("p => Object.fromEntries([...p.querySelectorAll('dl.details > div')].map(d => [d.querySelector('dt').innerText.trim(), d.querySelector('dd').innerText.trim()]))")

    def wait_table(self, caption, fn, what, timeout=TIMEOUT_MS / 1000):
        return wait_until(lambda: (rows := self.table(caption)) and fn(rows) and rows, timeout=timeout, what=what)

    def confirm(self, word="delete"):
        dialog = self.p.get_by_role("dialog")
        dialog.get_by_label(f'To confirm, type "{word}" in the field.').fill(word)
        dialog.locator("button[type=submit]").click()

    def submit(self, button, route=None, banner=None):
        """Clicks a form's `button`; waits until `route` has rendered and `banner` shows (the
        banner's text is returned)."""
        self.button(button).click()
        if route:
            self.at(route)
        return self.wait_banner(banner) if banner else None

    def delete(self, button, route=None, word="delete"):
        """Clicks `button`, confirms the dialog by typing `word`, waits for `route`."""
        self.button(button).click()
        self.confirm(word)
        if route:
            self.at(route)

    def add_tag(self, key, value, group="Tags"):
        """Adds a row to a form's tags editor."""
        tags = self.p.get_by_role("group", name=group, exact=True)
        tags.get_by_role("button", name="Add tag").click()
        tags.get_by_label("Key").last.fill(key)
        tags.get_by_label("Value").last.fill(value)

    def shot(self, name):
        out = os.environ.get("ESTIBA_ARTIFACTS")
        if out:
            os.makedirs(out, exist_ok=True)
            self.p.screenshot(path=os.path.join(out, f"console-{name}.png"), full_page=True)


@pytest.fixture
def console(browser, shared):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    c = Console(context.new_page(), shared.endpoint)
    yield c
    context.close()
    # A page that threw, or an asset that did not load, shows as an error.
    assert c.errors == []


def test_the_shell_shows_region_account_and_navigation(console):
    console.open("/clusters")
    expect(console.field("Region")).to_have_value("us-east-1")
    expect(console.p.locator("#account")).to_have_text("000000000000")
    nav = console.p.get_by_role("navigation", name="Amazon Elastic Container Service")
    expect(nav.get_by_role("link", name="Clusters")).to_have_attribute("aria-current", "page")
    nav.get_by_role("link", name="Task definitions").click()
    console.at("/task-definitions")
    assert console.p.get_by_role("heading", level=1).inner_text().startswith("Task definitions")
    assert console.p.url.endswith("#/task-definitions")
    expect(nav.get_by_role("link", name="Task definitions")).to_have_attribute("aria-current", "page")
    assert not console.p.locator("#banner").is_visible(), "no message, no banner"
    console.shot("shell")


def test_the_console_fits_a_phones_width(console):
    console.p.set_viewport_size({"width": 390, "height": 844})
    console.open("/clusters")
    expect(console.link("Task definitions")).to_be_visible()
    expect(console.link("Create cluster")).to_be_visible()
    assert console.p.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    console.shot("phone")
    # The forms too: wide row lists (port mappings) scroll by themselves, not the page.
    console.open("/task-definitions/create")
    console.p.get_by_role("group", name="Container - 1").get_by_role("button", name="Add port mapping").click()
    expect(console.p.get_by_role("group", name="Container - 1").get_by_label("App protocol")).to_be_attached()
    assert console.p.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    console.shot("phone-taskdef-form")


def test_create_a_cluster_from_the_form(console, shared):
    ecs = shared.client()
    name = unique("console")
    console.open("/clusters")
    console.link("Create cluster").click()
    console.at("/clusters/create")
    console.field("Cluster name").fill(name)
    expect(console.field("AWS Fargate (serverless)")).to_be_checked()
    hint = console.p.locator("#infra-ec2-hint")
    expect(hint).to_be_hidden()
    console.field("Amazon EC2 instances").check()
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("--join-cluster")
    console.field("Container Insights").select_option(label="Container Insights")
    console.button("Add capacity provider").click()
    console.field("Capacity provider").select_option(label="FARGATE_SPOT")
    console.field("Base").fill("1")
    console.field("Weight").fill("2")
    console.add_tag("team", "web")
    console.shot("cluster-create")
    console.button("Create").click()

    console.at(f"/clusters/{name}")
    assert f"Cluster {name} has been created successfully." in console.wait_banner(name)

    c = ecs.describe_clusters(clusters=[name], include=["SETTINGS", "TAGS"])["clusters"][0]
    assert c["status"] == "ACTIVE"
    assert c["capacityProviders"] == ["FARGATE", "FARGATE_SPOT"]
    assert c["defaultCapacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "base": 1, "weight": 2}]
    assert {"name": "containerInsights", "value": "enabled"} in c["settings"]
    assert c["tags"] == [{"key": "team", "value": "web"}]
    cli = shared.aws("ecs", "describe-clusters", "--clusters", name)["clusters"][0]
    assert cli["clusterArn"] == c["clusterArn"]

    console.open("/clusters")
    rows = {r[0]: r for r in console.table("Clusters")}
    assert rows[name][1:7] == ["ACTIVE", "0", "0", "0", "0", "enabled"]
    console.shot("clusters")


def test_the_apis_error_is_shown_and_nothing_is_created(console, shared):
    ecs = shared.client()
    bad = "not a valid name!"
    with pytest.raises(ClientError) as e:
        ecs.create_cluster(clusterName=bad)
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
    before = ecs.list_clusters()["clusterArns"]

    console.open("/clusters/create")
    console.field("Cluster name").fill(bad)
    console.button("Create").click()
    text = console.wait_banner(code, message)
    assert "Cluster creation failed" in text
    assert console.p.url.endswith("#/clusters/create"), "the form stays, with what was typed"
    expect(console.field("Cluster name")).to_have_value(bad)
    assert ecs.list_clusters()["clusterArns"] == before
    console.shot("cluster-create-error")


def test_the_cluster_view_lists_services_tasks_and_instances(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(clusterName=name, capacityProviders=["FARGATE"])
    family = unique("web")
    register_fargate(ecs, family)
    svc = unique("svc")
    ecs.create_service(cluster=name, serviceName=svc, taskDefinition=family, desiredCount=2, launchType="FARGATE", networkConfiguration=AWSVPC)
    try:
        tasks = wait_until(lambda: (a := ecs.list_tasks(cluster=name)["taskArns"]) and len(a) == 2 and a, what="the service's 2 tasks")
        ci = ecs.register_container_instance(
            cluster=name,
            instanceIdentityDocument=json.dumps({"instanceId": "i-0console", "instanceType": "t3.medium", "availabilityZone": "us-east-1a", "imageId": "ami-1"}),
            totalResources=RES,
            attributes=[{"name": "stack", "value": "prod"}],
        )["containerInstance"]

        console.open(f"/clusters/{name}")
        overview = console.p.locator(".panel").first.inner_text()
        assert "Services\n1" in overview and "Container instances\n1" in overview
        services = console.table("Services")
        assert [r[0] for r in services] == [svc]
        assert services[0][2:5] == ["FARGATE", f"{family}:1", "2"]
        console.shot("cluster-services")

        # What changed behind the page's back shows after Refresh, without reloading the page.
        svc2 = unique("svc")
        ecs.create_service(cluster=name, serviceName=svc2, taskDefinition=family, desiredCount=0, launchType="FARGATE", networkConfiguration=AWSVPC)
        console.p.evaluate("window.__same_page = true")
        console.button("Refresh").click()
        console.wait_table("Services", lambda rows: sorted(r[0] for r in rows) == sorted([svc, svc2]), "the second service")
        assert console.p.evaluate("window.__same_page === true")
        ecs.delete_service(cluster=name, service=svc2, force=True)

        console.p.get_by_role("navigation", name="Cluster tabs").get_by_role("link", name="Tasks").click()
        console.at(f"/clusters/{name}/tasks")
        rows = console.table("Tasks")
        assert sorted(r[0] for r in rows) == sorted(t.split("/")[-1] for t in tasks)
        assert all(r[2] == "RUNNING" and r[3] == f"{family}:1" and r[4] == f"service:{svc}" for r in rows)
        console.shot("cluster-tasks")

        console.field("Filter desired status").select_option(label="Stopped")
        console.at(f"/clusters/{name}/tasks?desiredStatus=STOPPED")
        assert console.table("Tasks") == []

        console.open(f"/clusters/{name}/infrastructure")
        assert console.table("Capacity providers")[0][0] == "FARGATE"
        [inst] = console.table("Container instances")
        assert inst[0] == ci["containerInstanceArn"].split("/")[-1]
        assert inst[1:3] == ["i-0console", "ACTIVE"]
        assert inst[6] == "2048 / 2048" and inst[7] == "4096 / 4096"
        details = console.p.locator("table.grid details")
        details.locator("summary").click()
        expect(details).to_contain_text("stack = prod")
        expect(details).to_contain_text("ecs.instance-type = t3.medium")
        # At 1280x800 the page itself does not scroll sideways (wide tables scroll by themselves).
        assert console.p.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        console.shot("cluster-infrastructure")

        console.p.get_by_role("navigation", name="Cluster tabs").get_by_role("link", name="Metrics").click()
        console.at(f"/clusters/{name}/metrics")
        panel = console.p.locator("#metrics-panel")
        expect(panel).to_contain_text("Last hour")
        figures = panel.locator("figure")
        assert [f.get_attribute("data-metric") for f in figures.all()] == ["CPUUtilization", "MemoryUtilization"]
        # The graphs hold what CloudWatch holds for the cluster (nothing runs here: no datapoints).
        cw = shared.client("cloudwatch")
        end = datetime.datetime.now(datetime.timezone.utc)
        got = cw.get_metric_statistics(Namespace="AWS/ECS", MetricName="CPUUtilization", Dimensions=[{"Name": "ClusterName", "Value": name}],
                                       StartTime=end - datetime.timedelta(hours=1), EndTime=end, Period=60, Statistics=["Average"])
        assert figures.first.get_attribute("data-points") == str(len(got["Datapoints"]))
        console.shot("cluster-metrics")
    finally:
        ecs.delete_service(cluster=name, service=svc, force=True)


def test_delete_a_cluster_shows_the_apis_refusal_then_deletes(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(clusterName=name)
    family = unique("web")
    register_fargate(ecs, family)
    svc = unique("svc")
    ecs.create_service(cluster=name, serviceName=svc, taskDefinition=family, desiredCount=0, launchType="FARGATE", networkConfiguration=AWSVPC)
    with pytest.raises(ClientError) as e:
        ecs.delete_cluster(cluster=name)
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    console.open(f"/clusters/{name}")
    console.delete("Delete cluster")
    text = console.wait_banner(code, message)
    assert f"Could not delete cluster {name}" in text
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    console.shot("cluster-delete-refused")

    ecs.delete_service(cluster=name, service=svc, force=True)
    console.delete("Delete cluster", "/clusters")
    assert f"Cluster {name} has been deleted." in console.wait_banner(name)
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"


def test_a_cancelled_delete_deletes_nothing(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(clusterName=name)
    console.open(f"/clusters/{name}")
    console.button("Delete cluster").click()
    dialog = console.p.get_by_role("dialog")
    confirm = dialog.get_by_role("button", name="Delete", exact=True)
    expect(confirm).to_be_disabled()  # deleting needs the word typed
    dialog.get_by_label('To confirm, type "delete" in the field.').fill("delet")
    expect(confirm).to_be_disabled()
    dialog.get_by_role("button", name="Cancel").click()
    expect(console.p.locator("dialog")).to_have_count(0)
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    ecs.delete_cluster(cluster=name)


def set_editor(console, text):
    console.field("Task definition JSON").fill(text)


def test_register_revise_deregister_and_delete_a_task_definition(console, shared):
    ecs = shared.client()
    family = unique("console-td")
    td = {
        "family": family,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "web", "image": "busybox:latest", "essential": True, "portMappings": [{"containerPort": 8080}]}],
        "tags": [{"key": "app", "value": "web"}],
    }
    console.open("/task-definitions")
    console.link("Create new task definition with JSON").click()
    console.at("/task-definitions/create-json")
    set_editor(console, json.dumps(td))
    console.submit("Create", f"/task-definitions/{family}/1")
    assert f"Task definition {family}:1 has been created successfully." in console.wait_banner(family)
    got = ecs.describe_task_definition(taskDefinition=f"{family}:1", include=["TAGS"])
    assert got["taskDefinition"]["containerDefinitions"][0]["image"] == "busybox:latest"
    assert got["taskDefinition"]["cpu"] == "256" and got["tags"] == [{"key": "app", "value": "web"}]
    assert console.table("Containers")[0][:3] == ["web", "busybox:latest", "Yes"]
    console.shot("taskdef")

    # A new revision starts from this one: only the image changes.
    console.link("Create new revision with JSON").click()
    console.at(f"/task-definitions/{family}/1/revise-json")
    start = json.loads(console.field("Task definition JSON").input_value())
    assert "revision" not in start and "taskDefinitionArn" not in start and start["tags"] == td["tags"]
    start["containerDefinitions"][0]["image"] = "busybox:1.36"
    set_editor(console, json.dumps(start))
    console.submit("Create", f"/task-definitions/{family}/2")
    assert ecs.describe_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]["containerDefinitions"][0]["image"] == "busybox:1.36"

    console.open(f"/task-definitions/{family}")
    assert [r[0] for r in console.table("Revisions")] == [f"{family}:2", f"{family}:1"]
    console.open("/task-definitions")
    rows = {r[0]: r for r in console.table("Task definition families")}
    assert rows[family][1:] == [f"{family}:2", "2"]

    console.open(f"/task-definitions/{family}/1")
    console.button("Deregister").click()
    console.wait_banner("has been deregistered")
    expect(console.button("Delete")).to_be_visible()
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["status"] == "INACTIVE"
    console.delete("Delete", f"/task-definitions/{family}")
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["status"] == "DELETE_IN_PROGRESS"
    assert [r[0] for r in console.table("Revisions")] == [f"{family}:2"]
    ecs.deregister_task_definition(taskDefinition=f"{family}:2")


def test_the_editor_checks_json_and_shows_the_apis_error(console, shared):
    ecs = shared.client()
    family = unique("console-bad")
    console.open("/task-definitions/create-json")
    set_editor(console, '{"family": ')
    expect(console.p.locator("#json-status")).to_contain_text("Invalid JSON")
    console.button("Create").click()
    assert "Invalid JSON" in console.wait_banner("ValidationError")

    bad = {"family": family, "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 0}]}
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(**bad)
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
    set_editor(console, json.dumps(bad))
    console.button("Create").click()
    console.wait_banner(code, message)
    assert family not in ecs.list_task_definition_families(familyPrefix=family)["families"]


def test_a_page_that_cannot_load_shows_the_apis_error(console, shared):
    ecs = shared.client()
    missing = unique("nope")
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition=f"{missing}:1")
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
    console.open(f"/task-definitions/{missing}/1")
    expect(console.p.get_by_role("heading", level=1)).to_have_text("Could not load this page")
    console.wait_banner(code, message)


def test_create_a_task_definition_from_the_form(console, shared):
    ecs, ecr = shared.client(), shared.client("ecr")
    repo = ecr.create_repository(repositoryName=unique("console-repo"))["repository"]
    small_image(img.Registry(shared.endpoint), repo["repositoryName"], "v7")
    family = unique("console-form")
    console.open("/task-definitions")
    console.link("Create new task definition").click()
    console.at("/task-definitions/create")
    console.field("Task definition family").fill(family)
    expect(console.field("AWS Fargate")).to_be_checked()
    expect(console.field("Network mode")).to_have_value("awsvpc")
    expect(console.field("Network mode")).to_be_disabled()

    # Task size: Fargate's combinations, checked as typed; a bad one is not sent.
    size = console.p.get_by_role("group", name="Task size")
    size.get_by_label("CPU").select_option(label="0.5 vCPU")
    memory = size.get_by_label("Memory")
    memory.fill("5 GB")
    expect(memory).to_have_attribute("aria-invalid", "true")
    expect(size).to_contain_text("With 0.5 vCPU, AWS Fargate allows a memory of 1 GB to 4 GB in steps of 1 GB.")
    console.button("Create").click()
    console.wait_banner("ValidationError", "1 GB to 4 GB")
    assert family not in ecs.list_task_definition_families(familyPrefix=family)["families"]
    memory.fill("2 GB")
    expect(memory).not_to_have_attribute("aria-invalid", "true")
    expect(size).to_contain_text("2048 MiB (2 GB).")

    console.field("Operating system/Architecture").select_option(label="Linux/ARM64")
    console.field("Task role").fill("arn:aws:iam::000000000000:role/app")
    console.field("Task execution role").fill("arn:aws:iam::000000000000:role/ecsTaskExecutionRole")

    web = console.p.get_by_role("group", name="Container - 1")
    web.get_by_label("Name", exact=True).fill("web")
    # The image comes from the picker: this server's repository, then its tag.
    web.get_by_label("Private repository").select_option(label=repo["repositoryName"])
    web.get_by_label("Image tag").select_option("v7")
    expect(web.get_by_label("Image URI")).to_have_value(f"{repo['repositoryUri']}:v7")
    web.get_by_role("button", name="Add port mapping").click()
    web.get_by_label("Container port").fill("8080")
    web.get_by_label("App protocol").select_option(label="HTTP")
    limits = web.get_by_role("group", name="Resource allocation limits")
    limits.get_by_label("CPU").fill("256")
    limits.get_by_label("Memory hard limit").fill("1024")
    limits.get_by_label("Memory soft limit").fill("512")
    envs = web.get_by_role("group", name="Environment variables")
    envs.get_by_role("button", name="Add environment variable").click()
    envs.get_by_label("Key").fill("MODE")
    envs.get_by_label("Value").fill("prod")
    docker = web.get_by_role("group", name="Docker configuration")
    docker.get_by_label("Entry point").fill("sh, -c")
    docker.get_by_label("Command").fill("httpd -f -p 8080")
    hc = web.get_by_role("group", name="HealthCheck")
    hc.get_by_label("Command").fill("CMD-SHELL, wget -q -O- localhost:8080 || exit 1")
    hc.get_by_label("Interval").fill("10")
    hc.get_by_label("Retries").fill("2")
    web.get_by_role("button", name="Add container dependency").click()
    web.get_by_role("group", name="Startup dependency ordering").get_by_label("Container name").fill("sidecar")
    web.get_by_label("Condition").select_option("START")
    expect(web.get_by_label("Use log collection")).to_be_checked()
    web.get_by_label("awslogs-group").fill("/ecs/console-web")

    mounts = web.get_by_role("group", name="Mount points")
    mounts.get_by_role("button", name="Add mount point").click()
    mounts.get_by_label("Source volume").fill("data")
    mounts.get_by_label("Container path").fill("/data")
    mounts.get_by_label("Read only").check()

    console.button("Add container").click()
    side = console.p.get_by_role("group", name="Container - 2")
    side.get_by_label("Name", exact=True).fill("sidecar")
    side.get_by_label("Image URI").fill("busybox:latest")
    side.get_by_label("Essential container").select_option(label="No")
    side.get_by_label("Use log collection").uncheck()

    storage = console.p.get_by_role("group", name="Storage")
    storage.get_by_label("Amount").fill("10")
    expect(storage.get_by_label("Amount")).to_have_attribute("aria-invalid", "true")
    expect(storage).to_contain_text("from 21 to 200")
    storage.get_by_label("Amount").fill("30")
    expect(storage.get_by_label("Amount")).not_to_have_attribute("aria-invalid", "true")
    storage.get_by_role("button", name="Add volume").click()
    storage.get_by_label("Volume name").fill("data")

    console.add_tag("team", "web")
    console.shot("taskdef-form")
    console.submit("Create", f"/task-definitions/{family}/1", f"Task definition {family}:1 has been created successfully.")

    got = ecs.describe_task_definition(taskDefinition=f"{family}:1", include=["TAGS"])
    td = got["taskDefinition"]
    assert got["tags"] == [{"key": "team", "value": "web"}]
    assert td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc"
    assert (td["cpu"], td["memory"]) == ("512", "2048")
    assert td["runtimePlatform"] == {"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"}
    assert td["taskRoleArn"] == "arn:aws:iam::000000000000:role/app"
    assert td["executionRoleArn"] == "arn:aws:iam::000000000000:role/ecsTaskExecutionRole"
    c1, c2 = td["containerDefinitions"]
    assert c1["name"] == "web" and c1["image"] == f"{repo['repositoryUri']}:v7" and c1["essential"] is True
    assert c1["portMappings"] == [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "name": "web-8080-tcp", "appProtocol": "http"}]
    assert (c1["cpu"], c1["memory"], c1["memoryReservation"]) == (256, 1024, 512)
    assert c1["environment"] == [{"name": "MODE", "value": "prod"}]
    assert c1["entryPoint"] == ["sh", "-c"] and c1["command"] == ["httpd -f -p 8080"]
    assert c1["healthCheck"]["command"] == ["CMD-SHELL", "wget -q -O- localhost:8080 || exit 1"]
    assert (c1["healthCheck"]["interval"], c1["healthCheck"]["retries"]) == (10, 2)
    assert c1["dependsOn"] == [{"containerName": "sidecar", "condition": "START"}]
    assert c1["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "/ecs/console-web", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "ecs", "awslogs-create-group": "true"},
    }
    assert c1["mountPoints"] == [{"sourceVolume": "data", "containerPath": "/data", "readOnly": True}]
    assert [v["name"] for v in td["volumes"]] == ["data"] and "efsVolumeConfiguration" not in td["volumes"][0]
    assert td["ephemeralStorage"] == {"sizeInGiB": 30}
    assert c2["name"] == "sidecar" and c2["image"] == "busybox:latest" and c2["essential"] is False
    assert "logConfiguration" not in c2

    # "Create new revision" prefills the form from this revision; one change makes revision 2.
    console.link("Create new revision").click()
    console.at(f"/task-definitions/{family}/1/revise")
    expect(console.field("Task definition family")).to_have_value(family)
    expect(console.p.get_by_role("group", name="Task size").get_by_label("Memory")).to_have_value("2048")
    web = console.p.get_by_role("group", name="Container - 1")
    expect(web.get_by_label("Name", exact=True)).to_have_value("web")
    expect(web.get_by_role("group", name="Docker configuration").get_by_label("Command")).to_have_value("httpd -f -p 8080")
    web.get_by_label("Image URI").fill(f"{repo['repositoryUri']}:v8")
    console.submit("Create", f"/task-definitions/{family}/2")
    td2 = ecs.describe_task_definition(taskDefinition=f"{family}:2", include=["TAGS"])
    assert td2["taskDefinition"]["containerDefinitions"][0]["image"] == f"{repo['repositoryUri']}:v8"
    # Everything else is as it was.
    for k in ("cpu", "memory", "runtimePlatform", "taskRoleArn", "executionRoleArn", "networkMode", "volumes", "ephemeralStorage"):
        assert td2["taskDefinition"][k] == td[k], k
    c1b, c2b = td2["taskDefinition"]["containerDefinitions"]
    assert {**c1b, "image": c1["image"]} == c1 and c2b == c2
    assert td2["tags"] == got["tags"]
    for r in (1, 2):
        ecs.deregister_task_definition(taskDefinition=f"{family}:{r}")


def test_create_update_and_delete_a_service_from_the_forms(console, shared):
    ecs, ec2 = shared.client(), shared.client("ec2")
    name = unique("console")
    ecs.create_cluster(clusterName=name, capacityProviders=["FARGATE", "FARGATE_SPOT"], defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE", "weight": 1}])
    family = unique("web")
    register_fargate(ecs, family)
    register_fargate(ecs, family)
    svc = unique("svc")
    subnets = sorted(s["SubnetId"] for s in ec2.describe_subnets()["Subnets"])
    [sg] = [g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "default"]

    console.open(f"/clusters/{name}")
    console.link("Create service").click()
    console.at(f"/clusters/{name}/services/create")
    # The cluster's default strategy is the starting point; this service picks a launch type.
    expect(console.p.get_by_role("radio", name="Capacity provider strategy")).to_be_checked()
    console.p.get_by_role("radio", name="Launch type").check()
    console.p.get_by_role("combobox", name="Launch type").select_option("FARGATE")
    console.field("Family").select_option(family)
    expect(console.field("Revision")).to_have_value(f"{family}:2")
    console.field("Revision").select_option(f"{family}:1")
    console.field("Service name").fill(svc)
    console.field("Desired tasks").fill("2")
    console.field("Minimum healthy percent").fill("50")
    console.field("Maximum percent").fill("150")
    expect(console.field("Use the Amazon ECS deployment circuit breaker")).to_be_checked()
    expect(console.field("Rollback on failures")).to_be_checked()
    # Networking comes from the EC2 API: every default subnet offered, the default group chosen.
    offered = console.p.get_by_role("group", name="Subnets").get_by_role("checkbox")
    expect(offered).to_have_count(len(subnets))
    console.p.get_by_role("group", name="Subnets").get_by_label(re.compile("^" + re.escape(subnets[0]))).uncheck()
    expect(console.p.get_by_role("group", name="Security group").get_by_label(re.compile("^" + re.escape(sg)))).to_be_checked()
    console.field("Public IP").uncheck()
    console.add_tag("team", "web")
    console.shot("service-create")
    console.submit("Create", f"/clusters/{name}/services/{svc}", f"Service {svc} has been created successfully.")

    s = ecs.describe_services(cluster=name, services=[svc], include=["TAGS"])["services"][0]
    assert s["launchType"] == "FARGATE" and s["taskDefinition"].endswith(f"/{family}:1") and s["desiredCount"] == 2
    assert s["deploymentConfiguration"] == {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "maximumPercent": 150,
        "minimumHealthyPercent": 50,
    }
    vpc = s["networkConfiguration"]["awsvpcConfiguration"]
    assert sorted(vpc["subnets"]) == subnets[1:] and vpc["securityGroups"] == [sg] and vpc["assignPublicIp"] == "DISABLED"
    assert s["tags"] == [{"key": "team", "value": "web"}]

    # The service view: deployments, tasks and events, live without reloading the page.
    [deployment] = console.table("Deployments")
    assert deployment[1:4] == ["PRIMARY", "IN_PROGRESS", f"{family}:1"] and deployment[8] == "0 of 2 running"
    console.wait_table("Tasks", lambda rows: len(rows) == 2, "the service's 2 tasks")
    console.wait_table("Events", lambda rows: any(f"(service {svc}) has started 2 tasks" in r[1] for r in rows), "the service's event")
    console.shot("service")
    console.p.evaluate("window.__same_page = true")
    ecs.update_service(cluster=name, service=svc, desiredCount=3)
    wait_until(lambda: console.details("Service overview")["Desired tasks"] == "3", timeout=3, what="the new desired count, shown by polling")
    console.wait_table("Tasks", lambda rows: len(rows) == 3, "the third task, shown by polling")
    assert console.p.evaluate("window.__same_page === true"), "the page was not reloaded"

    # Update: a new revision and a desired count, through the form.
    console.link("Update service").click()
    console.at(f"/clusters/{name}/services/{svc}/update")
    expect(console.field("Revision")).to_have_value(f"{family}:1")
    expect(console.field("Desired tasks")).to_have_value("3")
    console.field("Revision").select_option(f"{family}:2")
    console.field("Desired tasks").fill("1")
    console.submit("Update", f"/clusters/{name}/services/{svc}", f"Service {svc} has been updated.")
    s = ecs.describe_services(cluster=name, services=[svc])["services"][0]
    assert s["taskDefinition"].endswith(f"/{family}:2") and s["desiredCount"] == 1
    primary = [d for d in s["deployments"] if d["status"] == "PRIMARY"][0]
    assert primary["taskDefinition"].endswith(f"/{family}:2")
    console.wait_table("Deployments", lambda rows: [r[0] for r in rows if r[1] == "PRIMARY"] == [primary["id"]], "the new deployment")

    # Force new deployment, with nothing else changed.
    console.link("Update service").click()
    console.at(f"/clusters/{name}/services/{svc}/update")
    console.field("Force new deployment").check()
    console.submit("Update", f"/clusters/{name}/services/{svc}")
    s = ecs.describe_services(cluster=name, services=[svc])["services"][0]
    forced = [d for d in s["deployments"] if d["status"] == "PRIMARY"][0]
    assert forced["id"] != primary["id"] and forced["taskDefinition"] == primary["taskDefinition"] and s["desiredCount"] == 1

    console.delete("Delete service", f"/clusters/{name}/services")
    console.wait_banner(f"Service {svc} has been deleted.")
    assert ecs.describe_services(cluster=name, services=[svc])["services"][0]["status"] in ("DRAINING", "INACTIVE")
    assert svc not in [r[0] for r in console.table("Services")]


def test_a_service_the_api_refuses_is_not_created(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(clusterName=name)
    family = unique("web")
    register_fargate(ecs, family)
    bad = "not a valid name!"
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=name, serviceName=bad, taskDefinition=family, desiredCount=1, launchType="FARGATE", networkConfiguration=AWSVPC)
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
    console.open(f"/clusters/{name}/services/create")
    console.field("Family").select_option(family)
    console.field("Service name").fill(bad)
    console.button("Create").click()
    text = console.wait_banner(code, message)
    assert "Service creation failed" in text
    assert ecs.list_services(cluster=name)["serviceArns"] == []
    console.shot("service-create-error")


def test_run_a_task_from_the_form(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(
        clusterName=name,
        capacityProviders=["FARGATE", "FARGATE_SPOT"],
        defaultCapacityProviderStrategy=[{"capacityProvider": "FARGATE_SPOT", "base": 0, "weight": 1}],
    )
    family = unique("job")
    register_fargate(ecs, family)
    console.open(f"/clusters/{name}/tasks")
    console.link("Run new task").click()
    console.at(f"/clusters/{name}/run-task")
    # The cluster's default strategy is offered as it is; this run raises its weight.
    expect(console.p.get_by_role("radio", name="Capacity provider strategy")).to_be_checked()
    expect(console.field("Capacity provider")).to_have_value("FARGATE_SPOT")
    console.field("Weight").fill("2")
    console.field("Family").select_option(family)
    console.field("Desired tasks").fill("2")
    console.submit("Run task", f"/clusters/{name}/tasks", "2 task(s) started")
    arns = ecs.list_tasks(cluster=name)["taskArns"]
    assert len(arns) == 2
    tasks = ecs.describe_tasks(cluster=name, tasks=arns)["tasks"]
    assert all(t["capacityProviderName"] == "FARGATE_SPOT" and t["taskDefinitionArn"].endswith(f"/{family}:1") for t in tasks)
    assert all(t["attachments"][0]["type"] == "ElasticNetworkInterface" for t in tasks)
    assert sorted(r[0] for r in console.table("Tasks")) == sorted(a.split("/")[-1] for a in arns)

    # The task view: overview, network and containers, and Stop.
    first = arns[0].split("/")[-1]
    console.p.get_by_role("table", name="Tasks").get_by_role("link", name=first).click()
    console.at(f"/clusters/{name}/tasks/{first}")
    overview = console.details("Task overview")
    assert overview["ARN"] == arns[0] and overview["Capacity provider"] == "FARGATE_SPOT" and overview["Group"] == f"family:{family}"
    t = ecs.describe_tasks(cluster=name, tasks=[arns[0]])["tasks"][0]
    eni = {d["name"]: d["value"] for d in t["attachments"][0]["details"]}
    network = console.details("Network")
    assert network["Subnet ID"] == eni["subnetId"] and network["Private IP"] == eni.get("privateIPv4Address", "-")
    assert console.table("Containers")[0][:3] == ["app", "busybox", t["containers"][0]["lastStatus"]]
    console.shot("task")
    console.button("Stop").click()
    console.confirm("stop")
    console.wait_banner(f"Task {first} is stopping.")
    assert ecs.describe_tasks(cluster=name, tasks=[arns[0]])["tasks"][0]["desiredStatus"] == "STOPPED"
    expect(console.button("Stop")).to_be_hidden()
    for a in arns[1:]:
        ecs.stop_task(cluster=name, task=a)


def test_deploy_a_revision_from_its_page(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(clusterName=name)
    family = unique("web")
    register_fargate(ecs, family)
    register_fargate(ecs, family)
    console.open(f"/task-definitions/{family}/1")
    deploy = console.p.locator(".panel").filter(has=console.p.get_by_role("heading", name="Deploy", exact=True))
    deploy.get_by_label("Cluster").select_option(name)
    deploy.get_by_role("button", name="Create service").click()
    console.at(f"/clusters/{name}/services/create?family={family}&revision=1")
    expect(console.field("Family")).to_have_value(family)
    expect(console.field("Revision")).to_have_value(f"{family}:1")
    console.p.get_by_role("radio", name="Launch type").check()
    console.field("Service name").fill("from-revision")
    console.field("Desired tasks").fill("0")
    console.submit("Create", f"/clusters/{name}/services/from-revision")
    s = ecs.describe_services(cluster=name, services=["from-revision"])["services"][0]
    assert s["taskDefinition"].endswith(f"/{family}:1") and s["desiredCount"] == 0
    ecs.delete_service(cluster=name, service="from-revision", force=True)
