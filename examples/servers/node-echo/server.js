// A small MCP server on the official TypeScript SDK (low-level Server API, JSON
// Schema inputs, so the only dependency is the SDK itself). SMCP builds it with
// `npm ci --ignore-scripts` from package-lock.json and runs `node server.js` offline.
import { readFileSync } from "node:fs";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const server = new Server({ name: "node-echo", version: "1.0.0" }, { capabilities: { tools: {} } });

const tools = [
  {
    name: "echo",
    description: "Echo the text back.",
    inputSchema: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
  },
  {
    name: "runtime",
    description: "Node version, pid, cwd, uid and where the SDK was loaded from.",
    inputSchema: { type: "object", properties: {} },
  },
  {
    name: "read_secret",
    description: "Read /run/secrets/<name>; reply only with its length (never the value).",
    inputSchema: { type: "object", properties: { name: { type: "string" } }, required: ["name"] },
  },
];

server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools }));

server.setRequestHandler(CallToolRequestSchema, async (request) => {
  const args = request.params.arguments ?? {};
  const text = (value) => ({ content: [{ type: "text", text: typeof value === "string" ? value : JSON.stringify(value) }] });
  switch (request.params.name) {
    case "echo":
      return text(String(args.text));
    case "runtime":
      return text({
        node: process.version,
        pid: process.pid,
        cwd: process.cwd(),
        uid: process.getuid(),
        sdk: import.meta.resolve("@modelcontextprotocol/sdk/server/index.js"),
        env: process.env.GREETING ?? null,
      });
    case "read_secret":
      try {
        return text({ length: readFileSync(`/run/secrets/${args.name}`).length });
      } catch (err) {
        return { content: [{ type: "text", text: String(err) }], isError: true };
      }
    default:
      return { content: [{ type: "text", text: `unknown tool ${request.params.name}` }], isError: true };
  }
});

await server.connect(new StdioServerTransport());
console.error("node-echo: ready");
