// Create cluster: the ECS console's form (cluster name, infrastructure, monitoring, default
// capacity provider strategy, tags) turned into one CreateCluster call; the API's error is
// shown in the banner and nothing is created.

import { ecs } from "../api.js";
import { h, showSuccess, seg, tagsEditor, onSubmit, crumbs } from "../ui.js";
import { go } from "../app.js";

const FARGATE_PROVIDERS = ["FARGATE", "FARGATE_SPOT"];

export async function render() {
  const name = h("input", { id: "cluster-name", name: "clusterName", type: "text", required: true, autocomplete: "off", "aria-describedby": "cluster-name-hint" });
  const fargate = h("input", { id: "infra-fargate", type: "checkbox", checked: true });
  const ec2 = h("input", { id: "infra-ec2", type: "checkbox" });
  const external = h("input", { id: "infra-external", type: "checkbox" });
  const insights = h(
    "select",
    { id: "container-insights" },
    h("option", { value: "disabled" }, "Off"),
    h("option", { value: "enabled" }, "Container Insights"),
    h("option", { value: "enhanced" }, "Container Insights with enhanced observability"),
  );
  // estiba has no Auto Scaling groups to create: instances join the cluster themselves, so these
  // choices say how, and add nothing to the CreateCluster call.
  const ec2Hint = h(
    "p",
    { class: "hint", id: "infra-ec2-hint", hidden: true },
    "Machines join the cluster as EC2 container instances: start ",
    h("code", {}, "estiba server --join-cluster NAME"),
    " on each once the cluster exists.",
  );
  const externalHint = h(
    "p",
    { class: "hint", id: "infra-external-hint", hidden: true },
    "External instances register themselves with RegisterContainerInstance once the cluster exists.",
  );
  ec2.addEventListener("change", () => (ec2Hint.hidden = !ec2.checked));
  external.addEventListener("change", () => (externalHint.hidden = !external.checked));
  const strategyRows = h("tbody");
  const tags = tagsEditor();
  let rowId = 0;

  const providerChoices = () => (fargate.checked ? FARGATE_PROVIDERS : []);

  function addStrategyRow() {
    const id = ++rowId;
    const provider = h("select", { id: `strategy-provider-${id}`, class: "strategy-provider" }, providerChoices().map((p) => h("option", { value: p }, p)));
    const base = h("input", { id: `strategy-base-${id}`, class: "strategy-base", type: "number", min: "0", max: "100000", value: "0" });
    const weight = h("input", { id: `strategy-weight-${id}`, class: "strategy-weight", type: "number", min: "0", max: "1000", value: "1" });
    const tr = h(
      "tr",
      {},
      h("td", {}, h("label", { for: provider.id, class: "sr-only" }, "Capacity provider"), provider),
      h("td", {}, h("label", { for: base.id, class: "sr-only" }, "Base"), base),
      h("td", {}, h("label", { for: weight.id, class: "sr-only" }, "Weight"), weight),
      h("td", {}, h("button", { type: "button", onclick: () => tr.remove() }, "Remove")),
    );
    strategyRows.append(tr);
  }

  // The strategy's providers follow the infrastructure chosen.
  fargate.addEventListener("change", () => {
    for (const sel of strategyRows.querySelectorAll("select")) {
      const was = sel.value;
      sel.replaceChildren(...providerChoices().map((p) => h("option", { value: p, selected: p === was }, p)));
    }
  });

  function input() {
    const req = { clusterName: name.value.trim() };
    if (fargate.checked) req.capacityProviders = [...FARGATE_PROVIDERS];
    req.settings = [{ name: "containerInsights", value: insights.value }];
    const strategy = [...strategyRows.querySelectorAll("tr")].map((tr) => ({
      capacityProvider: tr.querySelector(".strategy-provider").value,
      base: Number(tr.querySelector(".strategy-base").value || 0),
      weight: Number(tr.querySelector(".strategy-weight").value || 0),
    }));
    if (strategy.length) req.defaultCapacityProviderStrategy = strategy;
    const t = tags.tags();
    if (t.length) req.tags = t;
    return req;
  }

  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "form", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "Cluster configuration"),
      h("label", { for: "cluster-name" }, "Cluster name"),
      name,
      h("p", { id: "cluster-name-hint", class: "hint" }, "Up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores."),
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Infrastructure"),
      h("p", { class: "hint" }, "Your cluster is automatically configured for AWS Fargate (serverless). Add instances for tasks that need them."),
      h("div", { class: "check" }, fargate, h("label", { for: "infra-fargate" }, "AWS Fargate (serverless)")),
      h("div", { class: "check" }, ec2, h("label", { for: "infra-ec2" }, "Amazon EC2 instances")),
      ec2Hint,
      h("div", { class: "check" }, external, h("label", { for: "infra-external" }, "External instances using ECS Anywhere")),
      externalHint,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Monitoring"),
      h("label", { for: "container-insights" }, "Container Insights"),
      insights,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Default capacity provider strategy"),
      h("table", { class: "rows" }, h("thead", {}, h("tr", {}, h("th", {}, "Capacity provider"), h("th", {}, "Base"), h("th", {}, "Weight"), h("th"))), strategyRows),
      h("button", { type: "button", onclick: addStrategyRow }, "Add capacity provider"),
    ),
    h("fieldset", {}, h("legend", {}, "Tags"), tags),
    h("div", { class: "actions" }, h("a", { class: "button", href: "#/clusters" }, "Cancel"), submit),
  );
  onSubmit(form, submit, {
    failTitle: "Cluster creation failed",
    check: () => {
      if (name.value.trim()) return null;
      name.focus();
      return "Cluster name is required.";
    },
    run: async () => {
      const out = await ecs("CreateCluster", input());
      showSuccess(`Cluster ${out.cluster.clusterName} has been created successfully.`, true);
      go(`/clusters/${seg(out.cluster.clusterName)}`);
    },
  });
  return h(
    "section",
    {},
    crumbs([["/clusters", "Clusters"]], "Create cluster"),
    h("h1", {}, "Create cluster"),
    form,
  );
}
