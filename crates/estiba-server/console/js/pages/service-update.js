// Update service: the task definition revision (of any active family), desired tasks, force new
// deployment and the deployment options, as one UpdateService call carrying only what changed
// (and forceNewDeployment when asked). The API's error is shown.

import { ecs, listAll } from "../api.js";
import { h, seg, showError, showSuccess, labelled, checkbox, numberInput, select, arnName, onSubmit, crumbs } from "../ui.js";
import { go } from "../app.js";

export async function render({ cluster, service }) {
  const out = await ecs("DescribeServices", { cluster, services: [service] });
  const s = (out.services || [])[0];
  if (!s) throw { type: "ServiceNotFoundException", message: `Service ${service} was not found.` };
  const base = `/clusters/${seg(cluster)}/services/${seg(s.serviceName)}`;
  const current = arnName(s.taskDefinition);
  const currentFamily = current.slice(0, current.lastIndexOf(":"));
  const families = (await listAll("ecs", "ListTaskDefinitionFamilies", { status: "ACTIVE", maxResults: 100 }, "families")).sort();
  if (!families.includes(currentFamily)) families.unshift(currentFamily);

  const family = select(families.map((f) => [f, f]), currentFamily);
  const revision = select([], "");
  const loadFamily = async () => {
    const arns = await listAll("ecs", "ListTaskDefinitions", { familyPrefix: family.value, status: "ACTIVE", sort: "DESC", maxResults: 100 }, "taskDefinitionArns");
    const mine = arns.map(arnName).filter((fr) => fr.slice(0, fr.lastIndexOf(":")) === family.value);
    if (family.value === currentFamily && !mine.includes(current)) mine.push(current);
    revision.replaceChildren(
      ...mine.map((fr, i) => {
        const n = fr.split(":").pop();
        return h("option", { value: fr, selected: fr === current }, `${n}${i === 0 ? " (LATEST)" : ""}${fr === current ? " (current)" : ""}`);
      }),
    );
  };
  // Submitting waits for the revisions still loading.
  let loading = Promise.resolve();
  family.addEventListener("change", () => (loading = loadFamily().catch((e) => showError(e, "Could not list the revisions"))));
  await loadFamily();

  const dc = s.deploymentConfiguration || {};
  const cb = dc.deploymentCircuitBreaker || {};
  const desired = numberInput(s.desiredCount ?? 0, { min: "0" });
  const force = checkbox("Force new deployment", false);
  const minHealthy = numberInput(dc.minimumHealthyPercent ?? 100, { min: "0", max: "100" });
  const maxPercent = numberInput(dc.maximumPercent ?? 200, { min: "100", max: "2000" });
  const breaker = checkbox("Use the Amazon ECS deployment circuit breaker", !!cb.enable);
  const rollback = checkbox("Rollback on failures", !!cb.rollback);

  function input() {
    const req = { cluster, service: s.serviceName };
    if (revision.value && revision.value !== current) req.taskDefinition = revision.value;
    if (Number(desired.value) !== s.desiredCount) req.desiredCount = Number(desired.value);
    if (force.input.checked) req.forceNewDeployment = true;
    const next = {
      minimumHealthyPercent: Number(minHealthy.value),
      maximumPercent: Number(maxPercent.value),
      deploymentCircuitBreaker: { enable: breaker.input.checked, rollback: rollback.input.checked },
    };
    if (
      next.minimumHealthyPercent !== dc.minimumHealthyPercent ||
      next.maximumPercent !== dc.maximumPercent ||
      next.deploymentCircuitBreaker.enable !== !!cb.enable ||
      next.deploymentCircuitBreaker.rollback !== !!cb.rollback
    )
      req.deploymentConfiguration = next;
    return req;
  }

  const submit = h("button", { type: "submit", class: "primary" }, "Update");
  const form = h(
    "form",
    { class: "form", novalidate: true },
    h(
      "fieldset",
      {},
      h("legend", {}, "Deployment configuration"),
      h("div", { class: "cols" }, labelled("Family", family), labelled("Revision", revision)),
      labelled("Desired tasks", desired),
      force,
      h("p", { class: "hint" }, "A new deployment replaces every task, even with the same revision (for example to pull a moved image tag)."),
      h(
        "fieldset",
        { class: "inner" },
        h("legend", {}, "Deployment options"),
        h("div", { class: "cols" }, labelled("Minimum healthy percent", minHealthy), labelled("Maximum percent", maxPercent)),
        h("fieldset", { class: "inner" }, h("legend", {}, "Deployment failure detection"), breaker, rollback),
      ),
    ),
    h("div", { class: "actions" }, h("a", { class: "button", href: `#${base}` }, "Cancel"), submit),
  );
  onSubmit(form, submit, {
    failTitle: "Service update failed",
    pending: () => loading,
    run: async () => {
      await ecs("UpdateService", input());
      showSuccess(`Service ${s.serviceName} has been updated.`, true);
      go(base);
    },
  });
  return h(
    "section",
    {},
    crumbs(
      [
        ["/clusters", "Clusters"],
        [`/clusters/${seg(cluster)}/services`, cluster],
        [base, s.serviceName],
      ],
      "Update",
    ),
    h("h1", {}, `Update ${s.serviceName}`),
    form,
  );
}
