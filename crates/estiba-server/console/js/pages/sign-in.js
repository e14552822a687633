// Sign in, when the server verifies requests (`--credentials`): the access key the console
// signs its calls with. The key is checked with STS GetCallerIdentity before it is kept, and
// the account shown in the header is the one that call names.

import { callerIdentity } from "../api.js";
import { h, labelled, onSubmit } from "../ui.js";
import { signIn } from "../sigv4.js";

/** The sign-in form; `done()` is called once a key is kept. */
export function render(done) {
  const id = h("input", { type: "text", name: "accessKeyId", required: true, autocomplete: "username", spellcheck: false });
  const secret = h("input", { type: "password", name: "secretAccessKey", required: true, autocomplete: "current-password" });
  const token = h("input", { type: "password", name: "sessionToken", autocomplete: "off" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { "aria-label": "Sign in", class: "sign-in" },
    labelled("Access key ID", id),
    labelled("Secret access key", secret),
    labelled("Session token", token, "Only for temporary credentials (access key IDs that start with ASIA)."),
    h("div", { class: "actions" }, submit),
  );
  onSubmit(form, submit, {
    failTitle: "Could not sign in",
    run: async () => {
      const creds = { accessKeyId: id.value.trim(), secretAccessKey: secret.value };
      if (token.value.trim()) creds.sessionToken = token.value.trim();
      const who = await callerIdentity(creds);
      signIn({ ...creds, ...who });
      done();
    },
  });
  return h(
    "div",
    {},
    h("h1", {}, "Sign in"),
    h(
      "p",
      {},
      "This server verifies every request. Sign in with an access key of its credentials file: the console signs its calls with it and keeps it in this browser tab only.",
    ),
    form,
  );
}
