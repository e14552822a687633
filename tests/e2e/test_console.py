"""The web console, driven by a real browser: Debian's headless chromium through selenium and
the system chromedriver (nothing is downloaded). Every check of what the console did is made
again through boto3 or the AWS CLI, since the console must only call the public APIs.

Control plane only: the server runs no tasks, so a service's tasks stay PROVISIONING.
Screenshots of each page land in $ESTIBA_ARTIFACTS (when set) for CI to keep.
"""

import json
import os
import shutil

import pytest
from botocore.exceptions import ClientError

from conftest import AWSVPC, register_fargate, unique, wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (HAVE_SELENIUM and os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="the console tests need Debian's chromium and chromium-driver and pip selenium "
    "(scripts/install-test-deps.sh installs them)",
)

RES = [{"name": "CPU", "type": "INTEGER", "integerValue": 2048}, {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096}]


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-default-apps",
    ):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield d
    d.quit()


class Console:
    """The console at one server, seen through the browser."""

    def __init__(self, driver, endpoint):
        self.d = driver
        self.endpoint = endpoint

    def open(self, route):
        self.d.get(f"{self.endpoint}/#{route}")
        self.at(route)

    def at(self, route):
        """Waits until the console has rendered `route` (the shell marks the body with the route
        it finished rendering, so a test never reads the previous page)."""
        self.wait(lambda: self.d.find_element(By.TAG_NAME, "body").get_attribute("data-route") == route, f"the page {route}")

    def wait(self, fn, what, timeout=10):
        def ok(_):
            try:
                return fn()
            except (NoSuchElementException, StaleElementReferenceException):
                return False

        return WebDriverWait(self.d, timeout, poll_frequency=0.05).until(ok, f"timed out waiting for {what}")

    def field(self, label):
        """The form control a visible label names (as a person, or a screen reader, finds it)."""
        lab = self.d.find_element(By.XPATH, f"//label[normalize-space()={json.dumps(label)}]")
        return self.d.find_element(By.ID, lab.get_attribute("for"))

    def button(self, text):
        return self.d.find_element(By.XPATH, f"//button[normalize-space()={json.dumps(text)}] | //a[normalize-space()={json.dumps(text)}]")

    def banner(self):
        b = self.d.find_element(By.ID, "banner")
        return b.text if b.is_displayed() else ""

    def wait_banner(self, *parts):
        return self.wait(lambda: all(p in self.banner() for p in parts) and self.banner(), f"a banner with {parts}")

    def table(self, caption):
        """A table's body rows, each a list of cell texts."""
        t = self.d.find_element(By.XPATH, f"//table[caption[normalize-space()={json.dumps(caption)}]]")
        rows = t.find_elements(By.CSS_SELECTOR, "tbody tr")
        return [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows if not r.find_elements(By.CSS_SELECTOR, "td.empty")]

    def confirm(self, word="delete"):
        dialog = self.wait(lambda: self.d.find_element(By.CSS_SELECTOR, "dialog[open]"), "the confirmation dialog")
        dialog.find_element(By.TAG_NAME, "input").send_keys(word)
        dialog.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    def shot(self, name):
        out = os.environ.get("ESTIBA_ARTIFACTS")
        if out:
            os.makedirs(out, exist_ok=True)
            self.d.save_screenshot(os.path.join(out, f"console-{name}.png"))

    def severe_logs(self):
        """Errors in the browser's log, but for the API's refusals (a 4xx answer to `POST /`
        is logged as a failed load; the tests cause those on purpose)."""
        api = f"{self.endpoint}/ - Failed to load resource: the server responded with a status of 4"
        return [l for l in self.d.get_log("browser") if l["level"] == "SEVERE" and not l["message"].startswith(api)]


@pytest.fixture
def console(browser, shared):
    c = Console(browser, shared.endpoint)
    yield c
    # A page that threw, or an asset that did not load, shows in the browser's log.
    assert c.severe_logs() == []


def test_the_shell_shows_region_account_and_navigation(console):
    console.open("/clusters")
    assert console.d.find_element(By.ID, "region").text == "us-east-1"
    assert console.d.find_element(By.ID, "account").text == "000000000000"
    nav = console.d.find_element(By.CSS_SELECTOR, "nav.side")
    assert "Clusters" in nav.text and "Task definitions" in nav.text
    assert nav.find_element(By.CSS_SELECTOR, "a[aria-current=page]").text == "Clusters"
    console.button("Task definitions").click()
    console.at("/task-definitions")
    assert console.d.find_element(By.TAG_NAME, "h1").text.startswith("Task definitions")
    assert console.d.current_url.endswith("#/task-definitions")
    assert not console.d.find_element(By.ID, "banner").is_displayed(), "no message, no banner"
    console.shot("shell")


def test_the_console_fits_a_phones_width(console):
    console.d.set_window_size(390, 844)
    try:
        console.open("/clusters")
        assert console.button("Task definitions").is_displayed() and console.button("Create cluster").is_displayed()
        assert console.d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        console.shot("phone")
    finally:
        console.d.set_window_size(1280, 800)


def test_create_a_cluster_from_the_form(console, shared):
    ecs = shared.client()
    name = unique("console")
    console.open("/clusters")
    console.button("Create cluster").click()
    console.wait(lambda: console.field("Cluster name"), "the create form")
    console.field("Cluster name").send_keys(name)
    assert console.field("AWS Fargate (serverless)").is_selected()
    hint = console.d.find_element(By.ID, "infra-ec2-hint")
    assert not hint.is_displayed()
    console.field("Amazon EC2 instances").click()
    assert hint.is_displayed() and "--join-cluster" in hint.text
    Select(console.field("Container Insights")).select_by_visible_text("Container Insights")
    console.button("Add capacity provider").click()
    Select(console.field("Capacity provider")).select_by_visible_text("FARGATE_SPOT")
    console.field("Base").clear()
    console.field("Base").send_keys("1")
    console.field("Weight").clear()
    console.field("Weight").send_keys("2")
    console.button("Add tag").click()
    console.field("Key").send_keys("team")
    console.field("Value").send_keys("web")
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
    console.field("Cluster name").send_keys(bad)
    console.button("Create").click()
    text = console.wait_banner(code)
    assert "Cluster creation failed" in text and message in text
    assert console.d.current_url.endswith("#/clusters/create"), "the form stays, with what was typed"
    assert console.field("Cluster name").get_attribute("value") == bad
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
        overview = console.d.find_element(By.CSS_SELECTOR, ".panel").text
        assert "Services\n1" in overview and "Container instances\n1" in overview
        services = console.table("Services")
        assert [r[0] for r in services] == [svc]
        assert services[0][2:5] == ["FARGATE", f"{family}:1", "2"]
        console.shot("cluster-services")

        # What changed behind the page's back shows after Refresh, without reloading the page.
        svc2 = unique("svc")
        ecs.create_service(cluster=name, serviceName=svc2, taskDefinition=family, desiredCount=0, launchType="FARGATE", networkConfiguration=AWSVPC)
        console.d.execute_script("window.__same_page = true")
        console.button("Refresh").click()
        console.wait(lambda: sorted(r[0] for r in console.table("Services")) == sorted([svc, svc2]), "the second service")
        assert console.d.execute_script("return window.__same_page === true")
        ecs.delete_service(cluster=name, service=svc2, force=True)

        console.d.find_element(By.XPATH, "//nav[@class='tabs']/a[normalize-space()='Tasks']").click()
        console.at(f"/clusters/{name}/tasks")
        rows = console.table("Tasks")
        assert sorted(r[0] for r in rows) == sorted(t.split("/")[-1] for t in tasks)
        assert all(r[2] == "RUNNING" and r[3] == f"{family}:1" and r[4] == f"service:{svc}" for r in rows)
        console.shot("cluster-tasks")

        Select(console.field("Filter desired status")).select_by_visible_text("Stopped")
        console.at(f"/clusters/{name}/tasks?desiredStatus=STOPPED")
        assert console.table("Tasks") == []

        console.open(f"/clusters/{name}/infrastructure")
        assert console.table("Capacity providers")[0][0] == "FARGATE"
        [inst] = console.table("Container instances")
        assert inst[0] == ci["containerInstanceArn"].split("/")[-1]
        assert inst[1:3] == ["i-0console", "ACTIVE"]
        assert inst[6] == "2048 / 2048" and inst[7] == "4096 / 4096"
        details = console.d.find_element(By.CSS_SELECTOR, "table.grid details")
        details.click()
        assert "stack = prod" in details.text and "ecs.instance-type = t3.medium" in details.text
        # At 1280x800 the page itself does not scroll sideways (wide tables scroll by themselves).
        assert console.d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        console.shot("cluster-infrastructure")
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
    console.button("Delete cluster").click()
    console.confirm()
    text = console.wait_banner(code)
    assert message in text and f"Could not delete cluster {name}" in text
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    console.shot("cluster-delete-refused")

    ecs.delete_service(cluster=name, service=svc, force=True)
    console.button("Delete cluster").click()
    console.confirm()
    console.at("/clusters")
    assert f"Cluster {name} has been deleted." in console.wait_banner(name)
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "INACTIVE"


def test_a_cancelled_delete_deletes_nothing(console, shared):
    ecs = shared.client()
    name = unique("console")
    ecs.create_cluster(clusterName=name)
    console.open(f"/clusters/{name}")
    console.button("Delete cluster").click()
    dialog = console.wait(lambda: console.d.find_element(By.CSS_SELECTOR, "dialog[open]"), "the dialog")
    confirm = dialog.find_element(By.CSS_SELECTOR, "button[type=submit]")
    assert not confirm.is_enabled(), "deleting needs the word typed"
    dialog.find_element(By.TAG_NAME, "input").send_keys("delet")
    assert not confirm.is_enabled()
    console.button("Cancel").click()
    console.wait(lambda: not console.d.find_elements(By.CSS_SELECTOR, "dialog"), "the dialog to close")
    assert ecs.describe_clusters(clusters=[name])["clusters"][0]["status"] == "ACTIVE"
    ecs.delete_cluster(cluster=name)


def set_editor(console, text):
    editor = console.field("Task definition JSON")
    editor.clear()
    editor.send_keys(text)


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
    console.button("Create new task definition with JSON").click()
    console.wait(lambda: console.field("Task definition JSON"), "the JSON editor")
    set_editor(console, json.dumps(td))
    console.button("Create").click()
    console.at(f"/task-definitions/{family}/1")
    assert f"Task definition {family}:1 has been created successfully." in console.wait_banner(family)
    got = ecs.describe_task_definition(taskDefinition=f"{family}:1", include=["TAGS"])
    assert got["taskDefinition"]["containerDefinitions"][0]["image"] == "busybox:latest"
    assert got["taskDefinition"]["cpu"] == "256" and got["tags"] == [{"key": "app", "value": "web"}]
    assert console.table("Containers")[0][:3] == ["web", "busybox:latest", "Yes"]
    console.shot("taskdef")

    # A new revision starts from this one: only the image changes.
    console.button("Create new revision").click()
    editor = console.wait(lambda: console.field("Task definition JSON"), "the JSON editor")
    start = json.loads(editor.get_attribute("value"))
    assert "revision" not in start and "taskDefinitionArn" not in start and start["tags"] == td["tags"]
    start["containerDefinitions"][0]["image"] = "busybox:1.36"
    set_editor(console, json.dumps(start))
    console.button("Create").click()
    console.at(f"/task-definitions/{family}/2")
    assert ecs.describe_task_definition(taskDefinition=f"{family}:2")["taskDefinition"]["containerDefinitions"][0]["image"] == "busybox:1.36"

    console.open(f"/task-definitions/{family}")
    assert [r[0] for r in console.table("Revisions")] == [f"{family}:2", f"{family}:1"]
    console.open("/task-definitions")
    rows = {r[0]: r for r in console.table("Task definition families")}
    assert rows[family][1:] == [f"{family}:2", "2"]

    console.open(f"/task-definitions/{family}/1")
    console.button("Deregister").click()
    console.wait_banner("has been deregistered")
    console.wait(lambda: console.button("Delete"), "the Delete button of an inactive revision")
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["status"] == "INACTIVE"
    console.button("Delete").click()
    console.confirm()
    console.at(f"/task-definitions/{family}")
    assert ecs.describe_task_definition(taskDefinition=f"{family}:1")["taskDefinition"]["status"] == "DELETE_IN_PROGRESS"
    assert [r[0] for r in console.table("Revisions")] == [f"{family}:2"]
    ecs.deregister_task_definition(taskDefinition=f"{family}:2")


def test_the_editor_checks_json_and_shows_the_apis_error(console, shared):
    ecs = shared.client()
    family = unique("console-bad")
    console.open("/task-definitions/create")
    set_editor(console, '{"family": ')
    assert "Invalid JSON" in console.d.find_element(By.ID, "json-status").text
    console.button("Create").click()
    assert "Invalid JSON" in console.wait_banner("ValidationError")

    bad = {"family": family, "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 0}]}
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(**bad)
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
    set_editor(console, json.dumps(bad))
    console.button("Create").click()
    text = console.wait_banner(code)
    assert message in text
    assert family not in ecs.list_task_definition_families(familyPrefix=family)["families"]


def test_a_page_that_cannot_load_shows_the_apis_error(console, shared):
    ecs = shared.client()
    missing = unique("nope")
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition=f"{missing}:1")
    code, message = e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]
    console.open(f"/task-definitions/{missing}/1")
    assert console.d.find_element(By.TAG_NAME, "h1").text == "Could not load this page"
    text = console.wait_banner(code)
    assert message in text
