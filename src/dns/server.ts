/**
 * The embedded resolver: one daemon-side server with a UDP socket and a TCP listener on
 * 127.0.0.11:53 inside each attached sandbox. The sockets are made inside the sandbox's namespace
 * by the native addon and adopted by Node, so one event loop serves every sandbox; forwarding
 * happens from the daemon's own namespace.
 */

import dgram from "node:dgram";
import { closeSync } from "node:fs";
import net from "node:net";
import { SystemError } from "../errors.js";
import { boundSocketInNetns } from "../kernel/netns.js";
import { log } from "../log.js";
import { answer, errorReply, RCODE_SERVFAIL, RoundRobin } from "./answer.js";
import { Forwarder } from "./forward.js";
import type { ResolverView } from "./records.js";

/** Docker's address for the embedded resolver, on the sandbox's loopback. */
export const RESOLVER_ADDRESS = "127.0.0.11";
const PORT = 53;

export interface DnsServerOptions {
  /** Total time to get an answer upstream before the client gets SERVFAIL (default 2000 ms). */
  timeoutMs?: number;
  /** A TCP connection with no query for this long is closed (default 10 s). */
  tcpIdleMs?: number;
  /** TCP connections per sandbox; more are closed at once (default 32). */
  maxTcpConnections?: number;
  /** Forwarded queries in flight over all sandboxes; more get REFUSED (default 1024, as Docker). */
  maxForwards?: number;
}

interface Listener {
  readonly sandboxId: string;
  readonly nsPath: string;
  readonly udp: dgram.Socket;
  readonly tcp: net.Server;
  readonly conns: Set<net.Socket>;
  closed: boolean;
}

/** A UDP reply waiting for the end of the event loop's poll phase. */
interface Outgoing {
  l: Listener;
  packet: Buffer;
  port: number;
  address: string;
}

const dnsLog = log.child({ component: "dns" });

export class DnsServer {
  private readonly listeners = new Map<string, Listener>();
  private readonly rr = new RoundRobin();
  private readonly forwarder: Forwarder;
  private readonly tcpIdleMs: number;
  private readonly maxTcpConnections: number;
  private outbox: Outgoing[] = [];
  /**
   * Sends the replies to the queries read in this turn of the event loop, after all of them were
   * read (libuv reads up to 32 datagrams a socket per turn): the client then gets them in a burst
   * and wakes up less often, which under load is worth more (about a fifth more queries a second
   * on two cores) than the few microseconds the first reply of a burst waits.
   */
  private readonly flush = () => {
    const out = this.outbox;
    this.outbox = [];
    for (const o of out) if (!o.l.closed) o.l.udp.send(o.packet, o.port, o.address);
  };

  constructor(
    private readonly view: ResolverView,
    o: DnsServerOptions = {},
  ) {
    this.forwarder = new Forwarder({ timeoutMs: o.timeoutMs ?? 2000, maxInFlight: o.maxForwards ?? 1024 });
    this.tcpIdleMs = o.tcpIdleMs ?? 10_000;
    this.maxTcpConnections = o.maxTcpConnections ?? 32;
  }

  /**
   * Starts serving the sandbox whose namespace is at `nsPath` (its loopback must be up).
   * Idempotent; attaching the same id to another namespace moves it there.
   */
  attach(sandboxId: string, nsPath: string): void {
    const current = this.listeners.get(sandboxId);
    if (current?.nsPath === nsPath) return;
    if (current) this.detach(sandboxId);

    let udpFd = -1;
    let tcpFd: number;
    try {
      udpFd = boundSocketInNetns(nsPath, "udp4", RESOLVER_ADDRESS, PORT);
      tcpFd = boundSocketInNetns(nsPath, "tcp4", RESOLVER_ADDRESS, PORT);
    } catch (err) {
      if (udpFd >= 0) closeSync(udpFd);
      throw new SystemError(
        `cannot listen on ${RESOLVER_ADDRESS}:${PORT} in ${nsPath}: ${(err as Error).message}`,
      );
    }

    const l: Listener = {
      sandboxId,
      nsPath,
      // Replies go to the sender's address, always a literal: without a lookup of its own, dgram
      // would pass each one through dns.lookup and send it a tick later.
      udp: dgram.createSocket({ type: "udp4", lookup: literalLookup }),
      tcp: net.createServer((sock) => this.onConnection(l, sock)),
      conns: new Set(),
      closed: false,
    };
    l.udp.on("error", (err) => dnsLog.warn({ sandboxId, err }, "udp socket error"));
    l.udp.on("message", (msg, rinfo) => this.onDatagram(l, msg, rinfo));
    l.tcp.on("error", (err) => dnsLog.warn({ sandboxId, err }, "tcp listener error"));
    l.udp.bind({ fd: udpFd });
    l.tcp.listen({ fd: tcpFd });
    this.listeners.set(sandboxId, l);
  }

  /** Stops serving the sandbox and closes its sockets and connections; unknown ids are ignored. */
  detach(sandboxId: string): void {
    const l = this.listeners.get(sandboxId);
    if (!l) return;
    this.listeners.delete(sandboxId);
    l.closed = true;
    l.udp.close();
    l.tcp.close();
    for (const sock of l.conns) sock.destroy();
  }

  /** Detaches every sandbox and closes the sockets to upstreams. */
  close(): void {
    for (const id of [...this.listeners.keys()]) this.detach(id);
    this.forwarder.close();
  }

  /** Sandboxes currently served. */
  attached(): string[] {
    return [...this.listeners.keys()];
  }

  /** The reply now, a reply later (forwarded), or nothing. Never throws. */
  private resolve(l: Listener, query: Buffer, tcp: boolean): Buffer | Promise<Buffer> | undefined {
    try {
      const out = answer(query, l.sandboxId, this.view, this.rr, tcp);
      if (out.kind === "reply") return out.packet;
      if (out.kind === "drop") return undefined;
      return this.forwarder.forward(query, this.view.upstreams(l.sandboxId), tcp);
    } catch (err) {
      // A broken view must cost this one query, not the server.
      dnsLog.error({ sandboxId: l.sandboxId, err }, "cannot answer query");
      return errorReply(query, RCODE_SERVFAIL);
    }
  }

  private onDatagram(l: Listener, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const res = this.resolve(l, msg, false);
    if (res === undefined) return;
    if (!(res instanceof Promise)) {
      if (this.outbox.length === 0) setImmediate(this.flush);
      this.outbox.push({ l, packet: res, port: rinfo.port, address: rinfo.address });
      return;
    }
    res.then(
      (packet) => {
        if (!l.closed) l.udp.send(packet, rinfo.port, rinfo.address);
      },
      (err) => dnsLog.error({ sandboxId: l.sandboxId, err }, "forwarding failed"),
    );
  }

  private onConnection(l: Listener, sock: net.Socket): void {
    if (l.closed || l.conns.size >= this.maxTcpConnections) {
      sock.destroy();
      return;
    }
    l.conns.add(sock);
    sock.on("close", () => l.conns.delete(sock));
    // Resets by the client are normal; the socket closes itself after an error.
    sock.on("error", () => {});
    sock.setNoDelay(true);
    sock.setTimeout(this.tcpIdleMs, () => sock.destroy());

    let pending: Buffer | undefined;
    sock.on("data", (chunk: Buffer) => {
      let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      while (buf.length >= 2) {
        const end = 2 + buf.readUInt16BE(0);
        if (buf.length < end) break;
        this.onStreamQuery(l, sock, buf.subarray(2, end));
        buf = buf.subarray(end);
      }
      pending = buf.length > 0 ? buf : undefined;
    });
  }

  private onStreamQuery(l: Listener, sock: net.Socket, query: Buffer): void {
    const res = this.resolve(l, query, true);
    if (res === undefined) return;
    if (!(res instanceof Promise)) {
      writeFrame(sock, res);
      return;
    }
    res.then(
      (packet) => writeFrame(sock, packet),
      (err) => dnsLog.error({ sandboxId: l.sandboxId, err }, "forwarding failed"),
    );
  }
}

function literalLookup(
  address: string,
  _options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  callback(null, address, 4);
}

function writeFrame(sock: net.Socket, packet: Buffer): void {
  if (sock.destroyed || !sock.writable) return;
  const frame = Buffer.allocUnsafe(2 + packet.length);
  frame.writeUInt16BE(packet.length, 0);
  packet.copy(frame, 2);
  sock.write(frame);
}
