/**
 * Forwarding to upstream resolvers from the daemon's own network namespace, so that an upstream on
 * the host's loopback (systemd-resolved, dnsmasq) works, as Docker does for host-loopback servers.
 */
import { randomFillSync } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import { errorReply, questionEnd, RCODE_REFUSED, RCODE_SERVFAIL } from "./answer.js";
import { parseUpstream, type Upstream } from "./records.js";

/** resolv.conf's MAXNS, which Docker also applies. */
const MAX_UPSTREAMS = 3;
/** Connected UDP sockets per upstream that queries in flight share. */
const SOCKETS_PER_UPSTREAM = 4;
/** Queries one socket carries before it is retired, so that the source port keeps changing. */
const QUERIES_PER_SOCKET = 100;
/** A socket nothing waits on is closed after this long. */
const IDLE_MS = 2000;

export interface ForwarderOptions {
  /** Total time for all upstreams together. */
  timeoutMs: number;
  /** Queries in flight at once; beyond it clients get REFUSED at once, as from Docker. */
  maxInFlight: number;
}

export class Forwarder {
  private inFlight = 0;
  private readonly parsed = new Map<string, Upstream | null>();
  private readonly random = Buffer.alloc(1024);
  private randomAt = this.random.length;
  private readonly pools = new Map<string, UpstreamPool>();
  private closed = false;

  constructor(private readonly o: ForwarderOptions) {}

  /** Closes the pooled sockets; queries waiting on them, and any after, get SERVFAIL. */
  close(): void {
    this.closed = true;
    for (const pool of [...this.pools.values()]) pool.close();
  }

  /**
   * The upstream's answer to `query` with the client's id, or SERVFAIL when none answered in time
   * or all failed. A truncated UDP answer is passed on as it is: the client then asks us over TCP,
   * and that query goes upstream over TCP.
   */
  async forward(query: Buffer, upstreams: readonly string[], tcp: boolean): Promise<Buffer> {
    const targets = this.targets(upstreams);
    if (targets.length === 0 || this.closed) return errorReply(query, RCODE_SERVFAIL);
    if (this.inFlight >= this.o.maxInFlight) return errorReply(query, RCODE_REFUSED);
    this.inFlight++;
    try {
      const deadline = Date.now() + this.o.timeoutMs;
      const res = tcp
        ? await exchangeTcp(query, this.nextId(), targets, deadline)
        : await exchangeUdp(query, targets, deadline, (t) => this.poolOf(t));
      if (!res) return errorReply(query, RCODE_SERVFAIL);
      res.writeUInt16BE(query.readUInt16BE(0), 0);
      return res;
    } finally {
      this.inFlight--;
    }
  }

  private targets(upstreams: readonly string[]): Upstream[] {
    const out: Upstream[] = [];
    for (const text of upstreams) {
      let u = this.parsed.get(text);
      if (u === undefined) {
        u = parseUpstream(text) ?? null;
        if (this.parsed.size > 1024) this.parsed.clear();
        this.parsed.set(text, u);
      }
      if (u) out.push(u);
      if (out.length === MAX_UPSTREAMS) break;
    }
    return out;
  }

  private poolOf(target: Upstream): UpstreamPool | undefined {
    if (this.closed) return undefined;
    const key = `${target.host}|${target.port}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new UpstreamPool(
        target,
        () => this.nextId(),
        () => this.pools.delete(key),
      );
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** Our own ids, so that an off-path spoofer cannot reuse the client's (often predictable) one. */
  private nextId(): number {
    if (this.randomAt + 2 > this.random.length) {
      randomFillSync(this.random);
      this.randomAt = 0;
    }
    const id = this.random.readUInt16BE(this.randomAt);
    this.randomAt += 2;
    return id;
  }
}

/** SERVFAIL and REFUSED mean "try another server" (Docker does the same). */
function usable(msg: Buffer): boolean {
  if (msg.length < 12 || !((msg[2] as number) & 0x80)) return false;
  const rcode = (msg[3] as number) & 0x0f;
  return rcode !== RCODE_SERVFAIL && rcode !== RCODE_REFUSED;
}

/** The answer to one query sent on a pooled socket, or undefined when the socket failed. */
type Waiter = (msg: Buffer | undefined) => void;

/**
 * Whether `answer` is to `query`'s question (ASCII case aside): on a shared socket an id alone
 * could match a late answer to an earlier query that had the same id. Questions that cannot be
 * delimited are not compared.
 */
function answersQuestion(answer: Buffer, query: Buffer): boolean {
  const end = questionEnd(query);
  if (end < 0) return true;
  if (answer.length < end || answer.readUInt16BE(4) !== 1) return false;
  for (let i = 12; i < end; i++) {
    const a = answer[i] as number;
    const q = query[i] as number;
    if (a !== q && !(isLetter(a) && (a | 0x20) === (q | 0x20))) return false;
  }
  return true;
}

const isLetter = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);

/**
 * A connected UDP socket to one upstream that several queries in flight share, each under its own
 * id. Connected, so that only the upstream's address can answer and ICMP errors reach us: an error
 * fails every query waiting on the socket (they all went to the same dead upstream) and retires it.
 */
class PooledSocket {
  private readonly socket: dgram.Socket;
  private readonly waiting = new Map<number, { query: Buffer; w: Waiter }>();
  private backlog: Buffer[] | undefined = [];
  private idle: NodeJS.Timeout | undefined;
  sent = 0;
  retired = false;
  private closed = false;

  constructor(
    target: Upstream,
    private readonly onClose: (s: PooledSocket) => void,
  ) {
    this.socket = dgram.createSocket(target.family === 6 ? "udp6" : "udp4");
    // Only the queries waiting on it may keep the daemon up, and each of those has its own timer.
    this.socket.unref();
    this.socket.on("error", () => this.close());
    this.socket.on("message", (msg: Buffer) => {
      if (msg.length < 12) return;
      const id = msg.readUInt16BE(0);
      const waiter = this.waiting.get(id);
      if (!waiter || !answersQuestion(msg, waiter.query)) return;
      this.forget(id);
      waiter.w(msg);
    });
    // A failed connect comes as an "error" event.
    this.socket.connect(target.port, target.host, () => {
      const backlog = this.backlog ?? [];
      this.backlog = undefined;
      for (const q of backlog) this.write(q);
    });
  }

  has(id: number): boolean {
    return this.waiting.has(id);
  }

  /** Sends `query`, whose id is `id` and not waited for on this socket yet. */
  send(query: Buffer, id: number, w: Waiter): void {
    clearTimeout(this.idle);
    this.sent++;
    this.waiting.set(id, { query, w });
    if (this.backlog) this.backlog.push(query);
    else this.write(query);
  }

  /** Stops waiting for `id`; a socket nothing waits on is closed, at once if it is retired. */
  forget(id: number): void {
    if (!this.waiting.delete(id) || this.waiting.size > 0 || this.closed) return;
    if (this.retired) this.close();
    else this.idle = setTimeout(() => this.close(), IDLE_MS).unref();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.idle);
    this.socket.close();
    this.onClose(this);
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const { w } of waiting) w(undefined);
  }

  private write(query: Buffer): void {
    this.socket.send(query, (err) => {
      if (err) this.waiterFails(query.readUInt16BE(0));
    });
  }

  private waiterFails(id: number): void {
    const waiter = this.waiting.get(id);
    if (!waiter) return;
    this.forget(id);
    waiter.w(undefined);
  }
}

/** The sockets to one upstream: a few in use at once, each retired after a number of queries. */
class UpstreamPool {
  private readonly all = new Set<PooledSocket>();
  private readonly active: PooledSocket[] = [];
  private turn = 0;

  constructor(
    private readonly target: Upstream,
    private readonly nextId: () => number,
    private readonly onEmpty: () => void,
  ) {}

  /** Sends the client's `query` under an id of ours; returns how to stop waiting. */
  exchange(query: Buffer, w: Waiter): () => void {
    let s: PooledSocket;
    if (this.active.length < SOCKETS_PER_UPSTREAM) {
      s = new PooledSocket(this.target, (closed) => this.closed(closed));
      this.all.add(s);
      this.active.push(s);
    } else {
      this.turn = (this.turn + 1) % this.active.length;
      s = this.active[this.turn] as PooledSocket;
    }
    let id = this.nextId();
    while (s.has(id)) id = this.nextId();
    const out = Buffer.from(query);
    out.writeUInt16BE(id, 0);
    s.send(out, id, w);
    if (s.sent >= QUERIES_PER_SOCKET) this.retire(s);
    return () => s.forget(id);
  }

  close(): void {
    for (const s of [...this.all]) s.close();
  }

  private retire(s: PooledSocket): void {
    s.retired = true;
    const i = this.active.indexOf(s);
    if (i >= 0) this.active.splice(i, 1);
  }

  private closed(s: PooledSocket): void {
    this.retire(s);
    this.all.delete(s);
    if (this.all.size === 0) this.onEmpty();
  }
}

/**
 * Asks the upstreams in order, starting the next one early when the previous fails (ICMP
 * unreachable, a failure answer) or after its share of the budget, while earlier ones may still
 * answer: a slow first server is not abandoned, and a dead one costs only its share.
 */
function exchangeUdp(
  query: Buffer,
  targets: Upstream[],
  deadline: number,
  poolOf: (t: Upstream) => UpstreamPool | undefined,
): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const cancels: (() => void)[] = [];
    const share = Math.max(1, (deadline - Date.now()) / targets.length);
    let next = 0;
    let pending = 0;
    let done = false;
    let stagger: NodeJS.Timeout | undefined;

    const finish = (res: Buffer | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(budget);
      clearTimeout(stagger);
      for (const cancel of cancels) cancel();
      resolve(res);
    };
    const launch = () => {
      const target = targets[next++] as Upstream;
      pending++;
      clearTimeout(stagger);
      if (next < targets.length) stagger = setTimeout(launch, share);
      let failed = false;
      const fail = () => {
        if (failed || done) return;
        failed = true;
        pending--;
        if (next < targets.length) launch();
        else if (pending === 0) finish(undefined);
      };
      const pool = poolOf(target);
      if (!pool) {
        fail();
        return;
      }
      // The socket hands over only answers with the id it sent the query under.
      cancels.push(pool.exchange(query, (msg) => (msg && usable(msg) ? finish(msg) : fail())));
    };
    const budget = setTimeout(() => finish(undefined), Math.max(0, deadline - Date.now()));
    launch();
  });
}

/** One upstream after the other, each with an equal share of what is left of the budget. */
async function exchangeTcp(
  clientQuery: Buffer,
  id: number,
  targets: Upstream[],
  deadline: number,
): Promise<Buffer | undefined> {
  const query = Buffer.from(clientQuery);
  query.writeUInt16BE(id, 0);
  for (let i = 0; i < targets.length; i++) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const res = await exchangeTcpOne(query, targets[i] as Upstream, left / (targets.length - i));
    if (res && usable(res) && res.readUInt16BE(0) === id) return res;
  }
  return undefined;
}

function exchangeTcpOne(query: Buffer, target: Upstream, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const sock = net.connect({ host: target.host, port: target.port });
    const finish = (res: Buffer | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(res);
    };
    const timer = setTimeout(() => finish(undefined), timeoutMs);
    sock.on("error", () => finish(undefined));
    sock.on("end", () => finish(undefined));
    sock.on("connect", () => {
      const frame = Buffer.allocUnsafe(2 + query.length);
      frame.writeUInt16BE(query.length, 0);
      query.copy(frame, 2);
      sock.write(frame);
    });
    sock.on("data", (chunk) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        finish(Buffer.from(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
  });
}
