/**
 * The benchmark's origin: `/` answers a 200-byte body, `/download?bytes=N`
 * streams N bytes, `/upload` swallows a body and says how much came, `/ws`
 * echoes WebSocket messages, `/sse` sends one event and stays open. Prints
 * `ready port=N`.
 * @module
 */
const SMALL = new TextEncoder().encode("x".repeat(199) + "\n");
const BLOCK = new Uint8Array(256 * 1024).fill(42);

const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
  const url = new URL(request.url);
  if (url.pathname === "/ws") {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.onmessage = (event) => socket.send(event.data);
    return response;
  }
  if (url.pathname === "/download") {
    const total = Number(url.searchParams.get("bytes") ?? 0);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= total) return controller.close();
        const chunk = BLOCK.subarray(0, Math.min(BLOCK.length, total - sent));
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers: { "content-length": String(total) } });
  }
  if (url.pathname === "/sse") {
    // One event now, then the stream stays open: what a visitor waits for is the first event.
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("data: first\n\n"));
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  }
  if (url.pathname === "/upload") {
    let bytes = 0;
    for await (const chunk of request.body ?? []) bytes += chunk.length;
    return new Response(`${bytes}\n`);
  }
  return new Response(SMALL, { headers: { "content-type": "text/plain" } });
});
console.log(`ready port=${server.addr.port}`);
