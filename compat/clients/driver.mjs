// The loop every Node.js client driver runs: one JSON request per line on stdin, one JSON
// outcome per line on stdout, in order. tests/compat/drivers.py is the other end.
//
// A request: {"entry", "base_url", "api_key", "model", "messages", "tools", "tool_choice",
// "n", "include_usage"}. An outcome: {"ok", "texts" (one per choice), "tool_calls" ([{"name",
// "arguments"}], arguments as a JSON string), "usage" ({"prompt_tokens", "completion_tokens",
// "total_tokens"} or null), "finish_reason", "error" ({"kind", "status", "message"} or null)}.

import { createInterface } from "node:readline";

/** An outcome with what the client returned; `texts` defaults to one empty choice. */
export function outcome(fields = {}) {
  return {
    ok: true,
    texts: [""],
    tool_calls: [],
    usage: null,
    finish_reason: null,
    error: null,
    ...fields,
  };
}

/** Serve `entries` ({name: async (request) => outcome}) until stdin closes. */
export async function serve(entries) {
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let answer;
    try {
      const request = JSON.parse(line);
      const entry = entries[request.entry];
      if (!entry) throw new Error(`unknown entry ${JSON.stringify(request.entry)}`);
      answer = await entry(request);
    } catch (error) {
      // Not the client's error (those are in the outcome): the driver itself broke.
      answer = { driver_error: String(error?.stack ?? error) };
    }
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
}

/** The usage object in OpenAI's names, from an OpenAI `usage` (or null). */
export function openaiUsage(usage) {
  if (!usage) return null;
  const { prompt_tokens, completion_tokens, total_tokens } = usage;
  return { prompt_tokens, completion_tokens, total_tokens };
}
