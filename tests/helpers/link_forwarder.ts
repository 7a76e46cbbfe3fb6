/**
 * A test-owned hop between a client and a relay, to cut the link without
 * killing either: QUIC datagrams both ways over UDP, and TCP on the same port
 * number (the relay's info endpoint, and the TCP transport). `blackHole(true)`
 * makes it a dead network until `blackHole(false)`: datagrams are dropped,
 * TCP bytes held (as a TCP stack would retransmit them) and new TCP
 * connections wait, as their SYNs would.
 *
 * @example
 * ```ts
 * await using forwarder = await LinkForwarder.start(4433);
 * forwarder.server;          // quic://127.0.0.1:<port>, for the client's --server
 * forwarder.blackHole(true); // the link goes silent
 * ```
 * @module
 */

/** Tries to bind UDP and TCP on one free port number this many times before giving up. */
const BIND_ATTEMPTS = 20;

export class LinkForwarder implements AsyncDisposable {
  #dropping = false;
  /** Resolves when the current black hole ends (settled while there is none). */
  #passing = Promise.resolve();
  #endBlackHole = () => {};
  #upstreams = new Map<string, Deno.DatagramConn>();
  #tcpConns = new Set<Deno.Conn>();

  private constructor(
    private readonly udp: Deno.DatagramConn,
    private readonly tcp: Deno.Listener,
    private readonly relayPort: number,
  ) {
    this.#downstreamLoop();
    this.#tcpLoop();
  }

  /** Forwards a free loopback port (UDP and TCP) to the relay's QUIC port `relayPort`. */
  static start(relayPort: number): Promise<LinkForwarder> {
    for (let attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
      const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const port = (udp.addr as Deno.NetAddr).port;
      try {
        const tcp = Deno.listen({ hostname: "127.0.0.1", port });
        return Promise.resolve(new LinkForwarder(udp, tcp, relayPort));
      } catch {
        // That TCP port is taken: try another UDP one.
        udp.close();
      }
    }
    throw new Error(`no port number free for both UDP and TCP in ${BIND_ATTEMPTS} tries`);
  }

  get port(): number {
    return (this.udp.addr as Deno.NetAddr).port;
  }

  get server(): string {
    return `quic://127.0.0.1:${this.port}`;
  }

  /** While on, datagrams both ways are dropped and TCP stands still. */
  blackHole(on: boolean): void {
    if (on === this.#dropping) return;
    this.#dropping = on;
    if (on) this.#passing = new Promise((resolve) => this.#endBlackHole = resolve);
    else this.#endBlackHole();
  }

  /** Client → relay: one upstream socket per client address, so the relay sees one peer per client. */
  async #downstreamLoop() {
    try {
      for await (const [datagram, from] of this.udp) {
        const key = `${(from as Deno.NetAddr).hostname}:${(from as Deno.NetAddr).port}`;
        let upstream = this.#upstreams.get(key);
        if (!upstream) {
          upstream = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
          this.#upstreams.set(key, upstream);
          this.#upstreamLoop(upstream, from);
        }
        if (!this.#dropping) {
          await upstream.send(datagram, { transport: "udp", hostname: "127.0.0.1", port: this.relayPort });
        }
      }
    } catch {
      // Closed by dispose.
    }
  }

  /** Relay → client, for the client at `client`. */
  async #upstreamLoop(upstream: Deno.DatagramConn, client: Deno.Addr) {
    try {
      for await (const [datagram] of upstream) if (!this.#dropping) await this.udp.send(datagram, client);
    } catch {
      // Closed by dispose.
    }
  }

  /** Each TCP connection piped to the relay's, both ways, once the link passes. */
  async #tcpLoop() {
    try {
      for await (const conn of this.tcp) {
        this.#tcpConns.add(conn);
        void this.#tcpPipe(conn);
      }
    } catch {
      // Closed by dispose.
    }
  }

  async #tcpPipe(conn: Deno.Conn) {
    await this.#passing;
    let relay: Deno.Conn | undefined;
    try {
      relay = await Deno.connect({ hostname: "127.0.0.1", port: this.relayPort });
      this.#tcpConns.add(relay);
      await Promise.all([this.#pump(conn, relay), this.#pump(relay, conn)]);
    } catch {
      // One side hung up (or the relay is gone): the other's pipe ends with it.
      for (const end of [conn, relay]) closeQuietly(end);
    }
  }

  /** Copies `from` to `to`, each chunk waiting out a black hole; `to` is half-closed at the end. */
  async #pump(from: Deno.Conn, to: Deno.Conn) {
    for await (const chunk of from.readable) {
      await this.#passing;
      const writer = to.writable.getWriter();
      await writer.write(chunk);
      writer.releaseLock();
    }
    await to.closeWrite();
  }

  [Symbol.asyncDispose](): Promise<void> {
    for (const socket of [this.udp, this.tcp, ...this.#upstreams.values(), ...this.#tcpConns]) {
      closeQuietly(socket);
    }
    return Promise.resolve();
  }
}

function closeQuietly(socket: { close(): void } | undefined) {
  try {
    socket?.close();
  } catch {
    // Closed already (a pipe that ended closes its conn).
  }
}
