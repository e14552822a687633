// Amazon ECR: the repositories (DescribeRepositories) and a repository's images
// (DescribeImages) with their tags, digests, sizes and push times.

import { ecr, listAll } from "../api.js";
import { h, table, link, seg, time, crumbs, pageHead, panel } from "../ui.js";
import { refreshButton } from "../app.js";

const size = (b) => (b === undefined ? "-" : `${(b / 1048576).toFixed(2)} MB`);

export async function render({ name }) {
  if (name) return repository(name);
  const repos = await listAll("ecr", "DescribeRepositories", { maxResults: 1000 }, "repositories");
  repos.sort((a, b) => a.repositoryName.localeCompare(b.repositoryName));
  return h(
    "section",
    {},
    pageHead("Private repositories", repos.length, refreshButton()),
    table(
      "Repositories",
      ["Repository name", "URI", "Created at", "Tag immutability", "Scan on push", "Encryption type"],
      repos.map((r) => [
        link(`/repositories/${seg(r.repositoryName)}`, r.repositoryName),
        h("span", { class: "mono" }, r.repositoryUri),
        time(r.createdAt),
        r.imageTagMutability === "IMMUTABLE" ? "Immutable" : "Mutable",
        r.imageScanningConfiguration?.scanOnPush ? "Enabled" : "Disabled",
        r.encryptionConfiguration?.encryptionType || "AES256",
      ]),
      "No repositories. Create one with CreateRepository, then push with docker or skopeo.",
    ),
  );
}

async function repository(name) {
  const r = (await ecr("DescribeRepositories", { repositoryNames: [name] })).repositories[0];
  const images = await listAll("ecr", "DescribeImages", { repositoryName: name, maxResults: 1000 }, "imageDetails");
  images.sort((a, b) => (b.imagePushedAt || 0) - (a.imagePushedAt || 0));
  return h(
    "section",
    {},
    crumbs([["/repositories", "Private repositories"]], name),
    pageHead(name, undefined, refreshButton()),
    panel("Repository overview", [
      ["ARN", r.repositoryArn],
      ["URI", r.repositoryUri],
      ["Registry ID", r.registryId],
      ["Created at", time(r.createdAt)],
      ["Tag immutability", r.imageTagMutability],
    ]),
    table(
      "Images",
      ["Image tags", "Image digest", "Image size", "Pushed at", "Media type"],
      images.map((i) => [
        (i.imageTags || []).join(", ") || "<untagged>",
        h("span", { class: "mono" }, i.imageDigest),
        size(i.imageSizeInBytes),
        time(i.imagePushedAt),
        i.imageManifestMediaType || "-",
      ]),
      "No images.",
    ),
  );
}
