// Follow one streamq job from Node.js with plain Redis commands, as docs/wire-format.md says.
//
//   node reader.mjs REDIS_URL JOB_ID [--after CURSOR] [--final]
//
// Prints the answer's text to stdout as it arrives. A terminal cannot take text back: when the
// job restarts (a `reset` entry) after text was printed, a notice goes to stderr and the new
// attempt's text follows. With --final, only the final attempt's text is printed, at the end.
// Key prefix: STREAMQ_KEY_PREFIX (default "streamq").
// Exit codes: 0 done, 1 the job failed or was cancelled, 2 unknown job or bad arguments.
import { parseArgs } from "node:util";
import { createClient } from "redis";

const TERMINAL = new Set(["done", "error", "cancelled"]);
const BLOCK_MS = 5000;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { after: { type: "string", default: "0-0" }, final: { type: "boolean" } },
});
if (positionals.length !== 2) {
  console.error("usage: node reader.mjs REDIS_URL JOB_ID [--after CURSOR] [--final]");
  process.exit(2);
}
const [url, jobId] = positionals;
const prefix = process.env.STREAMQ_KEY_PREFIX || "streamq";
const eventsKey = `${prefix}:{${jobId}}:events`; // the braces are the cluster hash tag
const requestKey = `${prefix}:{${jobId}}:request`;

// Entry ids ("1700000000000-0") compared as (milliseconds, sequence).
function idAtOrAfter(a, b) {
  const [am, as] = a.split("-").map(BigInt);
  const [bm, bs] = b.split("-").map(BigInt);
  return am > bm || (am === bm && as >= bs);
}

async function jobExists(client) {
  return (await client.exists([eventsKey, requestKey])) > 0;
}

// Yields each entry ({id, message}) after `cursor`, up to and including the terminal one.
async function* follow(client, cursor) {
  if (!(await jobExists(client))) throw new Error(`no job with id ${jobId}`);
  if (cursor !== "0-0") {
    const [newest] = await client.xRevRange(eventsKey, "+", "-", { COUNT: 1 });
    if (newest && TERMINAL.has(newest.message.type) && idAtOrAfter(cursor, newest.id)) return;
  }
  for (;;) {
    const reply = await client.xRead({ key: eventsKey, id: cursor }, { BLOCK: BLOCK_MS, COUNT: 100 });
    if (!reply) {
      if (!(await jobExists(client))) throw new Error(`job ${jobId} is gone (expired)`);
      continue;
    }
    for (const entry of reply[0].messages) {
      if (entry.message.v !== "1") throw new Error(`unknown wire format v${entry.message.v}`);
      cursor = entry.id;
      yield entry;
      if (TERMINAL.has(entry.message.type)) return;
    }
  }
}

const client = createClient({ url });
client.on("error", (err) => console.error(`redis: ${err.message}`));
await client.connect();
let exitCode = 0;
try {
  let text = ""; // the current attempt's answer
  for await (const { message } of follow(client, values.after)) {
    const choice = Number(message.choice ?? 0);
    if (message.type === "delta" && choice === 0) {
      text += message.data;
      if (!values.final) process.stdout.write(message.data);
    } else if (message.type === "reset") {
      if (text && !values.final) {
        console.error(`\njob ${jobId} restarted (attempt ${message.attempt}): discard the text above`);
      }
      text = "";
    } else if (message.type === "done") {
      if (values.final) process.stdout.write(text);
    } else if (message.type === "error" || message.type === "cancelled") {
      console.error(`\njob ${jobId} ended with ${message.type}: ${message.data}`);
      exitCode = 1;
    }
    // Other types (start, reasoning, refusal, tool_call, newer ones) are not part of the text.
  }
} catch (err) {
  console.error(err.message);
  exitCode = 2;
} finally {
  await client.close();
}
process.exitCode = exitCode;
