// The browser test's page script (tests/it/browser.rs bundles it with esbuild).
// Calls users.UserService on the server named by `?server=` through both web
// transports of @connectrpc/connect-web (Connect in JSON and in binary), then reports what it saw as JSON: it
// POSTs it to /result on the page's own server (what the test waits for) and
// writes it into <pre id="result">.
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { UserService } from "./gen/user_service_pb";

function failure(e: unknown) {
  const err = ConnectError.from(e);
  return { code: err.code, codeName: Code[err.code], message: err.rawMessage };
}

async function exercise(name: string, transport: Transport) {
  const client = createClient(UserService, transport);
  const out: Record<string, unknown> = { transport: name };
  try {
    const u = await client.createUser({ name: `Ada ${name}`, email: `ada-${name}@example.com`, age: 36 });
    out.created = { id: u.id, name: u.name, email: u.email, age: u.age, createdAt: String(u.createdAt) };
  } catch (e) {
    out.createError = failure(e);
  }
  try {
    const u = await client.getUser({ userId: "no-such-user" });
    out.missing = { unexpectedUser: u.id };
  } catch (e) {
    out.missing = failure(e);
  }
  try {
    const listed = [];
    for await (const u of client.listUsers({ pageSize: 100 })) {
      listed.push({ id: u.id, name: u.name });
    }
    out.listed = listed;
  } catch (e) {
    out.listError = failure(e);
  }
  return out;
}

async function main() {
  const baseUrl = new URLSearchParams(location.search).get("server");
  if (!baseUrl) throw new Error("no ?server= in the page URL");
  const results = [
    await exercise("grpc-web", createGrpcWebTransport({ baseUrl })),
    await exercise("connect", createConnectTransport({ baseUrl })),
    await exercise("connect-proto", createConnectTransport({ baseUrl, useBinaryFormat: true })),
  ];
  return results;
}

const report = (text: string) => {
  document.getElementById("result")!.textContent = text;
  return fetch("/result", { method: "POST", body: text });
};
main()
  .then((results) => report(JSON.stringify(results)))
  .catch((e) => report(JSON.stringify({ error: String(e) })));
