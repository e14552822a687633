// Deploy into a cluster: the ECS console's "Create service" and "Run task" forms. Compute
// options (capacity provider strategy or launch type), the task definition's family and
// revision, the service's name, desired tasks, deployment options (minimum and maximum healthy
// percent, the circuit breaker with rollback), networking for awsvpc task definitions (VPC,
// subnets and security groups from the EC2 API, public IP), and for a service load balancing,
// service discovery, Service Connect and service auto scaling (js/pages/deploy-options.js),
// and tags.
// Submitting a task is one RunTask call. Submitting a service makes what it needs first (load
// balancer, target group, listener; Cloud Map service), then CreateService, then the scaling
// target and policy, each step shown as it runs; a failed step's error is shown and no later
// step is called.

import { ecs, listAll, ec2Items } from "../api.js";
import { h, seg, showError, showSuccess, labelled, checkbox, rowsEditor, textInput, numberInput, select, uid, arnName, tagsEditor, onSubmit, crumbs } from "../ui.js";
import { go } from "../app.js";
import { loadBalancing, serviceDiscovery, serviceConnect, autoScaling, progress } from "./deploy-options.js";

/** `kind`: "service" (Create service) or "task" (Run task). */
export async function render({ cluster: clusterName, kind, query }) {
  const service = kind === "service";
  const out = await ecs("DescribeClusters", { clusters: [clusterName] });
  const cluster = (out.clusters || [])[0];
  if (!cluster) throw { type: "ClusterNotFoundException", message: `Cluster ${clusterName} was not found.` };
  const families = (await listAll("ecs", "ListTaskDefinitionFamilies", { status: "ACTIVE", maxResults: 100 }, "families")).sort();
  const base = `/clusters/${seg(clusterName)}`;

  // Compute options.
  const defaultStrategy = cluster.defaultCapacityProviderStrategy || [];
  const providers = cluster.capacityProviders || [];
  const radio = (value, text, checked) => {
    const input = h("input", { type: "radio", name: "compute", value, id: uid("compute"), checked });
    return h("div", { class: "check" }, input, h("label", { for: input.id }, text));
  };
  const useStrategy = defaultStrategy.length > 0;
  const computeStrategy = radio("strategy", "Capacity provider strategy", useStrategy);
  const computeLaunchType = radio("launchType", "Launch type", !useStrategy);
  const launchType = select([["FARGATE", "FARGATE"], ["EC2", "EC2"], ["EXTERNAL", "EXTERNAL"]], "FARGATE");
  const providerChoices = [...new Set([...providers, "FARGATE", "FARGATE_SPOT"])].map((p) => [p, p]);
  const strategy = rowsEditor(
    [
      ["Capacity provider", (v) => select(providerChoices, v)],
      ["Base", (v) => numberInput(v ?? 0, { min: "0", max: "100000" })],
      ["Weight", (v) => numberInput(v ?? 1, { min: "0", max: "1000" })],
    ],
    "Add capacity provider",
    (defaultStrategy.length ? defaultStrategy : [{ capacityProvider: providers[0] || "FARGATE", base: 0, weight: 1 }]).map((s) => [s.capacityProvider, s.base, s.weight]),
  );
  const launchTypeField = labelled("Launch type", launchType);
  const followCompute = () => {
    const s = computeStrategy.querySelector("input").checked;
    strategy.hidden = !s;
    launchTypeField.hidden = s;
  };
  for (const r of [computeStrategy, computeLaunchType]) r.querySelector("input").addEventListener("change", followCompute);
  followCompute();

  // Task definition: family, then its active revisions (newest first).
  const wantFamily = query.get("family");
  const family = select([["", "Choose a family"], ...families.map((f) => [f, f])], families.includes(wantFamily) ? wantFamily : families.length === 1 ? families[0] : "");
  const revision = select([], "");
  let taskDef = null;
  const networkHint = h("p", { class: "hint", role: "status" });
  const loadRevision = async () => {
    taskDef = null;
    if (!revision.value) return followNetwork();
    try {
      taskDef = (await ecs("DescribeTaskDefinition", { taskDefinition: revision.value })).taskDefinition;
    } catch (e) {
      showError(e, `Could not describe ${revision.value}`);
    }
    followNetwork();
  };
  const loadFamily = async () => {
    revision.replaceChildren();
    if (!family.value) return loadRevision();
    const arns = await listAll("ecs", "ListTaskDefinitions", { familyPrefix: family.value, status: "ACTIVE", sort: "DESC", maxResults: 100 }, "taskDefinitionArns");
    const mine = arns.map(arnName).filter((fr) => fr.slice(0, fr.lastIndexOf(":")) === family.value);
    const want = query.get("revision");
    revision.append(
      ...mine.map((fr, i) => {
        const n = fr.split(":").pop();
        return h("option", { value: fr, selected: n === want }, i === 0 ? `${n} (LATEST)` : n);
      }),
    );
    await loadRevision();
  };
  // What the choices are still loading; submitting waits for it (a quick hand can be faster).
  let loading = Promise.resolve();
  family.addEventListener("change", () => (loading = loadFamily().catch((e) => showError(e, "Could not list the revisions"))));
  revision.addEventListener("change", () => (loading = loadRevision()));

  // Service (or task) settings.
  const serviceName = textInput("", { required: true });
  const desired = numberInput(1, { min: "0", max: service ? "" : "10" });
  const minHealthy = numberInput(100, { min: "0", max: "100" });
  const maxPercent = numberInput(200, { min: "100", max: "2000" });
  const breaker = checkbox("Use the Amazon ECS deployment circuit breaker", true);
  const rollback = checkbox("Rollback on failures", true);
  breaker.input.addEventListener("change", () => {
    rollback.input.disabled = !breaker.input.checked;
    if (!breaker.input.checked) rollback.input.checked = false;
  });

  // Networking (awsvpc): the EC2 API's VPCs, their subnets and security groups.
  const vpc = select([], "");
  const subnets = h("fieldset", { class: "inner choices" }, h("legend", {}, "Subnets"));
  const groups = h("fieldset", { class: "inner choices" }, h("legend", {}, "Security group"));
  const publicIp = checkbox("Public IP", true);
  const networking = h(
    "fieldset",
    {},
    h("legend", {}, "Networking"),
    networkHint,
    h("div", { class: "network-fields" }, labelled("VPC", vpc), subnets, groups, publicIp),
  );
  const loadVpc = async () => {
    const filter = { "Filter.1.Name": "vpc-id", "Filter.1.Value.1": vpc.value };
    const [sns, sgs] = await Promise.all([ec2Items("DescribeSubnets", filter, "subnetSet"), ec2Items("DescribeSecurityGroups", filter, "securityGroupInfo")]);
    const choice = (value, text, checked) => {
      const c = checkbox(text, checked);
      c.input.value = value;
      return c;
    };
    subnets.replaceChildren(
      h("legend", {}, "Subnets"),
      ...sns.map((s) => choice(s.subnetId, `${s.subnetId} (${s.availabilityZone}, ${s.cidrBlock})`, true)),
    );
    groups.replaceChildren(
      h("legend", {}, "Security group"),
      ...sgs.map((g) => choice(g.groupId, `${g.groupId} (${g.groupName})`, g.groupName === "default")),
    );
  };
  vpc.addEventListener("change", () => (loading = loadVpc().catch((e) => showError(e, "Could not list the subnets"))));
  const awsvpc = () => !taskDef || taskDef.networkMode === "awsvpc";
  const checked = (fs) => [...fs.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
  const lb = service ? loadBalancing({ vpc: () => vpc.value, subnets: () => checked(subnets), securityGroups: () => checked(groups), awsvpc }) : null;
  const discovery = service ? serviceDiscovery() : null;
  const connect = service ? serviceConnect({ taskDef: () => taskDef }) : null;
  const scaling = service ? autoScaling() : null;
  function followNetwork() {
    if (lb) lb.followTaskDef(taskDef);
    if (connect) connect.follow();
    const on = awsvpc();
    networking.querySelector(".network-fields").hidden = !on;
    networkHint.textContent = on
      ? "The task definition uses awsvpc: each task gets its own network interface in these subnets."
      : `The task definition uses the ${taskDef.networkMode} network mode: no network configuration.`;
  }
  try {
    const vpcs = await ec2Items("DescribeVpcs", {}, "vpcSet");
    vpc.append(...vpcs.map((v) => h("option", { value: v.vpcId, selected: v.isDefault === "true" }, `${v.vpcId}${v.isDefault === "true" ? " (default)" : ""} ${v.cidrBlock || ""}`)));
    if (vpc.value) await loadVpc();
  } catch (e) {
    showError(e, "Could not list the VPCs");
  }
  if (family.value) await loadFamily();
  else followNetwork();

  const tags = tagsEditor();
  const num = (el, dflt) => (el.value.trim() === "" ? dflt : Number(el.value));
  function input() {
    const req = { cluster: cluster.clusterName, taskDefinition: revision.value };
    if (computeStrategy.querySelector("input").checked)
      req.capacityProviderStrategy = strategy.values().map(([capacityProvider, b, w]) => ({ capacityProvider, base: num({ value: b }, 0), weight: num({ value: w }, 0) }));
    else req.launchType = launchType.value;
    if (awsvpc())
      req.networkConfiguration = {
        awsvpcConfiguration: { subnets: checked(subnets), securityGroups: checked(groups), assignPublicIp: publicIp.input.checked ? "ENABLED" : "DISABLED" },
      };
    const t = tags.tags();
    if (t.length) req.tags = t;
    if (service) {
      req.serviceName = serviceName.value.trim();
      req.desiredCount = num(desired, 0);
      req.deploymentConfiguration = {
        minimumHealthyPercent: num(minHealthy, 100),
        maximumPercent: num(maxPercent, 200),
        deploymentCircuitBreaker: { enable: breaker.input.checked, rollback: rollback.input.checked },
      };
      lb.serviceInput(req);
      discovery.serviceInput(req);
      connect.serviceInput(req);
    } else req.count = num(desired, 1);
    return req;
  }

  const submit = h("button", { type: "submit", class: "primary" }, service ? "Create" : "Run task");
  const steps = progress();
  const form = h(
    "form",
    { class: "form", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "Environment"),
      h("p", { class: "hint" }, `Existing cluster: ${cluster.clusterName}`),
      h("fieldset", { class: "inner" }, h("legend", {}, "Compute options"), computeStrategy, computeLaunchType),
      strategy,
      launchTypeField,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Deployment configuration"),
      h("div", { class: "cols" }, labelled("Family", family), labelled("Revision", revision)),
      service ? labelled("Service name", serviceName, "Up to 255 letters, numbers, hyphens and underscores, unique in the cluster.") : null,
      labelled("Desired tasks", desired),
      service
        ? h(
            "fieldset",
            { class: "inner" },
            h("legend", {}, "Deployment options"),
            h("div", { class: "cols" }, labelled("Minimum healthy percent", minHealthy), labelled("Maximum percent", maxPercent)),
            h("fieldset", { class: "inner" }, h("legend", {}, "Deployment failure detection"), breaker, rollback),
          )
        : null,
    ),
    networking,
    service ? [lb.el, discovery.el, connect.el, scaling.el] : null,
    h("fieldset", {}, h("legend", {}, "Tags"), tags),
    steps.list,
    h("div", { class: "actions" }, h("a", { class: "button", href: `#${base}/${service ? "services" : "tasks"}` }, "Cancel"), submit),
  );
  onSubmit(form, submit, {
    failTitle: service ? "Service creation failed" : "Run task failed",
    pending: () => loading,
    check: () => {
      if (!revision.value) {
        family.focus();
        return "Choose a task definition family and revision.";
      }
      return service ? lb.check() || discovery.check() || connect.check() || scaling.check(lb.used()) : null;
    },
    run: async () => {
      steps.reset();
      if (service) {
        await lb.before(steps.step);
        await discovery.before(steps.step, () => {
          const r = {};
          lb.serviceInput(r);
          return r.loadBalancers ? { containerName: r.loadBalancers[0].containerName, containerPort: r.loadBalancers[0].containerPort } : null;
        });
        const req = input();
        const out = await steps.step(`Create service ${req.serviceName}`, () => ecs("CreateService", req));
        await scaling.after(steps.step, cluster.clusterName, out.service.serviceName, lb.resourceLabel());
        showSuccess(`Service ${out.service.serviceName} has been created successfully.`, true);
        go(`${base}/services/${seg(out.service.serviceName)}`);
      } else {
        const out = await ecs("RunTask", input());
        const f = (out.failures || [])[0];
        if (f && !(out.tasks || []).length) throw { type: "RunTaskFailure", message: `${f.arn || ""} ${f.reason}${f.detail ? ` (${f.detail})` : ""}`.trim() };
        showSuccess(`${(out.tasks || []).length} task(s) started: ${(out.tasks || []).map((t) => arnName(t.taskArn)).join(", ")}.`, true);
        go(`${base}/tasks`);
      }
    },
  });
  const title = service ? "Create service" : "Run task";
  return h(
    "section",
    {},
    crumbs([["/clusters", "Clusters"], [base, cluster.clusterName]], title),
    h("h1", {}, title),
    form,
  );
}
