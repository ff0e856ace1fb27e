// The Vercel AI SDK (`ai`) against the door, with three providers: `@ai-sdk/openai`'s default
// model (`openai(model)`, the Responses API: /v1/responses), its .chat() model and
// `@ai-sdk/openai-compatible`. Entries "<provider>-streamText" and "<provider>-generateText";
// protocol: driver.mjs. The SDK has no `n`: one choice only.

import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, generateText, jsonSchema, streamText, tool } from "ai";
import { outcome, serve } from "./driver.mjs";

globalThis.AI_SDK_LOG_WARNINGS = false; // stdout carries the protocol

const PROVIDERS = {
  responses: (request) =>
    createOpenAI({ baseURL: request.base_url, apiKey: request.api_key })(request.model),
  openai: (request) =>
    createOpenAI({ baseURL: request.base_url, apiKey: request.api_key }).chat(request.model),
  compatible: (request) =>
    createOpenAICompatible({
      name: "streamq",
      baseURL: request.base_url,
      apiKey: request.api_key,
      includeUsage: Boolean(request.include_usage),
    }).chatModel(request.model),
};

function options(provider, request) {
  const system = request.messages.filter((m) => m.role === "system").map((m) => m.content);
  const params = {
    model: PROVIDERS[provider](request),
    messages: request.messages.filter((m) => m.role !== "system"),
    maxRetries: 0,
  };
  if (system.length) params.system = system.join("\n");
  if (request.tools) {
    params.tools = Object.fromEntries(
      request.tools.map(({ function: f }) => [
        f.name,
        tool({ description: f.description, inputSchema: jsonSchema(f.parameters) }),
      ]),
    );
  }
  if (request.tool_choice) params.toolChoice = request.tool_choice;
  return params;
}

function usage(value) {
  if (!value || value.inputTokens === undefined) return null;
  return {
    prompt_tokens: value.inputTokens,
    completion_tokens: value.outputTokens,
    total_tokens: value.totalTokens,
  };
}

function describe(error) {
  if (APICallError.isInstance(error)) {
    return { kind: error.name, status: error.statusCode ?? null, message: error.message };
  }
  // An error frame's payload arrives as it was sent: a plain object with a message.
  const kind = error?.name ?? error?.constructor?.name ?? typeof error;
  return { kind, status: null, message: String(error?.message ?? error) };
}

/** OpenAI's name for why the answer ended: the provider's raw reason, else the SDK's
 * ("tool-calls" → "tool_calls"); the Responses API has no raw reason for a complete answer. */
function finishReason(result) {
  return result.rawFinishReason ?? result.finishReason?.replace("-", "_") ?? null;
}

function call(part) {
  return { name: part.toolName, arguments: JSON.stringify(part.input) };
}

async function stream(provider, request) {
  let text = "";
  const calls = [];
  const errors = [];
  let finish = null;
  let total = null;
  try {
    const result = streamText(options(provider, request));
    // fullStream shows everything the SDK hands an app: text, tool calls, errors, the end.
    for await (const part of result.fullStream) {
      if (part.type === "text-delta") text += part.text;
      else if (part.type === "tool-call") calls.push(call(part));
      else if (part.type === "error") errors.push(describe(part.error));
      else if (part.type === "finish") {
        finish = finishReason(part);
        total = usage(part.totalUsage);
      }
    }
  } catch (error) {
    errors.push(describe(error));
  }
  return outcome({
    ok: errors.length === 0,
    texts: [text],
    tool_calls: calls,
    usage: total,
    finish_reason: finish,
    error: errors[0] ?? null,
  });
}

async function generate(provider, request) {
  try {
    const result = await generateText(options(provider, request));
    return outcome({
      texts: [result.text],
      tool_calls: result.toolCalls.map(call),
      usage: usage(result.usage),
      finish_reason: finishReason(result),
    });
  } catch (error) {
    return outcome({ ok: false, error: describe(error) });
  }
}

await serve({
  "responses-streamText": (request) => stream("responses", request),
  "responses-generateText": (request) => generate("responses", request),
  "openai-streamText": (request) => stream("openai", request),
  "openai-generateText": (request) => generate("openai", request),
  "compatible-streamText": (request) => stream("compatible", request),
  "compatible-generateText": (request) => generate("compatible", request),
});
