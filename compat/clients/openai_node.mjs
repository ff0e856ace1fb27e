// The `openai` package for Node.js against the door: chat.completions.create with and without
// `stream`, the chat.completions.stream() helper, and the same three for responses (entries
// "responses-*", against /v1/responses). Protocol: driver.mjs.

import OpenAI from "openai";
import { outcome, openaiUsage, responseOutcome, responsesBody, serve } from "./driver.mjs";

function client(request) {
  return new OpenAI({ baseURL: request.base_url, apiKey: request.api_key, maxRetries: 0 });
}

function body(request) {
  const params = { model: request.model, messages: request.messages };
  if (request.tools) params.tools = request.tools;
  if (request.tool_choice) params.tool_choice = request.tool_choice;
  if (request.n) params.n = request.n;
  if (request.include_usage) params.stream_options = { include_usage: true };
  return params;
}

function failure(error, texts) {
  if (!(error instanceof OpenAI.APIError)) throw error;
  const status = typeof error.status === "number" ? error.status : null;
  return outcome({
    ok: false,
    texts,
    error: { kind: error.constructor.name, status, message: error.message },
  });
}

/** Texts, tool calls (of choice 0) and finish reason from streamed chunks. */
class Chunks {
  constructor() {
    this.texts = [];
    this.calls = [];
    this.finish = null;
    this.usage = null;
  }

  add(chunk) {
    if (chunk.usage) this.usage = openaiUsage(chunk.usage);
    for (const choice of chunk.choices ?? []) {
      while (this.texts.length <= choice.index) this.texts.push("");
      this.texts[choice.index] += choice.delta?.content ?? "";
      for (const call of (choice.index === 0 && choice.delta?.tool_calls) || []) {
        this.calls[call.index] ??= { name: "", arguments: "" };
        this.calls[call.index].name += call.function?.name ?? "";
        this.calls[call.index].arguments += call.function?.arguments ?? "";
      }
      if (choice.index === 0 && choice.finish_reason) this.finish = choice.finish_reason;
    }
  }

  outcome() {
    return outcome({
      texts: this.texts.length ? this.texts : [""],
      tool_calls: this.calls,
      usage: this.usage,
      finish_reason: this.finish,
    });
  }
}

function completionOutcome(completion) {
  const first = completion.choices[0];
  return outcome({
    texts: completion.choices.map((choice) => choice.message.content ?? ""),
    tool_calls: (first.message.tool_calls ?? []).map((call) => ({
      name: call.function.name,
      arguments: call.function.arguments,
    })),
    usage: openaiUsage(completion.usage),
    finish_reason: first.finish_reason,
  });
}

/** Text shown from streamed Responses events, and the response their terminal event carries. */
class ResponseEvents {
  constructor() {
    this.text = "";
    this.final = null;
  }

  add(event) {
    if (event.type === "response.output_text.delta") this.text += event.delta;
    if (["response.completed", "response.incomplete", "response.failed"].includes(event.type)) {
      this.final = event.response;
    }
  }

  outcome() {
    if (!this.final) {
      return outcome({
        ok: false,
        texts: [this.text],
        error: { kind: "NoTerminalEvent", status: null, message: "the stream ended early" },
      });
    }
    const found = responseOutcome(this.final);
    return { ...found, texts: [this.text] };
  }
}

await serve({
  async "responses-stream"(request) {
    const events = new ResponseEvents();
    try {
      const stream = await client(request).responses.create({
        ...responsesBody(request),
        stream: true,
      });
      for await (const event of stream) events.add(event);
    } catch (error) {
      return failure(error, [events.text]);
    }
    return events.outcome();
  },

  async "responses-create"(request) {
    try {
      return responseOutcome(await client(request).responses.create(responsesBody(request)));
    } catch (error) {
      return failure(error, [""]);
    }
  },

  // The helper checks the event order itself (created first, items before their deltas).
  async "responses-stream-helper"(request) {
    const events = new ResponseEvents();
    try {
      const stream = client(request).responses.stream(responsesBody(request));
      for await (const event of stream) events.add(event);
      return responseOutcome(await stream.finalResponse());
    } catch (error) {
      return failure(error, [events.text]);
    }
  },

  async "create-stream"(request) {
    const chunks = new Chunks();
    try {
      const stream = await client(request).chat.completions.create({
        ...body(request),
        stream: true,
      });
      for await (const chunk of stream) chunks.add(chunk);
    } catch (error) {
      return failure(error, chunks.texts.length ? chunks.texts : [""]);
    }
    return chunks.outcome();
  },

  async create(request) {
    try {
      return completionOutcome(await client(request).chat.completions.create(body(request)));
    } catch (error) {
      return failure(error, [""]);
    }
  },

  // The helper accumulates the chunks itself: its final completion is what a caller keeps.
  async "stream-helper"(request) {
    const chunks = new Chunks();
    try {
      const stream = client(request).chat.completions.stream(body(request));
      for await (const chunk of stream) chunks.add(chunk);
      const final = completionOutcome(await stream.finalChatCompletion());
      return { ...final, usage: final.usage ?? chunks.usage };
    } catch (error) {
      return failure(error, chunks.texts.length ? chunks.texts : [""]);
    }
  },
});
