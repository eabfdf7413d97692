// Drives the real `ai` package (DefaultChatTransport, readUIMessageStream) against a tokenrelay gateway.
// Usage: node ai_sdk_client.mjs '<json>' with {api, chatId, prompt, body, headers, mode, dropAfter};
// prints one JSON line with what the SDK assembled.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const options = JSON.parse(process.argv[2]);
const transport = new DefaultChatTransport({ api: options.api, body: options.body ?? {}, headers: options.headers ?? {} });
const messages = [{ id: "user-1", role: "user", parts: [{ type: "text", text: options.prompt ?? "hello" }] }];

function textOf(message) {
  return (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");
}

// Every chunk of a stream, and the message readUIMessageStream assembles from it.
async function assemble(stream, stopAfterDeltas = Infinity) {
  const chunks = [];
  let deltas = 0;
  const counted = stream.pipeThrough(new TransformStream({
    transform(chunk, controller) {
      chunks.push(chunk);
      controller.enqueue(chunk);
      if (chunk.type === "text-delta" && ++deltas >= stopAfterDeltas) controller.terminate();
    },
  }));
  let message;
  for await (const snapshot of readUIMessageStream({ stream: counted })) message = snapshot;
  return { id: message?.id ?? null, text: textOf(message), types: chunks.map((c) => c.type), chunks };
}

async function main() {
  if (options.mode === "reconnect") {
    const stream = await transport.reconnectToStream({ chatId: options.chatId });
    return stream === null ? { stream: null } : assemble(stream);
  }
  const abort = new AbortController();
  const stream = await transport.sendMessages({
    chatId: options.chatId, messages, trigger: "submit-message", messageId: undefined, abortSignal: abort.signal,
  });
  if (options.mode !== "drop") return assemble(stream);
  // Read a few deltas, drop the connection, then reconnect as useChat({resume: true}) does after a reload.
  const partial = await assemble(stream, options.dropAfter ?? 3);
  abort.abort();
  const resumed = await assemble(await transport.reconnectToStream({ chatId: options.chatId }));
  return { partial, resumed };
}

main().then(
  (result) => { process.stdout.write(JSON.stringify(result) + "\n"); },
  (error) => { process.stdout.write(JSON.stringify({ error: String(error?.message ?? error) }) + "\n"); process.exitCode = 1; },
);
