/**
 * Forwarding to upstream resolvers from the daemon's own network namespace, so that an upstream on
 * the host's loopback (systemd-resolved, dnsmasq) works, as Docker does for host-loopback servers.
 */
import { randomFillSync } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import { errorReply, RCODE_REFUSED, RCODE_SERVFAIL } from "./answer.js";
import { parseUpstream, type Upstream } from "./records.js";

/** resolv.conf's MAXNS, which Docker also applies. */
const MAX_UPSTREAMS = 3;

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

  constructor(private readonly o: ForwarderOptions) {}

  /**
   * The upstream's answer to `query` with the client's id, or SERVFAIL when none answered in time
   * or all failed. A truncated UDP answer is passed on as it is: the client then asks us over TCP,
   * and that query goes upstream over TCP.
   */
  async forward(query: Buffer, upstreams: readonly string[], tcp: boolean): Promise<Buffer> {
    const targets = this.targets(upstreams);
    if (targets.length === 0) return errorReply(query, RCODE_SERVFAIL);
    if (this.inFlight >= this.o.maxInFlight) return errorReply(query, RCODE_REFUSED);
    this.inFlight++;
    try {
      // Our own id, so that an off-path spoofer cannot reuse the client's (often predictable) one.
      const id = this.nextId();
      const out = Buffer.from(query);
      out.writeUInt16BE(id, 0);
      const deadline = Date.now() + this.o.timeoutMs;
      const res = tcp
        ? await exchangeTcp(out, id, targets, deadline)
        : await exchangeUdp(out, id, targets, deadline);
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
function usable(msg: Buffer, id: number): boolean {
  if (msg.length < 12 || msg.readUInt16BE(0) !== id || !((msg[2] as number) & 0x80)) return false;
  const rcode = (msg[3] as number) & 0x0f;
  return rcode !== RCODE_SERVFAIL && rcode !== RCODE_REFUSED;
}

/**
 * Asks the upstreams in order, starting the next one early when the previous fails (ICMP
 * unreachable, a failure answer) or after its share of the budget, while earlier ones may still
 * answer: a slow first server is not abandoned, and a dead one costs only its share.
 */
function exchangeUdp(
  query: Buffer,
  id: number,
  targets: Upstream[],
  deadline: number,
): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const sockets: dgram.Socket[] = [];
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
      for (const s of sockets) s.close();
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
      const s = dgram.createSocket(target.family === 6 ? "udp6" : "udp4");
      sockets.push(s);
      s.on("error", fail);
      s.on("message", (msg: Buffer) => {
        if (msg.length >= 12 && msg.readUInt16BE(0) === id) {
          if (usable(msg, id)) finish(msg);
          else fail();
        }
      });
      // Connected, so that only the upstream's address can answer and ICMP errors reach us; a
      // failed connect comes as an "error" event.
      s.connect(target.port, target.host, () => s.send(query, (err) => err && fail()));
    };
    const budget = setTimeout(() => finish(undefined), Math.max(0, deadline - Date.now()));
    launch();
  });
}

/** One upstream after the other, each with an equal share of what is left of the budget. */
async function exchangeTcp(
  query: Buffer,
  id: number,
  targets: Upstream[],
  deadline: number,
): Promise<Buffer | undefined> {
  for (let i = 0; i < targets.length; i++) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const res = await exchangeTcpOne(query, targets[i] as Upstream, left / (targets.length - i));
    if (res && usable(res, id)) return res;
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
