/**
 * A visitor's WebSocket to a tunnel URL, on the `ws` library: it dials
 * 127.0.0.1 and sends the URL's host as Host (`*.localhost` names do not
 * resolve everywhere), with promises for the handshake, open, close and the
 * next message.
 * @module
 */
import WebSocket from "ws";

/**
 * Opens a WebSocket to a tunnel URL (dialing 127.0.0.1, Host from the URL); an `https:` URL opens
 * `wss:`, with the URL's host as SNI and only `ca` trusted.
 */
export function connectWebSocket(
  url: string,
  protocols: string[] = [],
  headers: Record<string, string> = { cookie: "visitor=1" },
  ca?: string,
) {
  const target = new URL(url);
  const scheme = target.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://127.0.0.1:${target.port}${target.pathname}`, protocols, {
    headers: { host: target.host, ...headers },
    ...(scheme === "wss" ? { servername: target.hostname, ca } : {}),
  });
  const handshake = new Promise<Record<string, string | string[] | undefined>>((resolve, reject) => {
    socket.once("upgrade", (response) => resolve(response.headers));
    socket.once(
      "unexpected-response",
      (_request, response) => reject(new Error(`status ${response.statusCode}`)),
    );
    socket.once("error", reject);
  });
  const opened = new Promise<void>((resolve) => socket.once("open", () => resolve()));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    socket.once("close", (code, reason) => resolve({ code, reason: reason.toString() }))
  );
  const next = () =>
    new Promise<{ data: Buffer; binary: boolean }>((resolve) =>
      socket.once("message", (data: Buffer, binary: boolean) => resolve({ data, binary }))
    );
  return { socket, handshake, opened, closed, next };
}
