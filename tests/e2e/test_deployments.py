"""Services with real containers: desired count kept, tasks replaced, rolling deployments
within minimumHealthyPercent / maximumPercent, the circuit breaker and its rollback, deletion,
a server crash in the middle of a rollout, and the `services-stable` waiter.

Needs root, and runs only inside a network namespace with no route out (`cargo xtask test`
runs the suite in one)."""

import os
import signal
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Estiba, error_code, error_message, isolated, running_node, unique, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not isolated(), reason="container tests run inside a network namespace with no route out (use cargo xtask test)"),
]

NET = {"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}}
# A container that runs until told to stop, and stops at once when told.
SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # Tasks without health checks count as healthy one second after they reach RUNNING.
    with running_node(tmp_path_factory, "--unchecked-task-healthy-after", "1s") as e:
        yield e


@pytest.fixture
def ecs(node):
    return node.client()


def register(ecs, image, fam=None, health=False, command=SERVE):
    fam = fam or unique("f")
    c = {"name": "app", "image": image, "command": command, "stopTimeout": 2}
    if health:
        c["healthCheck"] = {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1}
    ecs.register_task_definition(family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
                                 memory="512", containerDefinitions=[c])
    return fam


def create(ecs, fam, desired, **kw):
    cluster = unique("c")
    ecs.create_cluster(clusterName=cluster)
    ecs.create_service(cluster=cluster, serviceName="web", taskDefinition=fam, desiredCount=desired,
                       networkConfiguration=NET, **kw)
    return cluster


def service(ecs, cluster):
    return ecs.describe_services(cluster=cluster, services=["web"])["services"][0]


def tasks(ecs, cluster, status="RUNNING"):
    arns = ecs.list_tasks(cluster=cluster, serviceName="web", desiredStatus=status)["taskArns"]
    return ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []


def steady(ecs, cluster, count, revision=None):
    """The service runs `count` tasks (of `revision`), all RUNNING, one deployment COMPLETED, and
    its last event says it reached a steady state."""
    s = service(ecs, cluster)
    [d, *rest] = s["deployments"]
    ok = (s["runningCount"] == count and s["pendingCount"] == 0 and not rest
          and d["rolloutState"] == "COMPLETED" and d["runningCount"] == count
          and s["events"] and s["events"][0]["message"] == "(service web) has reached a steady state.")
    if ok and revision is not None:
        ts = tasks(ecs, cluster)
        ok = len(ts) == count and all(t["taskDefinitionArn"].endswith(f":{revision}") and t["lastStatus"] == "RUNNING" for t in ts)
    return ok and s


def events(s):
    return [e["message"] for e in s["events"]]


def task_pids(task_arn):
    """The processes of a task's containers, from its cgroup."""
    tid = task_arn.rsplit("/", 1)[1]
    for root in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]:
        pids = set()
        for d, _, files in os.walk(os.path.join(root, "estiba", tid)):
            if "cgroup.procs" in files:
                pids.update(int(p) for p in open(os.path.join(d, "cgroup.procs")).read().split())
        if pids:
            return pids
    raise AssertionError(f"no processes found for task {tid}")


def kill_task_processes(task_arn):
    """SIGKILLs every process of a task's containers, from outside estiba."""
    for p in task_pids(task_arn):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Sampler(threading.Thread):
    """Samples the service's tasks every 50 ms while a rollout runs: the least number of
    healthy tasks seen and the most that existed (not STOPPED) at once."""

    def __init__(self, ecs, cluster, health_checked):
        super().__init__(daemon=True)
        self.ecs, self.cluster, self.checked = ecs, cluster, health_checked
        self.min_healthy, self.max_live, self.samples = 1 << 30, 0, 0
        self.done = threading.Event()
        self.error = None

    def healthy(self, t):
        if t["lastStatus"] != "RUNNING" or t["desiredStatus"] != "RUNNING":
            return False
        return t.get("healthStatus") == "HEALTHY" if self.checked else True

    def run(self):
        try:
            while not self.done.is_set():
                ts = self.snapshot()
                if ts is None:
                    continue
                self.min_healthy = min(self.min_healthy, sum(self.healthy(t) for t in ts))
                self.max_live = max(self.max_live, sum(t["lastStatus"] != "STOPPED" for t in ts))
                self.samples += 1
                time.sleep(0.05)
        except Exception as e:  # reported by the test
            self.error = e

    def arns(self):
        return {a for status in ("RUNNING", "STOPPED")
                for a in self.ecs.list_tasks(cluster=self.cluster, serviceName="web", desiredStatus=status)["taskArns"]}

    def snapshot(self):
        """Every task of the service as one DescribeTasks call saw them, at one instant (it
        reads one version of the server's state), or None when a task appeared meanwhile.
        Two describes, or a describe per list, would mix instants: an old task seen stopping
        next to its replacement seen before it turned healthy counts one healthy task short."""
        before = self.arns()
        described = self.ecs.describe_tasks(cluster=self.cluster, tasks=sorted(before))["tasks"] if before else []
        # Tasks are never forgotten within a test, so one missing from `before` but alive at
        # the describe shows up in this second listing.
        return described if self.arns() <= before else None

    def stop(self):
        self.done.set()
        self.join()
        assert self.error is None, self.error
        assert self.samples > 10, self.samples


def test_scale_0_to_5_to_2(ecs, busybox):
    fam = register(ecs, busybox)
    cluster = create(ecs, fam, 0)
    assert wait_until(lambda: steady(ecs, cluster, 0), timeout=30, what="steady at 0")
    ecs.update_service(cluster=cluster, service="web", desiredCount=5)
    s = wait_until(lambda: steady(ecs, cluster, 5), timeout=60, what="5 running")
    ts = tasks(ecs, cluster)
    assert {t["group"] for t in ts} == {"service:web"}
    assert {t["startedBy"] for t in ts} == {s["deployments"][0]["id"]}
    assert any("has started 5 tasks" in m for m in events(s)), events(s)
    ecs.update_service(cluster=cluster, service="web", desiredCount=2)
    s = wait_until(lambda: steady(ecs, cluster, 2), timeout=60, what="2 running")
    assert any("has stopped 3 running tasks" in m for m in events(s)), events(s)
    stopped = wait_until(lambda: len(x := tasks(ecs, cluster, "STOPPED")) == 3 and all(t["lastStatus"] == "STOPPED" for t in x) and x,
                         timeout=30, what="3 stopped")
    for t in stopped:
        assert t["stopCode"] == "ServiceSchedulerInitiated"
        assert t["stoppedReason"].startswith("Scaling activity initiated by (deployment ecs-svc/")
        assert t["containers"][0]["exitCode"] == 0, "stopped with SIGTERM, handled"


def test_protected_task_survives_scale_in(ecs, busybox):
    """Issue 14.18: the scheduler never stops a protected task to scale in."""
    fam = register(ecs, busybox)
    cluster = create(ecs, fam, 3)
    wait_until(lambda: steady(ecs, cluster, 3), timeout=60, what="3 running")
    # The scheduler scales in the newest tasks first: protect the one it would stop first.
    keep = max(tasks(ecs, cluster), key=lambda t: t["createdAt"])["taskArn"]
    ecs.update_task_protection(cluster=cluster, tasks=[keep], protectionEnabled=True, expiresInMinutes=10)
    ecs.update_service(cluster=cluster, service="web", desiredCount=1)
    wait_until(lambda: steady(ecs, cluster, 1), timeout=60, what="1 running")
    assert [t["taskArn"] for t in tasks(ecs, cluster)] == [keep]


def test_killed_task_is_replaced(ecs, busybox):
    fam = register(ecs, busybox)
    cluster = create(ecs, fam, 2)
    wait_until(lambda: steady(ecs, cluster, 2), timeout=60, what="2 running")
    victim = tasks(ecs, cluster)[0]["taskArn"]
    kill_task_processes(victim)
    t = wait_until(lambda: (x := ecs.describe_tasks(cluster=cluster, tasks=[victim])["tasks"][0])["lastStatus"] == "STOPPED" and x,
                   timeout=30, what="the killed task STOPPED")
    assert t["stopCode"] == "EssentialContainerExited"
    assert t["containers"][0]["exitCode"] == 137
    s = wait_until(lambda: steady(ecs, cluster, 2), timeout=60, what="a replacement")
    assert victim not in [x["taskArn"] for x in tasks(ecs, cluster)]
    assert any("has started 1 tasks" in m for m in events(s)), events(s)


def test_unhealthy_task_is_replaced(ecs, busybox):
    fam = unique("f")
    ecs.register_task_definition(family=fam, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                                 containerDefinitions=[{"name": "app", "image": busybox, "command": SERVE, "stopTimeout": 2,
                                                        "healthCheck": {"command": ["CMD-SHELL", "test ! -e /sick"],
                                                                        "interval": 5, "timeout": 2, "retries": 1}}])
    cluster = create(ecs, fam, 1)
    first = wait_until(lambda: (ts := tasks(ecs, cluster)) and ts[0].get("healthStatus") == "HEALTHY" and ts[0], timeout=60,
                       what="a HEALTHY task")
    # Make the running container sick from outside: its root filesystem is the overlay the
    # agent mounted.
    pid = min(task_pids(first["taskArn"]))
    open(f"/proc/{pid}/root/sick", "w").close()
    t = wait_until(lambda: (x := ecs.describe_tasks(cluster=cluster, tasks=[first["taskArn"]])["tasks"][0])["lastStatus"] == "STOPPED" and x,
                   timeout=60, what="the unhealthy task STOPPED")
    assert t["healthStatus"] == "UNHEALTHY"
    assert (t["stopCode"], t["stoppedReason"]) == ("ServiceSchedulerInitiated", "Task failed container health checks")
    wait_until(lambda: (ts := tasks(ecs, cluster)) and ts[0]["taskArn"] != first["taskArn"] and ts[0].get("healthStatus") == "HEALTHY",
               timeout=60, what="a healthy replacement")


@pytest.mark.parametrize("health", [True, False], ids=["health-check", "no-health-check"])
def test_rolling_update_100_200_keeps_4_healthy(ecs, busybox, health):
    fam = register(ecs, busybox, health=health)
    register(ecs, busybox, fam=fam, health=health)
    cluster = create(ecs, f"{fam}:1", 4)
    wait_until(lambda: steady(ecs, cluster, 4, revision=1), timeout=60, what="4 tasks of revision 1")
    if health:
        wait_until(lambda: all(t.get("healthStatus") == "HEALTHY" for t in tasks(ecs, cluster)), timeout=30, what="healthy")
    else:
        time.sleep(1.2)  # --unchecked-task-healthy-after 1s
    sampler = Sampler(ecs, cluster, health)
    sampler.start()
    try:
        first = ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")["service"]
        assert [d["status"] for d in first["deployments"]] == ["PRIMARY", "ACTIVE"]
        s = wait_until(lambda: steady(ecs, cluster, 4, revision=2), timeout=90, what="4 tasks of revision 2")
    finally:
        sampler.stop()
    assert sampler.min_healthy >= 4, f"only {sampler.min_healthy} healthy tasks at one point"
    assert sampler.max_live <= 8, f"{sampler.max_live} tasks at once"
    dep = s["deployments"][0]
    assert dep["taskDefinition"].endswith(f"{fam}:2")
    msgs = events(s)
    assert msgs[0] == "(service web) has reached a steady state."
    assert f"(service web) (deployment {dep['id']}) deployment completed." in msgs
    [rec] = [r for r in ecs.list_service_deployments(cluster=cluster, service="web")["serviceDeployments"]
             if r["targetServiceRevisionArn"].endswith(dep["id"].split("/")[1])]
    assert rec["status"] == "SUCCESSFUL"


def test_rolling_update_50_100_never_above_4(ecs, busybox):
    fam = register(ecs, busybox)
    register(ecs, busybox, fam=fam)
    cluster = create(ecs, f"{fam}:1", 4, deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 100})
    wait_until(lambda: steady(ecs, cluster, 4, revision=1), timeout=60, what="4 tasks of revision 1")
    time.sleep(1.2)
    sampler = Sampler(ecs, cluster, False)
    sampler.start()
    try:
        ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")
        wait_until(lambda: steady(ecs, cluster, 4, revision=2), timeout=90, what="4 tasks of revision 2")
    finally:
        sampler.stop()
    assert sampler.max_live <= 4, f"{sampler.max_live} tasks at once"
    assert sampler.min_healthy >= 2, f"only {sampler.min_healthy} healthy tasks at one point"


def test_circuit_breaker_rolls_back(node, ecs, busybox):
    fam = register(ecs, busybox)
    missing = busybox.rsplit(":", 1)[0] + ":no-such-tag"
    register(ecs, missing, fam=fam)
    cluster = create(ecs, f"{fam}:1", 2,
                     deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    s = wait_until(lambda: steady(ecs, cluster, 2, revision=1), timeout=60, what="2 tasks of revision 1")
    good = s["deployments"][0]["id"]
    bad = ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")["service"]["deployments"][0]["id"]

    def rolled_back():
        s = steady(ecs, cluster, 2, revision=1)
        return s and s["deployments"][0]["id"] not in (good, bad) and s
    s = wait_until(rolled_back, timeout=120, what="a rollback to revision 1")
    msgs = events(s)
    assert f"(service web) (deployment {bad}) deployment failed: tasks failed to start." in msgs, msgs
    assert f"(service web) rolling back to deployment {good}." in msgs, msgs
    failed = [t for t in tasks(ecs, cluster, "STOPPED") if t["taskDefinitionArn"].endswith(":2")]
    codes = sorted(t["stopCode"] for t in failed)
    # The threshold for 2 tasks is 3 failures; a task of revision 2 still starting when the
    # breaker trips is stopped by the scheduler.
    assert codes.count("TaskFailedToStart") >= 3 and set(codes) <= {"TaskFailedToStart", "ServiceSchedulerInitiated"}, codes
    assert all("CannotPullContainerError" in t["stoppedReason"] for t in failed if t["stopCode"] == "TaskFailedToStart")
    recs = ecs.list_service_deployments(cluster=cluster, service="web")["serviceDeployments"]
    by_rev = {r["targetServiceRevisionArn"].rsplit("/", 1)[1]: r for r in recs}
    rec = by_rev[bad.split("/")[1]]
    assert rec["status"] == "ROLLBACK_SUCCESSFUL", rec
    full = ecs.describe_service_deployments(serviceDeploymentArns=[rec["serviceDeploymentArn"]])["serviceDeployments"][0]
    assert full["deploymentCircuitBreaker"]["status"] == "TRIGGERED"
    assert full["rollback"]["reason"].startswith("ECS deployment circuit breaker")


def test_delete_service_needs_force_then_drains(ecs, busybox):
    fam = register(ecs, busybox)
    cluster = create(ecs, fam, 2)
    wait_until(lambda: steady(ecs, cluster, 2), timeout=60, what="2 running")
    arns = [t["taskArn"] for t in tasks(ecs, cluster)]
    with pytest.raises(ClientError) as e:
        ecs.delete_service(cluster=cluster, service="web")
    assert error_code(e) == "InvalidParameterException"
    assert error_message(e) == "The service cannot be stopped while it is scaled above 0."
    assert service(ecs, cluster)["status"] == "ACTIVE"
    s = ecs.delete_service(cluster=cluster, service="web", force=True)["service"]
    assert s["status"] == "DRAINING"
    wait_until(lambda: ecs.describe_services(cluster=cluster, services=["web"])["services"][0]["status"] == "INACTIVE",
               timeout=60, what="INACTIVE")
    for t in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]:
        assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "ServiceSchedulerInitiated"


def test_kill_9_mid_rollout_then_it_completes(tmp_path, busybox):
    e = Estiba(str(tmp_path / "srv"), extra_args=["--unchecked-task-healthy-after", "3s"], node=True).start()
    try:
        ecs = e.client()
        fam = register(ecs, busybox)
        register(ecs, busybox, fam=fam)
        cluster = create(ecs, f"{fam}:1", 4)
        wait_until(lambda: steady(ecs, cluster, 4, revision=1), timeout=60, what="4 tasks of revision 1")
        ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")
        # Crash once the new tasks exist but before any counts as healthy (3 s).
        wait_until(lambda: sum(t["taskDefinitionArn"].endswith(":2") for t in tasks(ecs, cluster)) >= 1,
                   timeout=30, what="a task of revision 2")
        e.kill9()
        e.start()
        ecs = e.client()
        # The AWS CLI's waiter polls DescribeServices until the rollout is done.
        e.aws("ecs", "wait", "services-stable", "--cluster", cluster, "--services", "web")
        s = steady(ecs, cluster, 4, revision=2)
        assert s, service(ecs, cluster)
        recs = ecs.list_service_deployments(cluster=cluster, service="web")["serviceDeployments"]
        newest = max(recs, key=lambda r: r["createdAt"])
        assert newest["status"] == "SUCCESSFUL"
        desc = ecs.describe_service_deployments(serviceDeploymentArns=[newest["serviceDeploymentArn"]])
        d = desc["serviceDeployments"][0]
        assert d["status"] == "SUCCESSFUL" and d["targetServiceRevision"]["runningTaskCount"] == 4
        # Nothing of revision 1 is left running.
        assert len(tasks(ecs, cluster)) == 4
    finally:
        e.drain()
        e.stop()


@pytest.fixture(scope="module")
def slow_node(tmp_path_factory):
    """A server where tasks without health checks count as healthy only after 10 s, so a
    rollout can begin before the first deployment's tasks count (issue 14.1 and 14.2)."""
    with running_node(tmp_path_factory, "--unchecked-task-healthy-after", "10s", name="slow") as e:
        yield e


def test_rollout_right_after_start_keeps_the_floor(slow_node, busybox):
    ecs = slow_node.client()
    fam = register(ecs, busybox)
    register(ecs, busybox, fam=fam)
    cluster = create(ecs, f"{fam}:1", 4, deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 100})
    wait_until(lambda: service(ecs, cluster)["runningCount"] == 4, timeout=60, what="4 running")
    sampler = Sampler(ecs, cluster, False)
    sampler.start()
    try:
        ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")
        s = wait_until(lambda: steady(ecs, cluster, 4, revision=2), timeout=120, what="4 tasks of revision 2")
    finally:
        sampler.stop()
    # Running and not told to stop: never fewer than the floor of 2 (50 % of 4).
    assert sampler.min_healthy >= 2, f"only {sampler.min_healthy} tasks running at one point"
    assert sampler.max_live <= 4, f"{sampler.max_live} tasks at once"
    assert not any("has stopped 4 running tasks" in m for m in events(s)), events(s)


def test_breaker_rolls_back_a_rollout_begun_right_after_start(slow_node, busybox):
    ecs = slow_node.client()
    fam = register(ecs, busybox)
    missing = busybox.rsplit(":", 1)[0] + ":no-such-tag"
    register(ecs, missing, fam=fam)
    cluster = create(ecs, f"{fam}:1", 2,
                     deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}})
    first = wait_until(lambda: (s := service(ecs, cluster))["runningCount"] == 2 and s, timeout=60, what="2 running")
    good = first["deployments"][0]["id"]
    assert first["deployments"][0]["rolloutState"] == "IN_PROGRESS", "the rollout must begin before the first completes"
    bad = ecs.update_service(cluster=cluster, service="web", taskDefinition=f"{fam}:2")["service"]["deployments"][0]["id"]
    seen = set()

    def rolled_back():
        recs = ecs.list_service_deployments(cluster=cluster, service="web")["serviceDeployments"]
        rec = [r for r in recs if r["targetServiceRevisionArn"].endswith("/" + bad.split("/")[1])][0]
        seen.add(rec["status"])
        s = steady(ecs, cluster, 2, revision=1)
        return rec["status"] == "ROLLBACK_SUCCESSFUL" and s and s["deployments"][0]["id"] not in (good, bad) and s
    s = wait_until(rolled_back, timeout=150, what="a rollback to revision 1")
    assert "ROLLBACK_IN_PROGRESS" in seen or "ROLLBACK_SUCCESSFUL" in seen, seen
    assert f"(service web) rolling back to deployment {good}." in events(s), events(s)
