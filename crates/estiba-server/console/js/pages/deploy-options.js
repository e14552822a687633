// The Create service form's optional sections, as the ECS console lays them out: Load
// balancing (an Application Load Balancer, new or existing; its listener, new or existing; a
// target group, new or existing; the container and port to load balance), Service discovery
// (a Cloud Map namespace, a discovery service name, its DNS record type and TTL), Service
// Connect (a namespace; client only, or client and server with a named port mapping) and
// Service auto scaling (minimum and maximum number of tasks and a target tracking policy).
//
// Each section is `{el, before(ctx, step), serviceInput(req), after(service, step)}`: `before`
// makes what CreateService needs (the load balancer, target group and listener; the Cloud Map
// service), `serviceInput` adds it to CreateService's input, `after` registers the scalable
// target and puts the policy (Application Auto Scaling, after CreateService, as the console
// does). Every call goes through js/api.js to the same APIs boto3 uses.

import { elbv2, elbv2All, servicediscovery, listAll, autoscaling } from "../api.js";
import { h, labelled, checkbox, textInput, numberInput, select, radios, arnName } from "../ui.js";

/** The container ports of a task definition as `[value "name:port", text]` choices. */
function containerPorts(taskDef) {
  return (taskDef?.containerDefinitions || []).flatMap((c) =>
    (c.portMappings || []).map((p) => [`${c.name}:${p.containerPort}`, `${c.name} ${p.containerPort}:${p.hostPort ?? p.containerPort}`]),
  );
}

/** A section that shows its fields only when its "Use ..." box is checked. */
function toggled(legend, useText, fields) {
  const use = checkbox(useText, false);
  const inner = h("div", { class: "toggled" }, fields);
  const follow = () => (inner.hidden = !use.input.checked);
  use.input.addEventListener("change", follow);
  follow();
  return { use, el: h("fieldset", { id: `section-${legend.toLowerCase().replaceAll(" ", "-")}` }, h("legend", {}, legend), use, inner) };
}

/** Load balancing. `ctx`: `taskDef()`, `vpc()`, `subnets()`, `securityGroups()`, `awsvpc()`. */
export function loadBalancing(ctx) {
  const lbs = { list: [] };
  const container = select([], "");
  const lbChoice = radios("Application Load Balancer", [["new", "Create a new load balancer"], ["existing", "Use an existing load balancer"]], "new", () => follow());
  const lbName = textInput("", { maxlength: "32" });
  const lbExisting = select([], "");
  const listenerChoice = radios("Listener", [["new", "Create new listener"], ["existing", "Use an existing listener"]], "new", () => follow());
  const port = numberInput(80, { min: "1", max: "65535" });
  const protocol = select([["HTTP", "HTTP"], ["HTTPS", "HTTPS"]], "HTTP");
  const listenerExisting = select([], "");
  const tgChoice = radios("Target group", [["new", "Create new target group"], ["existing", "Use an existing target group"]], "new", () => follow());
  const tgName = textInput("", { maxlength: "32" });
  const tgProtocol = select([["HTTP", "HTTP"], ["HTTPS", "HTTPS"]], "HTTP");
  const healthPath = textInput("/");
  const tgExisting = select([], "");
  const pathPattern = textInput("/*");
  const priority = numberInput(1, { min: "1", max: "50000" });
  const grace = numberInput(0, { min: "0", max: "2147483647" });

  const newLb = h("div", {}, labelled("Load balancer name", lbName, "Up to 32 letters, numbers and hyphens."));
  const oldLb = h("div", {}, labelled("Load balancer", lbExisting));
  const newListener = h("div", { class: "cols" }, labelled("Port", port), labelled("Protocol", protocol));
  const oldListener = h("div", {}, labelled("Listener", listenerExisting));
  const newTg = h("div", {}, labelled("Target group name", tgName), labelled("Target group protocol", tgProtocol), labelled("Health check path", healthPath));
  const oldTg = h("div", {}, labelled("Target group", tgExisting));
  const rule = h(
    "div",
    { class: "cols" },
    labelled("Path pattern", pathPattern, "Requests whose path matches go to the new target group (a listener rule)."),
    labelled("Evaluation order", priority),
  );
  const listenerSet = h("fieldset", { class: "inner", id: "listener-fields" }, h("legend", {}, "Listener settings"), listenerChoice, newListener, oldListener);
  const tgSet = h("fieldset", { class: "inner", id: "target-group-fields" }, h("legend", {}, "Target group settings"), tgChoice, newTg, oldTg, rule);

  function follow() {
    const existingLb = lbChoice.value === "existing";
    newLb.hidden = existingLb;
    oldLb.hidden = !existingLb;
    // A new load balancer has no listeners yet.
    listenerChoice.querySelector("input[value=existing]").disabled = !existingLb;
    if (!existingLb) listenerChoice.querySelector("input[value=new]").checked = true;
    const existingListener = listenerChoice.value === "existing";
    newListener.hidden = existingListener;
    oldListener.hidden = !existingListener;
    const existingTg = tgChoice.value === "existing";
    newTg.hidden = existingTg;
    oldTg.hidden = !existingTg;
    rule.hidden = !existingListener || existingTg;
  }
  const loadListeners = async () => {
    listenerExisting.replaceChildren();
    if (!lbExisting.value) return;
    const ls = await elbv2All("DescribeListeners", { LoadBalancerArn: lbExisting.value }, "Listeners");
    listenerExisting.append(...ls.map((l) => h("option", { value: l.ListenerArn }, `${l.Protocol}:${l.Port}`)));
  };
  lbExisting.addEventListener("change", () => loadListeners());

  const { use, el } = toggled("Load balancing", "Use load balancing", [
    labelled("Load balancer type", select([["application", "Application Load Balancer"]], "application")),
    labelled("Container", container, "The container and port the load balancer sends traffic to."),
    lbChoice,
    newLb,
    oldLb,
    listenerSet,
    tgSet,
    labelled("Health check grace period", grace, "Seconds the service scheduler ignores the load balancer's health checks after a task starts."),
  ]);
  use.input.addEventListener("change", async () => {
    if (!use.input.checked || lbs.loaded) return;
    lbs.loaded = true;
    const [all, tgs] = await Promise.all([elbv2All("DescribeLoadBalancers", {}, "LoadBalancers"), elbv2All("DescribeTargetGroups", {}, "TargetGroups")]);
    lbExisting.replaceChildren(...all.filter((l) => l.Type === "application").map((l) => h("option", { value: l.LoadBalancerArn }, l.LoadBalancerName)));
    tgExisting.replaceChildren(...tgs.map((t) => h("option", { value: t.TargetGroupArn }, `${t.TargetGroupName} (${t.Protocol}:${t.Port}, ${t.TargetType})`)));
    await loadListeners();
  });
  follow();

  let made = {};
  return {
    el,
    /** The task definition changed: its container ports are the choices. */
    followTaskDef(taskDef) {
      const was = container.value;
      container.replaceChildren(...containerPorts(taskDef).map(([v, t]) => h("option", { value: v, selected: v === was }, t)));
    },
    used: () => use.input.checked,
    check() {
      if (!use.input.checked) return null;
      if (!container.value) return "Load balancing needs a container with a port mapping in the task definition.";
      if (lbChoice.value === "new" && !lbName.value.trim()) return "Enter a load balancer name.";
      if (tgChoice.value === "new" && !tgName.value.trim()) return "Enter a target group name.";
      if (tgChoice.value === "existing" && !tgExisting.value) return "Choose a target group.";
      return null;
    },
    /** Creates the load balancer, target group and listener (or rule) asked for. */
    async before(step) {
      made = {};
      if (!use.input.checked) return;
      const [, containerPort] = container.value.split(":");
      let lbArn = lbExisting.value;
      if (lbChoice.value === "new")
        lbArn = await step(`Create load balancer ${lbName.value.trim()}`, async () => {
          const out = await elbv2("CreateLoadBalancer", {
            Name: lbName.value.trim(),
            Type: "application",
            Scheme: "internet-facing",
            Subnets: ctx.subnets(),
            SecurityGroups: ctx.securityGroups(),
          });
          return out.LoadBalancers[0].LoadBalancerArn;
        });
      let tgArn = tgExisting.value;
      if (tgChoice.value === "new")
        tgArn = await step(`Create target group ${tgName.value.trim()}`, async () => {
          const out = await elbv2("CreateTargetGroup", {
            Name: tgName.value.trim(),
            Protocol: tgProtocol.value,
            Port: Number(containerPort),
            VpcId: ctx.vpc(),
            TargetType: ctx.awsvpc() ? "ip" : "instance",
            HealthCheckProtocol: tgProtocol.value,
            HealthCheckPath: healthPath.value.trim() || "/",
          });
          return out.TargetGroups[0].TargetGroupArn;
        });
      const forward = [{ Type: "forward", TargetGroupArn: tgArn }];
      if (listenerChoice.value === "new")
        await step(`Create listener ${protocol.value}:${port.value}`, () =>
          elbv2("CreateListener", { LoadBalancerArn: lbArn, Protocol: protocol.value, Port: Number(port.value), DefaultActions: forward }),
        );
      else if (tgChoice.value === "new")
        await step(`Add a rule for ${pathPattern.value} to the listener`, () =>
          elbv2("CreateRule", {
            ListenerArn: listenerExisting.value,
            Priority: Number(priority.value),
            Conditions: [{ Field: "path-pattern", PathPatternConfig: { Values: [pathPattern.value.trim() || "/*"] } }],
            Actions: forward,
          }),
        );
      made = { lbArn, tgArn, containerName: container.value.split(":")[0], containerPort: Number(containerPort) };
    },
    serviceInput(req) {
      if (!made.tgArn) return;
      req.loadBalancers = [{ targetGroupArn: made.tgArn, containerName: made.containerName, containerPort: made.containerPort }];
      if (grace.value.trim()) req.healthCheckGracePeriodSeconds = Number(grace.value);
    },
    /** The ALBRequestCountPerTarget metric's resource label. */
    resourceLabel: () => (made.lbArn && made.tgArn ? `${made.lbArn.split(":loadbalancer/")[1]}/${made.tgArn.split(":").pop()}` : null),
  };
}

/** Service discovery: a Cloud Map service in a namespace, registered with the ECS service. */
export function serviceDiscovery() {
  const namespace = select([], "");
  const name = textInput("");
  const recordType = select([["A", "A"], ["SRV", "SRV"]], "A");
  const ttl = numberInput(60, { min: "0", max: "2147483647" });
  const dnsFields = h("div", { class: "cols" }, labelled("DNS record type", recordType), labelled("TTL", ttl));
  let namespaces = [];
  const follow = () => {
    const ns = namespaces.find((n) => n.Id === namespace.value);
    dnsFields.hidden = ns?.Type === "HTTP";
  };
  namespace.addEventListener("change", follow);
  const { use, el } = toggled("Service discovery", "Use service discovery", [
    labelled("Namespace", namespace, "A Cloud Map namespace (ListNamespaces); tasks register in it as instances."),
    labelled("Service discovery name", name, "The name the service's tasks are found under in the namespace."),
    dnsFields,
  ]);
  use.input.addEventListener("change", async () => {
    if (!use.input.checked || namespaces.length) return;
    namespaces = await listAll("servicediscovery", "ListNamespaces", {}, "Namespaces");
    namespace.replaceChildren(...namespaces.map((n) => h("option", { value: n.Id }, `${n.Name} (${n.Type}, ${n.Id})`)));
    follow();
  });
  let registry = null;
  return {
    el,
    check() {
      if (!use.input.checked) return null;
      if (!namespace.value) return "Choose a namespace (create one with Cloud Map's CreatePrivateDnsNamespace or CreateHttpNamespace).";
      if (!name.value.trim()) return "Enter a service discovery name.";
      return null;
    },
    async before(step, lb) {
      registry = null;
      if (!use.input.checked) return;
      const ns = namespaces.find((n) => n.Id === namespace.value);
      const input = { Name: name.value.trim(), NamespaceId: namespace.value, HealthCheckCustomConfig: { FailureThreshold: 1 } };
      if (ns?.Type !== "HTTP") input.DnsConfig = { RoutingPolicy: "MULTIVALUE", DnsRecords: [{ Type: recordType.value, TTL: Number(ttl.value || 60) }] };
      const arn = await step(`Create service discovery service ${input.Name}`, async () => (await servicediscovery("CreateService", input)).Service.Arn);
      registry = { registryArn: arn };
      // SRV records name a container's port: the load balanced one, else the first.
      if (recordType.value === "SRV" && ns?.Type !== "HTTP") {
        const first = lb();
        if (first) Object.assign(registry, first);
      }
    },
    serviceInput(req) {
      if (registry) req.serviceRegistries = [registry];
    },
  };
}

/** The named port mappings of a task definition as `[name, text]` choices (Service Connect
 * serves a port by its mapping's name). */
function namedPorts(taskDef) {
  return (taskDef?.containerDefinitions || []).flatMap((c) =>
    (c.portMappings || []).filter((p) => p.name).map((p) => [p.name, `${p.name} (${c.name} ${p.containerPort})`]),
  );
}

/** Service Connect: a namespace, and as client and server the port mapping it serves with its
 * discovery name and client alias. `ctx.taskDef()` is the chosen revision. */
export function serviceConnect(ctx) {
  const namespace = select([], "");
  const mode = radios(
    "Service Connect configuration",
    [["client", "Client side only"], ["client-server", "Client and server"]],
    "client-server",
    () => follow(),
  );
  const portName = select([], "");
  const discoveryName = textInput("");
  const dnsName = textInput("");
  const aliasPort = numberInput("", { min: "1", max: "65535" });
  const server = h(
    "div",
    {},
    labelled("Port alias", portName, "A named port mapping of the task definition (portMappings[].name)."),
    labelled("Discovery name", discoveryName, "Optional: the name other services find this one by (default: the port alias)."),
    h("div", { class: "cols" }, labelled("DNS", dnsName, "Optional: the client alias's DNS name."), labelled("Client alias port", aliasPort)),
  );
  const follow = () => {
    server.hidden = mode.value !== "client-server";
    const before = portName.value;
    const ports = namedPorts(ctx.taskDef());
    portName.replaceChildren(...ports.map(([v, t]) => h("option", { value: v, selected: v === before }, t)));
  };
  const { use, el } = toggled("Service Connect", "Use Service Connect", [
    labelled("Namespace", namespace, "The Cloud Map namespace the service's clients and servers share."),
    mode,
    server,
  ]);
  let namespaces = [];
  use.input.addEventListener("change", async () => {
    follow();
    if (!use.input.checked || namespaces.length) return;
    namespaces = await listAll("servicediscovery", "ListNamespaces", {}, "Namespaces");
    namespace.replaceChildren(...namespaces.map((n) => h("option", { value: n.Arn }, `${n.Name} (${n.Type})`)));
  });
  return {
    el,
    follow,
    check() {
      if (!use.input.checked) return null;
      if (!namespace.value) return "Choose a namespace for Service Connect.";
      if (mode.value === "client-server") {
        if (!portName.value) return "Service Connect serves a named port mapping: give a port mapping of the task definition a name.";
        if (dnsName.value.trim() && !aliasPort.value) return "Enter the client alias port for the DNS name.";
      }
      return null;
    },
    serviceInput(req) {
      if (!use.input.checked) return;
      const cfg = { enabled: true, namespace: namespace.value };
      if (mode.value === "client-server") {
        const svc = { portName: portName.value };
        if (discoveryName.value.trim()) svc.discoveryName = discoveryName.value.trim();
        if (aliasPort.value) {
          const alias = { port: Number(aliasPort.value) };
          if (dnsName.value.trim()) alias.dnsName = dnsName.value.trim();
          svc.clientAliases = [alias];
        }
        cfg.services = [svc];
      }
      req.serviceConnectConfiguration = cfg;
    },
  };
}

export const SCALING_METRICS = [
  ["ECSServiceAverageCPUUtilization", "ECSServiceAverageCPUUtilization"],
  ["ECSServiceAverageMemoryUtilization", "ECSServiceAverageMemoryUtilization"],
  ["ALBRequestCountPerTarget", "ALBRequestCountPerTarget"],
];

/** Service auto scaling: a scalable target and a target tracking policy, after CreateService. */
export function autoScaling() {
  const min = numberInput(1, { min: "0" });
  const max = numberInput(4, { min: "0" });
  const policyName = textInput("");
  const metric = select(SCALING_METRICS, SCALING_METRICS[0][0]);
  const target = numberInput(70, { min: "0", step: "any" });
  const outCooldown = numberInput(300, { min: "0" });
  const inCooldown = numberInput(300, { min: "0" });
  const noScaleIn = checkbox("Turn off scale-in", false);
  const { use, el } = toggled("Service auto scaling", "Use service auto scaling", [
    h("div", { class: "cols" }, labelled("Minimum number of tasks", min), labelled("Maximum number of tasks", max)),
    h(
      "fieldset",
      { class: "inner" },
      h("legend", {}, "Scaling policy"),
      labelled("Scaling policy type", select([["TargetTrackingScaling", "Target tracking"]], "TargetTrackingScaling")),
      labelled("Policy name", policyName),
      labelled("ECS service metric", metric),
      labelled("Target value", target),
      h("div", { class: "cols" }, labelled("Scale-out cooldown period", outCooldown, "Seconds"), labelled("Scale-in cooldown period", inCooldown, "Seconds")),
      noScaleIn,
    ),
  ]);
  return {
    el,
    check(lbUsed) {
      if (!use.input.checked) return null;
      if (!policyName.value.trim()) return "Enter a policy name.";
      if (metric.value === "ALBRequestCountPerTarget" && !lbUsed) return "ALBRequestCountPerTarget needs load balancing.";
      return null;
    },
    async after(step, cluster, service, resourceLabel) {
      if (!use.input.checked) return;
      const id = { ServiceNamespace: "ecs", ResourceId: `service/${cluster}/${service}`, ScalableDimension: "ecs:service:DesiredCount" };
      await step(`Register the scalable target (${min.value} to ${max.value} tasks)`, () =>
        autoscaling("RegisterScalableTarget", { ...id, MinCapacity: Number(min.value), MaxCapacity: Number(max.value) }),
      );
      const spec = { PredefinedMetricType: metric.value };
      if (metric.value === "ALBRequestCountPerTarget") spec.ResourceLabel = resourceLabel;
      await step(`Put scaling policy ${policyName.value.trim()}`, () =>
        autoscaling("PutScalingPolicy", {
          ...id,
          PolicyName: policyName.value.trim(),
          PolicyType: "TargetTrackingScaling",
          TargetTrackingScalingPolicyConfiguration: {
            TargetValue: Number(target.value),
            PredefinedMetricSpecification: spec,
            ScaleOutCooldown: Number(outCooldown.value || 0),
            ScaleInCooldown: Number(inCooldown.value || 0),
            DisableScaleIn: noScaleIn.input.checked,
          },
        }),
      );
    },
  };
}

/** A list of steps shown as they run (long operations show progress); `step(text, fn)` runs
 * one and resolves to its result. A failed step is marked and its error rethrown. */
export function progress() {
  const list = h("ol", { class: "steps", id: "deploy-progress", "aria-live": "polite" });
  list.hidden = true;
  const step = async (text, fn) => {
    list.hidden = false;
    const li = h("li", { class: "step running" }, `${text}…`);
    list.append(li);
    try {
      const out = await fn();
      li.className = "step done";
      li.textContent = `${text}: done`;
      return out;
    } catch (e) {
      li.className = "step failed";
      li.textContent = `${text}: failed (${e.type || "Error"})`;
      throw e;
    }
  };
  const reset = () => {
    list.replaceChildren();
    list.hidden = true;
  };
  return { list, step, reset, arnName };
}
