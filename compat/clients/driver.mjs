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

/** A chat-shaped request as Responses parameters: system messages become `instructions`,
 * the other messages `input`, chat tools Responses function tools. */
export function responsesBody(request) {
  const system = request.messages.filter((m) => m.role === "system").map((m) => m.content);
  const params = {
    model: request.model,
    input: request.messages.filter((m) => m.role !== "system"),
  };
  if (system.length) params.instructions = system.join("\n");
  if (request.tools) {
    params.tools = request.tools.map(({ function: f }) => ({ type: "function", ...f }));
  }
  if (request.tool_choice) params.tool_choice = request.tool_choice;
  return params;
}

/** The outcome of a finished Response object (status, output items, usage). */
export function responseOutcome(response) {
  const texts = [""];
  const calls = [];
  for (const item of response.output ?? []) {
    if (item.type === "message") {
      for (const part of item.content ?? []) if (part.type === "output_text") texts[0] += part.text;
    } else if (item.type === "function_call") {
      calls.push({ name: item.name, arguments: item.arguments });
    }
  }
  const usage = response.usage
    ? {
        prompt_tokens: response.usage.input_tokens,
        completion_tokens: response.usage.output_tokens,
        total_tokens: response.usage.total_tokens,
      }
    : null;
  let finish = calls.length ? "tool_calls" : "stop";
  if (response.status === "incomplete") finish = "length";
  if (response.status === "failed") {
    const error = response.error ?? {};
    return outcome({
      ok: false,
      texts,
      error: { kind: "ResponseFailed", status: null, message: `${error.code}: ${error.message}` },
    });
  }
  return outcome({ texts, tool_calls: calls, usage, finish_reason: finish });
}
