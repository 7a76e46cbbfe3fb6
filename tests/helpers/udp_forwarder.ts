/**
 * A test-owned hop between a client and a relay, to cut the link without
 * killing either: QUIC datagrams both ways over UDP, and the relay's info
 * endpoint (plain HTTP on the QUIC port number, which a client asks before
 * its first handshake) over TCP on the same port number. `blackHole(true)`
 * drops every datagram, as a dead network would, until `blackHole(false)`.
 *
 * @example
 * ```ts
 * await using forwarder = await UdpForwarder.start(4433);
 * forwarder.server;          // quic://127.0.0.1:<port>, for the client's --server
 * forwarder.blackHole(true); // the link goes silent
 * ```
 * @module
 */

/** Tries to bind UDP and TCP on one free port number this many times before giving up. */
const BIND_ATTEMPTS = 20;

export class UdpForwarder implements AsyncDisposable {
  #dropping = false;
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
  static start(relayPort: number): Promise<UdpForwarder> {
    for (let attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
      const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
      const port = (udp.addr as Deno.NetAddr).port;
      try {
        const tcp = Deno.listen({ hostname: "127.0.0.1", port });
        return Promise.resolve(new UdpForwarder(udp, tcp, relayPort));
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

  /** While on, datagrams both ways are dropped. */
  blackHole(on: boolean): void {
    this.#dropping = on;
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

  /** The info endpoint: each TCP connection piped to the relay's, both ways. */
  async #tcpLoop() {
    try {
      for await (const conn of this.tcp) {
        const relay = await Deno.connect({ hostname: "127.0.0.1", port: this.relayPort });
        this.#tcpConns.add(conn).add(relay);
        Promise.all([conn.readable.pipeTo(relay.writable), relay.readable.pipeTo(conn.writable)]).catch(
          () => {
            // One side hung up: the other's pipe ends with it.
          },
        );
      }
    } catch {
      // Closed by dispose.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    for (const socket of [this.udp, this.tcp, ...this.#upstreams.values(), ...this.#tcpConns]) {
      try {
        socket.close();
      } catch {
        // Closed already (a pipe that ended closes its conn).
      }
    }
    return Promise.resolve();
  }
}
