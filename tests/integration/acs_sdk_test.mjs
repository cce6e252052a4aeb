// acs_sdk_test.mjs - drive Petrel's HTTP API with the official Azure
// Communication Services Email SDK (@azure/communication-email 1.1.x),
// exactly as an application would: new EmailClient(connectionString),
// beginSend(message), pollUntilDone().
//
// Input (environment): PETREL_CONNECTION_STRING, PETREL_MESSAGE (the
// EmailMessage as JSON), optionally PETREL_POLL_MS (poll interval).
// NODE_EXTRA_CA_CERTS must name the test CA. NODE_PATH (or the module
// search from this file's directory) must reach node_modules.
// Output: one JSON line on stdout:
//   {"started":true,"firstStatus":"running","id":...,"status":...,"error":...}
// Exit status 0 when the script ran to the end (whatever the status).
import { createRequire } from "node:module";

const require = createRequire(process.env.PETREL_NODE_MODULES
  ? process.env.PETREL_NODE_MODULES + "/"
  : import.meta.url);
const { EmailClient } = require("@azure/communication-email");

const out = { started: false };
try {
  const client = new EmailClient(process.env.PETREL_CONNECTION_STRING);
  const message = JSON.parse(process.env.PETREL_MESSAGE);
  const opts = {};
  if (process.env.PETREL_POLL_MS)
    opts.updateIntervalInMs = Number(process.env.PETREL_POLL_MS);
  const poller = await client.beginSend(message, opts);
  // the state after beginSend (its 202, and possibly a first status GET)
  out.started = true;
  out.firstStatus = poller.getOperationState().status;
  const result = await poller.pollUntilDone();
  out.id = result.id;
  out.status = result.status;
  out.error = result.error || null;
} catch (e) {
  out.status = out.status || "exception";
  out.error = { name: e.name, code: e.code || null,
    statusCode: e.statusCode || null, message: String(e.message) };
}
process.stdout.write(JSON.stringify(out) + "\n");
